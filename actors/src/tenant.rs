//! TenantActor: one per tenant with traffic on this node, spawned by its
//! shard's IngressConsumer on the first message and stopped after
//! [`IDLE_AFTER`] without one. It applies the tenant's policy (a message past
//! its validity is `expired` without being sent), finds the route, and hands
//! the message to the route's actor. No route: the message fails with
//! `no_route` at once, visibly.
//!
//! Fairness: a tenant may have at most [`SHARE`] messages waiting at its
//! routes. Past that, its `normal` messages are moved (publish, then
//! acknowledge) to the shard's overflow queue, so the shard's ingress queue
//! keeps flowing for the other tenants on it. Overflow messages come back
//! (a few at a time, see `ingress`) and wait here until the tenant's share
//! frees up. `high` priority messages never wait in overflow.
//!
//! Scheduled messages (`scheduled_at`) not yet due wait in RabbitMQ delay
//! tiers (0.5 s to 6 h, TTL then dead-lettered back to their ingress shard),
//! hopping down the tiers until they are due; never in memory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::broker::{Broker, Incoming, Topology};
use crate::events;
use crate::payload::{Delivery, MessageEnvelope, Priority};
use crate::root::RouteTable;
use crate::route::Dispatch;
use crate::telemetry;

/// A tenant actor with no message for this long stops.
pub const IDLE_AFTER: Duration = Duration::from_secs(300);

/// A scheduled message due within this is sent now.
pub const SCHEDULE_SLACK_MS: i64 = 500;

/// Messages of one tenant that may wait at its routes at once.
pub const SHARE: usize = 256;

/// A message of this tenant, from its ingress shard or its overflow.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Admit {
    pub incoming: Incoming,
    pub envelope: MessageEnvelope,
    /// It comes from the shard's overflow queue (it already waited once).
    pub from_overflow: bool,
}

/// The routes changed (reload, or a route actor was recreated).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct UseRoutes(pub Arc<RouteTable>);

pub struct TenantActor {
    tenant: String,
    shard: u16,
    routes: Arc<RouteTable>,
    broker: Broker,
    last_active: Instant,
    share: Arc<Semaphore>,
    /// Overflow messages waiting for the share to free up (bounded by the
    /// overflow prefetch).
    held: VecDeque<(Incoming, MessageEnvelope)>,
    waiting_for_share: bool,
}

impl TenantActor {
    pub fn new(tenant: String, shard: u16, routes: Arc<RouteTable>, broker: Broker) -> Self {
        Self {
            tenant,
            shard,
            routes,
            broker,
            last_active: Instant::now(),
            share: Arc::new(Semaphore::new(SHARE)),
            held: VecDeque::new(),
            waiting_for_share: false,
        }
    }

    /// A scheduled message not yet due: park it in the longest delay tier
    /// that does not overshoot; it comes back through ingress and is looked
    /// at again (publish, then acknowledge).
    fn delay(&self, incoming: Incoming, envelope: MessageEnvelope, remaining_ms: u64) {
        let tier = Topology::delay_tier(remaining_ms).unwrap_or(0);
        let out = events::to_ingress(
            self.broker.topology().delay_exchange(tier),
            Topology::ingress_key(self.shard),
            envelope,
        );
        events::hand_over(&self.broker, incoming, vec![out], "schedule");
    }

    /// Publish to the shard's overflow queue, then acknowledge.
    fn overflow(&self, incoming: Incoming, envelope: MessageEnvelope) {
        telemetry::overflowed(self.shard);
        // The default exchange routes by queue name.
        let out = events::to_ingress(
            String::new(),
            self.broker.topology().overflow_queue(self.shard),
            envelope,
        );
        events::hand_over(&self.broker, incoming, vec![out], "overflow");
    }

    /// Wait (without blocking the actor) for the share to free up, then
    /// route the held messages.
    fn wait_for_share(&mut self, ctx: &mut Context<Self>) {
        if self.waiting_for_share || self.held.is_empty() {
            return;
        }
        self.waiting_for_share = true;
        let share = self.share.clone();
        async move { share.acquire_owned().await.ok() }
            .into_actor(self)
            .map(|permit, act, ctx| {
                act.waiting_for_share = false;
                let Some(permit) = permit else {
                    return;
                };
                if let Some((incoming, envelope)) = act.held.pop_front() {
                    act.route(incoming, envelope, Some(permit));
                }
                // More of the share may be free now.
                while !act.held.is_empty() {
                    match act.share.clone().try_acquire_owned() {
                        Ok(p) => {
                            let (incoming, envelope) = act.held.pop_front().expect("not empty");
                            act.route(incoming, envelope, Some(p));
                        }
                        Err(_) => break,
                    }
                }
                act.wait_for_share(ctx);
            })
            .spawn(ctx);
    }

    fn route(
        &mut self,
        incoming: Incoming,
        envelope: MessageEnvelope,
        share: Option<OwnedSemaphorePermit>,
    ) {
        let route = self
            .routes
            .router
            .route(envelope.channel, &envelope.to, &self.tenant)
            .and_then(|r| {
                self.routes
                    .actors
                    .get(&r.id)
                    .map(|a| (r.id.clone(), a.clone()))
            });
        match route {
            Some((id, actor)) => actor.do_send(Dispatch {
                incoming,
                delivery: Delivery {
                    envelope,
                    route: id,
                    attempt: 0,
                    exclude: vec![],
                },
                share,
            }),
            None => {
                telemetry::routed("none", "no_route");
                let text = format!(
                    "no route for {} to {}",
                    envelope.channel.as_str(),
                    envelope.to
                );
                self.settle(incoming, &envelope, "failed", "no_route", text);
            }
        }
    }

    fn settle(
        &self,
        incoming: Incoming,
        envelope: &MessageEnvelope,
        status: &str,
        code: &str,
        text: String,
    ) {
        let event = events::status(
            self.broker.topology(),
            envelope,
            0,
            status,
            None,
            vec![],
            Some(events::herald_error(code, text)),
        );
        events::hand_over(&self.broker, incoming, vec![event], "tenant outcome");
    }
}

impl Actor for TenantActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(IDLE_AFTER / 4, |act, ctx| {
            if act.last_active.elapsed() >= IDLE_AFTER && act.held.is_empty() {
                ctx.stop();
            }
        });
    }
}

impl Handler<Admit> for TenantActor {
    type Result = ();

    fn handle(&mut self, msg: Admit, ctx: &mut Self::Context) {
        self.last_active = Instant::now();
        let Admit {
            incoming,
            envelope,
            from_overflow,
        } = msg;
        if envelope.expires_at.is_some_and(|t| t <= Utc::now()) {
            return self.settle(
                incoming,
                &envelope,
                "expired",
                "expired",
                "validity passed before sending".into(),
            );
        }
        if let Some(at) = envelope.scheduled_at {
            let remaining = (at - Utc::now()).num_milliseconds();
            if remaining > SCHEDULE_SLACK_MS {
                return self.delay(incoming, envelope, remaining as u64);
            }
        }
        if envelope.priority == Priority::High {
            // Never waits behind the tenant's bulk traffic.
            return self.route(incoming, envelope, None);
        }
        if !from_overflow || self.held.is_empty() {
            if let Ok(permit) = self.share.clone().try_acquire_owned() {
                return self.route(incoming, envelope, Some(permit));
            }
        }
        if from_overflow {
            self.held.push_back((incoming, envelope));
            self.wait_for_share(ctx);
        } else {
            self.overflow(incoming, envelope);
        }
    }
}

impl Handler<UseRoutes> for TenantActor {
    type Result = ();

    fn handle(&mut self, msg: UseRoutes, _: &mut Self::Context) {
        self.routes = msg.0;
    }
}
