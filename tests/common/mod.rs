//! Shared test harness: every test gets its own PostgreSQL database, RabbitMQ
//! name prefix and Redis key prefix (removed when it ends), and starts the
//! real `herald` binary on a free port against them.

#![allow(dead_code)]

pub mod bench;
pub mod carriers;
pub mod proxy;
pub mod receiver;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_actors::broker::{Broker, BrokerConfig, BrokerError};

pub const PG: &str = "postgres://postgres@127.0.0.1:5432";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS: &str = "redis://127.0.0.1:6379/";
pub const SHARDS: u16 = 4;
/// The webhook delay queues (ms) of the test profile's `webhooks.retry_delays_ms`
/// (each ±20% in five steps) and `busy_delay_ms`, deleted with the environment.
pub const WEBHOOK_DELAY_QUEUES: &[u64] = &[
    160, 180, 200, 220, 240, 400, 450, 500, 550, 600, 800, 900, 1000, 1100, 1200,
];

/// An isolated environment: database, broker prefix, Redis prefix.
pub struct TestEnv {
    pub name: String,
    pub vars: HashMap<String, String>,
    /// Carrier queues to delete at the end.
    pub carrier_ids: Vec<String>,
    /// Webhook delay queues (ms) to delete at the end: the test profile's,
    /// unless the environment runs another.
    pub webhook_delays: Vec<u64>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let name = format!(
            "herald_t_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut vars = HashMap::new();
        vars.insert("HERALD__DATABASE__URL".into(), format!("{PG}/{name}"));
        vars.insert("HERALD__BROKER__URL".into(), AMQP.into());
        vars.insert("HERALD__BROKER__PREFIX".into(), name.clone());
        vars.insert("HERALD__BROKER__SHARDS".into(), SHARDS.to_string());
        vars.insert("HERALD__REDIS__URL".into(), REDIS.into());
        vars.insert("HERALD__REDIS__PREFIX".into(), name.clone());
        vars.insert("HERALD_PROFILE".into(), "test".into());
        TestEnv {
            name,
            vars,
            carrier_ids: Vec::new(),
            webhook_delays: WEBHOOK_DELAY_QUEUES.to_vec(),
        }
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.vars.insert(key.into(), value.into());
    }

    pub fn database_url(&self) -> String {
        self.vars["HERALD__DATABASE__URL"].clone()
    }

    pub fn broker(&self) -> Broker {
        Broker::new(BrokerConfig {
            url: AMQP.into(),
            prefix: self.name.clone(),
            shards: SHARDS,
            timeout: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(15),
        })
    }

    /// A `herald` command with this environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(args)
            .current_dir(manifest_dir())
            .env_remove("RUST_LOG")
            .envs(&self.vars);
        cmd
    }

    /// Delete every exchange and queue of this environment, as a broker
    /// reset would leave it (and as its end does).
    pub async fn delete_topology(&self) -> Result<(), BrokerError> {
        delete_topology(&self.broker(), &self.carrier_ids, &self.webhook_delays).await
    }

    /// `herald tenant create`, returning (id, api key).
    pub fn create_tenant(&self, name: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["tenant", "create", "--name", name];
        args.extend_from_slice(extra);
        let out = self
            .command(&args)
            .output()
            .expect("run herald tenant create");
        assert!(
            out.status.success(),
            "tenant create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |label: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
                .unwrap_or_else(|| panic!("no `{label}` in: {text}"))
        };
        (field("id:"), field("api key:"))
    }

    /// Start `herald serve` and wait until it listens.
    pub fn start(&self) -> Herald {
        Herald::start(self)
    }

    /// A client connection to this environment's database.
    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.database_url(), tokio_postgres::NoTls)
            .await
            .expect("connect test database");
        tokio::spawn(conn);
        client
    }

    /// Messages waiting in every ingress shard queue, drained (packed ones
    /// counted one by one).
    pub async fn drain_ingress(&self) -> Vec<serde_json::Value> {
        let broker = self.broker();
        let mut out = Vec::new();
        for shard in 0..SHARDS {
            let queue = broker.topology().ingress_queue(shard);
            for body in broker.drain(&queue).await.expect("drain ingress") {
                match serde_json::from_slice(&body).expect("ingress payload is JSON") {
                    serde_json::Value::Array(packed) => out.extend(packed),
                    one => out.push(one),
                }
            }
        }
        out
    }

    /// Ready messages in the ingress queues.
    pub async fn ingress_depth(&self) -> u32 {
        let broker = self.broker();
        let mut total = 0;
        for shard in 0..SHARDS {
            total += broker
                .queue_depth(&broker.topology().ingress_queue(shard))
                .await
                .unwrap_or(0);
        }
        total
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let name = self.name.clone();
        let broker = self.broker();
        let carriers = self.carrier_ids.clone();
        let webhook_delays = self.webhook_delays.clone();
        let redis_url = REDIS.to_owned();
        // Clean up on a runtime of our own: Drop may run inside or outside one.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let _ = delete_topology(&broker, &carriers, &webhook_delays).await;
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&format!("{PG}/postgres"), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
                if let Ok(client) = redis::Client::open(redis_url) {
                    if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                        let keys: Vec<String> = redis::cmd("KEYS")
                            .arg(format!("{name}:*"))
                            .query_async(&mut c)
                            .await
                            .unwrap_or_default();
                        if !keys.is_empty() {
                            let _: Result<(), _> =
                                redis::cmd("DEL").arg(keys).query_async(&mut c).await;
                        }
                    }
                }
            });
        })
        .join();
    }
}

/// Delete the carriers' queues, the webhooks' queues and the fixed
/// topology; each step runs whatever the one before did, and the first
/// error is returned.
async fn delete_topology(
    broker: &Broker,
    carriers: &[String],
    webhook_delays: &[u64],
) -> Result<(), BrokerError> {
    // Every retry tier a test carrier can have.
    let ids: Vec<(&str, usize)> = carriers.iter().map(|c| (c.as_str(), 8)).collect();
    let carriers = broker.delete_carriers(&ids).await;
    let webhooks = broker.delete_webhooks(webhook_delays).await;
    let fixed = broker.teardown().await;
    carriers.and(webhooks).and(fixed)
}

/// A running `herald serve`; killed when dropped.
pub struct Herald {
    pub child: Child,
    pub url: String,
    pub stderr_log: std::path::PathBuf,
    /// Every line Herald printed on stdout so far.
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Herald {
    pub fn start(env: &TestEnv) -> Herald {
        Self::start_with(env, &[])
    }

    pub fn start_with(env: &TestEnv, extra_env: &[(&str, String)]) -> Herald {
        let stderr_log = std::env::temp_dir().join(format!(
            "{}-{}.log",
            env.name,
            uuid::Uuid::new_v4().simple()
        ));
        let stderr = std::fs::File::create(&stderr_log).unwrap();
        let mut cmd = env.command(&["serve"]);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn herald serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let printed = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("herald listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
                printed.lock().unwrap().push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "herald did not start; log:\n{}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                );
            }
        };
        Herald {
            child,
            url,
            stderr_log,
            stdout: lines,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        self.signal("TERM", within)
    }

    /// Send `signal` (e.g. "INT", what Ctrl-C sends) and wait for the exit status.
    pub fn signal(&mut self, signal: &str, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "herald did not exit after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_log);
    }
}

/// An HTTP client.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Poll `check` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A minimal valid SMS request body.
pub fn sms(to: &str, body: &str) -> serde_json::Value {
    serde_json::json!({"channel": "sms", "to": to, "from": "HERALD", "body": body})
}

/// `POST /v1/messages` with a tenant key, as a careful client does it: with
/// an `Idempotency-Key`, retrying (same key) when the server says to come
/// back later (503, 408), which a machine busy with other tests can cause.
pub async fn post_message(url: &str, key: &str, body: &serde_json::Value) -> reqwest::Response {
    let idempotency = uuid::Uuid::new_v4().to_string();
    let mut attempt = 0;
    loop {
        let res = client()
            .post(format!("{url}/v1/messages"))
            .bearer_auth(key)
            .header("idempotency-key", &idempotency)
            .json(body)
            .send()
            .await
            .unwrap();
        attempt += 1;
        if !matches!(res.status().as_u16(), 503 | 408) || attempt == 5 {
            return res;
        }
        tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
    }
}

/// The id of an accepted message (asserts 202).
pub async fn accepted_id(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 202);
    let v: serde_json::Value = res.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// The sum of a metric's samples in a Prometheus text, over the label
/// sets that contain every one of `labels` (0 when not exported yet).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|lb| l.contains(lb)))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

/// The Prometheus text of a running Herald.
pub async fn metrics(url: &str) -> String {
    client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// GET `url` with a bearer token, as JSON; `None` when the server does not
/// answer (a node that was killed).
pub async fn try_get_json(url: &str, token: &str) -> Option<serde_json::Value> {
    let res = client().get(url).bearer_auth(token).send().await.ok()?;
    res.json().await.ok()
}

/// GET `url` with a bearer token, as JSON.
pub async fn get_json(url: &str, token: &str) -> serde_json::Value {
    try_get_json(url, token)
        .await
        .unwrap_or_else(|| panic!("GET {url} answered nothing readable"))
}

/// A message as `GET /v1/messages/{id}` shows it.
pub async fn get_message(base: &str, key: &str, id: &str) -> serde_json::Value {
    get_json(&format!("{base}/v1/messages/{id}"), key).await
}

/// The admin token of the test profile.
pub const ADMIN: &str = "test-admin-token";

/// `GET /v1/admin/actors`: the live actor tree.
pub async fn admin_tree(base: &str) -> serde_json::Value {
    get_json(&format!("{base}/v1/admin/actors"), ADMIN).await
}

/// Whether `carrier` (any carrier when `None`) has a bound connection on
/// this node; false when the node does not answer.
pub async fn carrier_bound(base: &str, carrier: Option<&str>) -> bool {
    let Some(tree) = try_get_json(&format!("{base}/v1/admin/actors"), ADMIN).await else {
        return false;
    };
    tree["carriers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["bound"] == true && carrier.is_none_or(|id| c["carrier"] == id))
}

/// `SELECT count(*) …` in the environment's database.
pub async fn count(env: &TestEnv, sql: &str) -> i64 {
    env.db().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// This package's directory in the checkout the tests run from. Cargo and
/// nextest set it when they run a test; the compile-time value names the
/// checkout that built the binary, and a target directory shared between
/// clones (the Makefile's) may have built it in another.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
