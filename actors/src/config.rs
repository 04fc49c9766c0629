//! Carriers and routes, from `config/carriers.toml` and `config/routes.toml`.
//!
//! ```toml
//! [[carrier]]
//! id = "mtn-rw"            # names the queue herald.carrier.mtn-rw
//! kind = "smpp"
//! binds = 2                # connections; they share the queue and the TPS
//! tps = 200                # messages per second for the whole carrier
//! window = 10              # unanswered submits per bind
//! reroute_after_ms = 30000 # parked messages move to another carrier after
//! [carrier.smpp]           # herald_carriers::smpp::SmppConfig fields
//! host = "127.0.0.1"
//! port = 2775
//! system_id = "herald"
//! password = "env:MTN_RW_PASSWORD"
//!
//! [[route]]
//! id = "rw-sms"
//! channel = "sms"
//! prefixes = ["+250"]      # longest matching prefix wins
//! tenant = "tnt_…"         # optional: only this tenant
//! strategy = "failover"    # or "weighted"
//! carriers = ["mtn-rw", "airtel-rw"]
//! weights = [70, 30]       # weighted only
//! ```
//!
//! Other kinds take `[carrier.http_sms]`, `[carrier.whatsapp]` or
//! `[carrier.voice]` with the fields of the matching herald-carriers config
//! (their receipts arrive at `POST /v1/callbacks/<id>`).
//!
//! Secrets (`password`, tokens, app secrets, auth header values) may be
//! `env:VAR`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use herald_carriers::http_sms::HttpSmsConfig;
use herald_carriers::smpp::SmppConfig;
use herald_carriers::voice::VoiceConfig;
use herald_carriers::whatsapp::WhatsappConfig;
use herald_carriers::Channel;
use serde::Deserialize;

/// Why the carriers or routes could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The protocol of a carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CarrierKind {
    Smpp,
    HttpSms,
    Whatsapp,
    Voice,
}

/// How temporary failures are retried: through RabbitMQ delay queues, one
/// per delay, never in-memory timers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Delay before attempt n+1 (the last one repeats).
    pub delays_ms: Vec<u64>,
    /// Attempts in all, after which the message fails.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            delays_ms: vec![1_000, 5_000, 30_000, 120_000],
            max_attempts: 6,
        }
    }
}

impl RetryPolicy {
    /// The delay tier (index) for a message that has made `attempt` attempts.
    pub fn tier(&self, attempt: u32) -> usize {
        (attempt.saturating_sub(1) as usize).min(self.delays_ms.len().saturating_sub(1))
    }
}

/// A carrier: one or more connections (binds) sharing a queue and a rate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierSpec {
    pub id: String,
    pub kind: CarrierKind,
    #[serde(default = "one")]
    pub binds: u32,
    /// Messages per second for the whole carrier.
    pub tps: f64,
    #[serde(default = "ten")]
    pub window: u32,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Consecutive failures that open the breaker.
    #[serde(default = "five")]
    pub breaker_failures: u32,
    /// How long an open breaker waits before a probe.
    #[serde(default = "breaker_cooldown")]
    pub breaker_cooldown_ms: u64,
    /// Messages parked on this carrier while it is unusable for longer than
    /// this go back through routing, to another carrier of their route.
    #[serde(default = "reroute_after")]
    pub reroute_after_ms: u64,
    pub smpp: Option<SmppConfig>,
    pub http_sms: Option<HttpSmsConfig>,
    pub whatsapp: Option<WhatsappConfig>,
    pub voice: Option<VoiceConfig>,
}

fn one() -> u32 {
    1
}
fn five() -> u32 {
    5
}
fn ten() -> u32 {
    10
}
fn breaker_cooldown() -> u64 {
    5_000
}
fn reroute_after() -> u64 {
    30_000
}

impl CarrierSpec {
    pub fn breaker_cooldown(&self) -> Duration {
        Duration::from_millis(self.breaker_cooldown_ms)
    }

    pub fn reroute_after(&self) -> Duration {
        Duration::from_millis(self.reroute_after_ms)
    }
}

/// How a route spreads traffic over its carriers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The first usable carrier in order.
    #[default]
    Failover,
    /// Split by weight among usable carriers.
    Weighted,
}

/// A route: which messages it takes and which carriers carry them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub id: String,
    pub channel: Channel,
    /// Destination prefixes, E.164 with `+` (`+250`, `+25078`).
    pub prefixes: Vec<String>,
    pub tenant: Option<String>,
    #[serde(default)]
    pub strategy: Strategy,
    pub carriers: Vec<String>,
    #[serde(default)]
    pub weights: Vec<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CarriersFile {
    #[serde(default)]
    carrier: Vec<CarrierSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    route: Vec<RouteSpec>,
}

/// Carriers and routes, validated together.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub carriers: Vec<CarrierSpec>,
    pub routes: Vec<RouteSpec>,
}

fn read(path: &Path) -> Result<String, PlanError> {
    std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn resolve_env(value: &mut String, what: &str) -> Result<(), PlanError> {
    if let Some(var) = value.strip_prefix("env:") {
        *value = std::env::var(var).map_err(|_| {
            PlanError::Invalid(format!("{what}: environment variable {var} is not set"))
        })?;
    }
    Ok(())
}

impl Plan {
    /// Load both files; a missing file is an empty list.
    pub fn load(carriers: &Path, routes: &Path) -> Result<Plan, PlanError> {
        let c: CarriersFile = if carriers.exists() {
            toml::from_str(&read(carriers)?).map_err(|e| PlanError::Parse {
                path: carriers.display().to_string(),
                message: e.to_string(),
            })?
        } else {
            CarriersFile::default()
        };
        let r: RoutesFile = if routes.exists() {
            toml::from_str(&read(routes)?).map_err(|e| PlanError::Parse {
                path: routes.display().to_string(),
                message: e.to_string(),
            })?
        } else {
            RoutesFile::default()
        };
        let mut plan = Plan {
            carriers: c.carrier,
            routes: r.route,
        };
        for carrier in &mut plan.carriers {
            let what = format!("carrier {}", carrier.id);
            if let Some(smpp) = carrier.smpp.as_mut() {
                resolve_env(&mut smpp.password, &what)?;
                resolve_env(&mut smpp.system_id, &what)?;
                smpp.window = carrier.window as usize;
            }
            if let Some(w) = carrier.whatsapp.as_mut() {
                resolve_env(&mut w.access_token, &what)?;
                resolve_env(&mut w.app_secret, &what)?;
                resolve_env(&mut w.verify_token, &what)?;
            }
            if let Some(v) = carrier.voice.as_mut() {
                resolve_env(&mut v.callback_secret, &what)?;
                if let Some(a) = v.auth.as_mut() {
                    resolve_env(&mut a.value, &what)?;
                }
            }
            if let Some(h) = carrier.http_sms.as_mut() {
                if let Some(a) = h.auth.as_mut() {
                    resolve_env(&mut a.value, &what)?;
                }
            }
        }
        plan.validate()?;
        Ok(plan)
    }

    pub fn validate(&self) -> Result<(), PlanError> {
        let bad = |m: String| Err(PlanError::Invalid(m));
        let mut ids = HashSet::new();
        for c in &self.carriers {
            if c.id.is_empty()
                || !c
                    .id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return bad(format!(
                    "carrier id `{}`: letters, digits, - and _ only",
                    c.id
                ));
            }
            if !ids.insert(c.id.clone()) {
                return bad(format!("carrier `{}` is defined twice", c.id));
            }
            if !(c.tps > 0.0 && c.tps.is_finite()) {
                return bad(format!("carrier `{}`: tps must be positive", c.id));
            }
            if c.binds == 0 || c.window == 0 {
                return bad(format!(
                    "carrier `{}`: binds and window must be at least 1",
                    c.id
                ));
            }
            if c.retry.delays_ms.is_empty() || c.retry.max_attempts == 0 {
                return bad(format!(
                    "carrier `{}`: retry needs delays and attempts",
                    c.id
                ));
            }
            let (has, table) = match c.kind {
                CarrierKind::Smpp => (c.smpp.is_some(), "smpp"),
                CarrierKind::HttpSms => (c.http_sms.is_some(), "http_sms"),
                CarrierKind::Whatsapp => (c.whatsapp.is_some(), "whatsapp"),
                CarrierKind::Voice => (c.voice.is_some(), "voice"),
            };
            if !has {
                return bad(format!(
                    "carrier `{}`: its kind needs a [carrier.{table}] table",
                    c.id
                ));
            }
        }
        let mut route_ids = HashSet::new();
        for r in &self.routes {
            if !route_ids.insert(r.id.clone()) {
                return bad(format!("route `{}` is defined twice", r.id));
            }
            if r.carriers.is_empty() {
                return bad(format!("route `{}` lists no carriers", r.id));
            }
            for c in &r.carriers {
                if !ids.contains(c) {
                    return bad(format!("route `{}` names unknown carrier `{c}`", r.id));
                }
            }
            if r.prefixes.is_empty() || r.prefixes.iter().any(|p| !p.starts_with('+')) {
                return bad(format!("route `{}`: prefixes must start with +", r.id));
            }
            if r.strategy == Strategy::Weighted
                && (r.weights.len() != r.carriers.len() || r.weights.iter().all(|w| *w == 0))
            {
                return bad(format!(
                    "route `{}`: weighted needs one weight per carrier, not all zero",
                    r.id
                ));
            }
        }
        Ok(())
    }

    pub fn carrier(&self, id: &str) -> Option<&CarrierSpec> {
        self.carriers.iter().find(|c| c.id == id)
    }

    /// Retry policies by carrier id.
    pub fn retry_policies(&self) -> HashMap<String, RetryPolicy> {
        self.carriers
            .iter()
            .map(|c| (c.id.clone(), c.retry.clone()))
            .collect()
    }
}
