//! TenantActor: one per tenant with traffic on this node, spawned by its
//! shard's IngressConsumer on the first message and stopped after
//! [`IDLE_AFTER`] without one. It applies the tenant's policy (a message past
//! its validity is `expired` without being sent), finds the route, and hands
//! the message to the route's actor. No route: the message fails with
//! `no_route` at once, visibly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;

use crate::broker::{Broker, Incoming};
use crate::events;
use crate::payload::{Delivery, MessageEnvelope};
use crate::root::RouteTable;
use crate::route::Dispatch;
use crate::telemetry;

/// A tenant actor with no message for this long stops.
pub const IDLE_AFTER: Duration = Duration::from_secs(300);

/// A message of this tenant, fresh from its ingress shard.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Admit {
    pub incoming: Incoming,
    pub envelope: MessageEnvelope,
}

/// The routes changed (reload, or a route actor was recreated).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct UseRoutes(pub Arc<RouteTable>);

pub struct TenantActor {
    tenant: String,
    routes: Arc<RouteTable>,
    broker: Broker,
    last_active: Instant,
}

impl TenantActor {
    pub fn new(tenant: String, routes: Arc<RouteTable>, broker: Broker) -> Self {
        Self {
            tenant,
            routes,
            broker,
            last_active: Instant::now(),
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
            status,
            None,
            vec![],
            Some(events::herald_error(code, text)),
        );
        let broker = self.broker.clone();
        actix::spawn(async move {
            match broker.publish_confirmed(&[event]).await {
                Ok(()) => {
                    let _ = incoming.ack().await;
                }
                Err(e) => {
                    telemetry::publish_failed("tenant outcome", &e);
                    let _ = incoming.requeue().await;
                }
            }
        });
    }
}

impl Actor for TenantActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(IDLE_AFTER / 4, |act, ctx| {
            if act.last_active.elapsed() >= IDLE_AFTER {
                ctx.stop();
            }
        });
    }
}

impl Handler<Admit> for TenantActor {
    type Result = ();

    fn handle(&mut self, msg: Admit, _: &mut Self::Context) {
        self.last_active = Instant::now();
        let Admit { incoming, envelope } = msg;
        if envelope.expires_at.is_some_and(|t| t <= Utc::now()) {
            return self.settle(
                incoming,
                &envelope,
                "expired",
                "expired",
                "validity passed before sending".into(),
            );
        }
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
}

impl Handler<UseRoutes> for TenantActor {
    type Result = ();

    fn handle(&mut self, msg: UseRoutes, _: &mut Self::Context) {
        self.routes = msg.0;
    }
}
