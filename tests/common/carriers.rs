//! Carrier fixtures: an SMSC simulator on a free port, and carriers/routes
//! files for Herald pointing at it.

use herald_carriers::smpp::{Behaviour, SmscConfig, SmscHandle, SmscSim};
use std::net::SocketAddr;

use super::TestEnv;

/// Start an SMSC simulator accepting `herald`/`secret`.
pub async fn smsc(behaviour: Behaviour) -> SmscHandle {
    SmscSim::start(SmscConfig {
        smpp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        credentials: vec![("herald".into(), "secret".into())],
        behaviour,
        ..Default::default()
    })
    .await
    .expect("start SMSC simulator")
}

/// One SMPP carrier's TOML.
pub fn smpp_carrier(id: &str, addr: SocketAddr, tps: f64, window: u32, binds: u32) -> String {
    format!(
        r#"
[[carrier]]
id = "{id}"
kind = "smpp"
binds = {binds}
tps = {tps}
window = {window}
breaker_failures = 3
breaker_cooldown_ms = 1000
reroute_after_ms = 1500
[carrier.retry]
delays_ms = [200, 500]
max_attempts = 3
[carrier.smpp]
host = "{host}"
port = {port}
system_id = "herald"
password = "secret"
request_timeout_ms = 5000
connect_timeout_ms = 2000
enquire_link_interval_ms = 1000
enquire_link_timeout_ms = 1000
"#,
        host = addr.ip(),
        port = addr.port()
    )
}

/// A route's TOML.
pub fn route(id: &str, prefixes: &[&str], strategy: &str, carriers: &[&str]) -> String {
    let prefixes: Vec<String> = prefixes.iter().map(|p| format!("\"{p}\"")).collect();
    let carriers: Vec<String> = carriers.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "\n[[route]]\nid = \"{id}\"\nchannel = \"sms\"\nprefixes = [{}]\nstrategy = \"{strategy}\"\ncarriers = [{}]\n",
        prefixes.join(", "),
        carriers.join(", ")
    )
}

impl TestEnv {
    /// Write carriers and routes files for this environment and point Herald
    /// at them. `carrier_ids` are torn down with the environment.
    pub fn use_carriers(&mut self, carriers: &str, routes: &str, carrier_ids: &[&str]) {
        let dir = std::env::temp_dir();
        let c = dir.join(format!("{}-carriers.toml", self.name));
        let r = dir.join(format!("{}-routes.toml", self.name));
        std::fs::write(&c, carriers).unwrap();
        std::fs::write(&r, routes).unwrap();
        self.set("HERALD__ROUTING__CARRIERS_FILE", c.display().to_string());
        self.set("HERALD__ROUTING__ROUTES_FILE", r.display().to_string());
        self.carrier_ids = carrier_ids.iter().map(|s| s.to_string()).collect();
    }
}

/// How many times the SMSC accepted each text starting with `tag`.
pub fn received(sim: &SmscHandle, tag: &str) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for r in sim.received() {
        if r.text.starts_with(tag) && r.status == 0 {
            *counts.entry(r.text.clone()).or_insert(0) += 1;
        }
    }
    counts
}
