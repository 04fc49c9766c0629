//! CarrierConnection: one bind to one carrier. It consumes the carrier's
//! queue (`herald.carrier.<id>`, prefetch = twice the window, shared by the
//! carrier's binds), sends at most its share of the carrier's TPS (adaptive
//! token bucket), keeps at most `window` submissions unanswered, and guards
//! the carrier with a breaker.
//!
//! Data in: deliveries from the queue. Data out: `sending`, `sent`, `failed`,
//! `expired` events and receipts on `herald.events`; temporary failures to
//! the carrier's delay queues. A delivery is acknowledged only after its
//! outcome is published and confirmed; one still held when the actor stops
//! or crashes goes back to the queue (see `broker::Incoming`).
//!
//! Supervision: the actor is `Supervised`. When the bind is lost or refused
//! it stops; the supervisor restarts it after a back-off that doubles with
//! each consecutive failure. A panic is caught by the HealthMonitor instead.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use herald_carriers::smpp::SmppClient;
use herald_carriers::{CarrierConnection as _, CarrierError, Receipt, Submission, Submitted};
use tokio_stream::wrappers::ReceiverStream;

use crate::breaker::Breaker;
use crate::broker::{Broker, Incoming, Outgoing};
use crate::config::CarrierSpec;
use crate::events;
use crate::health::Ping;
use crate::payload::{CarrierTask, Delivery};
use crate::root::{CarrierStatus, Root};
use crate::telemetry;
use crate::throttle::Throttle;

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

/// Crash on purpose (chaos testing through the admin API).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// Stop taking work, wait for submissions in flight, unbind.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// What one bind is doing.
pub struct CarrierConnection {
    spec: Arc<CarrierSpec>,
    bind: u32,
    broker: Broker,
    root: Addr<Root>,
    client: Option<Arc<SmppClient>>,
    throttle: Throttle,
    breaker: Breaker,
    /// Deliveries taken from the queue, not yet submitted. They stay
    /// unacknowledged in RabbitMQ until their outcome is published.
    pending: VecDeque<(Incoming, Delivery)>,
    in_flight: usize,
    pump_scheduled: bool,
    /// Consecutive failed connection attempts (kept across restarts).
    failures: u32,
    restarts: u64,
    draining: bool,
    /// Told when the last submission in flight is answered while draining.
    drained: Option<tokio::sync::oneshot::Sender<()>>,
    /// Bumped at each (re)start so stale callbacks from a previous bind
    /// are ignored.
    generation: u64,
}

impl CarrierConnection {
    pub fn new(spec: Arc<CarrierSpec>, bind: u32, broker: Broker, root: Addr<Root>) -> Self {
        let share = spec.tps / f64::from(spec.binds.max(1));
        Self {
            throttle: Throttle::new(share, Instant::now()),
            breaker: Breaker::new(spec.breaker_failures, spec.breaker_cooldown()),
            spec,
            bind,
            broker,
            root,
            client: None,
            pending: VecDeque::new(),
            in_flight: 0,
            pump_scheduled: false,
            failures: 0,
            restarts: 0,
            draining: false,
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
        self.root.do_send(CarrierStatus {
            carrier: self.spec.id.clone(),
            bind: self.bind,
            bound: self.client.is_some(),
            usable: self.client.is_some() && self.breaker.is_usable(now),
            breaker_open: self.breaker.is_open(),
            rate: self.throttle.rate(),
            configured_rate: self.throttle.configured(),
            in_flight: self.in_flight as u32,
            pending: self.pending.len() as u32,
            restarts: self.restarts,
        });
        telemetry::carrier_rate(self.id(), self.bind, self.throttle.rate());
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        let Some(config) = self.spec.smpp.clone() else {
            ctx.stop();
            return;
        };
        let generation = self.generation;
        async move { SmppClient::connect(config).await }
            .into_actor(self)
            .map(move |result, act, ctx| {
                if act.generation != generation {
                    return;
                }
                match result {
                    Ok((client, receipts)) => act.bound(Arc::new(client), receipts, ctx),
                    Err(e) => {
                        act.failures += 1;
                        tracing::warn!(carrier = act.id(), bind = act.bind, error = %e, "bind failed");
                        act.report();
                        ctx.stop();
                    }
                }
            })
            .spawn(ctx);
    }

    fn bound(
        &mut self,
        client: Arc<SmppClient>,
        receipts: tokio::sync::mpsc::Receiver<Receipt>,
        ctx: &mut Context<Self>,
    ) {
        self.failures = 0;
        self.client = Some(client.clone());
        telemetry::carrier_bound(self.id(), self.bind, true);
        // Receipts go to herald.events in batches, in a task of their own.
        let broker = self.broker.clone();
        let carrier = self.spec.id.clone();
        actix::spawn(forward_receipts(broker, carrier, receipts));
        // Consume the carrier's queue.
        let queue = self.broker.topology().carrier_queue(self.id());
        let prefetch = (self.window() * 2).min(u16::MAX as usize) as u16;
        let rx = self.broker.subscribe(queue, prefetch);
        ctx.add_stream(ReceiverStream::new(rx));
        // When the bind is lost, stop: the supervisor restarts us.
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
        self.report();
    }

    /// Submit what the window, the breaker and the rate allow.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        while self.in_flight < self.window() && !self.pending.is_empty() {
            let now = Instant::now();
            if !self.breaker.allow(now) {
                self.schedule_pump(self.spec.breaker_cooldown() / 4, ctx);
                return;
            }
            if !self.throttle.try_take(now) {
                self.schedule_pump(self.throttle.wait(), ctx);
                return;
            }
            let Some((incoming, delivery)) = self.pending.pop_front() else {
                return;
            };
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
        client: Arc<SmppClient>,
        incoming: Incoming,
        delivery: Delivery,
        ctx: &mut Context<Self>,
    ) {
        self.in_flight += 1;
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
            "sending",
            Some(self.id()),
            vec![],
            None,
        );
        let broker = self.broker.clone();
        let generation = self.generation;
        async move {
            let announce = broker.publish_confirmed(std::slice::from_ref(&sending));
            let started = Instant::now();
            let (announced, result) = futures::join!(announce, client.submit(submission));
            (announced, result, started.elapsed())
        }
        .into_actor(self)
        .map(move |(announced, result, elapsed), act, ctx| {
            act.in_flight = act.in_flight.saturating_sub(1);
            if act.generation != generation {
                return; // a previous bind's answer; the delivery is requeued by drop
            }
            if let Err(e) = announced {
                telemetry::publish_failed("sending event", &e);
            }
            act.outcome(incoming, delivery, result, elapsed, ctx);
            if act.draining {
                act.pending.clear();
                if act.in_flight == 0 {
                    if let Some(done) = act.drained.take() {
                        let _ = done.send(());
                    }
                }
            } else {
                act.pump(ctx);
            }
        })
        .spawn(ctx);
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
        match result {
            Ok(submitted) => {
                telemetry::carrier_submitted(&id, "sent", seconds);
                if self.breaker.is_open() {
                    telemetry::breaker_changed(&id, false);
                }
                self.breaker.success();
                let event = events::status(
                    &topology,
                    &delivery.envelope,
                    "sent",
                    Some(&id),
                    submitted.carrier_refs,
                    None,
                );
                self.finish(incoming, vec![event], "sent");
            }
            Err(CarrierError::Throttled { .. }) => {
                telemetry::carrier_submitted(&id, "throttled", seconds);
                self.throttle.throttled(now);
                self.report();
                // Still ours: try again when the rate allows.
                self.pending.push_front((incoming, delivery));
            }
            Err(CarrierError::ConnectionLost { text }) => {
                telemetry::carrier_submitted(&id, "connection_lost", seconds);
                tracing::warn!(carrier = %id, %text, "submission's fate unknown; it will be sent again");
                // Requeued when we stop (the bind-lost watcher stops us).
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
                        "failed",
                        Some(&id),
                        vec![],
                        Some(error),
                    );
                    self.finish(incoming, vec![event], "failed");
                } else {
                    let tier = policy.tier(delivery.attempt);
                    let retry = events::to_retry(&topology, &id, tier, &delivery);
                    self.finish(incoming, vec![retry], "retry");
                }
            }
            Err(e @ CarrierError::Permanent { .. }) => {
                telemetry::carrier_submitted(&id, "permanent", seconds);
                let event = events::status(
                    &topology,
                    &delivery.envelope,
                    "failed",
                    Some(&id),
                    vec![],
                    Some(events::carrier_error(&e)),
                );
                self.finish(incoming, vec![event], "failed");
            }
        }
    }

    /// Publish `out` (confirmed), then acknowledge the delivery. If the
    /// publish fails the delivery goes back to the queue.
    fn finish(&self, incoming: Incoming, out: Vec<Outgoing>, status: &'static str) {
        let broker = self.broker.clone();
        let carrier = self.spec.id.clone();
        actix::spawn(async move {
            match broker.publish_confirmed(&out).await {
                Ok(()) => {
                    let _ = incoming.ack().await;
                    telemetry::message_outcome(&carrier, status);
                }
                Err(e) => {
                    telemetry::publish_failed("carrier outcome", &e);
                    let _ = incoming.requeue().await;
                }
            }
        });
    }
}

async fn forward_receipts(
    broker: Broker,
    carrier: String,
    mut receipts: tokio::sync::mpsc::Receiver<Receipt>,
) {
    while let Some(first) = receipts.recv().await {
        let mut batch = vec![events::receipt(broker.topology(), &carrier, first)];
        while batch.len() < RECEIPT_BATCH {
            match receipts.try_recv() {
                Ok(r) => batch.push(events::receipt(broker.topology(), &carrier, r)),
                Err(_) => break,
            }
        }
        // The carrier was already answered (deliver_sm_resp); keep trying
        // for a while rather than lose the receipt.
        let mut wait = Duration::from_millis(100);
        while let Err(e) = broker.publish_confirmed(&batch).await {
            telemetry::publish_failed("receipt", &e);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

impl Actor for CarrierConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.generation += 1;
        if self.draining {
            return;
        }
        ctx.run_interval(STATUS_INTERVAL, |act, _| act.report());
        if self.failures == 0 {
            self.connect(ctx);
        } else {
            let backoff = (RESTART_BACKOFF * 2u32.saturating_pow(self.failures.min(8) - 1))
                .min(MAX_RESTART_BACKOFF);
            ctx.run_later(backoff, |act, ctx| act.connect(ctx));
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
        self.in_flight = 0;
        self.pump_scheduled = false;
        self.report();
    }
}

impl StreamHandler<Incoming> for CarrierConnection {
    fn handle(&mut self, incoming: Incoming, ctx: &mut Self::Context) {
        if self.draining {
            return; // dropped: requeued
        }
        match serde_json::from_slice::<CarrierTask>(&incoming.body) {
            Ok(CarrierTask::DeliverV1(delivery)) => {
                self.pending.push_back((incoming, delivery));
                self.pump(ctx);
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

impl Handler<Drain> for CarrierConnection {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        self.draining = true;
        self.pending.clear();
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.in_flight == 0 {
            let _ = tx.send(());
        } else {
            self.drained = Some(tx);
        }
        let client = self.client.clone();
        Box::pin(
            async move {
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, rx).await;
                if let Some(c) = client {
                    c.close().await;
                }
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.client = None;
                ctx.stop();
            }),
        )
    }
}
