//! RouteActor: one per configured route. It picks the carrier for each
//! message (failover order or weights, skipping carriers whose breaker is
//! open or that are not bound) and hands the message to that carrier's
//! queue. The ingress delivery is acknowledged once the carrier queue has
//! confirmed the message.
//!
//! Fairness and priority: messages wait here, per tenant, and are released
//! to each carrier's queue at about that carrier's current rate, taking
//! tenants in turn (round robin) and, within a tenant, `high` priority
//! before `normal`. So a carrier queue never holds more than a moment of
//! traffic, and one tenant's flood waits in its own line instead of in front
//! of everyone else's messages. Waiting messages stay unacknowledged in
//! RabbitMQ (bounded by the ingress prefetch), so a crash loses none.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::broker::{Broker, Incoming};
use crate::config::RouteSpec;
use crate::courier::Courier;
use crate::events;
use crate::health::Ping;
use crate::payload::{Delivery, Priority};
use crate::routing::Picker;
use crate::telemetry;

/// Seconds of a carrier's rate released ahead (the carrier queue's depth
/// in steady state).
pub const LEAD_SECONDS: f64 = 0.25;
/// Released at the carrier's rate times this (the root lowers the rate it
/// reports while the carrier has a backlog, which closes the loop).
pub const PACE_HEADROOM: f64 = 1.0;
/// Most messages for one carrier packed into one AMQP message (each is
/// still acknowledged on its own by the carrier connection).
pub const CARRIER_PACK: usize = 16;

/// Route this message (delivery in hand, ingress delivery to acknowledge).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Dispatch {
    pub incoming: Incoming,
    pub delivery: Delivery,
    /// The tenant's share this message holds, given back once it is on a
    /// carrier's queue.
    pub share: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A carrier's usability and current total rate changed.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CarrierUsable {
    pub carrier: String,
    pub usable: bool,
    /// Messages per second over all its binds (0 when unknown).
    pub rate: f64,
}

/// Crash on purpose (chaos testing through the admin API).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashRoute;

/// The route was removed or changed by a reload: stop. Messages waiting
/// here go back to their ingress queues and are routed again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Release pacing towards one carrier: a token bucket at the carrier's rate.
#[derive(Debug, Clone)]
struct Pace {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Pace {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            tokens: Self::depth(rate),
            at: Instant::now(),
        }
    }

    fn depth(rate: f64) -> f64 {
        (rate * LEAD_SECONDS).max(10.0)
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.rate * PACE_HEADROOM).min(Self::depth(self.rate));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn wait(&self) -> Duration {
        Duration::from_secs_f64(
            ((1.0 - self.tokens).max(0.0) / (self.rate * PACE_HEADROOM)).max(0.001),
        )
    }
}

/// One tenant's waiting messages.
#[derive(Default)]
struct Line {
    high: VecDeque<Dispatch>,
    normal: VecDeque<Dispatch>,
}

impl Line {
    fn pop(&mut self) -> Option<Dispatch> {
        self.high.pop_front().or_else(|| self.normal.pop_front())
    }

    fn push_front(&mut self, d: Dispatch) {
        match d.delivery.envelope.priority {
            Priority::High => self.high.push_front(d),
            Priority::Normal => self.normal.push_front(d),
        }
    }

    fn is_empty(&self) -> bool {
        self.high.is_empty() && self.normal.is_empty()
    }
}

pub struct RouteActor {
    spec: RouteSpec,
    picker: Picker,
    /// Last reported usability; a carrier not yet heard of is not usable
    /// (when none is usable the first in order still gets the message).
    usable: HashMap<String, bool>,
    pace: HashMap<String, Pace>,
    lines: HashMap<String, Line>,
    /// Tenants with waiting messages, in turn order.
    turn: VecDeque<String>,
    pump_scheduled: bool,
    broker: Broker,
    /// Publishes released messages to the carriers' queues (started with
    /// the actor).
    courier: Option<Courier>,
}

impl RouteActor {
    pub fn new(spec: RouteSpec, broker: Broker) -> Self {
        Self {
            picker: Picker::new(&spec),
            spec,
            usable: HashMap::new(),
            pace: HashMap::new(),
            lines: HashMap::new(),
            turn: VecDeque::new(),
            pump_scheduled: false,
            broker,
            courier: None,
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        while let Some(tenant) = self.turn.pop_front() {
            let Some(line) = self.lines.get_mut(&tenant) else {
                continue;
            };
            let Some(dispatch) = line.pop() else {
                self.lines.remove(&tenant);
                continue;
            };
            let usable = &self.usable;
            let picked = self.picker.pick(
                |c| usable.get(c).copied().unwrap_or(false),
                &dispatch.delivery.exclude,
            );
            if let Some(carrier) = &picked {
                if let Some(pace) = self.pace.get_mut(carrier) {
                    if !pace.take(std::time::Instant::now()) {
                        let wait = pace.wait();
                        // Not yet: back to the head of its line and its turn.
                        if let Some(line) = self.lines.get_mut(&tenant) {
                            line.push_front(dispatch);
                        }
                        self.turn.push_front(tenant);
                        self.schedule(wait, ctx);
                        return;
                    }
                }
            }
            if self.lines.get(&tenant).is_some_and(|l| !l.is_empty()) {
                self.turn.push_back(tenant);
            } else {
                self.lines.remove(&tenant);
            }
            self.release(dispatch, picked);
        }
    }

    fn schedule(&mut self, after: Duration, ctx: &mut Context<Self>) {
        if self.pump_scheduled {
            return;
        }
        self.pump_scheduled = true;
        ctx.run_later(after, |act, ctx| {
            act.pump_scheduled = false;
            act.pump(ctx);
        });
    }

    fn release(&mut self, dispatch: Dispatch, carrier: Option<String>) {
        let Dispatch {
            incoming,
            mut delivery,
            share,
        } = dispatch;
        let topology = self.broker.topology();
        let out = match carrier {
            Some(carrier) => {
                delivery.route = self.spec.id.clone();
                telemetry::routed(&self.spec.id, "routed");
                events::to_carrier(topology, &carrier, delivery)
            }
            None => {
                telemetry::routed(&self.spec.id, "no_carrier");
                events::status(
                    topology,
                    &delivery.envelope,
                    delivery.attempt,
                    "failed",
                    None,
                    vec![],
                    Some(events::herald_error(
                        "no_route",
                        format!("every carrier of route {} was excluded", self.spec.id),
                    )),
                )
            }
        };
        // The tenant's share frees up once the message is on its way.
        self.courier
            .get_or_insert_with(|| Courier::start(self.broker.clone(), "route", CARRIER_PACK))
            .send(incoming, out, share);
    }
}

impl Actor for RouteActor {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for RouteActor {
    type Result = ();

    fn handle(&mut self, msg: Dispatch, ctx: &mut Self::Context) {
        let tenant = msg.delivery.envelope.tenant_id.to_string();
        let line = self.lines.entry(tenant.clone()).or_default();
        let was_empty = line.is_empty();
        match msg.delivery.envelope.priority {
            Priority::High => line.high.push_back(msg),
            Priority::Normal => line.normal.push_back(msg),
        }
        if was_empty && !self.turn.contains(&tenant) {
            self.turn.push_back(tenant);
        }
        if !self.pump_scheduled {
            self.pump(ctx);
        }
    }
}

impl Handler<CarrierUsable> for RouteActor {
    type Result = ();

    fn handle(&mut self, msg: CarrierUsable, ctx: &mut Self::Context) {
        self.usable.insert(msg.carrier.clone(), msg.usable);
        if msg.rate > 0.0 {
            match self.pace.get_mut(&msg.carrier) {
                Some(p) => p.rate = msg.rate,
                None => {
                    self.pace.insert(msg.carrier, Pace::new(msg.rate));
                }
            }
        }
        self.pump(ctx);
    }
}

impl Handler<Ping> for RouteActor {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

impl Handler<Retire> for RouteActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<CrashRoute> for RouteActor {
    type Result = ();

    fn handle(&mut self, _: CrashRoute, _: &mut Self::Context) {
        panic!("route {} crashed on request", self.spec.id);
    }
}
