//! CarrierConnection: one bind to one carrier. It consumes the carrier's
//! queue (`herald.carrier.<id>`, shared by the carrier's binds; prefetch:
//! the window, its settling backlog and one window more), sends at most its
//! share of the carrier's TPS (adaptive token bucket), keeps at most
//! `window` submissions unanswered, and guards the carrier with a breaker.
//! The connections run on a thread of their own (see `root`).
//!
//! Data in: deliveries from the queue. Data out: `sending`, `sent`, `failed`,
//! `expired` events and receipts on `herald.events`; temporary failures to
//! the carrier's delay queues. A delivery is acknowledged only after its
//! outcome is published and confirmed; one still held when the actor stops
//! or crashes goes back to the queue (see `broker::Incoming`).
//!
//! A window slot is held from the submit until the carrier answers. What
//! follows (the ledger record, the confirmed publish of the outcome, the
//! acknowledgement) is the settler's: one task per bind that takes every
//! settlement waiting, records them in the ledger in one round trip and
//! publishes them with one confirm, in order (a message's `sending` is
//! queued to it before its submit, so it is published before its `sent`),
//! the events packed several to an AMQP message (`events::pack`).
//! At most [`SETTLING_PER_SLOT`] settlements per slot wait for it.
//!
//! The ledger is asked about deliveries as they arrive, many in one round
//! trip, not inside a window slot: a delivery waits in `unchecked` until its
//! answer comes, then goes to `pending` (or, sent before, straight to the
//! settler as a duplicate). A copy of a message this bind sent since it
//! arrived is caught at submit by the bind's own memory of what it sent.
//!
//! Supervision: the actor is `Supervised`. When the bind is lost or refused
//! it stops; the supervisor restarts it after a back-off that doubles with
//! each consecutive failure. A panic is caught by the HealthMonitor instead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use herald_carriers::http_sms::HttpSmsConnection;
use herald_carriers::smpp::{AckedReceipt, SmppClient};
use herald_carriers::voice::VoiceConnection;
use herald_carriers::whatsapp::WhatsappConnection;
use herald_carriers::{CarrierConnection as CarrierLink, CarrierError, Submission, Submitted};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::breaker::Breaker;
use crate::broker::{Broker, Incoming, Outgoing};
use crate::config::{CarrierKind, CarrierSpec};
use crate::events;
use crate::health::Ping;
use crate::lease::{bind_key, Leases};
use crate::ledger::SubmissionLedger;
use crate::payload::{CarrierTask, Delivery};
use crate::root::{CarrierStatus, Root};
use crate::telemetry;
use crate::throttle::Throttle;
use crate::vitals::Vitals;

/// First restart back-off; doubles per consecutive failure.
pub const RESTART_BACKOFF: Duration = Duration::from_millis(250);
/// Longest restart back-off.
pub const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(5);
/// How often the connection reports its status to the root.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(500);
/// Longest wait for submissions in flight when draining.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Receipts published per batch.
const RECEIPT_BATCH: usize = 256;
/// Answered submissions waiting for the settler, per window slot: past it
/// the bind submits nothing more until settlements catch up.
pub const SETTLING_PER_SLOT: usize = 8;
/// Most settlements published with one confirm.
const SETTLE_BATCH: usize = 256;
/// Messages a bind remembers having sent (for copies that arrived before
/// the original was settled); the oldest are forgotten first.
const SENT_HERE: usize = 8192;

/// Crash on purpose (chaos testing through the admin API).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// Stop taking work, wait for submissions in flight, unbind.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Pause (`true`) or resume (`false`) the connection: while paused it stays
/// bound but takes nothing from its queue (what it held goes back), and it
/// reports itself unusable so routes prefer other carriers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hold(pub bool);

/// What carrier connections share across nodes: bind leases and the
/// submission ledger.
#[derive(Clone)]
pub struct NodeServices {
    pub leases: Arc<dyn Leases>,
    pub ledger: Arc<dyn SubmissionLedger>,
    /// This node's id (the lease holder).
    pub node: String,
    pub lease_ttl: Duration,
}

/// What one bind is doing.
pub struct CarrierConnection {
    spec: Arc<CarrierSpec>,
    bind: u32,
    broker: Broker,
    root: Addr<Root>,
    leases: Arc<dyn Leases>,
    ledger: Arc<dyn SubmissionLedger>,
    /// This node's id: the lease holder.
    node: String,
    lease_ttl: Duration,
    /// This node holds the bind's lease.
    holding: bool,
    last_renewed: Instant,
    /// The live connection (an SMPP bind, an HTTP client).
    client: Option<Arc<dyn CarrierLink>>,
    throttle: Throttle,
    breaker: Breaker,
    vitals: Vitals,
    /// Deliveries taken from the queue, not yet submitted. They stay
    /// unacknowledged in RabbitMQ until their outcome is published.
    pending: VecDeque<(Incoming, Delivery)>,
    /// Deliveries taken from the queue whose ledger answer is awaited, in
    /// arrival order, each with its arrival number.
    unchecked: VecDeque<(u64, Incoming, Delivery)>,
    arrivals: u64,
    /// A ledger lookup is running.
    checking: bool,
    /// Messages this bind had accepted by the carrier lately, with their
    /// references (bounded by [`SENT_HERE`], oldest first in `sent_order`).
    sent_here: HashMap<String, Vec<String>>,
    sent_order: VecDeque<String>,
    /// Submitted, not answered by the carrier (the window).
    in_flight: usize,
    /// Answered, handed to the settler, not settled yet.
    settling: usize,
    /// This generation's settler.
    settler: Option<mpsc::UnboundedSender<Settle>>,
    /// Ids of the messages in flight: a second copy of one (a redelivery)
    /// waits until the first is settled, then the ledger stops it.
    submitting: HashSet<String>,
    pump_scheduled: bool,
    /// Consecutive failed connection attempts (kept across restarts).
    failures: u32,
    restarts: u64,
    draining: bool,
    /// Paused by the operator ([`Hold`]).
    paused: bool,
    /// The subscription to the carrier's queue, while consuming.
    consuming: Option<SpawnHandle>,
    /// Told when the last submission in flight is answered while draining.
    drained: Option<tokio::sync::oneshot::Sender<()>>,
    /// Bumped at each (re)start so stale callbacks from a previous bind
    /// are ignored.
    generation: u64,
}

impl CarrierConnection {
    pub fn new(
        spec: Arc<CarrierSpec>,
        bind: u32,
        broker: Broker,
        root: Addr<Root>,
        services: NodeServices,
    ) -> Self {
        let share = spec.tps / f64::from(spec.binds.max(1));
        Self {
            leases: services.leases,
            ledger: services.ledger,
            node: services.node,
            lease_ttl: services.lease_ttl,
            holding: false,
            last_renewed: Instant::now(),
            throttle: Throttle::new(share, Instant::now()),
            vitals: Vitals::default(),
            breaker: Breaker::new(spec.breaker_failures, spec.breaker_cooldown()),
            spec,
            bind,
            broker,
            root,
            client: None,
            pending: VecDeque::new(),
            unchecked: VecDeque::new(),
            arrivals: 0,
            checking: false,
            sent_here: HashMap::new(),
            sent_order: VecDeque::new(),
            in_flight: 0,
            settling: 0,
            settler: None,
            submitting: HashSet::new(),
            pump_scheduled: false,
            failures: 0,
            restarts: 0,
            draining: false,
            paused: false,
            consuming: None,
            drained: None,
            generation: 0,
        }
    }

    fn id(&self) -> &str {
        &self.spec.id
    }

    fn window(&self) -> usize {
        self.spec.window.max(1) as usize
    }

    fn report(&mut self) {
        let now = Instant::now();
        self.throttle.refill(now);
        // A bind leased to another node is served there: usable for routing.
        let standby = !self.holding;
        self.root.do_send(CarrierStatus {
            carrier: self.spec.id.clone(),
            bind: self.bind,
            bound: self.client.is_some(),
            standby,
            usable: !self.paused
                && (standby || (self.client.is_some() && self.breaker.is_usable(now))),
            breaker_open: self.breaker.is_open(),
            rate: self.throttle.rate(),
            configured_rate: self.throttle.configured(),
            in_flight: self.in_flight as u32,
            pending: (self.pending.len() + self.unchecked.len()) as u32,
            restarts: self.restarts,
            paused: self.paused,
            latency_ms: self.vitals.latency().map(|l| l.as_secs_f64() * 1000.0),
        });
        telemetry::carrier_rate(self.id(), self.bind, self.throttle.rate());
    }

    fn key(&self) -> String {
        bind_key(&self.spec.id, self.bind)
    }

    /// Take the bind's lease, then bind; without the lease, wait and try
    /// again (another node serves this bind).
    fn acquire(&mut self, ctx: &mut Context<Self>) {
        let leases = self.leases.clone();
        let (key, node, ttl) = (self.key(), self.node.clone(), self.lease_ttl);
        async move { leases.acquire(&key, &node, ttl).await }
            .into_actor(self)
            .map(|taken, act, ctx| match taken {
                Ok(true) => {
                    if !act.holding {
                        tracing::info!(carrier = act.id(), bind = act.bind, node = %act.node, "bind lease taken");
                    }
                    act.holding = true;
                    act.last_renewed = Instant::now();
                    ctx.run_interval(act.lease_ttl / 3, |act, ctx| act.renew(ctx));
                    act.connect(ctx);
                }
                other => {
                    if let Err(e) = other {
                        tracing::warn!(carrier = act.id(), error = %e, "lease store unavailable");
                    }
                    act.holding = false;
                    act.report();
                    ctx.run_later(act.lease_ttl / 3, |act, ctx| act.acquire(ctx));
                }
            })
            .spawn(ctx);
    }

    fn renew(&mut self, ctx: &mut Context<Self>) {
        let leases = self.leases.clone();
        let (key, node, ttl) = (self.key(), self.node.clone(), self.lease_ttl);
        async move { leases.renew(&key, &node, ttl).await }
            .into_actor(self)
            .map(|renewed, act, ctx| match renewed {
                Ok(true) => act.last_renewed = Instant::now(),
                Ok(false) => {
                    tracing::warn!(carrier = act.id(), bind = act.bind, "bind lease lost; unbinding");
                    act.holding = false;
                    ctx.stop();
                }
                Err(e) => {
                    // The store is away: keep the bind while the lease we
                    // last renewed is surely still ours.
                    if act.last_renewed.elapsed() >= act.lease_ttl * 2 / 3 {
                        tracing::warn!(carrier = act.id(), error = %e, "cannot renew the bind lease; unbinding");
                        act.holding = false;
                        ctx.stop();
                    }
                }
            })
            .spawn(ctx);
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        let spec = self.spec.clone();
        let generation = self.generation;
        let opened = match spec.kind {
            CarrierKind::Smpp => {
                let Some(config) = spec.smpp.clone() else {
                    ctx.stop();
                    return;
                };
                async move { SmppClient::connect_acked(config).await }
                    .into_actor(self)
                    .map(move |result, act, ctx| {
                        if act.generation != generation {
                            return;
                        }
                        match result {
                            Ok((client, receipts)) => {
                                let client = Arc::new(client);
                                act.watch_bind(client.clone(), ctx);
                                act.bound(client, Some(receipts), ctx);
                            }
                            Err(e) => act.open_failed(&e.to_string(), ctx),
                        }
                    })
                    .spawn(ctx);
                return;
            }
            // HTTP carriers: no session to open; receipts come to
            // POST /v1/callbacks/<id>.
            CarrierKind::HttpSms => spec
                .http_sms
                .clone()
                .ok_or_else(|| "no [carrier.http_sms]".to_owned())
                .and_then(|c| HttpSmsConnection::new(c).map_err(|e| e.to_string()))
                .map(|c| Arc::new(c) as Arc<dyn CarrierLink>),
            CarrierKind::Whatsapp => spec
                .whatsapp
                .clone()
                .ok_or_else(|| "no [carrier.whatsapp]".to_owned())
                .and_then(|c| WhatsappConnection::new(c).map_err(|e| e.to_string()))
                .map(|c| Arc::new(c) as Arc<dyn CarrierLink>),
            CarrierKind::Voice => spec
                .voice
                .clone()
                .ok_or_else(|| "no [carrier.voice]".to_owned())
                .and_then(|c| VoiceConnection::new(c).map_err(|e| e.to_string()))
                .map(|c| Arc::new(c) as Arc<dyn CarrierLink>),
        };
        match opened {
            Ok(client) => self.bound(client, None, ctx),
            Err(e) => self.open_failed(&e, ctx),
        }
    }

    fn open_failed(&mut self, error: &str, ctx: &mut Context<Self>) {
        self.failures += 1;
        tracing::warn!(carrier = self.id(), bind = self.bind, error, "bind failed");
        self.report();
        ctx.stop();
    }

    /// When an SMPP bind is lost, stop: the supervisor restarts us.
    fn watch_bind(&mut self, client: Arc<SmppClient>, ctx: &mut Context<Self>) {
        let generation = self.generation;
        async move { client.lost().await }
            .into_actor(self)
            .map(move |reason, act, ctx| {
                if act.generation == generation {
                    tracing::warn!(carrier = act.id(), bind = act.bind, %reason, "bind lost");
                    act.failures += 1;
                    ctx.stop();
                }
            })
            .spawn(ctx);
    }

    fn bound(
        &mut self,
        client: Arc<dyn CarrierLink>,
        receipts: Option<tokio::sync::mpsc::Receiver<AckedReceipt>>,
        ctx: &mut Context<Self>,
    ) {
        self.failures = 0;
        self.client = Some(client);
        telemetry::carrier_bound(self.id(), self.bind, true);
        // Receipts go to herald.events in batches, in a task of their own.
        if let Some(receipts) = receipts {
            let broker = self.broker.clone();
            let carrier = self.spec.id.clone();
            actix::spawn(forward_receipts(broker, carrier, receipts));
        }
        if !self.paused {
            self.consume(ctx);
        }
        self.report();
    }

    /// Consume the carrier's queue.
    fn consume(&mut self, ctx: &mut Context<Self>) {
        let queue = self.broker.topology().carrier_queue(self.id());
        // Room for the window, the settling backlog and as much waiting.
        let prefetch = (self.window() * (SETTLING_PER_SLOT + 2)).min(u16::MAX as usize) as u16;
        let rx = self.broker.subscribe(queue, prefetch);
        self.consuming = Some(ctx.add_stream(ReceiverStream::new(rx)));
    }

    /// Submit what the window, the breaker and the rate allow.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if self.paused {
            return;
        }
        while self.in_flight < self.window()
            && self.settling < self.window() * SETTLING_PER_SLOT
            && !self.pending.is_empty()
        {
            let Some(next) = self
                .pending
                .iter()
                .position(|(_, d)| !self.submitting.contains(d.envelope.id.as_str()))
            else {
                return; // only copies of messages in flight: wait for them
            };
            let now = Instant::now();
            if !self.breaker.allow(now) {
                self.schedule_pump(self.spec.breaker_cooldown() / 4, ctx);
                return;
            }
            if !self.throttle.try_take(now) {
                self.schedule_pump(self.throttle.wait(), ctx);
                return;
            }
            let Some((incoming, delivery)) = self.pending.remove(next) else {
                return;
            };
            if let Some(refs) = self.sent_here.get(delivery.envelope.id.as_str()).cloned() {
                // A copy of a message sent here since it arrived.
                self.duplicate(incoming, &delivery, refs, ctx);
                continue;
            }
            if delivery
                .envelope
                .expires_at
                .is_some_and(|t| t <= Utc::now())
            {
                self.finish(
                    incoming,
                    vec![events::status(
                        self.broker.topology(),
                        &delivery.envelope,
                        delivery.attempt,
                        "expired",
                        Some(self.id()),
                        vec![],
                        Some(events::herald_error(
                            "expired",
                            "validity passed before sending",
                        )),
                    )],
                    "expired",
                );
                continue;
            }
            self.submit(client.clone(), incoming, delivery, ctx);
        }
    }

    fn schedule_pump(&mut self, after: Duration, ctx: &mut Context<Self>) {
        if self.pump_scheduled {
            return;
        }
        self.pump_scheduled = true;
        ctx.run_later(after.max(Duration::from_millis(1)), |act, ctx| {
            act.pump_scheduled = false;
            act.pump(ctx);
        });
    }

    fn submit(
        &mut self,
        client: Arc<dyn CarrierLink>,
        incoming: Incoming,
        delivery: Delivery,
        ctx: &mut Context<Self>,
    ) {
        self.in_flight += 1;
        self.submitting.insert(delivery.envelope.id.to_string());
        let submission = Submission {
            message_id: delivery.envelope.id.to_string(),
            channel: delivery.envelope.channel,
            to: delivery.envelope.to.clone(),
            from: delivery.envelope.from.clone(),
            content: delivery.envelope.content.clone(),
            validity: delivery
                .envelope
                .expires_at
                .and_then(|t| (t - Utc::now()).to_std().ok()),
            receipts: true,
        };
        let sending = events::status(
            self.broker.topology(),
            &delivery.envelope,
            delivery.attempt,
            "sending",
            Some(self.id()),
            vec![],
            None,
        );
        // Published by the settler, ahead of this message's outcome; best
        // effort, the slot does not wait for it.
        if let Some(settler) = &self.settler {
            let _ = settler.send(Settle::Announce(sending));
        }
        let generation = self.generation;
        async move {
            let started = Instant::now();
            let result = client.submit(submission).await;
            (result, started.elapsed())
        }
        .into_actor(self)
        .map(move |(result, elapsed), act, ctx| {
            if act.generation != generation {
                return; // a previous bind's answer; the delivery is requeued by drop
            }
            act.in_flight = act.in_flight.saturating_sub(1);
            act.outcome(incoming, delivery, result, elapsed, ctx);
            // The answer freed its window slot: the next submission goes now,
            // not when the settler is done (that would make each window's
            // worth of messages wait for a settler round).
            if ctx.state() == ActorState::Running {
                act.released(ctx);
            }
        })
        .spawn(ctx);
    }

    /// A message a carrier accepted before (a redelivery, a second copy):
    /// say `sent` again with the recorded references; do not send it.
    fn duplicate(
        &mut self,
        incoming: Incoming,
        delivery: &Delivery,
        refs: Vec<String>,
        ctx: &mut Context<Self>,
    ) {
        telemetry::duplicate_suppressed(self.id());
        let sent = events::status(
            self.broker.topology(),
            &delivery.envelope,
            delivery.attempt,
            "sent",
            Some(self.id()),
            refs,
            None,
        );
        let msg = delivery.envelope.id.to_string();
        self.finish_counted(incoming, vec![sent], "duplicate", msg, None, ctx);
    }

    /// Ask the ledger about every delivery waiting in `unchecked`, in one
    /// round trip; one lookup runs at a time, and what arrives meanwhile
    /// goes in the next. A ledger that cannot answer counts as "not sent"
    /// (at least once rather than held).
    fn check(&mut self, ctx: &mut Context<Self>) {
        if self.checking || self.unchecked.is_empty() {
            return;
        }
        self.checking = true;
        let first = self.unchecked.front().map_or(0, |(seq, ..)| *seq);
        let ids: Vec<String> = self
            .unchecked
            .iter()
            .map(|(_, _, d)| d.envelope.id.to_string())
            .collect();
        let n = ids.len();
        let ledger = self.ledger.clone();
        let generation = self.generation;
        async move { ledger.already_sent(&ids).await }
            .into_actor(self)
            .map(move |answer, act, ctx| {
                if act.generation != generation {
                    return; // restarted meanwhile: those deliveries were given back
                }
                act.checking = false;
                let answers = match answer {
                    Ok(found) if found.len() == n => found,
                    Ok(_) | Err(_) => vec![None; n],
                };
                // The checked deliveries are the first `n`, unless the queue
                // was emptied meanwhile (pause, drain): then none is left.
                if act.unchecked.front().is_some_and(|(seq, ..)| *seq == first) {
                    for sent in answers {
                        let Some((_, incoming, delivery)) = act.unchecked.pop_front() else {
                            break;
                        };
                        match sent {
                            Some(refs) => act.duplicate(incoming, &delivery, refs, ctx),
                            None => act.pending.push_back((incoming, delivery)),
                        }
                    }
                }
                act.check(ctx);
                act.pump(ctx);
            })
            .spawn(ctx);
    }

    /// Remember that this bind had `id` accepted, with its references.
    fn remember_sent(&mut self, id: String, refs: Vec<String>) {
        if self.sent_here.insert(id.clone(), refs).is_none() {
            self.sent_order.push_back(id);
        }
        while self.sent_order.len() > SENT_HERE {
            if let Some(old) = self.sent_order.pop_front() {
                self.sent_here.remove(&old);
            }
        }
    }

    /// Slots were freed (messages settled, or back in `pending`, and out of
    /// `submitting`): the next submissions may go, or the drain may end.
    fn released(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            self.pending.clear();
            self.unchecked.clear();
            if self.in_flight == 0 && self.settling == 0 {
                if let Some(done) = self.drained.take() {
                    let _ = done.send(());
                }
            }
        } else {
            self.pump(ctx);
        }
    }

    fn outcome(
        &mut self,
        incoming: Incoming,
        mut delivery: Delivery,
        result: Result<Submitted, CarrierError>,
        elapsed: Duration,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        let topology = self.broker.topology().clone();
        let id = self.spec.id.clone();
        let seconds = elapsed.as_secs_f64();
        let strained = match &result {
            Ok(_) => self.vitals.observe(elapsed, false, now),
            Err(CarrierError::Temporary { .. }) => self.vitals.observe(elapsed, true, now),
            Err(_) => None,
        };
        if let Some(strain) = strained {
            telemetry::carrier_strained(&id, strain.as_str());
            self.throttle.throttled(now);
            self.report();
        }
        match result {
            Ok(submitted) => {
                telemetry::carrier_submitted(&id, "sent", seconds);
                if self.breaker.is_open() {
                    telemetry::breaker_changed(&id, false);
                }
                self.breaker.success();
                let refs = submitted.carrier_refs;
                let event = events::status(
                    &topology,
                    &delivery.envelope,
                    delivery.attempt,
                    "sent",
                    Some(&id),
                    refs.clone(),
                    None,
                );
                let msg = delivery.envelope.id.to_string();
                self.finish_counted(incoming, vec![event], "sent", msg, Some(refs), ctx);
            }
            Err(CarrierError::Throttled { .. }) => {
                telemetry::carrier_submitted(&id, "throttled", seconds);
                self.throttle.throttled(now);
                self.report();
                // Still ours: try again when the rate allows.
                self.submitting.remove(delivery.envelope.id.as_str());
                self.pending.push_front((incoming, delivery));
                self.released(ctx);
            }
            Err(CarrierError::ConnectionLost { text }) => {
                telemetry::carrier_submitted(&id, "connection_lost", seconds);
                tracing::warn!(carrier = %id, %text, "submission's fate unknown; it will be sent again");
                // Requeued when we stop (the bind-lost watcher stops us).
                self.submitting.remove(delivery.envelope.id.as_str());
                self.pending.push_front((incoming, delivery));
                ctx.stop();
            }
            Err(e @ CarrierError::Temporary { .. }) => {
                telemetry::carrier_submitted(&id, "temporary", seconds);
                if self.breaker.failure(now) {
                    telemetry::breaker_changed(&id, true);
                    self.report();
                }
                delivery.attempt += 1;
                let policy = &self.spec.retry;
                if delivery.attempt >= policy.max_attempts {
                    let mut error = events::carrier_error(&e);
                    error.code = "retries_exhausted".into();
                    let event = events::status(
                        &topology,
                        &delivery.envelope,
                        delivery.attempt,
                        "failed",
                        Some(&id),
                        vec![],
                        Some(error),
                    );
                    let msg = delivery.envelope.id.to_string();
                    self.finish_counted(incoming, vec![event], "failed", msg, None, ctx);
                } else {
                    let tier = policy.tier(delivery.attempt);
                    let msg = delivery.envelope.id.to_string();
                    let retry = events::to_retry(&topology, &id, tier, delivery);
                    self.finish_counted(incoming, vec![retry], "retry", msg, None, ctx);
                }
            }
            Err(e @ CarrierError::Permanent { .. }) => {
                telemetry::carrier_submitted(&id, "permanent", seconds);
                let event = events::status(
                    &topology,
                    &delivery.envelope,
                    delivery.attempt,
                    "failed",
                    Some(&id),
                    vec![],
                    Some(events::carrier_error(&e)),
                );
                let msg = delivery.envelope.id.to_string();
                self.finish_counted(incoming, vec![event], "failed", msg, None, ctx);
            }
        }
    }

    /// Publish `out` (confirmed), then acknowledge the delivery. If the
    /// publish fails the delivery goes back to the queue. Runs apart from
    /// the actor, so a restart does not cut it short.
    fn finish(&self, incoming: Incoming, out: Vec<Outgoing>, status: &'static str) {
        actix::spawn(settle(
            self.broker.clone(),
            self.spec.id.clone(),
            incoming,
            out,
            status,
        ));
    }

    /// [`Self::finish`] for an answered submission, through the settler:
    /// message `id` is released when its delivery is settled. `sent_refs`:
    /// the carrier accepted it with these references; recorded in the
    /// ledger before the publish.
    fn finish_counted(
        &mut self,
        incoming: Incoming,
        out: Vec<Outgoing>,
        status: &'static str,
        id: String,
        sent_refs: Option<Vec<String>>,
        ctx: &mut Context<Self>,
    ) {
        self.settling += 1;
        let settle = Settle::Done {
            incoming,
            out,
            status,
            id,
            sent_refs,
        };
        let unsent = match &self.settler {
            Some(settler) => settler.send(settle).err().map(|e| e.0),
            None => Some(settle),
        };
        if let Some(settle) = unsent {
            // No settler, or it died: start another rather than hold the delivery.
            let settler = self.start_settler(ctx);
            let _ = settler.send(settle);
            self.settler = Some(settler);
        }
    }

    fn start_settler(&self, ctx: &Context<Self>) -> mpsc::UnboundedSender<Settle> {
        let (tx, rx) = mpsc::unbounded_channel();
        actix::spawn(settler(
            self.broker.clone(),
            self.ledger.clone(),
            self.spec.id.clone(),
            self.generation,
            ctx.address(),
            rx,
        ));
        tx
    }
}

/// Work for the settler.
enum Settle {
    /// A `sending` event: best effort.
    Announce(Outgoing),
    /// An answered submission: record `sent_refs` in the ledger, publish
    /// `out`, then acknowledge `incoming` (give it back if the publish fails).
    Done {
        incoming: Incoming,
        out: Vec<Outgoing>,
        status: &'static str,
        id: String,
        sent_refs: Option<Vec<String>>,
    },
}

/// Settle in batches, in order, until every sender is gone and the queue
/// is empty. Runs apart from the actor, so a restart does not cut it short.
async fn settler(
    broker: Broker,
    ledger: Arc<dyn SubmissionLedger>,
    carrier: String,
    generation: u64,
    me: Addr<CarrierConnection>,
    mut rx: mpsc::UnboundedReceiver<Settle>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < SETTLE_BATCH {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        // Taken apart once: the ledger's entries, the messages to publish
        // (moved, in order) and the deliveries to settle.
        let mut sent: Vec<(String, Vec<String>)> = Vec::new();
        let mut out: Vec<Outgoing> = Vec::with_capacity(batch.len());
        let mut done = Vec::with_capacity(batch.len());
        for s in batch {
            match s {
                Settle::Announce(o) => out.push(o),
                Settle::Done {
                    incoming,
                    out: o,
                    status,
                    id,
                    sent_refs,
                } => {
                    if let Some(refs) = sent_refs {
                        sent.push((id.clone(), refs));
                    }
                    out.extend(o);
                    done.push((incoming, status, id));
                }
            }
        }
        if !sent.is_empty() {
            if let Err(e) = ledger.record_sent_many(&sent).await {
                tracing::warn!(error = %e, "submission ledger unavailable");
            }
        }
        let published = broker
            .publish_confirmed(&events::pack(broker.topology(), out))
            .await;
        if let Err(e) = &published {
            let what = if done.is_empty() {
                "sending event"
            } else {
                "carrier outcome"
            };
            telemetry::publish_failed(what, e);
        }
        let ok = published.is_ok();
        let ids = futures::future::join_all(done.into_iter().map(|(incoming, status, id)| {
            let carrier = &carrier;
            async move {
                if ok {
                    telemetry::message_outcome(carrier, status);
                    let _ = incoming.ack().await;
                } else {
                    let _ = incoming.requeue().await;
                }
                id
            }
        }))
        .await;
        if !ids.is_empty() {
            me.do_send(Settled {
                generation,
                ids,
                sent,
            });
        }
    }
}

async fn settle(
    broker: Broker,
    carrier: String,
    incoming: Incoming,
    out: Vec<Outgoing>,
    status: &'static str,
) {
    match incoming.hand_over(&broker, &out).await {
        Ok(()) => telemetry::message_outcome(&carrier, status),
        Err(e) => telemetry::publish_failed("carrier outcome", &e),
    }
}

/// Answered submissions are settled (internal): one report per settler batch.
#[derive(Message)]
#[rtype(result = "()")]
struct Settled {
    generation: u64,
    ids: Vec<String>,
    /// Of those, the ones the carrier accepted, with their references
    /// (recorded in the ledger, or tried).
    sent: Vec<(String, Vec<String>)>,
}

impl Handler<Settled> for CarrierConnection {
    type Result = ();

    fn handle(&mut self, msg: Settled, ctx: &mut Self::Context) {
        if msg.generation == self.generation {
            self.settling = self.settling.saturating_sub(msg.ids.len());
            for (id, refs) in msg.sent {
                self.remember_sent(id, refs);
            }
            for id in &msg.ids {
                self.submitting.remove(id.as_str());
            }
            self.released(ctx);
        }
    }
}

/// Publish receipts to `herald.events` in batches; each is acknowledged to
/// the carrier (deliver_sm_resp) only once its batch is confirmed. If the
/// broker stays away, the receipts are dropped unacknowledged after a while
/// and the carrier delivers them again.
async fn forward_receipts(
    broker: Broker,
    carrier: String,
    mut receipts: tokio::sync::mpsc::Receiver<AckedReceipt>,
) {
    while let Some(first) = receipts.recv().await {
        let mut held = vec![first];
        while held.len() < RECEIPT_BATCH {
            match receipts.try_recv() {
                Ok(r) => held.push(r),
                Err(_) => break,
            }
        }
        let batch: Vec<Outgoing> = held
            .iter()
            .map(|r| events::receipt(broker.topology(), &carrier, r.receipt.clone()))
            .collect();
        let batch = events::pack(broker.topology(), batch);
        match broker.publish_confirmed(&batch).await {
            Ok(()) => held.into_iter().for_each(AckedReceipt::ack),
            Err(e) => {
                telemetry::publish_failed("receipt", &e);
                // Unacknowledged: the carrier keeps them and retries.
                drop(held);
            }
        }
    }
}

impl Actor for CarrierConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.generation += 1;
        self.settler = Some(self.start_settler(ctx));
        if self.draining {
            return;
        }
        ctx.run_interval(STATUS_INTERVAL, |act, _| act.report());
        if self.failures == 0 {
            self.acquire(ctx);
        } else {
            let backoff = (RESTART_BACKOFF * 2u32.saturating_pow(self.failures.min(8) - 1))
                .min(MAX_RESTART_BACKOFF);
            ctx.run_later(backoff, |act, ctx| act.acquire(ctx));
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        telemetry::carrier_bound(self.id(), self.bind, false);
    }
}

impl Supervised for CarrierConnection {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.restarts += 1;
        telemetry::actor_restarted("carrier_connection", &self.spec.id, "bind lost or refused");
        if let Some(client) = self.client.take() {
            actix::spawn(async move { client.close().await });
        }
        // Dropping them gives them back to the queue.
        self.pending.clear();
        self.unchecked.clear();
        self.checking = false;
        self.in_flight = 0;
        // The old settler finishes what it holds; its reports are ignored.
        self.settler = None;
        self.settling = 0;
        self.submitting.clear();
        self.pump_scheduled = false;
        self.consuming = None;
        self.report();
    }
}

impl StreamHandler<Incoming> for CarrierConnection {
    fn handle(&mut self, incoming: Incoming, ctx: &mut Self::Context) {
        if self.draining || self.paused {
            return; // dropped: requeued
        }
        match serde_json::from_slice::<CarrierTask>(&incoming.body) {
            Ok(CarrierTask::DeliverV1(delivery)) => {
                self.arrivals += 1;
                self.unchecked
                    .push_back((self.arrivals, incoming, delivery));
                self.check(ctx);
            }
            Err(e) => {
                telemetry::poison("carrier", &e.to_string());
                let dead = events::dead(self.broker.topology(), &incoming.body, &e.to_string());
                self.finish(incoming, vec![dead], "poison");
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The subscription ends only when we drop it.
    }
}

impl Handler<Ping> for CarrierConnection {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

impl Handler<Crash> for CarrierConnection {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("carrier connection {} crashed on request", self.spec.id);
    }
}

impl Handler<Hold> for CarrierConnection {
    type Result = ();

    fn handle(&mut self, Hold(pause): Hold, ctx: &mut Self::Context) {
        if pause == self.paused {
            return;
        }
        self.paused = pause;
        if pause {
            // Stop consuming; what waits here goes back to the queue (to
            // another bind, or to a rerouter). Submissions in flight finish.
            if let Some(handle) = self.consuming.take() {
                ctx.cancel_future(handle);
            }
            self.pending.clear();
            self.unchecked.clear();
            tracing::info!(
                carrier = self.id(),
                bind = self.bind,
                "paused by the operator"
            );
        } else {
            if self.client.is_some() && self.consuming.is_none() && !self.draining {
                self.consume(ctx);
            }
            tracing::info!(
                carrier = self.id(),
                bind = self.bind,
                "resumed by the operator"
            );
        }
        self.report();
    }
}

impl Handler<Drain> for CarrierConnection {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        self.draining = true;
        self.pending.clear();
        self.unchecked.clear();
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.in_flight == 0 && self.settling == 0 {
            let _ = tx.send(());
        } else {
            self.drained = Some(tx);
        }
        let client = self.client.clone();
        let leases = self.leases.clone();
        let (key, node) = (self.key(), self.node.clone());
        self.holding = false;
        Box::pin(
            async move {
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, rx).await;
                if let Some(c) = client {
                    c.close().await;
                }
                leases.release(&key, &node).await;
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.client = None;
                ctx.stop();
            }),
        )
    }
}
