//! Layered configuration: `config/default.toml` < `config/<profile>.toml` <
//! `HERALD__SECTION__KEY` environment variables. Loaded once at start,
//! validated, then shared read-only as `Arc<Config>`.
//!
//! A bad value is reported with its key and Herald exits with status 2.
//! Secrets may be written as `env:VAR`; they are resolved at load and never
//! printed (their `Debug` is redacted).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} not found")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid configuration: key `{key}`: {reason}")]
    Value { key: &'static str, reason: String },
}

/// A secret value: given inline or as `env:VAR`. Never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        match raw.strip_prefix("env:") {
            Some(var) => std::env::var(var).map(Secret).map_err(|_| {
                serde::de::Error::custom(format!("environment variable {var} is not set"))
            }),
            None => Ok(Secret(raw)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub broker: BrokerSection,
    pub redis: RedisConfig,
    pub accept: AcceptConfig,
    pub outbox: OutboxConfig,
    pub projector: ProjectorConfig,
    pub limits: LimitsConfig,
    pub idempotency: IdempotencyConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub routing: RoutingConfig,
    pub webhooks: WebhooksConfig,
    pub stream: StreamConfig,
    pub demo: DemoConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub shutdown_timeout_seconds: u64,
    pub keep_alive_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub pool_size: usize,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    pub url: Secret,
    pub prefix: String,
    pub shards: u16,
    pub timeout_ms: u64,
    pub confirm_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: Secret,
    pub prefix: String,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptConfig {
    pub max_batch: usize,
    pub concurrent_flushes: usize,
    pub own_thread: bool,
    pub deferred_threads: usize,
    pub deferred_nice: i32,
    pub deferred_connections: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    pub sweep_interval_ms: u64,
    pub grace_ms: u64,
    pub batch: i64,
}

/// The status projector (`[projector]`); see `src/projector/mod.rs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorConfig {
    pub batch_max: usize,
    pub batch_wait_ms: u64,
    pub prefetch: u16,
    pub retry_backoff_ms: u64,
    pub unmatched_after_seconds: u64,
    pub unmatched_check_interval_ms: u64,
    pub broadcast_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_segments: usize,
    pub default_rate: f64,
    pub burst_seconds: f64,
    pub max_metadata_keys: usize,
    pub max_metadata_key_chars: usize,
    pub max_metadata_value_chars: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    pub ttl_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub cache_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub token: Secret,
    /// Allow `POST /v1/admin/actors/{name}/crash` (chaos testing).
    pub chaos: bool,
    /// Serve the dashboard and the admin API without a token (loopback only).
    pub open: bool,
}

/// `make run` (`[demo]`): in-process carrier simulators and a demo tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Start the SMSC, WhatsApp and voice simulators in this process.
    pub simulators: bool,
    /// Create a demo tenant when there is none and print its API key once.
    pub tenant: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Carriers file (see config/carriers.toml).
    pub carriers_file: PathBuf,
    /// Routes file (see config/routes.toml).
    pub routes_file: PathBuf,
    /// Lifetime of a carrier bind's lease (renewed every third of it); a
    /// dead node's binds move to another node within it.
    pub lease_ttl_ms: u64,
}

/// Webhook endpoints and delivery (`[webhooks]`); see `src/webhooks/mod.rs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Base64 of 32 bytes: seals endpoint secrets at rest (`env:VAR` in production).
    pub secret_key: Secret,
    /// Accept webhook URLs that resolve to loopback, private or link-local addresses.
    pub allow_private: bool,
    /// Delay before each retry; one more attempt than entries in total.
    pub retry_delays_ms: Vec<u64>,
    /// Each delay varies by up to this fraction either way.
    pub jitter: f64,
    /// Longest wait for a receiver's answer.
    pub timeout_ms: u64,
    /// Deliveries in flight to one endpoint at once.
    pub endpoint_concurrency: usize,
    /// How long a task for a busy endpoint waits before it is tried again.
    pub busy_delay_ms: u64,
    /// Unacknowledged delivery tasks this node takes at once.
    pub prefetch: u16,
    /// An endpoint failing this long without a success is disabled.
    pub disable_after_seconds: u64,
    /// How often the dispatcher looks for events when none was announced.
    pub poll_interval_ms: u64,
    /// Most events dispatched per transaction.
    pub batch: i64,
}

/// The WebSocket live stream (`[stream]`); see `src/stream/mod.rs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Interval between pings to each client.
    pub ping_interval_ms: u64,
    /// A client silent this long (no pong, no message) is closed.
    pub client_timeout_ms: u64,
    /// Events buffered per client; a client further behind is closed.
    pub client_buffer: usize,
    /// Longest wait for one frame to be taken by a client's socket.
    pub send_timeout_ms: u64,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// Name each failing key in lowercase dotted form (`http.port`), whichever
/// layer it came from.
fn describe(errors: figment::Error) -> ConfigError {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("key `{key}`: {}{source}", e.kind)
            }
        })
        .collect();
    ConfigError::Invalid(lines.join("; "))
}

impl Config {
    /// Load `default.toml`, then `<profile>.toml`, then the environment, from
    /// `dir` (normally `./config`, or `HERALD_CONFIG_DIR`).
    pub fn load(dir: &Path, profile: &str) -> Result<Self, ConfigError> {
        let default = dir.join("default.toml");
        if !default.exists() {
            return Err(ConfigError::MissingFile(default));
        }
        if profile.is_empty()
            || !profile
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::Value {
                key: "profile",
                reason: format!("`{profile}` is not a profile name"),
            });
        }
        let profile_file = dir.join(format!("{profile}.toml"));
        if !profile_file.exists() {
            return Err(ConfigError::MissingFile(profile_file));
        }
        let config: Config = Figment::new()
            .merge(Toml::file(&default))
            .merge(Toml::file(&profile_file))
            .merge(Env::prefixed("HERALD__").split("__").lowercase(true))
            .extract()
            .map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration directory: `HERALD_CONFIG_DIR` or `./config`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("HERALD_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("config"))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Value {
                key,
                reason: reason.into(),
            })
        }
        if self.http.workers == 0 || self.http.workers > 256 {
            return bad("http.workers", "must be between 1 and 256");
        }
        if self.http.keep_alive_seconds > 3600 {
            return bad("http.keep_alive_seconds", "must be at most 3600");
        }
        if self.http.max_body_bytes < 1024 {
            return bad("http.max_body_bytes", "must be at least 1024");
        }
        if self.http.host.parse::<std::net::IpAddr>().is_err() && self.http.host != "localhost" {
            return bad("http.host", "must be an IP address or localhost");
        }
        let loopback = self.http.host == "localhost"
            || self
                .http
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if self.admin.open && !loopback {
            return bad(
                "admin.open",
                "serves the admin API without a token: only with a loopback http.host",
            );
        }
        if self
            .database
            .url
            .expose()
            .parse::<tokio_postgres::Config>()
            .is_err()
        {
            return bad("database.url", "is not a PostgreSQL URL");
        }
        if self.database.pool_size == 0 {
            return bad("database.pool_size", "must be at least 1");
        }
        if self.database.timeout_ms == 0 {
            return bad("database.timeout_ms", "must be positive");
        }
        if !self.broker.url.expose().starts_with("amqp://")
            && !self.broker.url.expose().starts_with("amqps://")
        {
            return bad("broker.url", "must start with amqp:// or amqps://");
        }
        if self.broker.prefix.is_empty()
            || !self
                .broker
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return bad("broker.prefix", "must be non-empty letters, digits, - _ .");
        }
        if self.broker.shards == 0 || self.broker.shards > 1024 {
            return bad("broker.shards", "must be between 1 and 1024");
        }
        if redis::Client::open(self.redis.url.expose()).is_err() {
            return bad("redis.url", "is not a Redis URL");
        }
        if self.accept.max_batch == 0 || self.accept.max_batch > 10_000 {
            return bad("accept.max_batch", "must be between 1 and 10000");
        }
        if self.accept.concurrent_flushes == 0 || self.accept.concurrent_flushes > 64 {
            // The accept path's own pool is sized from it.
            return bad("accept.concurrent_flushes", "must be between 1 and 64");
        }
        if self.accept.deferred_threads == 0 || self.accept.deferred_threads > 64 {
            return bad("accept.deferred_threads", "must be between 1 and 64");
        }
        if !(0..=19).contains(&self.accept.deferred_nice) {
            return bad("accept.deferred_nice", "must be between 0 and 19");
        }
        if self.accept.deferred_connections == 0 || self.accept.deferred_connections > 64 {
            return bad("accept.deferred_connections", "must be between 1 and 64");
        }
        if self.outbox.sweep_interval_ms == 0 {
            return bad("outbox.sweep_interval_ms", "must be positive");
        }
        if self.outbox.batch <= 0 {
            return bad("outbox.batch", "must be positive");
        }
        if self.projector.batch_max == 0 || self.projector.batch_max > 10_000 {
            return bad("projector.batch_max", "must be between 1 and 10000");
        }
        if usize::from(self.projector.prefetch) < self.projector.batch_max {
            return bad("projector.prefetch", "must be at least projector.batch_max");
        }
        if self.projector.retry_backoff_ms == 0 {
            return bad("projector.retry_backoff_ms", "must be positive");
        }
        if self.projector.unmatched_check_interval_ms == 0 {
            return bad("projector.unmatched_check_interval_ms", "must be positive");
        }
        if self.projector.broadcast_capacity == 0 {
            return bad("projector.broadcast_capacity", "must be at least 1");
        }
        if self.limits.max_segments == 0 || self.limits.max_segments > 255 {
            return bad("limits.max_segments", "must be between 1 and 255");
        }
        if !(self.limits.default_rate > 0.0 && self.limits.default_rate.is_finite()) {
            return bad("limits.default_rate", "must be a positive number");
        }
        if !(self.limits.burst_seconds > 0.0 && self.limits.burst_seconds.is_finite()) {
            return bad("limits.burst_seconds", "must be a positive number");
        }
        if self.routing.lease_ttl_ms < 300 {
            return bad("routing.lease_ttl_ms", "must be at least 300");
        }
        if crate::webhooks::seal::Sealer::from_config(&self.webhooks).is_err() {
            return bad(
                "webhooks.secret_key",
                "must be the base64 encoding of 32 bytes",
            );
        }
        if self.webhooks.retry_delays_ms.contains(&0) {
            return bad("webhooks.retry_delays_ms", "delays must be positive");
        }
        if !(0.0..0.5).contains(&self.webhooks.jitter) {
            return bad("webhooks.jitter", "must be at least 0 and below 0.5");
        }
        if self.webhooks.timeout_ms == 0 || self.webhooks.busy_delay_ms == 0 {
            return bad(
                "webhooks.timeout_ms",
                "timeout_ms and busy_delay_ms must be positive",
            );
        }
        if self.webhooks.endpoint_concurrency == 0 || self.webhooks.prefetch == 0 {
            return bad(
                "webhooks.endpoint_concurrency",
                "endpoint_concurrency and prefetch must be at least 1",
            );
        }
        if self.webhooks.poll_interval_ms == 0 || self.webhooks.batch <= 0 {
            return bad(
                "webhooks.poll_interval_ms",
                "poll_interval_ms and batch must be positive",
            );
        }
        if self.stream.ping_interval_ms == 0
            || self.stream.client_timeout_ms <= self.stream.ping_interval_ms
        {
            return bad(
                "stream.client_timeout_ms",
                "must be above stream.ping_interval_ms (both positive)",
            );
        }
        if self.stream.client_buffer == 0 || self.stream.send_timeout_ms == 0 {
            return bad(
                "stream.client_buffer",
                "client_buffer and send_timeout_ms must be positive",
            );
        }
        if self.idempotency.ttl_seconds == 0 {
            return bad("idempotency.ttl_seconds", "must be positive");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return bad("log.level", "is not a valid tracing filter");
        }
        Ok(())
    }

    pub fn database_timeout(&self) -> Duration {
        Duration::from_millis(self.database.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checkout the tests run from (set by cargo and nextest at run
    /// time), not the one that built the binary.
    fn dir() -> PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
            .join("config")
    }

    #[test]
    fn shipped_profiles_load() {
        for profile in ["dev", "test"] {
            Config::load(&dir(), profile).unwrap();
        }
    }

    #[test]
    fn unknown_profile_is_named() {
        let err = Config::load(&dir(), "nope").unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
