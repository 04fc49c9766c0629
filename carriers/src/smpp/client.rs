//! The SMPP 3.4 client (ESME side): one bind to one carrier SMSC.
//!
//! [`SmppClient::connect`] opens a TCP connection (TCP_NODELAY), binds, and
//! hands back the client plus the receiving end of the receipt channel.
//! Three tasks then own the socket:
//!
//! * the **writer** drains an unbounded queue of PDUs, encoding every PDU
//!   that is ready into one buffer per `write` (batching under load);
//! * the **reader** decodes PDUs, completes pending requests by sequence
//!   number, answers the SMSC's `enquire_link`, `unbind` and `deliver_sm`
//!   (receipts are parsed and sent on the receipt channel *before*
//!   `deliver_sm_resp` is written; with [`SmppClient::connect_acked`] the
//!   answer waits until the owner has stored the receipt durably, so an
//!   acknowledged receipt is never only in this process's memory), and nacks
//!   what it does not understand;
//! * the **keepalive** sends `enquire_link` every interval; a missing answer
//!   means the connection is lost.
//!
//! Data enters through [`CarrierConnection::submit`]: the text is encoded
//! and split (see [`crate::encoding::split`]), the parts wait for window
//! slots (a semaphore of `window` permits: at most `window` submit_sm are
//! unanswered at any time, a timed-out one keeps its slot until it is
//! answered or the connection dies; a message that fits the window takes
//! all its slots before its first part is sent), each is sent, and waits for its
//! submit_sm_resp with a per-request timeout. It leaves as [`Submitted`]
//! (one normalised reference per part, in order) or a [`CarrierError`].
//!
//! When the connection is lost (peer closed, I/O error, unbind from the
//! SMSC, enquire_link unanswered, undecodable stream) every pending request
//! is failed at once with [`CarrierError::ConnectionLost`], later submits
//! fail the same way, and the receipt channel closes. A client is never
//! reconnected: the owner (a supervised actor) opens a new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::pdu::{self, esm, status, Bind, Body, MessageIdResp, Pdu, PduError, ShortMessage, Tlv};
use super::receipt::{normalize_ref, receipt_from_deliver_sm, ReceiptIdFormat};
use crate::encoding::{choose_wire_coding, split, SplitMode, WireCoding};
use crate::{CarrierConnection, CarrierError, Content, Health, Receipt, Submission, Submitted};

/// Which bind operation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindMode {
    Transmitter,
    Receiver,
    #[default]
    Transceiver,
}

/// Everything needed to open one bind. Durations are in milliseconds in
/// serialised form (`request_timeout_ms` …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmppConfig {
    pub host: String,
    pub port: u16,
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    pub bind_mode: BindMode,
    /// addr_ton / addr_npi / address_range of the bind.
    pub addr_ton: u8,
    pub addr_npi: u8,
    pub address_range: String,
    /// Maximum unanswered submit_sm.
    pub window: usize,
    /// Connect + bind, and each submit_sm waiting for its answer.
    #[serde(with = "millis", rename = "request_timeout_ms")]
    pub request_timeout: Duration,
    #[serde(with = "millis", rename = "connect_timeout_ms")]
    pub connect_timeout: Duration,
    /// How often we send enquire_link; an answer must come within
    /// `enquire_link_timeout` or the connection is lost.
    #[serde(with = "millis", rename = "enquire_link_interval_ms")]
    pub enquire_link_interval: Duration,
    #[serde(with = "millis", rename = "enquire_link_timeout_ms")]
    pub enquire_link_timeout: Duration,
    /// Use GSM-7 (data_coding 0) for texts that fit the GSM alphabet.
    pub gsm7_allowed: bool,
    /// Use Latin-1 (data_coding 3) for texts that fit it but not GSM-7.
    pub latin1_allowed: bool,
    /// How long texts are split: UDH with 8-bit or 16-bit reference, or SAR
    /// TLVs.
    pub split_mode: SplitMode,
    /// How the carrier writes ids in receipt texts (see [`super::receipt`]).
    pub receipt_id_format: ReceiptIdFormat,
    pub service_type: String,
    /// Overrides of the source address TON/NPI (otherwise derived from the
    /// sender: `+E.164` 1/1, alphanumeric 5/0, other digits 0/1).
    pub source_ton: Option<u8>,
    pub source_npi: Option<u8>,
    /// Capacity of the receipt channel; when full the reader waits (and the
    /// SMSC waits for its deliver_sm_resp).
    pub receipt_buffer: usize,
}

impl Default for SmppConfig {
    fn default() -> Self {
        SmppConfig {
            host: "127.0.0.1".into(),
            port: 2775,
            system_id: String::new(),
            password: String::new(),
            system_type: String::new(),
            bind_mode: BindMode::Transceiver,
            addr_ton: 0,
            addr_npi: 0,
            address_range: String::new(),
            window: 10,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            enquire_link_interval: Duration::from_secs(30),
            enquire_link_timeout: Duration::from_secs(10),
            gsm7_allowed: true,
            latin1_allowed: false,
            split_mode: SplitMode::Udh8,
            receipt_id_format: ReceiptIdFormat::Same,
            service_type: String::new(),
            source_ton: None,
            source_npi: None,
            receipt_buffer: 4096,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Why a bind could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SmppError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting or binding to {0}")]
    Timeout(String),
    #[error("bind refused with status {status:#010x} ({name})")]
    BindRefused { status: u32, name: &'static str },
    #[error("connection lost while binding: {0}")]
    Lost(String),
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}

/// A bound SMPP connection. Dropping it tears the connection down without
/// unbinding; call [`CarrierConnection::close`] for a graceful unbind.
pub struct SmppClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: SmppConfig,
    /// To the writer task.
    out: mpsc::UnboundedSender<Pdu>,
    state: Mutex<State>,
    window: Arc<Semaphore>,
    sequence: AtomicU32,
    concat_ref: AtomicU32,
    bound: AtomicBool,
    closing: AtomicBool,
    errors: AtomicU64,
    consecutive_errors: AtomicU32,
    /// Microseconds of the last answered request; 0 = none yet.
    last_rtt_us: AtomicU64,
    /// Flipped to `true` once, when the connection is lost or closed.
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u32, Pending>,
    /// Set once: why the connection ended.
    lost: Option<String>,
}

struct Pending {
    reply: oneshot::Sender<Pdu>,
    sent_at: Instant,
    /// Window slot held until the answer arrives (not just until the
    /// submitter gives up waiting).
    permit: Option<OwnedSemaphorePermit>,
}

/// A receipt whose `deliver_sm_resp` waits for [`AckedReceipt::ack`]: the
/// owner acknowledges once the receipt is stored durably, so a crash before
/// that leaves the receipt with the SMSC, which delivers it again. Dropped
/// without `ack` (or not acknowledged within [`RECEIPT_ACK_TIMEOUT`]), it is
/// answered `ESME_RX_T_APPN` and the SMSC retries.
pub struct AckedReceipt {
    pub receipt: Receipt,
    done: oneshot::Sender<()>,
}

impl AckedReceipt {
    /// Stored: answer the SMSC.
    pub fn ack(self) {
        let _ = self.done.send(());
    }
}

/// Longest wait for an [`AckedReceipt`] to be acknowledged.
pub const RECEIPT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the reader hands receipts.
enum Sink {
    /// Answered as soon as the receipt is in the channel.
    Plain(mpsc::Sender<Receipt>),
    /// Answered when the owner acknowledges.
    Acked(mpsc::Sender<AckedReceipt>),
}

impl SmppClient {
    /// Connect, bind and start the connection's tasks. Receipts arrive on
    /// the returned channel, which closes when the connection ends.
    pub async fn connect(
        config: SmppConfig,
    ) -> Result<(SmppClient, mpsc::Receiver<Receipt>), SmppError> {
        let (tx, rx) = mpsc::channel(config.receipt_buffer.max(1));
        let client = Self::open(config, Sink::Plain(tx)).await?;
        Ok((client, rx))
    }

    /// Like [`SmppClient::connect`], but each receipt is answered only when
    /// its owner acknowledges it (after storing it durably).
    pub async fn connect_acked(
        config: SmppConfig,
    ) -> Result<(SmppClient, mpsc::Receiver<AckedReceipt>), SmppError> {
        let (tx, rx) = mpsc::channel(config.receipt_buffer.max(1));
        let client = Self::open(config, Sink::Acked(tx)).await?;
        Ok((client, rx))
    }

    async fn open(config: SmppConfig, receipt_tx: Sink) -> Result<SmppClient, SmppError> {
        if config.window == 0 {
            return Err(SmppError::Config("window must be at least 1"));
        }
        let addr = format!("{}:{}", config.host, config.port);
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| SmppError::Timeout(addr.clone()))?
            .map_err(|source| SmppError::Connect {
                addr: addr.clone(),
                source,
            })?;
        // Latency matters more than packet count for request/response.
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            window: Arc::new(Semaphore::new(config.window)),
            out: out_tx,
            state: Mutex::new(State::default()),
            sequence: AtomicU32::new(0),
            concat_ref: AtomicU32::new(rand::random()),
            bound: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            consecutive_errors: AtomicU32::new(0),
            last_rtt_us: AtomicU64::new(0),
            shutdown,
            tasks: Mutex::new(Vec::new()),
            config,
        });
        let writer = tokio::spawn(writer(wr, out_rx, inner.clone()));
        let reader = tokio::spawn(reader(rd, inner.clone(), receipt_tx));
        lock(&inner.tasks).extend([writer, reader]);
        let client = SmppClient { inner };
        client.bind().await?;
        let keepalive = tokio::spawn(keepalive(client.inner.clone()));
        lock(&client.inner.tasks).push(keepalive);
        Ok(client)
    }

    async fn bind(&self) -> Result<(), SmppError> {
        let c = &self.inner.config;
        let bind = Bind {
            system_id: c.system_id.clone(),
            password: c.password.clone(),
            system_type: c.system_type.clone(),
            interface_version: pdu::INTERFACE_VERSION_34,
            addr_ton: c.addr_ton,
            addr_npi: c.addr_npi,
            address_range: c.address_range.clone(),
        };
        let body = match c.bind_mode {
            BindMode::Transmitter => Body::BindTransmitter(bind),
            BindMode::Receiver => Body::BindReceiver(bind),
            BindMode::Transceiver => Body::BindTransceiver(bind),
        };
        let addr = format!("{}:{}", c.host, c.port);
        let result = self.inner.request(body, None, c.connect_timeout).await;
        let pdu = match result {
            Ok(pdu) => pdu,
            Err(e) => {
                self.inner.lose("bind failed");
                return Err(match e {
                    RequestError::Timeout => SmppError::Timeout(addr),
                    RequestError::Lost(text) => SmppError::Lost(text),
                });
            }
        };
        if pdu.status != status::ESME_ROK || matches!(pdu.body, Body::GenericNack) {
            self.inner.lose("bind refused");
            return Err(SmppError::BindRefused {
                status: pdu.status,
                name: status_name(pdu.status),
            });
        }
        self.inner.bound.store(true, Ordering::Relaxed);
        tracing::info!(target: "herald::smpp", %addr, system_id = %c.system_id, "bound");
        Ok(())
    }

    /// Wait until the connection ends; returns why.
    pub async fn lost(&self) -> String {
        let mut rx = self.inner.shutdown.subscribe();
        let _ = rx.wait_for(|&down| down).await;
        lock(&self.inner.state)
            .lost
            .clone()
            .unwrap_or_else(|| "closed".into())
    }

    /// Whether the connection has ended.
    pub fn is_lost(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// The configuration this bind was opened with.
    pub fn config(&self) -> &SmppConfig {
        &self.inner.config
    }

    async fn submit_inner(&self, s: Submission) -> Result<Submitted, CarrierError> {
        let c = &self.inner.config;
        if c.bind_mode == BindMode::Receiver {
            return Err(permanent("bind_mode", "a receiver bind cannot submit"));
        }
        if self.inner.closing.load(Ordering::Relaxed) {
            return Err(lost("connection is closing"));
        }
        let text = match &s.content {
            Content::Text { body } => body,
            _ => return Err(permanent("content", "SMPP carries text content only")),
        };
        let coding = if c.gsm7_allowed {
            choose_wire_coding(text, c.latin1_allowed)
        } else if c.latin1_allowed && WireCoding::Latin1.encode(text).is_some() {
            WireCoding::Latin1
        } else {
            WireCoding::Ucs2
        };
        let reference = self.inner.concat_ref.fetch_add(1, Ordering::Relaxed) as u16;
        let parts = split(text, coding, c.split_mode, reference)
            .map_err(|e| permanent("split", &e.to_string()))?;
        let (source_ton, source_npi, source_addr) = source_address(&s.from);
        let template = ShortMessage {
            service_type: c.service_type.clone(),
            source_addr_ton: c.source_ton.unwrap_or(source_ton),
            source_addr_npi: c.source_npi.unwrap_or(source_npi),
            source_addr,
            dest_addr_ton: 1,
            dest_addr_npi: 1,
            destination_addr: s.to.trim_start_matches('+').to_owned(),
            registered_delivery: u8::from(s.receipts),
            validity_period: s.validity.map(relative_time).unwrap_or_default(),
            data_coding: coding.data_coding(),
            ..Default::default()
        };

        // Send every part in order, then collect the answers. When the
        // window can hold every part, all their slots are taken before the
        // first part goes out: a message whose later parts found no slot in
        // time would otherwise be half sent, and its retry would send the
        // first parts again. A longer message goes out as slots free up.
        let mut slots = match u32::try_from(parts.len()) {
            Ok(n) if parts.len() <= c.window => Some(self.window_slots(n).await?),
            _ => None,
        };
        let mut waits = Vec::with_capacity(parts.len());
        for part in parts {
            let permit = match slots.as_mut().and_then(|all| all.split(1)) {
                Some(one) => one,
                None => self.window_slots(1).await?,
            };
            let mut sm = template.clone();
            sm.short_message = Bytes::from(part.short_message);
            if part.udhi {
                sm.esm_class |= esm::UDHI;
            }
            if let (true, Some(cc)) = (part.sar, part.concat) {
                sm.tlvs = vec![
                    Tlv::SarMsgRefNum(cc.reference),
                    Tlv::SarTotalSegments(cc.total),
                    Tlv::SarSegmentSeqnum(cc.seq),
                ];
            }
            let (_, rx, deadline) = self
                .inner
                .send(
                    Body::SubmitSm(Box::new(sm)),
                    Some(permit),
                    c.request_timeout,
                )
                .map_err(|e| e.into_carrier())?;
            waits.push((rx, deadline));
        }
        let mut refs = Vec::with_capacity(waits.len());
        for (rx, deadline) in waits {
            let pdu = Inner::wait(rx, deadline)
                .await
                .map_err(|e| e.into_carrier())?;
            match (&pdu.body, pdu.status) {
                (Body::SubmitSmResp(MessageIdResp { message_id }), status::ESME_ROK) => {
                    refs.push(normalize_ref(message_id))
                }
                (_, st) => return Err(map_status(st)),
            }
        }
        Ok(Submitted { carrier_refs: refs })
    }

    /// `n` window slots, waiting at most the request timeout for them.
    async fn window_slots(&self, n: u32) -> Result<OwnedSemaphorePermit, CarrierError> {
        let slots = self.inner.window.clone().acquire_many_owned(n);
        match tokio::time::timeout(self.inner.config.request_timeout, slots).await {
            Ok(Ok(slots)) => Ok(slots),
            Ok(Err(_)) => Err(self.inner.lost_error()),
            Err(_) => Err(CarrierError::Temporary {
                code: "window_timeout".into(),
                text: "no window slot within the request timeout".into(),
            }),
        }
    }
}

impl Drop for SmppClient {
    fn drop(&mut self) {
        self.inner.lose("client dropped");
    }
}

#[async_trait::async_trait]
impl CarrierConnection for SmppClient {
    async fn submit(&self, submission: Submission) -> Result<Submitted, CarrierError> {
        let result = self.submit_inner(submission).await;
        match &result {
            Ok(_) => self.inner.consecutive_errors.store(0, Ordering::Relaxed),
            Err(_) => {
                self.inner.errors.fetch_add(1, Ordering::Relaxed);
                self.inner
                    .consecutive_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn health(&self) -> Health {
        let rtt = self.inner.last_rtt_us.load(Ordering::Relaxed);
        let free = self.inner.window.available_permits();
        Health {
            bound: self.inner.bound.load(Ordering::Relaxed) && !self.is_lost(),
            last_round_trip: (rtt > 0).then(|| Duration::from_micros(rtt)),
            in_flight: self.inner.config.window.saturating_sub(free) as u32,
            errors: self.inner.errors.load(Ordering::Relaxed),
            consecutive_errors: self.inner.consecutive_errors.load(Ordering::Relaxed),
        }
    }

    /// Stop taking submissions, wait (up to the request timeout) for the
    /// answers still due, unbind, and shut the connection down.
    async fn close(&self) {
        if self.inner.closing.swap(true, Ordering::Relaxed) || self.is_lost() {
            self.inner.lose("closed");
            return;
        }
        let c = &self.inner.config;
        let all = c.window as u32;
        let _drained = tokio::time::timeout(
            c.request_timeout,
            self.inner.window.clone().acquire_many_owned(all),
        )
        .await;
        let _ = self
            .inner
            .request(
                Body::Unbind,
                None,
                c.request_timeout.min(Duration::from_secs(5)),
            )
            .await;
        self.inner.lose("closed");
        let tasks: Vec<_> = lock(&self.inner.tasks).drain(..).collect();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
    }
}

enum RequestError {
    Timeout,
    Lost(String),
}

impl RequestError {
    fn into_carrier(self) -> CarrierError {
        match self {
            RequestError::Timeout => CarrierError::Temporary {
                code: "timeout".into(),
                text: "no answer within the request timeout".into(),
            },
            RequestError::Lost(text) => CarrierError::ConnectionLost { text },
        }
    }
}

impl Inner {
    fn next_sequence(&self) -> u32 {
        // 1 ..= 0x7FFF_FFFF (§5.1.4).
        (self.sequence.fetch_add(1, Ordering::Relaxed) % 0x7FFF_FFFF) + 1
    }

    /// Register a request and queue it for the writer.
    fn send(
        &self,
        body: Body,
        permit: Option<OwnedSemaphorePermit>,
        timeout: Duration,
    ) -> Result<(u32, oneshot::Receiver<Pdu>, tokio::time::Instant), RequestError> {
        let (tx, rx) = oneshot::channel();
        let sequence = self.next_sequence();
        {
            let mut st = lock(&self.state);
            if let Some(why) = &st.lost {
                return Err(RequestError::Lost(why.clone()));
            }
            st.pending.insert(
                sequence,
                Pending {
                    reply: tx,
                    sent_at: Instant::now(),
                    permit,
                },
            );
        }
        if self.out.send(Pdu::new(sequence, body)).is_err() {
            self.lose("writer stopped");
            return Err(self.lost_request());
        }
        Ok((sequence, rx, tokio::time::Instant::now() + timeout))
    }

    async fn wait(
        rx: oneshot::Receiver<Pdu>,
        deadline: tokio::time::Instant,
    ) -> Result<Pdu, RequestError> {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(pdu)) => Ok(pdu),
            // The pending entry was dropped: the connection is gone.
            Ok(Err(_)) => Err(RequestError::Lost("connection lost".into())),
            // The pending entry stays (and keeps its window slot) until the
            // answer arrives or the connection ends.
            Err(_) => Err(RequestError::Timeout),
        }
    }

    /// Send and wait. A request without a window slot (bind, enquire_link,
    /// unbind) is forgotten on timeout; a slotted one stays pending.
    async fn request(
        &self,
        body: Body,
        permit: Option<OwnedSemaphorePermit>,
        timeout: Duration,
    ) -> Result<Pdu, RequestError> {
        let (sequence, rx, deadline) = self.send(body, permit, timeout)?;
        let result = Inner::wait(rx, deadline).await;
        if matches!(result, Err(RequestError::Timeout)) {
            let mut st = lock(&self.state);
            if st
                .pending
                .get(&sequence)
                .is_some_and(|p| p.permit.is_none())
            {
                st.pending.remove(&sequence);
            }
        }
        result
    }

    fn lost_request(&self) -> RequestError {
        RequestError::Lost(
            lock(&self.state)
                .lost
                .clone()
                .unwrap_or_else(|| "connection lost".into()),
        )
    }

    fn lost_error(&self) -> CarrierError {
        self.lost_request().into_carrier()
    }

    /// End the connection: fail every pending request (dropping their reply
    /// senders wakes the waiters with ConnectionLost), refuse new ones and
    /// stop the tasks. Idempotent.
    fn lose(&self, why: &str) {
        let pending = {
            let mut st = lock(&self.state);
            if st.lost.is_none() {
                st.lost = Some(why.to_owned());
                if why != "closed" {
                    tracing::warn!(target: "herald::smpp", system_id = %self.config.system_id, reason = why, "smpp connection lost");
                }
            }
            std::mem::take(&mut st.pending)
        };
        drop(pending);
        self.bound.store(false, Ordering::Relaxed);
        self.window.close();
        self.shutdown.send_replace(true);
    }

    /// Complete a pending request with its response.
    fn complete(&self, pdu: Pdu) {
        let pending = lock(&self.state).pending.remove(&pdu.sequence);
        match pending {
            Some(p) => {
                let rtt = p.sent_at.elapsed().as_micros().max(1) as u64;
                self.last_rtt_us.store(rtt, Ordering::Relaxed);
                let _ = p.reply.send(pdu);
            }
            None => {
                tracing::debug!(target: "herald::smpp", sequence = pdu.sequence, "response to no pending request")
            }
        }
    }

    fn reply(&self, pdu: Pdu) {
        let _ = self.out.send(pdu);
    }
}

async fn writer(mut wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Pdu>, inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        let first = tokio::select! {
            p = rx.recv() => p,
            _ = shutdown.wait_for(|&d| d) => None,
        };
        let Some(first) = first else { break };
        first.encode(&mut buf);
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(p) => p.encode(&mut buf),
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            inner.lose(&format!("write failed: {e}"));
            break;
        }
        buf.clear();
    }
    // Flush whatever was queued last (an unbind_resp, a final deliver_sm_resp).
    while let Ok(p) = rx.try_recv() {
        p.encode(&mut buf);
    }
    if !buf.is_empty() {
        let _ = tokio::time::timeout(Duration::from_millis(200), wr.write_all(&buf)).await;
    }
    let _ = wr.shutdown().await;
}

async fn reader(mut rd: OwnedReadHalf, inner: Arc<Inner>, receipts: Sink) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            match pdu::try_decode(&mut buf) {
                Ok(Some(pdu)) => handle(&inner, &receipts, &mut shutdown, pdu).await,
                Ok(None) => break,
                Err(PduError::Body {
                    command_id,
                    sequence,
                    reason,
                }) => {
                    tracing::warn!(target: "herald::smpp", command_id, sequence, reason, "undecodable PDU");
                    if command_id & 0x8000_0000 == 0 {
                        inner.reply(Pdu::with_status(
                            sequence,
                            status::ESME_RINVCMDLEN,
                            Body::GenericNack,
                        ));
                    } else {
                        // An undecodable answer still answers its request.
                        inner.complete(Pdu::with_status(
                            sequence,
                            status::ESME_RSYSERR,
                            Body::GenericNack,
                        ));
                    }
                }
                Err(e @ PduError::Length(_)) => {
                    inner.lose(&format!("unrecoverable stream: {e}"));
                    return;
                }
            }
        }
        let read = tokio::select! {
            r = rd.read_buf(&mut buf) => r,
            _ = shutdown.wait_for(|&d| d) => return,
        };
        match read {
            Ok(0) => {
                inner.lose("connection closed by the SMSC");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                inner.lose(&format!("read failed: {e}"));
                return;
            }
        }
    }
}

async fn handle(inner: &Inner, receipts: &Sink, shutdown: &mut watch::Receiver<bool>, pdu: Pdu) {
    let seq = pdu.sequence;
    match pdu.body {
        Body::GenericNack => inner.complete(pdu),
        ref b if b.is_response() => inner.complete(pdu),
        Body::EnquireLink => inner.reply(Pdu::new(seq, Body::EnquireLinkResp)),
        Body::Unbind => {
            inner.reply(Pdu::new(seq, Body::UnbindResp));
            inner.lose("unbound by the SMSC");
        }
        Body::DeliverSm(sm) => {
            let mut st = status::ESME_ROK;
            if sm.is_delivery_receipt() {
                match receipt_from_deliver_sm(&sm, inner.config.receipt_id_format) {
                    Some(r) => {
                        // A full channel holds the reader (backpressure on
                        // the SMSC), but never past the connection's end.
                        let tx = match receipts {
                            Sink::Plain(tx) => tx,
                            Sink::Acked(tx) => {
                                let (done, acked) = oneshot::channel();
                                let receipt = AckedReceipt { receipt: r, done };
                                let handed_over = tokio::select! {
                                    sent = tx.send(receipt) => sent.is_ok(),
                                    _ = shutdown.wait_for(|&d| d) => return,
                                };
                                // Answer when the owner has stored it, without
                                // holding the reader meanwhile.
                                let out = inner.out.clone();
                                tokio::spawn(async move {
                                    let stored = handed_over
                                        && matches!(
                                            tokio::time::timeout(RECEIPT_ACK_TIMEOUT, acked).await,
                                            Ok(Ok(()))
                                        );
                                    let st = if stored {
                                        status::ESME_ROK
                                    } else {
                                        status::ESME_RX_T_APPN
                                    };
                                    let _ = out.send(Pdu::with_status(
                                        seq,
                                        st,
                                        Body::DeliverSmResp(MessageIdResp::default()),
                                    ));
                                });
                                return;
                            }
                        };
                        let handed_over = tokio::select! {
                            sent = tx.send(r) => sent.is_ok(),
                            _ = shutdown.wait_for(|&d| d) => return,
                        };
                        if !handed_over {
                            // Nobody takes receipts any more: let the SMSC
                            // keep it and retry later.
                            st = status::ESME_RX_T_APPN;
                        }
                    }
                    None => {
                        tracing::warn!(target: "herald::smpp", "delivery receipt without a message id");
                    }
                }
            } else {
                tracing::debug!(target: "herald::smpp", from = %sm.source_addr, "mobile-originated message ignored");
            }
            inner.reply(Pdu::with_status(
                seq,
                st,
                Body::DeliverSmResp(MessageIdResp::default()),
            ));
        }
        _ => inner.reply(Pdu::with_status(
            seq,
            status::ESME_RINVCMDID,
            Body::GenericNack,
        )),
    }
}

async fn keepalive(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let every = inner.config.enquire_link_interval;
    let wait = inner.config.enquire_link_timeout.min(every);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|&d| d) => return,
        }
        match inner.request(Body::EnquireLink, None, wait).await {
            Ok(_) => {}
            Err(RequestError::Timeout) => {
                inner.lose("enquire_link unanswered");
                return;
            }
            Err(RequestError::Lost(_)) => return,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn permanent(code: &str, text: &str) -> CarrierError {
    CarrierError::Permanent {
        code: code.into(),
        text: text.into(),
    }
}

fn lost(text: &str) -> CarrierError {
    CarrierError::ConnectionLost { text: text.into() }
}

/// Map a non-OK command_status to Herald's error kinds.
pub fn map_status(st: u32) -> CarrierError {
    let code = format!("{st:#010x}");
    let text = status_name(st).to_owned();
    match st {
        status::ESME_RTHROTTLED => CarrierError::Throttled {
            retry_after: None,
            code,
            text,
        },
        status::ESME_RMSGQFUL | status::ESME_RSYSERR | status::ESME_RX_T_APPN => {
            CarrierError::Temporary { code, text }
        }
        _ => CarrierError::Permanent { code, text },
    }
}

/// The SMPP 3.4 name of a command_status.
pub fn status_name(st: u32) -> &'static str {
    match st {
        0x00 => "ESME_ROK",
        0x01 => "ESME_RINVMSGLEN",
        0x02 => "ESME_RINVCMDLEN",
        0x03 => "ESME_RINVCMDID",
        0x04 => "ESME_RINVBNDSTS",
        0x05 => "ESME_RALYBND",
        0x06 => "ESME_RINVPRTFLG",
        0x07 => "ESME_RINVREGDLVFLG",
        0x08 => "ESME_RSYSERR",
        0x0A => "ESME_RINVSRCADR",
        0x0B => "ESME_RINVDSTADR",
        0x0C => "ESME_RINVMSGID",
        0x0D => "ESME_RBINDFAIL",
        0x0E => "ESME_RINVPASWD",
        0x0F => "ESME_RINVSYSID",
        0x14 => "ESME_RMSGQFUL",
        0x15 => "ESME_RINVSERTYP",
        0x45 => "ESME_RSUBMITFAIL",
        0x48 => "ESME_RINVSRCTON",
        0x49 => "ESME_RINVSRCNPI",
        0x50 => "ESME_RINVDSTTON",
        0x51 => "ESME_RINVDSTNPI",
        0x58 => "ESME_RTHROTTLED",
        0x61 => "ESME_RINVSCHED",
        0x62 => "ESME_RINVEXPIRY",
        0x64 => "ESME_RX_T_APPN",
        0x65 => "ESME_RX_P_APPN",
        0x66 => "ESME_RX_R_APPN",
        0xFF => "ESME_RUNKNOWNERR",
        _ => "unknown status",
    }
}

/// TON, NPI and address digits for a sender: `+E.164` -> international/ISDN,
/// alphanumeric -> 5/0, other digits -> unknown/ISDN.
fn source_address(from: &str) -> (u8, u8, String) {
    if let Some(digits) = from.strip_prefix('+') {
        (1, 1, digits.to_owned())
    } else if !from.is_empty() && from.bytes().all(|b| b.is_ascii_digit()) {
        (0, 1, from.to_owned())
    } else {
        (5, 0, from.chars().take(11).collect())
    }
}

/// SMPP relative time format `YYMMDDhhmmss000R` (§7.1.1.2).
fn relative_time(d: Duration) -> String {
    let mut s = d.as_secs();
    let days = (s / 86_400).min(99 * 365);
    s %= 86_400;
    let (years, rem) = (days / 365, days % 365);
    let (months, days) = (rem / 30, rem % 30);
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}000R",
        years,
        months,
        days,
        s / 3600,
        (s % 3600) / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert!(matches!(map_status(0x58), CarrierError::Throttled { .. }));
        assert!(matches!(map_status(0x14), CarrierError::Temporary { .. }));
        assert!(matches!(map_status(0x08), CarrierError::Temporary { .. }));
        match map_status(0x0B) {
            CarrierError::Permanent { code, text } => {
                assert_eq!(code, "0x0000000b");
                assert_eq!(text, "ESME_RINVDSTADR");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn addresses_and_validity() {
        assert_eq!(
            source_address("+250788123456"),
            (1, 1, "250788123456".into())
        );
        assert_eq!(source_address("Herald"), (5, 0, "Herald".into()));
        assert_eq!(source_address("8080"), (0, 1, "8080".into()));
        assert_eq!(
            relative_time(Duration::from_secs(86_400 + 3600 + 61)),
            "000001010101000R"
        );
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = SmppConfig::default();
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["request_timeout_ms"], 10_000);
        let back: SmppConfig = serde_json::from_value(j).unwrap();
        assert_eq!(back, c);
    }
}
