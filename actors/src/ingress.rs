//! IngressConsumer: one per ingress shard this node consumes. It reads
//! `herald.ingress.<n>` (and, a few at a time, the shard's overflow queue
//! where tenants over their share wait) and hands each message to its
//! tenant's actor,
//! spawning the actor on the tenant's first message (a tenant always maps to
//! one shard, so its actor lives here). Unreadable payloads go to
//! `herald.dead` with the reason.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::broker::{Broker, Incoming};
use crate::events;
use crate::health::Ping;
use crate::payload::IngressTask;
use crate::root::RouteTable;
use crate::telemetry;
use crate::tenant::{Admit, TenantActor, UseRoutes};

/// Unacknowledged ingress deliveries (AMQP messages, each of up to 32
/// messages) per shard.
pub const PREFETCH: u16 = 64;
/// Unacknowledged overflow deliveries per shard.
pub const OVERFLOW_PREFETCH: u16 = 64;

/// A delivery from the shard's overflow queue (internal).
struct FromOverflow(Incoming);

impl Message for FromOverflow {
    type Result = ();
}

pub struct IngressConsumer {
    shard: u16,
    broker: Broker,
    routes: Arc<RouteTable>,
    tenants: HashMap<String, Addr<TenantActor>>,
}

impl IngressConsumer {
    pub fn new(shard: u16, broker: Broker, routes: Arc<RouteTable>) -> Self {
        Self {
            shard,
            broker,
            routes,
            tenants: HashMap::new(),
        }
    }

    fn tenant(&mut self, id: &str) -> Addr<TenantActor> {
        if let Some(addr) = self.tenants.get(id).filter(|a| a.connected()) {
            return addr.clone();
        }
        let addr = TenantActor::new(
            id.to_owned(),
            self.shard,
            self.routes.clone(),
            self.broker.clone(),
        )
        .start();
        self.tenants.insert(id.to_owned(), addr.clone());
        addr
    }
}

impl Actor for IngressConsumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let queue = self.broker.topology().ingress_queue(self.shard);
        let rx = self.broker.subscribe(queue, PREFETCH);
        ctx.add_stream(ReceiverStream::new(rx));
        let overflow = self.broker.subscribe(
            self.broker.topology().overflow_queue(self.shard),
            OVERFLOW_PREFETCH,
        );
        ctx.add_message_stream(ReceiverStream::new(overflow).map(FromOverflow));
    }
}

impl IngressConsumer {
    fn admit(&mut self, incoming: Incoming, from_overflow: bool) {
        match serde_json::from_slice::<IngressTask>(&incoming.body) {
            Ok(IngressTask::SubmitV1(envelope)) => {
                let tenant = self.tenant(envelope.tenant_id.as_str());
                tenant.do_send(Admit {
                    incoming,
                    envelope,
                    from_overflow,
                });
            }
            Err(e) => {
                telemetry::poison("ingress", &e.to_string());
                let dead = events::dead(self.broker.topology(), &incoming.body, &e.to_string());
                events::hand_over(&self.broker, incoming, vec![dead], "dead letter");
            }
        }
    }
}

impl Handler<FromOverflow> for IngressConsumer {
    type Result = ();

    fn handle(&mut self, msg: FromOverflow, _: &mut Self::Context) {
        self.admit(msg.0, true);
    }
}

impl StreamHandler<Incoming> for IngressConsumer {
    fn handle(&mut self, incoming: Incoming, _: &mut Self::Context) {
        self.admit(incoming, false);
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<UseRoutes> for IngressConsumer {
    type Result = ();

    fn handle(&mut self, msg: UseRoutes, _: &mut Self::Context) {
        self.routes = msg.0.clone();
        self.tenants.retain(|_, a| a.connected());
        for t in self.tenants.values() {
            t.do_send(msg.clone());
        }
    }
}

impl Handler<Ping> for IngressConsumer {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}
