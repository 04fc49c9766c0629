//! What the load generator knows about each message it sent: when it was
//! meant to start, when Herald accepted it, and the status events seen for it
//! on the live stream and through webhooks.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;

/// A latency histogram in microseconds (1 µs to 1 h, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One message as the generator saw it.
#[derive(Debug, Default)]
pub struct MsgState {
    pub tenant: usize,
    /// The scheduled start of the request (set once Herald answered 202).
    pub intended: Option<Instant>,
    pub accepted_at: Option<Instant>,
    pub sent_at: Option<Instant>,
    pub delivered_at: Option<Instant>,
    /// First final status seen on the stream.
    pub stream_final: Option<String>,
    /// First final status seen in a webhook.
    pub webhook_final: Option<String>,
    /// When the last of its final notices arrived (stream and, when on,
    /// webhook): the message's completion.
    pub final_at: Option<Instant>,
    /// webhook-id of the first webhook for each event seq.
    pub webhook_ids: HashMap<u64, String>,
}

/// Shared counters and per-message state for one phase of a run.
pub struct Tracker {
    pub msgs: Mutex<HashMap<String, MsgState>>,
    pub attempted: AtomicU64,
    pub accepted: AtomicU64,
    pub failed_requests: AtomicU64,
    pub in_flight: AtomicU64,
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Accept latency against the intended start (coordinated omission corrected).
    pub accept: Mutex<Histogram<u64>>,
    /// The same, for the current second only (progress line and timeline).
    pub accept_window: Mutex<Histogram<u64>>,
    pub stream_events: AtomicU64,
    pub stream_reconnects: AtomicU64,
    pub webhooks: AtomicU64,
    pub webhook_duplicates: AtomicU64,
    pub webhook_redeliveries: AtomicU64,
    pub bad_signatures: AtomicU64,
    pub stream_finals: AtomicU64,
    pub webhook_finals: AtomicU64,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            msgs: Mutex::new(HashMap::new()),
            attempted: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            failed_requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            accept: Mutex::new(histogram()),
            accept_window: Mutex::new(histogram()),
            stream_events: AtomicU64::new(0),
            stream_reconnects: AtomicU64::new(0),
            webhooks: AtomicU64::new(0),
            webhook_duplicates: AtomicU64::new(0),
            webhook_redeliveries: AtomicU64::new(0),
            bad_signatures: AtomicU64::new(0),
            stream_finals: AtomicU64::new(0),
            webhook_finals: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tracker {
    /// Herald answered 202 for the request scheduled at `intended`.
    pub fn accepted(&self, id: String, tenant: usize, intended: Instant, now: Instant) {
        let us = now.saturating_duration_since(intended).as_micros() as u64;
        lock(&self.accept).saturating_record(us.max(1));
        lock(&self.accept_window).saturating_record(us.max(1));
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let mut msgs = lock(&self.msgs);
        let m = msgs.entry(id).or_default();
        m.tenant = tenant;
        m.intended = Some(intended);
        m.accepted_at = Some(now);
    }

    /// A request that got no HTTP answer, counted by kind.
    pub fn transport_error(&self, e: &reqwest::Error) {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "other"
        };
        self.error(format!("transport {kind}"));
    }

    /// A refused or failed request, by `"<status> <code>"` or transport error.
    pub fn error(&self, kind: String) {
        self.failed_requests.fetch_add(1, Ordering::Relaxed);
        *lock(&self.errors).entry(kind).or_insert(0) += 1;
    }

    /// A status event from the live stream.
    pub fn stream_event(&self, message_id: &str, status: &str, fin: bool, at: Instant) {
        self.stream_events.fetch_add(1, Ordering::Relaxed);
        let mut msgs = lock(&self.msgs);
        let m = msgs.entry(message_id.to_owned()).or_default();
        match status {
            "sent" => {
                m.sent_at.get_or_insert(at);
            }
            "delivered" => {
                m.delivered_at.get_or_insert(at);
                // A receipt may overtake `sent` on the stream; it was sent by then.
                m.sent_at.get_or_insert(at);
            }
            _ => {}
        }
        if fin && m.stream_final.is_none() {
            m.final_at = Some(m.final_at.map_or(at, |f| f.max(at)));
            m.stream_final = Some(status.to_owned());
            self.stream_finals.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A webhook with a valid signature.
    pub fn webhook(&self, webhook_id: &str, message_id: &str, seq: u64, status: &str, fin: bool) {
        self.webhooks.fetch_add(1, Ordering::Relaxed);
        let mut msgs = lock(&self.msgs);
        let m = msgs.entry(message_id.to_owned()).or_default();
        match m.webhook_ids.get(&seq) {
            Some(first) if first == webhook_id => {
                self.webhook_redeliveries.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {
                self.webhook_duplicates.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                m.webhook_ids.insert(seq, webhook_id.to_owned());
            }
        }
        if fin && m.webhook_final.is_none() {
            let at = Instant::now();
            m.final_at = Some(m.final_at.map_or(at, |f| f.max(at)));
            m.webhook_final = Some(status.to_owned());
            self.webhook_finals.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Accepted messages still without a final status (stream or webhook,
    /// as asked).
    pub fn unfinished(&self, want_stream: bool, want_webhook: bool) -> u64 {
        lock(&self.msgs)
            .values()
            .filter(|m| m.accepted_at.is_some())
            .filter(|m| {
                (want_stream && m.stream_final.is_none())
                    || (want_webhook && m.webhook_final.is_none())
            })
            .count() as u64
    }

    /// The progress line's figures for the second ending now (`t` seconds
    /// into the run): counts since `last` (updated), the accept latency of
    /// the requests answered in it, and `finals` so far.
    pub fn second(&self, t: u64, last: &mut (u64, u64, u64), finals: u64) -> crate::report::Second {
        let w = self.take_window();
        let now = (
            self.attempted.load(Ordering::Relaxed),
            self.accepted.load(Ordering::Relaxed),
            self.failed_requests.load(Ordering::Relaxed),
        );
        let s = crate::report::Second {
            t,
            attempted: now.0 - last.0,
            accepted: now.1 - last.1,
            errors: now.2 - last.2,
            finals,
            accept_p99_ms: if w.is_empty() {
                0.0
            } else {
                w.value_at_quantile(0.99) as f64 / 1000.0
            },
            accept_max_ms: w.max() as f64 / 1000.0,
            ..crate::report::Second::default()
        };
        *last = now;
        s
    }

    pub fn take_window(&self) -> Histogram<u64> {
        let mut w = lock(&self.accept_window);
        let out = w.clone();
        w.reset();
        out
    }

    pub fn lock_msgs(&self) -> std::sync::MutexGuard<'_, HashMap<String, MsgState>> {
        lock(&self.msgs)
    }

    pub fn lock_errors(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        lock(&self.errors)
    }

    pub fn lock_accept(&self) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        lock(&self.accept)
    }
}
