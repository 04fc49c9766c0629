//! Fixtures for the load-generator smoke test: an SMSC simulator with its
//! HTTP control API, and waiting for a carrier bind through the admin API.

use std::net::SocketAddr;
use std::time::Duration;

use herald_carriers::smpp::{Behaviour, SmscConfig, SmscHandle, SmscSim};

use super::{client, eventually};

/// Start an SMSC simulator accepting `herald`/`secret`, with its control
/// API (`GET /stats`, `GET /received`, `POST /faults`) on a free port.
pub async fn smsc_with_control(behaviour: Behaviour) -> SmscHandle {
    SmscSim::start(SmscConfig {
        smpp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        credentials: vec![("herald".into(), "secret".into())],
        behaviour,
        ..Default::default()
    })
    .await
    .expect("start SMSC simulator")
}

/// Wait until the admin API shows `carrier` bound.
pub async fn wait_bound(url: &str, admin_token: &str, carrier: &str, within: Duration) -> bool {
    eventually(within, || async {
        let Ok(res) = client()
            .get(format!("{url}/v1/admin/actors"))
            .bearer_auth(admin_token)
            .send()
            .await
        else {
            return false;
        };
        let tree: serde_json::Value = res.json().await.unwrap_or_default();
        tree["carriers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["carrier"] == carrier && c["bound"] == true)
    })
    .await
}
