//! RouteActor: one per configured route. It picks the carrier for each
//! message (failover order or weights, skipping carriers whose breaker is
//! open or that are not bound) and hands the message to that carrier's
//! queue. The ingress delivery is acknowledged once the carrier queue has
//! confirmed the message.

use std::collections::HashMap;

use actix::prelude::*;

use crate::broker::{Broker, Incoming};
use crate::config::RouteSpec;
use crate::events;
use crate::health::Ping;
use crate::payload::Delivery;
use crate::routing::Picker;
use crate::telemetry;

/// Route this message (delivery in hand, ingress delivery to acknowledge).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Dispatch {
    pub incoming: Incoming,
    pub delivery: Delivery,
}

/// A carrier became usable or unusable.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CarrierUsable {
    pub carrier: String,
    pub usable: bool,
}

/// Crash on purpose (chaos testing through the admin API).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashRoute;

pub struct RouteActor {
    spec: RouteSpec,
    picker: Picker,
    /// Last reported usability; a carrier not yet heard of is not usable
    /// (when none is usable the first in order still gets the message).
    usable: HashMap<String, bool>,
    broker: Broker,
}

impl RouteActor {
    pub fn new(spec: RouteSpec, usable: HashMap<String, bool>, broker: Broker) -> Self {
        Self {
            picker: Picker::new(&spec),
            spec,
            usable,
            broker,
        }
    }
}

impl Actor for RouteActor {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for RouteActor {
    type Result = ();

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) {
        let Dispatch {
            incoming,
            mut delivery,
        } = msg;
        let usable = &self.usable;
        let picked = self.picker.pick(
            |c| usable.get(c).copied().unwrap_or(true),
            &delivery.exclude,
        );
        let topology = self.broker.topology();
        let out = match picked {
            Some(carrier) => {
                delivery.route = self.spec.id.clone();
                telemetry::routed(&self.spec.id, "routed");
                events::to_carrier(topology, &carrier, &delivery)
            }
            None => {
                telemetry::routed(&self.spec.id, "no_carrier");
                events::status(
                    topology,
                    &delivery.envelope,
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
        let broker = self.broker.clone();
        actix::spawn(async move {
            match broker.publish_confirmed(&[out]).await {
                Ok(()) => {
                    let _ = incoming.ack().await;
                }
                Err(e) => {
                    telemetry::publish_failed("route", &e);
                    let _ = incoming.requeue().await;
                }
            }
        });
    }
}

impl Handler<CarrierUsable> for RouteActor {
    type Result = ();

    fn handle(&mut self, msg: CarrierUsable, _: &mut Self::Context) {
        self.usable.insert(msg.carrier, msg.usable);
    }
}

impl Handler<Ping> for RouteActor {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

impl Handler<CrashRoute> for RouteActor {
    type Result = ();

    fn handle(&mut self, _: CrashRoute, _: &mut Self::Context) {
        panic!("route {} crashed on request", self.spec.id);
    }
}
