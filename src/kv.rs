//! The Redis seam: `redis` appears only here. Redis holds what is hot and
//! shared between nodes: idempotency keys and rate-limit state (GCRA), and
//! carries the live stream's events between nodes (pub/sub).
//!
//! Every command is bounded by `redis.timeout_ms`. The connection is opened
//! lazily and re-opened by `redis`' `ConnectionManager`, so Herald starts and
//! serves while Redis is away; callers decide how to degrade (the accept path
//! falls back to PostgreSQL's unique index for idempotency and lets traffic
//! through unthrottled, counting `herald_redis_errors_total`).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

use tokio::sync::OnceCell;

use crate::config::RedisConfig;

/// Errors of the Redis seam.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis answered something unexpected: {0}")]
    Protocol(String),
    /// A script called by its hash is not loaded (Redis restarted).
    #[error("redis does not have the script")]
    NoScript,
}

impl From<redis::RedisError> for KvError {
    fn from(e: redis::RedisError) -> Self {
        if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) {
            return KvError::NoScript;
        }
        KvError::Unavailable(e.to_string())
    }
}

/// Outcome of one rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// The limit, as requests per second (rounded).
    pub limit: u64,
    /// Requests that could still be made right now.
    pub remaining: u64,
    /// Milliseconds until the bucket is full again.
    pub reset_ms: u64,
    /// When refused: milliseconds until one request is allowed.
    pub retry_after_ms: u64,
}

/// What [`Kv::admit_many`] decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The idempotency key was seen before: this response is remembered.
    Replay(RememberedResponse),
    /// A new request, with the rate limit's decision.
    Rate(RateDecision),
}

/// One request to admit: its tenant, its idempotency key if any, and the
/// tenant's budget (`rate` per second, a burst of `burst` requests).
#[derive(Debug, Clone, Copy)]
pub struct AdmitRequest<'a> {
    pub tenant: &'a str,
    pub key: Option<&'a str>,
    pub rate: f64,
    pub burst: f64,
}

/// A response to remember under a tenant's idempotency key.
#[derive(Debug, Clone)]
pub struct Remember {
    pub tenant: String,
    pub key: String,
    pub response: RememberedResponse,
    pub ttl: Duration,
}

/// The answer of one admission script call.
fn admission(answer: &[redis::Value], rate: f64) -> Result<Admission, KvError> {
    let int = |i: usize| -> Result<i64, KvError> {
        let v = answer
            .get(i)
            .ok_or_else(|| KvError::Protocol("short answer".into()))?;
        redis::from_redis_value_ref(v).map_err(|e| KvError::Protocol(e.to_string()))
    };
    let verdict = int(0)?;
    if verdict == 2 {
        let raw: String = answer
            .get(4)
            .map(redis::from_redis_value_ref)
            .transpose()
            .map_err(|e| KvError::Protocol(e.to_string()))?
            .ok_or_else(|| KvError::Protocol("replay without a response".into()))?;
        let remembered =
            serde_json::from_str(&raw).map_err(|e| KvError::Protocol(e.to_string()))?;
        return Ok(Admission::Replay(remembered));
    }
    Ok(Admission::Rate(RateDecision {
        allowed: verdict == 1,
        limit: rate.round().max(1.0) as u64,
        remaining: int(1)?.max(0) as u64,
        reset_ms: int(2)?.max(0) as u64,
        retry_after_ms: int(3)?.max(0) as u64,
    }))
}

/// The response remembered for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RememberedResponse {
    /// SHA-256 of the canonical request body.
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

/// The accept path's one round trip. `KEYS[2]`, when given, is the
/// tenant's idempotency key: the response remembered under it is returned
/// as `{2, 0, 0, 0, response}` (a replay, answered before the rate limit).
/// Otherwise GCRA on `KEYS[1]`: one theoretical arrival time (TAT) per
/// tenant, in milliseconds; ARGV: emission interval (ms per request), burst
/// (requests), now from TIME; returns `{allowed, remaining, reset_ms,
/// retry_after_ms}`.
const ADMIT: &str = r"
if KEYS[2] then
  local remembered = redis.call('GET', KEYS[2])
  if remembered then return {2, 0, 0, 0, remembered} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  local remaining = 0
  return {0, remaining, math.ceil(tat - now), math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
local remaining = math.floor((tolerance - (new_tat - now)) / interval)
return {1, remaining, math.ceil(new_tat - now), 0}
";

/// Take a lease, or extend it when the holder already has it.
const LEASE_ACQUIRE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Extend a lease only when the holder still has it.
const LEASE_RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Delete a lease only when the holder still has it.
const LEASE_RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Scripts are hashed once; Redis runs them by SHA (EVALSHA).
static ADMIT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ADMIT));
static LEASE_ACQUIRE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(LEASE_ACQUIRE));
static LEASE_RENEW_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(LEASE_RENEW));
static LEASE_RELEASE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(LEASE_RELEASE));

/// A handle on Redis. Cheap to clone.
#[derive(Clone)]
pub struct Kv {
    client: redis::Client,
    /// Opened on first use (Redis may be away at start), then shared: the
    /// manager reconnects by itself, so no lock is taken per command.
    conn: std::sync::Arc<OnceCell<ConnectionManager>>,
    prefix: String,
    timeout: Duration,
}

impl Kv {
    pub fn new(config: &RedisConfig) -> Result<Self, KvError> {
        Ok(Self {
            client: redis::Client::open(config.url.expose())?,
            conn: Default::default(),
            prefix: config.prefix.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
        })
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    async fn conn(&self) -> Result<ConnectionManager, KvError> {
        self.conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                tokio::time::timeout(
                    self.timeout * 2,
                    self.client.get_connection_manager_with_config(config),
                )
                .await
                .map_err(|_| KvError::Unavailable("connect timed out".into()))?
                .map_err(KvError::from)
            })
            .await
            .cloned()
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, KvError> {
        let mut c = self.conn().await?;
        tokio::time::timeout(self.timeout, cmd.query_async(&mut c))
            .await
            .map_err(|_| KvError::Unavailable("timed out".into()))?
            .map_err(KvError::from)
    }

    async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, KvError> {
        let mut c = self.conn().await?;
        tokio::time::timeout(self.timeout, pipe.query_async(&mut c))
            .await
            .map_err(|_| KvError::Unavailable("timed out".into()))?
            .map_err(KvError::from)
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<(), KvError> {
        let pong: String = self.run(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(KvError::Protocol(pong))
        }
    }

    /// One round trip for a batch of new requests (a pipeline, one script
    /// call each, in order): for each, the response remembered under the
    /// tenant's idempotency key if there is one, else one request taken
    /// from the tenant's budget. Answers in the order asked.
    pub async fn admit_many(
        &self,
        requests: &[AdmitRequest<'_>],
    ) -> Result<Vec<Admission>, KvError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for r in requests {
            let interval = 1000.0 / r.rate.max(0.001);
            let burst = r.burst.max(1.0);
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(ADMIT_SCRIPT.get_hash())
                .arg(if r.key.is_some() { 2 } else { 1 })
                .arg(self.key(&["rl", r.tenant]));
            if let Some(key) = r.key {
                cmd.arg(self.key(&["idem", r.tenant, key]));
            }
            cmd.arg(interval).arg(burst);
        }
        let answers: Vec<Vec<redis::Value>> = match self.run_pipe(&pipe).await {
            Err(KvError::NoScript) => {
                // Redis restarted or flushed its scripts: load it, once.
                let mut c = self.conn().await?;
                tokio::time::timeout(self.timeout, ADMIT_SCRIPT.load_async(&mut c))
                    .await
                    .map_err(|_| KvError::Unavailable("timed out".into()))??;
                self.run_pipe(&pipe).await?
            }
            other => other?,
        };
        if answers.len() != requests.len() {
            return Err(KvError::Protocol("short answer".into()));
        }
        requests
            .iter()
            .zip(&answers)
            .map(|(r, answer)| admission(answer, r.rate))
            .collect()
    }

    /// Remember responses under tenants' idempotency keys, each for its
    /// `ttl`, in one round trip.
    pub async fn remember_many(&self, entries: &[Remember]) -> Result<(), KvError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for e in entries {
            let value =
                serde_json::to_string(&e.response).map_err(|e| KvError::Protocol(e.to_string()))?;
            pipe.cmd("SET")
                .arg(self.key(&["idem", e.tenant.as_str(), e.key.as_str()]))
                .arg(value)
                .arg("EX")
                .arg(e.ttl.as_secs().max(1))
                .ignore();
        }
        let _: () = self.run_pipe(&pipe).await?;
        Ok(())
    }

    async fn lease_script(
        &self,
        script: &redis::Script,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, KvError> {
        let mut c = self.conn().await?;
        let mut invocation = script.key(self.key(&[key]));
        invocation.arg(holder).arg(ttl.as_millis() as u64);
        let taken: i64 = tokio::time::timeout(self.timeout, invocation.invoke_async(&mut c))
            .await
            .map_err(|_| KvError::Unavailable("timed out".into()))??;
        Ok(taken == 1)
    }

    // --- live stream fan-out (issue 5) ---

    /// `PUBLISH <prefix>:<channel> payload`.
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<(), KvError> {
        let _: i64 = self
            .run(redis::cmd("PUBLISH").arg(self.key(&[channel])).arg(payload))
            .await?;
        Ok(())
    }

    /// Every message published on `<prefix>:<channel>` from now on, for as
    /// long as the receiver is kept. Resubscribes after a lost connection
    /// (messages published meanwhile are missed: callers resume by cursor).
    pub fn subscribe(&self, channel: &str) -> tokio::sync::mpsc::Receiver<String> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let client = self.client.clone();
        let name = self.key(&[channel]);
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut backoff = Duration::from_millis(200);
            while !tx.is_closed() {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(&name).await.is_ok() {
                            backoff = Duration::from_millis(200);
                            let mut messages = pubsub.on_message();
                            loop {
                                tokio::select! {
                                    _ = tx.closed() => return,
                                    m = messages.next() => {
                                        let Some(m) = m else { break };
                                        if let Ok(payload) = m.get_payload::<String>() {
                                            if tx.try_send(payload).is_err() && tx.is_closed() {
                                                return;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, channel = %name, "redis subscribe failed");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        rx
    }

    // --- end live stream fan-out ---

    /// Delete every key under this prefix (tests; resetting an environment).
    pub async fn delete_prefix(&self) -> Result<u64, KvError> {
        let mut c = self.conn().await?;
        let pattern = format!("{}:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("DEL").arg(&keys).query_async(&mut c).await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

#[async_trait::async_trait]
impl herald_actors::lease::Leases for Kv {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, String> {
        self.lease_script(&LEASE_ACQUIRE_SCRIPT, key, holder, ttl)
            .await
            .map_err(|e| e.to_string())
    }

    async fn renew(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, String> {
        self.lease_script(&LEASE_RENEW_SCRIPT, key, holder, ttl)
            .await
            .map_err(|e| e.to_string())
    }

    async fn release(&self, key: &str, holder: &str) {
        let _ = self
            .lease_script(&LEASE_RELEASE_SCRIPT, key, holder, Duration::from_millis(1))
            .await;
    }
}

#[async_trait::async_trait]
impl herald_actors::ledger::SubmissionLedger for Kv {
    /// `MGET`. An entry that cannot be read counts as not sent (at least
    /// once), alone: the other answers stand.
    async fn already_sent(
        &self,
        message_ids: &[String],
    ) -> Result<Vec<Option<Vec<String>>>, String> {
        if message_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for id in message_ids {
            cmd.arg(self.key(&["sent", id]));
        }
        let found: Vec<Option<String>> = self.run(&cmd).await.map_err(|e| e.to_string())?;
        Ok(found
            .into_iter()
            .zip(message_ids)
            .map(|(refs, id)| {
                let refs = refs?;
                serde_json::from_str(&refs)
                    .map_err(|e| {
                        tracing::warn!(message = %id, error = %e, "unreadable ledger entry");
                    })
                    .ok()
            })
            .collect())
    }

    async fn record_sent(&self, message_id: &str, carrier_refs: &[String]) -> Result<(), String> {
        let refs = serde_json::to_string(carrier_refs).map_err(|e| e.to_string())?;
        let _: () = self
            .run(
                redis::cmd("SET")
                    .arg(self.key(&["sent", message_id]))
                    .arg(refs)
                    .arg("EX")
                    .arg(herald_actors::ledger::REMEMBER.as_secs()),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// One round trip for the lot: a pipeline of `SET … EX`.
    async fn record_sent_many(&self, sent: &[(String, Vec<String>)]) -> Result<(), String> {
        let mut pipe = redis::pipe();
        for (id, refs) in sent {
            let refs = serde_json::to_string(refs).map_err(|e| e.to_string())?;
            pipe.cmd("SET")
                .arg(self.key(&["sent", id]))
                .arg(refs)
                .arg("EX")
                .arg(herald_actors::ledger::REMEMBER.as_secs())
                .ignore();
        }
        let _: () = self.run_pipe(&pipe).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}
