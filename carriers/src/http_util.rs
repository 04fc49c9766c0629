//! Plumbing shared by the HTTP-based carriers (HTTP SMS, WhatsApp, voice) and
//! their simulators.
//!
//! Client side: an HTTP client with a deadline, [`send`] (one request, its
//! bounded [`Answer`]), the normalisation of transport failures and HTTP
//! statuses into [`CarrierError`], `Retry-After` parsing, a [`HealthTracker`]
//! each connection keeps, and HMAC-SHA256 signing and constant-time
//! verification of callbacks.
//!
//! Simulator side ([`sim`]): fault injection ([`sim::Faults`]), a per-second
//! rate cap, the statistics every simulator records ([`sim::SimStats`],
//! served at `GET /stats`), a bounded delay queue that POSTs status callbacks
//! ([`sim::CallbackQueue`]) and the running server's [`sim::SimHandle`].
//!
//! Nothing here panics on bytes from the network: every parse returns an
//! `Option` or a `Result`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

use crate::connection::{CarrierError, Health};

type HmacSha256 = Hmac<Sha256>;

/// A header sent with every request, e.g. `Authorization: Bearer …`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuthHeader {
    pub name: String,
    pub value: String,
}

/// Build the HTTP client a carrier connection uses for its submissions.
pub fn build_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
}

/// Map a transport-level failure (no HTTP answer) to a [`CarrierError`]:
/// refused or failed connects lose the connection, timeouts and broken bodies
/// are temporary (the carrier may or may not have taken the message).
pub fn transport_error(err: &reqwest::Error) -> CarrierError {
    if err.is_connect() {
        CarrierError::ConnectionLost {
            text: err.to_string(),
        }
    } else if err.is_timeout() {
        CarrierError::Temporary {
            code: "timeout".into(),
            text: err.to_string(),
        }
    } else {
        CarrierError::Temporary {
            code: "transport".into(),
            text: err.to_string(),
        }
    }
}

/// Map an HTTP status the carrier answered with (and that the protocol did not
/// explain better) to a [`CarrierError`]: 429 throttles, 5xx and 408 are
/// temporary, every other status is permanent.
pub fn status_error(
    status: u16,
    retry_after: Option<Duration>,
    code: String,
    text: String,
) -> CarrierError {
    match status {
        429 => CarrierError::Throttled {
            retry_after,
            code,
            text,
        },
        408 | 500..=599 => CarrierError::Temporary { code, text },
        _ => CarrierError::Permanent { code, text },
    }
}

/// Parse a `Retry-After` header: delta-seconds or an HTTP-date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, chrono::Utc::now())
}

/// Parse a `Retry-After` value relative to `now` (testable without a clock).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(86_400.0)));
        }
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// RFC 3339 text, or Unix seconds as a number or string.
pub fn parse_timestamp(v: &serde_json::Value) -> Option<chrono::DateTime<chrono::Utc>> {
    let secs = match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                return Some(t.with_timezone(&chrono::Utc));
            }
            s.trim().parse::<i64>().ok()
        }
        _ => None,
    }?;
    chrono::DateTime::from_timestamp(secs, 0)
}

/// A string, number or bool as text; `None` for null, arrays and objects.
pub fn json_scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Most of a carrier's answer that is read; the rest is left unread (an
/// answer this large is not one of the JSON documents we expect).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Characters of a carrier's answer kept in an error text.
pub const ERROR_TEXT_CHARS: usize = 300;

/// A carrier's answer to one request: status, `Retry-After` and (at most
/// [`MAX_ANSWER_BYTES`] of) the body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Answer {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body cut down for an error text.
    pub fn excerpt(&self) -> String {
        truncate_text(&self.body, ERROR_TEXT_CHARS)
    }

    /// A 2xx without the carrier's id (`what` names where it should have
    /// been). The carrier may have taken the message, so a retry could
    /// deliver it twice: this is permanent, and keeps the answer.
    pub fn missing_ref(&self, what: &str) -> CarrierError {
        CarrierError::Permanent {
            code: "no_carrier_ref".into(),
            text: format!("no {what} in answer: {}", self.excerpt()),
        }
    }
}

/// Send a request and read its answer; a failure before the answer is
/// complete is normalised by [`transport_error`].
pub async fn send(request: reqwest::RequestBuilder) -> Result<Answer, CarrierError> {
    let mut response = request.send().await.map_err(|e| transport_error(&e))?;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&e))? {
        let room = MAX_ANSWER_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// Cut a carrier's answer down to something safe to keep in an error text.
pub fn truncate_text(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    if text.chars().count() <= max {
        text.into_owned()
    } else {
        let mut cut: String = text.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

/// Lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Why a callback's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature header is absent.
    #[error("signature header missing")]
    Missing,
    /// The header is present but not in the expected shape (prefix, hex).
    #[error("signature header malformed")]
    Malformed,
    /// The signature does not match the body.
    #[error("signature does not match")]
    Mismatch,
}

/// Verify a hex HMAC-SHA256 of `body` under `secret`, in constant time.
/// `provided_hex` may be upper or lower case.
pub fn verify_hmac_sha256_hex(
    secret: &[u8],
    body: &[u8],
    provided_hex: &str,
) -> Result<(), SignatureError> {
    let provided = hex::decode(provided_hex.trim()).map_err(|_| SignatureError::Malformed)?;
    if provided.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&provided)
        .map_err(|_| SignatureError::Mismatch)
}

/// Check a signature header holding the hex HMAC-SHA256 of `body` under
/// `secret`, with or without a `sha256=` prefix, in constant time.
pub fn verify_signature_header(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex = header.strip_prefix("sha256=").unwrap_or(header);
    verify_hmac_sha256_hex(secret, body, hex)
}

/// Compare two secrets without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Counters behind [`CarrierConnection::health`](crate::CarrierConnection::health),
/// and the closed flag that makes `close` wait for in-flight submissions.
#[derive(Debug, Default)]
pub struct HealthTracker {
    in_flight: AtomicU32,
    errors: AtomicU64,
    consecutive_errors: AtomicU32,
    unreachable: AtomicBool,
    /// Round trip of the last answered request in microseconds, 0 = none yet.
    last_round_trip_us: AtomicU64,
    closed: AtomicBool,
    idle: Notify,
}

/// One submission in flight. Dropping it without [`InFlight::finish`] (the
/// submitting future was cancelled) only takes it off the in-flight count.
#[derive(Debug)]
pub struct InFlight<'a> {
    tracker: &'a HealthTracker,
    started: Instant,
}

impl HealthTracker {
    /// Register a submission, or refuse it once the connection is closed.
    pub fn begin(&self) -> Result<InFlight<'_>, CarrierError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(CarrierError::ConnectionLost {
                text: "connection closed".into(),
            });
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(InFlight {
            tracker: self,
            started: Instant::now(),
        })
    }

    /// The health as the trait reports it.
    pub fn snapshot(&self) -> Health {
        let rtt = self.last_round_trip_us.load(Ordering::Acquire);
        Health {
            bound: !self.closed.load(Ordering::Acquire)
                && !self.unreachable.load(Ordering::Acquire),
            last_round_trip: (rtt > 0).then(|| Duration::from_micros(rtt)),
            in_flight: self.in_flight.load(Ordering::Acquire),
            errors: self.errors.load(Ordering::Acquire),
            consecutive_errors: self.consecutive_errors.load(Ordering::Acquire),
        }
    }

    /// Run one submission under [`HealthTracker::begin`] and record its
    /// outcome.
    pub async fn track<T>(
        &self,
        submission: impl std::future::Future<Output = Result<T, CarrierError>>,
    ) -> Result<T, CarrierError> {
        let in_flight = self.begin()?;
        let result = submission.await;
        in_flight.finish(&result);
        result
    }

    /// Refuse new submissions and wait until the in-flight ones are answered.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl InFlight<'_> {
    /// Record the outcome. Permanent errors are about the message, not the
    /// carrier, so they do not count against the connection's health.
    pub fn finish<T>(self, result: &Result<T, CarrierError>) {
        let tracker = self.tracker;
        match result {
            Ok(_) | Err(CarrierError::Permanent { .. }) => {
                tracker.consecutive_errors.store(0, Ordering::Release);
                tracker.unreachable.store(false, Ordering::Release);
            }
            Err(err) => {
                tracker.errors.fetch_add(1, Ordering::AcqRel);
                tracker.consecutive_errors.fetch_add(1, Ordering::AcqRel);
                tracker.unreachable.store(
                    matches!(err, CarrierError::ConnectionLost { .. }),
                    Ordering::Release,
                );
            }
        }
        if !matches!(result, Err(CarrierError::ConnectionLost { .. })) {
            let us = self.started.elapsed().as_micros().max(1);
            tracker
                .last_round_trip_us
                .store(u64::try_from(us).unwrap_or(u64::MAX), Ordering::Release);
        }
        // Drop does the in-flight bookkeeping.
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.tracker.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.idle.notify_waiters();
        }
    }
}

pub mod sim {
    //! What the three simulators share: fault injection, a rate cap,
    //! statistics, the callback delay queue and the server handle.
    //!
    //! Requests enter through each simulator's actix-web handlers, which ask
    //! [`SimCore::decide`] what fault (if any) to play, record what they
    //! accepted in [`SimStats`], and schedule status callbacks on the
    //! [`CallbackQueue`]. The queue is one background task holding a heap of
    //! due callbacks and at most [`MAX_CALLBACKS_IN_FLIGHT`] POSTs at a time,
    //! retrying a failed POST a few times with backoff.

    use std::cmp::Reverse;
    use std::collections::{BTreeMap, BinaryHeap};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex, RwLock};
    use std::time::Duration;

    use actix_web::web;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde::{Deserialize, Serialize};
    use tokio::sync::mpsc;
    use tokio::task::JoinSet;
    use tokio::time::Instant;

    /// Callback POSTs a simulator makes at the same time, at most.
    pub const MAX_CALLBACKS_IN_FLIGHT: usize = 32;
    /// Callbacks waiting in the queue, at most; more are dropped and counted.
    pub const CALLBACK_QUEUE_CAPACITY: usize = 100_000;
    /// Attempts per callback before it is given up.
    pub const CALLBACK_ATTEMPTS: u32 = 3;
    /// Per-id records kept in [`SimStats::messages`]; counts go on past it.
    pub const MAX_RECORDED_MESSAGES: usize = 100_000;

    /// Faults a simulator plays. Rates are probabilities in `0.0..=1.0`,
    /// applied per request in this order: rate cap, server error, injected
    /// error. Slowness is independent of the others.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct Faults {
        /// Share of requests answered with `error_status` / `error_code`.
        pub error_rate: f64,
        /// HTTP status of an injected error.
        pub error_status: u16,
        /// Provider error code of an injected error (WhatsApp: `130429`,
        /// `131026`, …; voice: a numeric code; HTTP SMS: any string).
        pub error_code: String,
        /// Requests per second accepted; above it the answer is a throttle
        /// (HTTP 429, or WhatsApp's 130429) with `Retry-After`.
        pub rate_cap_per_sec: Option<u32>,
        /// Share of requests answered with HTTP 503.
        pub server_error_rate: f64,
        /// Share of requests answered only after `slow_ms`.
        pub slow_rate: f64,
        /// How slow a slow answer is, in milliseconds.
        pub slow_ms: u64,
    }

    impl Default for Faults {
        fn default() -> Self {
            Faults {
                error_rate: 0.0,
                error_status: 400,
                error_code: "error".into(),
                rate_cap_per_sec: None,
                server_error_rate: 0.0,
                slow_rate: 0.0,
                slow_ms: 2_000,
            }
        }
    }

    /// What a simulator does with one request.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Decision {
        /// Serve it normally.
        Accept,
        /// Above the rate cap: throttle, retry after this long.
        Throttle { retry_after: Duration },
        /// Answer 503.
        ServerError,
        /// Answer the configured error.
        InjectedError { status: u16, code: String },
    }

    /// What a simulator saw and did, served as JSON at `GET /stats`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct SimStats {
        /// Send requests received (any outcome).
        pub received: u64,
        /// Send requests accepted (an id was returned).
        pub accepted: u64,
        /// Answered with a throttle (rate cap).
        pub throttled: u64,
        /// Answered with the injected error code.
        pub injected_errors: u64,
        /// Answered with 5xx.
        pub server_errors: u64,
        /// Refused as malformed or unauthorised.
        pub rejected: u64,
        /// Answered slowly on purpose.
        pub slowed: u64,
        /// Status callbacks the receiver acknowledged with 2xx.
        pub callbacks_sent: u64,
        /// Status callbacks given up after every attempt.
        pub callbacks_failed: u64,
        /// Status callbacks dropped because the queue was full.
        pub callbacks_dropped: u64,
        /// Accepted messages by the id the simulator returned (the first
        /// [`MAX_RECORDED_MESSAGES`]).
        pub messages: BTreeMap<String, SimRecord>,
    }

    /// One accepted message or call.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct SimRecord {
        pub to: String,
        pub from: String,
        /// `text`, `template`, `say`, `play`, …
        pub kind: String,
        /// The request as received (JSON, or form fields as a JSON object).
        pub request: serde_json::Value,
        /// Statuses whose callbacks were acknowledged, in order.
        pub callbacks: Vec<String>,
    }

    /// State shared by a simulator's handlers and its callback queue.
    #[derive(Debug)]
    pub struct SimCore {
        faults: RwLock<Faults>,
        stats: Mutex<SimStats>,
        rng: Mutex<StdRng>,
        window: Mutex<(std::time::Instant, u32)>,
    }

    impl SimCore {
        /// A core with these faults; `seed` makes the random choices repeatable.
        pub fn new(faults: Faults, seed: Option<u64>) -> Self {
            let rng = match seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_os_rng(),
            };
            SimCore {
                faults: RwLock::new(faults),
                stats: Mutex::new(SimStats::default()),
                rng: Mutex::new(rng),
                window: Mutex::new((std::time::Instant::now(), 0)),
            }
        }

        /// Replace the faults while running.
        pub fn set_faults(&self, faults: Faults) {
            *self.faults.write().unwrap_or_else(|e| e.into_inner()) = faults;
        }

        /// The faults in force.
        pub fn faults(&self) -> Faults {
            self.faults
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }

        /// A copy of the statistics.
        pub fn stats(&self) -> SimStats {
            self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }

        /// A copy of the counters without the per-id records.
        pub fn summary(&self) -> SimStats {
            let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            SimStats {
                messages: BTreeMap::new(),
                ..*stats
            }
        }

        /// Update the statistics.
        pub fn with_stats<R>(&self, f: impl FnOnce(&mut SimStats) -> R) -> R {
            f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()))
        }

        /// Count a request refused as malformed or unauthorised.
        pub fn count_rejected(&self) {
            self.with_stats(|s| {
                s.received += 1;
                s.rejected += 1;
            });
        }

        /// Record an accepted message under the id the simulator returned.
        pub fn record(&self, id: &str, record: SimRecord) {
            self.with_stats(|s| {
                s.accepted += 1;
                if s.messages.len() < MAX_RECORDED_MESSAGES {
                    s.messages.insert(id.to_owned(), record);
                }
            });
        }

        /// A uniform random number in `0.0..1.0`.
        pub fn random(&self) -> f64 {
            self.rng
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .random::<f64>()
        }

        /// Random lower-case hex of `bytes` bytes, for ids.
        pub fn random_hex(&self, bytes: usize) -> String {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let raw: Vec<u8> = (0..bytes).map(|_| rng.random::<u8>()).collect();
            hex::encode(raw)
        }

        /// Pick an index by weight; `None` if every weight is zero.
        pub fn pick_weighted(&self, weights: &[f64]) -> Option<usize> {
            let total: f64 = weights.iter().filter(|w| **w > 0.0).sum();
            if total <= 0.0 || !total.is_finite() {
                return None;
            }
            let mut roll = self.random() * total;
            for (i, w) in weights.iter().enumerate() {
                if *w <= 0.0 {
                    continue;
                }
                if roll < *w {
                    return Some(i);
                }
                roll -= *w;
            }
            weights.iter().rposition(|w| *w > 0.0)
        }

        /// Decide the fate of one send request, count it, and answer only
        /// after the slowness it is to have (if any).
        pub async fn decide(&self) -> Decision {
            let faults = self.faults();
            let slow = faults.slow_rate > 0.0 && self.random() < faults.slow_rate;
            let decision = if let Some(retry_after) = self.over_cap(faults.rate_cap_per_sec) {
                Decision::Throttle { retry_after }
            } else if faults.server_error_rate > 0.0 && self.random() < faults.server_error_rate {
                Decision::ServerError
            } else if faults.error_rate > 0.0 && self.random() < faults.error_rate {
                Decision::InjectedError {
                    status: faults.error_status,
                    code: faults.error_code,
                }
            } else {
                Decision::Accept
            };
            self.with_stats(|s| {
                s.received += 1;
                if slow {
                    s.slowed += 1;
                }
                match decision {
                    Decision::Throttle { .. } => s.throttled += 1,
                    Decision::ServerError => s.server_errors += 1,
                    Decision::InjectedError { .. } => s.injected_errors += 1,
                    Decision::Accept => {}
                }
            });
            if slow {
                tokio::time::sleep(Duration::from_millis(faults.slow_ms)).await;
            }
            decision
        }

        /// Count a request against the one-second window; `Some(wait)` when
        /// it is over the cap.
        fn over_cap(&self, cap: Option<u32>) -> Option<Duration> {
            let cap = cap?;
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            if now.duration_since(window.0) >= Duration::from_secs(1) {
                *window = (now, 0);
            }
            window.1 = window.1.saturating_add(1);
            if window.1 > cap {
                let left = Duration::from_secs(1).saturating_sub(now.duration_since(window.0));
                Some(left.max(Duration::from_millis(1)))
            } else {
                None
            }
        }
    }

    /// A status callback waiting for its time.
    #[derive(Debug, Clone)]
    pub struct CallbackJob {
        /// When to POST it.
        pub due: Instant,
        pub url: String,
        pub content_type: &'static str,
        /// Extra headers (the signature).
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
        /// The simulator's id of the message, to record the status under.
        pub message_id: String,
        /// The status this callback reports, for the record.
        pub status: String,
    }

    struct Queued {
        due: Instant,
        seq: u64,
        /// Attempts made so far.
        attempt: u32,
        job: CallbackJob,
    }

    impl PartialEq for Queued {
        fn eq(&self, other: &Self) -> bool {
            (self.due, self.seq) == (other.due, other.seq)
        }
    }
    impl Eq for Queued {}
    impl PartialOrd for Queued {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Queued {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            (self.due, self.seq).cmp(&(other.due, other.seq))
        }
    }

    /// The sending side of the callback delay queue, cheap to clone into
    /// handlers (which may run on other runtimes' threads).
    #[derive(Debug, Clone)]
    pub struct CallbackQueue {
        tx: mpsc::Sender<CallbackJob>,
        core: Arc<SimCore>,
    }

    impl CallbackQueue {
        /// Start the queue's task on the current tokio runtime.
        pub fn start(core: Arc<SimCore>) -> (CallbackQueue, tokio::task::JoinHandle<()>) {
            let (tx, rx) = mpsc::channel(CALLBACK_QUEUE_CAPACITY);
            let task = tokio::spawn(run_queue(rx, core.clone()));
            (CallbackQueue { tx, core }, task)
        }

        /// Schedule a callback; a full queue drops it (and counts the drop).
        pub fn schedule(&self, job: CallbackJob) {
            if self.tx.try_send(job).is_err() {
                self.core.with_stats(|s| s.callbacks_dropped += 1);
            }
        }
    }

    async fn run_queue(mut rx: mpsc::Receiver<CallbackJob>, core: Arc<SimCore>) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %err, "simulator callback client");
                return;
            }
        };
        let mut heap: BinaryHeap<Reverse<Queued>> = BinaryHeap::new();
        let mut seq: u64 = 0;
        // (job, attempts made, acknowledged)
        let mut in_flight: JoinSet<(CallbackJob, u32, bool)> = JoinSet::new();
        let mut open = true;
        loop {
            if !open && heap.is_empty() && in_flight.is_empty() {
                return;
            }
            let next_due = heap.peek().map(|q| q.0.due);
            let can_send = next_due.is_some() && in_flight.len() < MAX_CALLBACKS_IN_FLIGHT;
            tokio::select! {
                job = rx.recv(), if open => match job {
                    Some(job) => {
                        seq += 1;
                        heap.push(Reverse(Queued { due: job.due, seq, attempt: 0, job }));
                    }
                    None => open = false,
                },
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if can_send => {
                    let now = Instant::now();
                    while in_flight.len() < MAX_CALLBACKS_IN_FLIGHT
                        && heap.peek().is_some_and(|q| q.0.due <= now)
                    {
                        let Some(Reverse(queued)) = heap.pop() else { break };
                        let client = client.clone();
                        in_flight.spawn(post_callback(client, queued.job, queued.attempt + 1));
                    }
                },
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    let Ok((job, attempt, ok)) = done else { continue };
                    if ok {
                        core.with_stats(|s| {
                            s.callbacks_sent += 1;
                            if let Some(record) = s.messages.get_mut(&job.message_id) {
                                record.callbacks.push(job.status.clone());
                            }
                        });
                    } else if attempt < CALLBACK_ATTEMPTS {
                        let due = Instant::now() + Duration::from_millis(250 << attempt);
                        seq += 1;
                        heap.push(Reverse(Queued { due, seq, attempt, job }));
                    } else {
                        core.with_stats(|s| s.callbacks_failed += 1);
                    }
                }
            }
        }
    }

    async fn post_callback(
        client: reqwest::Client,
        job: CallbackJob,
        attempt: u32,
    ) -> (CallbackJob, u32, bool) {
        let mut request = client
            .post(&job.url)
            .header(reqwest::header::CONTENT_TYPE, job.content_type)
            .body(job.body.clone());
        for (name, value) in &job.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let ok = match request.send().await {
            Ok(response) => response.status().is_success(),
            Err(err) => {
                tracing::debug!(url = %job.url, error = %err, "simulator callback failed");
                false
            }
        };
        (job, attempt, ok)
    }

    /// A running simulator. Dropping it does not stop the server: call
    /// [`SimHandle::shutdown`].
    #[derive(Debug)]
    pub struct SimHandle {
        addr: SocketAddr,
        core: Arc<SimCore>,
        server: actix_web::dev::ServerHandle,
        server_task: tokio::task::JoinHandle<std::io::Result<()>>,
        queue_task: tokio::task::JoinHandle<()>,
    }

    impl SimHandle {
        /// Serve a simulator on `bind` with `workers` threads: its own
        /// `routes` (which also register its state), the
        /// [`control_routes`] over `core`, and request bodies of at most
        /// `body_limit` octets. `queue_task` is its [`CallbackQueue`]'s task,
        /// stopped with the server.
        pub fn serve<F>(
            bind: SocketAddr,
            workers: usize,
            body_limit: usize,
            core: Arc<SimCore>,
            queue_task: tokio::task::JoinHandle<()>,
            routes: F,
        ) -> std::io::Result<Self>
        where
            F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
        {
            let core_data = web::Data::from(core.clone());
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new()
                    .app_data(core_data.clone())
                    .app_data(web::PayloadConfig::new(body_limit))
                    .configure(control_routes)
                    .configure(routes.clone())
            })
            .workers(workers.max(1))
            .disable_signals()
            .shutdown_timeout(1)
            .bind(bind)?;
            let addr = server.addrs().first().copied().unwrap_or(bind);
            let server = server.run();
            Ok(SimHandle {
                addr,
                core,
                server: server.handle(),
                server_task: tokio::spawn(server),
                queue_task,
            })
        }

        /// The address the simulator listens on.
        pub fn addr(&self) -> SocketAddr {
            self.addr
        }

        /// `http://<addr>`.
        pub fn base_url(&self) -> String {
            format!("http://{}", self.addr)
        }

        /// A copy of what the simulator saw and did.
        pub fn stats(&self) -> SimStats {
            self.core.stats()
        }

        /// Change the faults while running.
        pub fn set_faults(&self, faults: Faults) {
            self.core.set_faults(faults);
        }

        /// Wait until `n` callbacks were acknowledged or `timeout` passed;
        /// returns whether they were.
        pub async fn wait_callbacks(&self, n: u64, timeout: Duration) -> bool {
            let deadline = Instant::now() + timeout;
            loop {
                if self.core.stats().callbacks_sent >= n {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        /// Stop accepting, finish the requests being served, drop pending
        /// callbacks, and return once the server is down.
        pub async fn shutdown(self) {
            self.server.stop(true).await;
            self.queue_task.abort();
            let _ = self.server_task.await;
            let _ = self.queue_task.await;
        }

        /// Serve until Ctrl-C, then shut down (the CLI's `run`).
        pub async fn run_until_ctrl_c(self) -> std::io::Result<()> {
            tokio::signal::ctrl_c().await?;
            self.shutdown().await;
            Ok(())
        }
    }

    /// The control routes every simulator serves:
    ///
    /// - `GET /stats` — [`SimStats`] (`?summary=true` leaves out the per-id
    ///   records);
    /// - `GET /stats/messages/{id}` — one [`SimRecord`], or 404;
    /// - `GET /faults`, `PUT /faults` (or `POST`) — read or replace the [`Faults`] in
    ///   force (JSON), e.g. to start throttling in the middle of a demo.
    ///
    /// The app must hold a `web::Data<SimCore>`.
    pub fn control_routes(cfg: &mut web::ServiceConfig) {
        cfg.route("/stats", web::get().to(stats_handler))
            .route("/stats/messages/{id}", web::get().to(record_handler))
            .route("/faults", web::get().to(get_faults_handler))
            .route("/faults", web::put().to(put_faults_handler))
            .route("/faults", web::post().to(put_faults_handler));
    }

    /// Query of `GET /stats`.
    #[derive(Debug, Default, Deserialize)]
    pub struct StatsQuery {
        /// Leave out the per-id records.
        #[serde(default)]
        pub summary: bool,
    }

    async fn stats_handler(
        core: web::Data<SimCore>,
        query: web::Query<StatsQuery>,
    ) -> actix_web::HttpResponse {
        let stats = if query.summary {
            core.summary()
        } else {
            core.stats()
        };
        actix_web::HttpResponse::Ok().json(stats)
    }

    async fn record_handler(
        core: web::Data<SimCore>,
        id: web::Path<String>,
    ) -> actix_web::HttpResponse {
        match core.with_stats(|s| s.messages.get(id.as_str()).cloned()) {
            Some(record) => actix_web::HttpResponse::Ok().json(record),
            None => actix_web::HttpResponse::NotFound()
                .json(serde_json::json!({"error": {"code": "not_found"}})),
        }
    }

    async fn get_faults_handler(core: web::Data<SimCore>) -> actix_web::HttpResponse {
        actix_web::HttpResponse::Ok().json(core.faults())
    }

    async fn put_faults_handler(
        core: web::Data<SimCore>,
        faults: web::Json<Faults>,
    ) -> actix_web::HttpResponse {
        core.set_faults(faults.into_inner());
        actix_web::HttpResponse::Ok().json(core.faults())
    }

    /// The digits of a phone number (E.164, the `+` optional) if it has
    /// 6 to 15 of them and nothing else.
    pub fn phone_digits(number: &str) -> Option<&str> {
        let digits = number.strip_prefix('+').unwrap_or(number);
        ((6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
            .then_some(digits)
    }

    /// Whether the request carries `Authorization: Bearer <token>`.
    pub fn has_bearer(req: &actix_web::HttpRequest, token: &str) -> bool {
        req.headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            == Some(token)
    }

    /// Add `Retry-After` (whole seconds, at least one) to a throttle.
    pub fn with_retry_after(
        mut answer: actix_web::HttpResponse,
        wait: Duration,
    ) -> actix_web::HttpResponse {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        answer.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from(secs.max(1)),
        );
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn hmac_round_trip() {
        let sig = hmac_sha256_hex(b"secret", b"body");
        assert_eq!(verify_hmac_sha256_hex(b"secret", b"body", &sig), Ok(()));
        assert_eq!(
            verify_hmac_sha256_hex(b"secret", b"body", &sig.to_uppercase()),
            Ok(())
        );
        assert_eq!(
            verify_hmac_sha256_hex(b"other", b"body", &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_hmac_sha256_hex(b"secret", b"body", "zz"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_hmac_sha256_hex(b"secret", b"body", "abcd"),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn status_mapping() {
        assert!(matches!(
            status_error(429, Some(Duration::from_secs(2)), "c".into(), "t".into()),
            CarrierError::Throttled {
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            status_error(503, None, "c".into(), "t".into()),
            CarrierError::Temporary { .. }
        ));
        assert!(matches!(
            status_error(404, None, "c".into(), "t".into()),
            CarrierError::Permanent { .. }
        ));
    }

    #[test]
    fn weighted_pick_respects_zero_weights() {
        let core = sim::SimCore::new(sim::Faults::default(), Some(7));
        for _ in 0..100 {
            assert_eq!(core.pick_weighted(&[0.0, 1.0, 0.0]), Some(1));
        }
        assert_eq!(core.pick_weighted(&[0.0, 0.0]), None);
    }

    #[tokio::test]
    async fn close_waits_for_in_flight() {
        let tracker = std::sync::Arc::new(HealthTracker::default());
        let guard_tracker = tracker.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let holder = tokio::spawn(async move {
            let guard = guard_tracker.begin().unwrap();
            let _ = rx.await;
            guard.finish::<()>(&Ok(()));
        });
        tokio::task::yield_now().await;
        while tracker.snapshot().in_flight == 0 {
            tokio::task::yield_now().await;
        }
        let closer = {
            let tracker = tracker.clone();
            tokio::spawn(async move { tracker.close().await })
        };
        tokio::task::yield_now().await;
        assert!(!closer.is_finished());
        assert!(tracker.begin().is_err());
        tx.send(()).unwrap();
        holder.await.unwrap();
        closer.await.unwrap();
        assert_eq!(tracker.snapshot().in_flight, 0);
    }
}
