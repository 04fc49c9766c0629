//! An SMPP 3.4 SMSC simulator: a real server over TCP for tests, load tests
//! and demos (`herald sim smsc`).
//!
//! [`SmscSim::start`] binds a TCP listener (and optionally a tiny HTTP
//! control endpoint) and returns an [`SmscHandle`]. ESMEs bind against the
//! configured credentials and submit; the simulator answers each submit_sm
//! after [`Behaviour::latency_ms`], allocates a message id, and, when a
//! receipt was requested, sends a deliver_sm receipt (Appendix B text plus
//! receipted_message_id / message_state TLVs) after
//! [`Behaviour::receipt_delay_ms`] with an outcome drawn from the configured
//! mix, optionally *before* the submit_sm_resp (early receipt).
//!
//! Everything the ESME sends is counted ([`SmscStats`]) and, unless
//! disabled, recorded ([`ReceivedSm`]: message id, destination, payload,
//! concatenation reference) so tests can assert exact counts, duplicates and
//! order. Receipts still scheduled, or sent and not answered, when a
//! connection closes are stored and delivered on the next receiver-capable
//! bind of the same system_id, as a real SMSC does. Behaviour (latency, throughput cap, window, faults, receipt mix)
//! can be changed at runtime through the handle or `POST /faults`; counters
//! are served at `GET /stats`.
//!
//! Performance: one task per connection owns both halves of its socket. It
//! decodes every PDU a read returned, encodes all answers into one write
//! buffer and writes once per read (batching), and keeps delayed answers and
//! receipts in one per-connection delay queue (a binary heap with a single
//! timer), not a task or timer per message.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::pdu::{
    self, esm, status, BindResp, Body, MessageIdResp, Pdu, PduError, ShortMessage, Tlv,
};
use super::receipt::stat_word;
use crate::encoding::{parse_udh, Concat, WireCoding};

/// How message ids are written (submit_sm_resp, receipt text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdStyle {
    /// Hexadecimal (else decimal).
    pub hex: bool,
    pub uppercase: bool,
    /// Zero-padded to this many digits.
    pub width: usize,
}

impl Default for IdStyle {
    fn default() -> Self {
        IdStyle {
            hex: true,
            uppercase: true,
            width: 10,
        }
    }
}

impl IdStyle {
    pub fn format(&self, id: u64) -> String {
        let w = self.width;
        match (self.hex, self.uppercase) {
            (true, true) => format!("{id:0w$X}"),
            (true, false) => format!("{id:0w$x}"),
            (false, _) => format!("{id:0w$}"),
        }
    }
}

/// Fixed at start (except `behaviour`, the initial value of what can be
/// changed at runtime). Every field has a default; as JSON/TOML, e.g.:
///
/// ```json
/// {"smpp_addr": "0.0.0.0:2775", "http_addr": "0.0.0.0:8775",
///  "credentials": [["herald", "secret"]],
///  "resp_id": {"hex": true, "uppercase": true, "width": 10},
///  "behaviour": {"latency_ms": 5, "max_tps": 500, "receipt_delay_ms": 1000,
///                "outcomes": {"delivered": 90, "undelivered": 5,
///                             "expired": 3, "rejected": 2}}}
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SmscConfig {
    /// SMPP listener; port 0 picks a free port.
    pub smpp_addr: SocketAddr,
    /// HTTP control endpoint (`GET /stats`, `GET|POST /faults`,
    /// `GET /received`, `POST /reset`); `None` for none.
    pub http_addr: Option<SocketAddr>,
    /// Accepted (system_id, password) pairs; empty accepts any.
    pub credentials: Vec<(String, String)>,
    /// system_id in bind responses.
    pub system_id: String,
    /// Id format in submit_sm_resp and in receipted_message_id.
    pub resp_id: IdStyle,
    /// Id format in the receipt text's `id:` field.
    pub receipt_text_id: IdStyle,
    /// Put the Appendix B text in receipts.
    pub receipt_text: bool,
    /// Put receipted_message_id / message_state TLVs in receipts.
    pub receipt_tlvs: bool,
    /// Record every submit_sm for [`SmscHandle::received`] (turn off for
    /// long load runs).
    pub record: bool,
    /// First message id allocated.
    pub first_message_id: u64,
    /// Initial behaviour (changeable at runtime).
    pub behaviour: Behaviour,
}

impl Default for SmscConfig {
    fn default() -> Self {
        SmscConfig {
            smpp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: None,
            credentials: Vec::new(),
            system_id: "herald-sim".into(),
            resp_id: IdStyle::default(),
            receipt_text_id: IdStyle::default(),
            receipt_text: true,
            receipt_tlvs: true,
            record: true,
            first_message_id: 1,
            behaviour: Behaviour::default(),
        }
    }
}

/// Outcome weights of receipts (need not sum to anything in particular).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutcomeMix {
    pub delivered: u32,
    pub undelivered: u32,
    pub expired: u32,
    pub rejected: u32,
}

impl Default for OutcomeMix {
    fn default() -> Self {
        OutcomeMix {
            delivered: 1,
            undelivered: 0,
            expired: 0,
            rejected: 0,
        }
    }
}

/// What the simulator does; every field can be changed at runtime
/// ([`SmscHandle::set_behaviour`], `POST /faults` with any subset of the
/// fields as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// Delay before each submit_sm_resp.
    pub latency_ms: u64,
    /// submit_sm per second over all connections; past it ESME_RTHROTTLED.
    pub max_tps: Option<u32>,
    /// Unanswered submit_sm per connection; past it ESME_RMSGQFUL.
    pub window: Option<u32>,
    /// Fraction (0..=1) of submit_sm answered with `error_status`.
    pub error_rate: f64,
    pub error_status: u32,
    /// Answer binds with ESME_RBINDFAIL.
    pub refuse_bind: bool,
    /// Close a connection once it has received this many PDUs.
    pub drop_after_pdus: Option<u64>,
    /// Read but never answer anything (scheduled answers are held).
    pub stall: bool,
    /// Send receipts when registered_delivery asks for them.
    pub receipts: bool,
    pub receipt_delay_ms: u64,
    pub outcomes: OutcomeMix,
    /// Send the receipt before the submit_sm_resp.
    pub early_receipt: bool,
    /// Send enquire_link to bound ESMEs this often.
    pub enquire_link_ms: Option<u64>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            latency_ms: 0,
            max_tps: None,
            window: None,
            error_rate: 0.0,
            error_status: status::ESME_RSYSERR,
            refuse_bind: false,
            drop_after_pdus: None,
            stall: false,
            receipts: true,
            receipt_delay_ms: 0,
            outcomes: OutcomeMix::default(),
            early_receipt: false,
            enquire_link_ms: None,
        }
    }
}

/// Counters since start (or the last reset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmscStats {
    pub connections_total: u64,
    pub connections_open: u64,
    pub binds_ok: u64,
    pub binds_refused: u64,
    pub submit_sm: u64,
    pub submit_sm_ok: u64,
    pub submit_sm_error: u64,
    pub throttled: u64,
    pub window_exceeded: u64,
    /// Highest number of unanswered submit_sm seen on one connection.
    pub max_in_flight: u64,
    pub deliver_sm_sent: u64,
    pub deliver_sm_resp: u64,
    pub enquire_link: u64,
    pub enquire_link_resp: u64,
    pub unbind: u64,
    pub generic_nack_sent: u64,
    pub dropped_connections: u64,
    pub stalled_pdus: u64,
}

/// One submit_sm as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedSm {
    /// Connection number (1, 2 …).
    pub connection: u64,
    pub system_id: String,
    pub sequence: u32,
    /// The id answered (empty if answered with an error).
    pub message_id: String,
    pub source_addr: String,
    pub destination_addr: String,
    pub data_coding: u8,
    pub esm_class: u8,
    pub registered_delivery: u8,
    /// The payload after any UDH, decoded per data_coding.
    pub text: String,
    #[serde(with = "hex_bytes")]
    pub short_message: Bytes,
    /// Concatenation (UDH or SAR).
    pub concat: Option<(u16, u8, u8)>,
    pub status: u32,
}

mod hex_bytes {
    use bytes::Bytes;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map(Bytes::from).map_err(D::Error::custom)
    }
}

#[derive(Default)]
struct Counters {
    connections_total: AtomicU64,
    connections_open: AtomicU64,
    binds_ok: AtomicU64,
    binds_refused: AtomicU64,
    submit_sm: AtomicU64,
    submit_sm_ok: AtomicU64,
    submit_sm_error: AtomicU64,
    throttled: AtomicU64,
    window_exceeded: AtomicU64,
    max_in_flight: AtomicU64,
    deliver_sm_sent: AtomicU64,
    deliver_sm_resp: AtomicU64,
    enquire_link: AtomicU64,
    enquire_link_resp: AtomicU64,
    unbind: AtomicU64,
    generic_nack_sent: AtomicU64,
    dropped_connections: AtomicU64,
    stalled_pdus: AtomicU64,
}

macro_rules! counters {
    ($self:ident, $($f:ident),*) => {
        SmscStats { $($f: $self.$f.load(Ordering::Relaxed)),* }
    };
}

impl Counters {
    fn snapshot(&self) -> SmscStats {
        counters!(
            self,
            connections_total,
            connections_open,
            binds_ok,
            binds_refused,
            submit_sm,
            submit_sm_ok,
            submit_sm_error,
            throttled,
            window_exceeded,
            max_in_flight,
            deliver_sm_sent,
            deliver_sm_resp,
            enquire_link,
            enquire_link_resp,
            unbind,
            generic_nack_sent,
            dropped_connections,
            stalled_pdus
        )
    }

    fn reset(&self) {
        // connections_open is a gauge: kept.
        for c in [
            &self.connections_total,
            &self.binds_ok,
            &self.binds_refused,
            &self.submit_sm,
            &self.submit_sm_ok,
            &self.submit_sm_error,
            &self.throttled,
            &self.window_exceeded,
            &self.max_in_flight,
            &self.deliver_sm_sent,
            &self.deliver_sm_resp,
            &self.enquire_link,
            &self.enquire_link_resp,
            &self.unbind,
            &self.generic_nack_sent,
            &self.dropped_connections,
            &self.stalled_pdus,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Token bucket for the throughput cap (burst of a tenth of a second).
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A receiver-capable connection: (connection number, its receipt inbox).
type Inbox = (u64, mpsc::UnboundedSender<Pdu>);

struct Shared {
    config: SmscConfig,
    behaviour: Mutex<Arc<Behaviour>>,
    counters: Counters,
    received: Mutex<Vec<ReceivedSm>>,
    next_id: AtomicU64,
    next_conn: AtomicU64,
    bucket: Mutex<Bucket>,
    /// Receiver-capable binds by system_id, for receipts of messages
    /// submitted on transmitter binds.
    receivers: Mutex<HashMap<String, Vec<Inbox>>>,
    /// Receipts not yet acknowledged when their connection closed, by
    /// system_id: delivered on the next receiver-capable bind, as an SMSC
    /// stores and forwards them.
    stored: Mutex<HashMap<String, Vec<Pdu>>>,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn behaviour(&self) -> Arc<Behaviour> {
        lock(&self.behaviour).clone()
    }

    fn take_token(&self, max_tps: u32) -> bool {
        let mut b = lock(&self.bucket);
        let now = Instant::now();
        let burst = (max_tps as f64 / 10.0).max(1.0);
        let refill = now.duration_since(b.at).as_secs_f64() * max_tps as f64;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The simulator's entry point.
pub struct SmscSim;

impl SmscSim {
    /// Bind the listeners and start serving.
    pub async fn start(config: SmscConfig) -> std::io::Result<SmscHandle> {
        let listener = TcpListener::bind(config.smpp_addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Arc::new(config.behaviour.clone())),
            counters: Counters::default(),
            received: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(config.first_message_id),
            next_conn: AtomicU64::new(1),
            bucket: Mutex::new(Bucket {
                // Starts full (clamped to the burst on first use).
                tokens: f64::INFINITY,
                at: Instant::now(),
            }),
            receivers: Mutex::new(HashMap::new()),
            stored: Mutex::new(HashMap::new()),
            shutdown,
            config,
        });
        let control = match shared.config.http_addr {
            Some(a) => Some(serve_control(a, shared.clone())?),
            None => None,
        };
        let http_addr = control.as_ref().map(|(a, _)| *a);
        let control = control.map(|(_, server)| {
            let handle = server.handle();
            tokio::spawn(server);
            handle
        });
        let tasks = vec![tokio::spawn(accept_loop(listener, shared.clone()))];
        tracing::info!(target: "herald::sim::smsc", %addr, ?http_addr, "SMSC simulator listening");
        Ok(SmscHandle {
            addr,
            http_addr,
            shared,
            tasks,
            control,
        })
    }

    /// Start and serve until Ctrl-C (for `herald sim smsc`).
    pub async fn run_forever(config: SmscConfig) -> std::io::Result<()> {
        let handle = SmscSim::start(config).await?;
        println!(
            "SMSC simulator: SMPP on {}, HTTP on {}",
            handle.addr(),
            handle
                .http_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into())
        );
        tokio::signal::ctrl_c().await?;
        handle.shutdown().await;
        Ok(())
    }
}

/// A running simulator. Dropping it does not stop it; call
/// [`SmscHandle::shutdown`].
pub struct SmscHandle {
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    /// The HTTP control server, if any.
    control: Option<actix_web::dev::ServerHandle>,
}

impl SmscHandle {
    /// Where ESMEs connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the HTTP control endpoint listens.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn stats(&self) -> SmscStats {
        self.shared.counters.snapshot()
    }

    /// A function reading the counters, for a task that outlives a borrow
    /// of the handle (a watcher sampling while a test runs).
    pub fn stats_fn(&self) -> impl Fn() -> SmscStats + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || shared.counters.snapshot()
    }

    pub fn behaviour(&self) -> Behaviour {
        (*self.shared.behaviour()).clone()
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        *lock(&self.shared.behaviour) = Arc::new(b);
    }

    /// Change some of the behaviour: `f` edits a copy that then replaces it.
    pub fn update_behaviour(&self, f: impl FnOnce(&mut Behaviour)) {
        let mut guard = lock(&self.shared.behaviour);
        let mut b = (**guard).clone();
        f(&mut b);
        *guard = Arc::new(b);
    }

    /// Every submit_sm received so far, in arrival order.
    pub fn received(&self) -> Vec<ReceivedSm> {
        lock(&self.shared.received).clone()
    }

    /// Forget recorded messages and zero the counters.
    pub fn reset(&self) {
        lock(&self.shared.received).clear();
        self.shared.counters.reset();
    }

    /// Close every connection (without unbind: as a crash would) and stop
    /// listening.
    pub async fn shutdown(self) {
        self.shared.shutdown.send_replace(true);
        if let Some(control) = self.control {
            control.stop(false).await;
        }
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|&d| d) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                inc(&shared.counters.connections_total);
                shared
                    .counters
                    .connections_open
                    .fetch_add(1, Ordering::Relaxed);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut conn = Conn::new(id, shared.clone());
                    conn.serve(stream).await;
                    shared
                        .counters
                        .connections_open
                        .fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                tracing::warn!(target: "herald::sim::smsc", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Something due later on a connection.
enum Due {
    Resp {
        sequence: u32,
        status: u32,
        id: u64,
    },
    Receipt(Box<PendingReceipt>),
    /// A receipt the ESME answered with an error: offer it again.
    Resend(Box<Pdu>),
    EnquireLink,
}

struct PendingReceipt {
    id: u64,
    state: u8,
    /// Receipt goes from the original destination to the original source.
    source_addr: String,
    destination_addr: String,
    submitted_at: chrono::DateTime<chrono::Utc>,
    text: String,
}

struct Timed {
    at: Instant,
    order: u64,
    due: Due,
}

impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(o.at, o.order))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    No,
    Transmitter,
    Receiver,
    Transceiver,
}

struct Conn {
    id: u64,
    shared: Arc<Shared>,
    bound: Bound,
    system_id: String,
    wbuf: BytesMut,
    timers: BinaryHeap<Reverse<Timed>>,
    order: u64,
    in_flight: u64,
    pdus: u64,
    out_seq: u32,
    /// Fault and outcome draws; seeded by the connection number.
    rng: SmallRng,
    drop_now: bool,
    inbox_tx: mpsc::UnboundedSender<Pdu>,
    inbox_rx: Option<mpsc::UnboundedReceiver<Pdu>>,
    /// Receipts sent and not yet answered with deliver_sm_resp, by sequence.
    unacked: HashMap<u32, Pdu>,
}

impl Conn {
    fn new(id: u64, shared: Arc<Shared>) -> Self {
        let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
        Conn {
            id,
            shared,
            bound: Bound::No,
            system_id: String::new(),
            wbuf: BytesMut::with_capacity(64 * 1024),
            timers: BinaryHeap::new(),
            order: 0,
            in_flight: 0,
            pdus: 0,
            out_seq: 0,
            rng: SmallRng::seed_from_u64(id),
            drop_now: false,
            inbox_tx,
            inbox_rx: Some(inbox_rx),
            unacked: HashMap::new(),
        }
    }

    /// The connection is gone: keep its receipts (handed over by other
    /// binds and not yet sent, scheduled, or sent and unanswered) for the
    /// next bind of the same system_id.
    fn store_receipts(&mut self, mut keep: Vec<Pdu>) {
        if self.system_id.is_empty() {
            return;
        }
        keep.extend(self.unacked.drain().map(|(_, p)| p));
        let timers = std::mem::take(&mut self.timers);
        for Reverse(t) in timers.into_sorted_vec().into_iter().rev() {
            match t.due {
                Due::Receipt(r) => keep.push(self.receipt_pdu(*r)),
                Due::Resend(p) => keep.push(*p),
                _ => {}
            }
        }
        if !keep.is_empty() {
            lock(&self.shared.stored)
                .entry(self.system_id.clone())
                .or_default()
                .extend(keep);
        }
    }

    /// Deliver receipts stored for this system_id (just bound).
    fn forward_stored(&mut self) {
        let stored = lock(&self.shared.stored).remove(&self.system_id);
        for mut p in stored.unwrap_or_default() {
            p.sequence = self.next_seq();
            self.send_deliver(p);
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.out_seq = self.out_seq % 0x7FFF_FFFF + 1;
        self.out_seq
    }

    fn schedule(&mut self, at: Instant, due: Due) {
        self.order += 1;
        self.timers.push(Reverse(Timed {
            at,
            order: self.order,
            due,
        }));
    }

    fn unregister(&self) {
        if matches!(self.bound, Bound::Receiver | Bound::Transceiver) {
            let mut r = lock(&self.shared.receivers);
            if let Some(v) = r.get_mut(&self.system_id) {
                v.retain(|(id, _)| *id != self.id);
            }
        }
    }

    async fn serve(&mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        let mut shutdown = self.shared.shutdown.subscribe();
        let Some(mut inbox) = self.inbox_rx.take() else {
            return;
        };
        loop {
            let behaviour = self.shared.behaviour();
            let next = if behaviour.stall {
                // Hold everything; look again shortly.
                Some(Instant::now() + Duration::from_millis(20))
            } else {
                self.timers.peek().map(|t| t.0.at)
            };
            tokio::select! {
                r = rd.read_buf(&mut rbuf) => match r {
                    Ok(0) | Err(_) => break,
                    // The behaviour may have changed while we waited.
                    Ok(_) => self.on_read(&mut rbuf, &self.shared.behaviour()),
                },
                _ = sleep_until_opt(next) => {
                    let behaviour = self.shared.behaviour();
                    if !behaviour.stall {
                        self.fire_due(&behaviour);
                    }
                }
                Some(p) = inbox.recv() => {
                    self.send_deliver(p);
                    while let Ok(p) = inbox.try_recv() {
                        self.send_deliver(p);
                    }
                }
                _ = shutdown.wait_for(|&d| d) => break,
            }
            if !self.wbuf.is_empty() {
                if wr.write_all(&self.wbuf).await.is_err() {
                    break;
                }
                self.wbuf.clear();
            }
            if self.drop_now {
                inc(&self.shared.counters.dropped_connections);
                break;
            }
        }
        // Stop being a receipt target, then keep what other binds already
        // handed over; a bind that hands one over after this finds the
        // inbox closed and stores it itself.
        self.unregister();
        inbox.close();
        let handed_over = std::iter::from_fn(|| inbox.try_recv().ok()).collect();
        self.store_receipts(handed_over);
    }

    fn on_read(&mut self, rbuf: &mut BytesMut, b: &Behaviour) {
        loop {
            match pdu::try_decode(rbuf) {
                Ok(Some(p)) => {
                    self.pdus += 1;
                    if b.stall {
                        inc(&self.shared.counters.stalled_pdus);
                    } else {
                        self.on_pdu(p, b);
                    }
                    if b.drop_after_pdus.is_some_and(|n| self.pdus >= n) {
                        self.drop_now = true;
                        self.wbuf.clear();
                        return;
                    }
                }
                Ok(None) => return,
                Err(PduError::Body {
                    command_id,
                    sequence,
                    ..
                }) => {
                    if command_id & 0x8000_0000 == 0 {
                        self.nack(sequence, status::ESME_RINVCMDLEN);
                    }
                }
                Err(PduError::Length(_)) => {
                    self.drop_now = true;
                    return;
                }
            }
        }
    }

    fn nack(&mut self, sequence: u32, st: u32) {
        inc(&self.shared.counters.generic_nack_sent);
        Pdu::with_status(sequence, st, Body::GenericNack).encode(&mut self.wbuf);
    }

    fn on_pdu(&mut self, p: Pdu, b: &Behaviour) {
        let seq = p.sequence;
        let command_id = p.body.command_id();
        let shared = self.shared.clone();
        let c = &shared.counters;
        match p.body {
            Body::BindTransmitter(bind)
            | Body::BindReceiver(bind)
            | Body::BindTransceiver(bind)
                if self.bound == Bound::No =>
            {
                let creds = &shared.config.credentials;
                let ok = creds.is_empty()
                    || creds
                        .iter()
                        .any(|(u, pw)| *u == bind.system_id && *pw == bind.password);
                let st = if b.refuse_bind || !ok {
                    status::ESME_RBINDFAIL
                } else {
                    status::ESME_ROK
                };
                let resp = BindResp {
                    system_id: shared.config.system_id.clone(),
                    tlvs: vec![Tlv::ScInterfaceVersion(pdu::INTERFACE_VERSION_34)],
                };
                let (mode, body) = match command_id {
                    pdu::command::BIND_TRANSMITTER => {
                        (Bound::Transmitter, Body::BindTransmitterResp(resp))
                    }
                    pdu::command::BIND_RECEIVER => (Bound::Receiver, Body::BindReceiverResp(resp)),
                    _ => (Bound::Transceiver, Body::BindTransceiverResp(resp)),
                };
                Pdu::with_status(seq, st, body).encode(&mut self.wbuf);
                if st != status::ESME_ROK {
                    inc(&c.binds_refused);
                    return;
                }
                inc(&c.binds_ok);
                self.bound = mode;
                self.system_id = bind.system_id;
                if matches!(mode, Bound::Receiver | Bound::Transceiver) {
                    lock(&shared.receivers)
                        .entry(self.system_id.clone())
                        .or_default()
                        .push((self.id, self.inbox_tx.clone()));
                    self.forward_stored();
                }
                if let Some(ms) = b.enquire_link_ms {
                    self.schedule(after_ms(Instant::now(), ms), Due::EnquireLink);
                }
            }
            Body::BindTransmitter(_) | Body::BindReceiver(_) | Body::BindTransceiver(_) => {
                let resp = BindResp::default();
                let body = match command_id {
                    pdu::command::BIND_TRANSMITTER => Body::BindTransmitterResp(resp),
                    pdu::command::BIND_RECEIVER => Body::BindReceiverResp(resp),
                    _ => Body::BindTransceiverResp(resp),
                };
                Pdu::with_status(seq, status::ESME_RALYBND, body).encode(&mut self.wbuf);
            }
            Body::SubmitSm(sm) => self.on_submit(seq, *sm, b),
            Body::EnquireLink => {
                inc(&c.enquire_link);
                Pdu::new(seq, Body::EnquireLinkResp).encode(&mut self.wbuf);
            }
            Body::EnquireLinkResp => inc(&c.enquire_link_resp),
            Body::DeliverSmResp(_) => {
                inc(&c.deliver_sm_resp);
                if let Some(sent) = self.unacked.remove(&seq) {
                    if p.status != status::ESME_ROK {
                        // Not taken: offer it again in a second.
                        self.schedule(
                            Instant::now() + Duration::from_secs(1),
                            Due::Resend(Box::new(sent)),
                        );
                    }
                }
            }
            Body::Unbind => {
                inc(&c.unbind);
                Pdu::new(seq, Body::UnbindResp).encode(&mut self.wbuf);
                self.unregister();
                self.bound = Bound::No;
            }
            Body::UnbindResp | Body::GenericNack => {}
            ref other if other.is_response() => {}
            _ => self.nack(seq, status::ESME_RINVCMDID),
        }
    }

    fn on_submit(&mut self, seq: u32, sm: ShortMessage, b: &Behaviour) {
        let shared = self.shared.clone();
        let c = &shared.counters;
        inc(&c.submit_sm);
        if !matches!(self.bound, Bound::Transmitter | Bound::Transceiver) {
            self.respond(seq, status::ESME_RINVBNDSTS, None);
            return;
        }
        self.in_flight += 1;
        c.max_in_flight.fetch_max(self.in_flight, Ordering::Relaxed);
        let mut st = status::ESME_ROK;
        if b.window.is_some_and(|w| self.in_flight > w as u64) {
            inc(&c.window_exceeded);
            st = status::ESME_RMSGQFUL;
        } else if b.max_tps.is_some_and(|tps| !shared.take_token(tps)) {
            inc(&c.throttled);
            st = status::ESME_RTHROTTLED;
        } else if b.error_rate > 0.0 && self.rng.random::<f64>() < b.error_rate {
            st = b.error_status;
        }
        let id = if st == status::ESME_ROK {
            inc(&c.submit_sm_ok);
            shared.next_id.fetch_add(1, Ordering::Relaxed)
        } else {
            inc(&c.submit_sm_error);
            0
        };
        if shared.config.record {
            self.record(seq, &sm, st, id);
        }
        let now = Instant::now();
        let wants_receipt = sm.registered_delivery & 0x03 != 0;
        if st == status::ESME_ROK && b.receipts && wants_receipt {
            let text = WireCoding::from_data_coding(sm.data_coding)
                .decode(payload_after_udh(&sm))
                .chars()
                .take(20)
                .collect();
            let receipt = Box::new(PendingReceipt {
                id,
                state: self.pick_outcome(&b.outcomes),
                source_addr: sm.destination_addr,
                destination_addr: sm.source_addr,
                submitted_at: chrono::Utc::now(),
                text,
            });
            if b.early_receipt {
                self.deliver_receipt(*receipt);
            } else {
                let delay = b.latency_ms.saturating_add(b.receipt_delay_ms);
                self.schedule(after_ms(now, delay), Due::Receipt(receipt));
            }
        }
        // Refusals (window, throttle) are immediate; answers wait the latency.
        if b.latency_ms == 0 || st == status::ESME_RMSGQFUL || st == status::ESME_RTHROTTLED {
            self.respond(seq, st, Some(id));
        } else {
            self.schedule(
                after_ms(now, b.latency_ms),
                Due::Resp {
                    sequence: seq,
                    status: st,
                    id,
                },
            );
        }
    }

    fn respond(&mut self, sequence: u32, st: u32, id: Option<u64>) {
        if id.is_some() {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let message_id = match id {
            Some(id) if st == status::ESME_ROK => self.shared.config.resp_id.format(id),
            _ => String::new(),
        };
        Pdu::with_status(
            sequence,
            st,
            Body::SubmitSmResp(MessageIdResp { message_id }),
        )
        .encode(&mut self.wbuf);
    }

    fn record(&self, seq: u32, sm: &ShortMessage, st: u32, id: u64) {
        let concat = if sm.esm_class & esm::UDHI != 0 {
            parse_udh(&sm.short_message).and_then(|(c, _)| c).map(
                |Concat {
                     reference,
                     total,
                     seq,
                 }| (reference, total, seq),
            )
        } else {
            sm.sar()
        };
        let text = WireCoding::from_data_coding(sm.data_coding).decode(payload_after_udh(sm));
        let r = ReceivedSm {
            connection: self.id,
            system_id: self.system_id.clone(),
            sequence: seq,
            message_id: if st == status::ESME_ROK {
                self.shared.config.resp_id.format(id)
            } else {
                String::new()
            },
            source_addr: sm.source_addr.clone(),
            destination_addr: sm.destination_addr.clone(),
            data_coding: sm.data_coding,
            esm_class: sm.esm_class,
            registered_delivery: sm.registered_delivery,
            text,
            short_message: sm.short_message.clone(),
            concat,
            status: st,
        };
        lock(&self.shared.received).push(r);
    }

    fn pick_outcome(&mut self, mix: &OutcomeMix) -> u8 {
        let weighted = [
            (mix.delivered, 2u8),
            (mix.undelivered, 5),
            (mix.expired, 3),
            (mix.rejected, 8),
        ];
        // Summed wide: the weights come over the control API.
        let total: u64 = weighted.iter().map(|&(w, _)| u64::from(w)).sum();
        if total == 0 {
            return 2;
        }
        let mut x = self.rng.random_range(0..total);
        for (w, state) in weighted {
            if x < u64::from(w) {
                return state;
            }
            x -= u64::from(w);
        }
        2
    }

    fn fire_due(&mut self, b: &Behaviour) {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|t| t.0.at <= now) {
            let Some(Reverse(t)) = self.timers.pop() else {
                break;
            };
            match t.due {
                Due::Resp {
                    sequence,
                    status,
                    id,
                } => self.respond(sequence, status, Some(id)),
                Due::Receipt(r) => self.deliver_receipt(*r),
                Due::Resend(mut p) => {
                    p.sequence = self.next_seq();
                    self.send_deliver(*p);
                }
                Due::EnquireLink => {
                    if self.bound != Bound::No {
                        let seq = self.next_seq();
                        Pdu::new(seq, Body::EnquireLink).encode(&mut self.wbuf);
                        if let Some(ms) = b.enquire_link_ms {
                            self.schedule(after_ms(now, ms), Due::EnquireLink);
                        }
                    }
                }
            }
        }
    }

    fn deliver_receipt(&mut self, r: PendingReceipt) {
        let pdu = self.receipt_pdu(r);
        if matches!(self.bound, Bound::Receiver | Bound::Transceiver) {
            self.send_deliver(pdu);
        } else {
            let target = lock(&self.shared.receivers)
                .get(&self.system_id)
                .and_then(|v| v.first().map(|(_, tx)| tx.clone()));
            let pdu = match target {
                Some(tx) => match tx.send(pdu) {
                    Ok(()) => return,
                    // That bind is closing: store it like the others.
                    Err(mpsc::error::SendError(pdu)) => pdu,
                },
                None => pdu,
            };
            lock(&self.shared.stored)
                .entry(self.system_id.clone())
                .or_default()
                .push(pdu);
        }
    }

    fn receipt_pdu(&mut self, r: PendingReceipt) -> Pdu {
        let cfg = &self.shared.config;
        let mut sm = ShortMessage {
            source_addr_ton: 1,
            source_addr_npi: 1,
            source_addr: r.source_addr,
            dest_addr_ton: 1,
            dest_addr_npi: 1,
            destination_addr: r.destination_addr,
            esm_class: esm::DELIVERY_RECEIPT,
            ..Default::default()
        };
        if cfg.receipt_text {
            let fmt = "%y%m%d%H%M";
            let delivered = u8::from(r.state == 2);
            let err = if r.state == 2 { 0 } else { 1 };
            let text = format!(
                "id:{} sub:001 dlvrd:{:03} submit date:{} done date:{} stat:{} err:{:03} text:{}",
                cfg.receipt_text_id.format(r.id),
                delivered,
                r.submitted_at.format(fmt),
                chrono::Utc::now().format(fmt),
                stat_word(r.state),
                err,
                r.text
            );
            // GSM-7 default alphabet covers the ASCII we wrote except the
            // user text, which we keep only if encodable.
            sm.short_message =
                Bytes::from(crate::encoding::gsm7_encode(&text).unwrap_or_else(|| {
                    text.chars()
                        .filter(|c| c.is_ascii())
                        .map(|c| c as u8)
                        .collect()
                }));
        }
        if cfg.receipt_tlvs {
            sm.tlvs = vec![
                Tlv::ReceiptedMessageId(cfg.resp_id.format(r.id)),
                Tlv::MessageState(r.state),
            ];
        }
        let seq = self.next_seq();
        Pdu::new(seq, Body::DeliverSm(Box::new(sm)))
    }

    fn send_deliver(&mut self, pdu: Pdu) {
        inc(&self.shared.counters.deliver_sm_sent);
        pdu.encode(&mut self.wbuf);
        self.unacked.insert(pdu.sequence, pdu);
    }
}

fn payload_after_udh(sm: &ShortMessage) -> &[u8] {
    if sm.esm_class & esm::UDHI != 0 {
        parse_udh(&sm.short_message)
            .map(|(_, p)| p)
            .unwrap_or(&sm.short_message)
    } else {
        sm.payload()
    }
}

/// `ms` milliseconds after `at`. The delays come over the control API, so
/// one past what an `Instant` can hold means "not in this run".
fn after_ms(at: Instant, ms: u64) -> Instant {
    at.checked_add(Duration::from_millis(ms))
        .unwrap_or_else(|| at + Duration::from_secs(86_400 * 365))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------
// HTTP control endpoint.
// ---------------------------------------------------------------------------

/// Serve the control endpoint on `addr`: `GET /stats`, `GET|POST /faults`,
/// `GET /received`, `POST /reset`. Every answer closes its connection.
fn serve_control(
    addr: SocketAddr,
    shared: Arc<Shared>,
) -> std::io::Result<(SocketAddr, actix_web::dev::Server)> {
    use actix_web::{web, App, HttpServer};
    let shared = web::Data::from(shared);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .route("/stats", web::get().to(get_stats))
            .route("/faults", web::get().to(get_faults))
            .route("/faults", web::post().to(post_faults))
            .route("/received", web::get().to(get_received))
            .route("/reset", web::post().to(post_reset))
    })
    .workers(1)
    .keep_alive(actix_web::http::KeepAlive::Disabled)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)?;
    let bound = server.addrs().first().copied().unwrap_or(addr);
    Ok((bound, server.run()))
}

type SharedData = actix_web::web::Data<Shared>;

async fn get_stats(shared: SharedData) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(shared.counters.snapshot())
}

async fn get_faults(shared: SharedData) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(&*shared.behaviour())
}

async fn post_faults(shared: SharedData, patch: actix_web::web::Bytes) -> actix_web::HttpResponse {
    let mut guard = lock(&shared.behaviour);
    match merge_behaviour(&guard, &patch) {
        Ok(b) => {
            let answer = actix_web::HttpResponse::Ok().json(&b);
            *guard = Arc::new(b);
            answer
        }
        Err(e) => actix_web::HttpResponse::BadRequest().json(serde_json::json!({"error": e})),
    }
}

async fn get_received(shared: SharedData) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(&*lock(&shared.received))
}

async fn post_reset(shared: SharedData) -> actix_web::HttpResponse {
    lock(&shared.received).clear();
    shared.counters.reset();
    actix_web::HttpResponse::Ok().json(serde_json::json!({}))
}

/// Apply a partial JSON object onto the current behaviour.
fn merge_behaviour(current: &Behaviour, patch: &[u8]) -> Result<Behaviour, String> {
    let patch: serde_json::Value = serde_json::from_slice(patch).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(patch) = patch else {
        return Err("expected a JSON object".into());
    };
    let mut value = serde_json::to_value(current).map_err(|e| e.to_string())?;
    if let serde_json::Value::Object(map) = &mut value {
        for (k, v) in patch {
            if !map.contains_key(&k) {
                return Err(format!("unknown field {k}"));
            }
            map.insert(k, v);
        }
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_styles() {
        assert_eq!(IdStyle::default().format(0xA1B), "0000000A1B");
        let dec = IdStyle {
            hex: false,
            uppercase: false,
            width: 0,
        };
        assert_eq!(dec.format(2587), "2587");
    }

    #[test]
    fn config_from_json() {
        let c: SmscConfig = serde_json::from_str(
            r#"{"smpp_addr": "0.0.0.0:2775", "credentials": [["herald", "secret"]],
                "behaviour": {"latency_ms": 5, "outcomes": {"delivered": 9, "rejected": 1}}}"#,
        )
        .unwrap();
        assert_eq!(c.smpp_addr.port(), 2775);
        assert_eq!(c.behaviour.latency_ms, 5);
        assert_eq!(c.behaviour.outcomes.rejected, 1);
        assert_eq!(c.behaviour.outcomes.expired, 0);
        assert!(c.record);
    }

    #[test]
    fn behaviour_patch() {
        let b =
            merge_behaviour(&Behaviour::default(), br#"{"stall": true, "max_tps": 5}"#).unwrap();
        assert!(b.stall);
        assert_eq!(b.max_tps, Some(5));
        assert!(merge_behaviour(&b, br#"{"nope": 1}"#).is_err());
        assert!(merge_behaviour(&b, b"[1]").is_err());
    }
}
