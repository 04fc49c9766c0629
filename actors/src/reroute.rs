//! Rerouter: started by the root for a carrier that has been unusable
//! (unbound, or breaker open) for longer than its `reroute_after_ms` while
//! one of its routes has another usable carrier. It takes the messages
//! parked in the carrier's queue and sends each back through its route,
//! excluding this carrier. A message moves by publish-then-acknowledge, so
//! none is lost; it is submitted once unless the node dies between the two.
//! The root stops the rerouter when the carrier is usable again.

use actix::prelude::*;
use tokio_stream::wrappers::ReceiverStream;

use crate::broker::{Broker, Incoming};
use crate::health::Ping;
use crate::payload::CarrierTask;
use crate::root::{Reroute, Root};
use crate::telemetry;

/// Parked messages taken at once.
pub const PREFETCH: u16 = 64;

/// The carrier is usable again (or Herald stops): stop re-routing. What is
/// held unacknowledged returns to the carrier's queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRerouting;

pub struct Rerouter {
    carrier: String,
    broker: Broker,
    root: Addr<Root>,
}

impl Rerouter {
    pub fn new(carrier: String, broker: Broker, root: Addr<Root>) -> Self {
        Self {
            carrier,
            broker,
            root,
        }
    }
}

impl Actor for Rerouter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::warn!(carrier = %self.carrier, "re-routing messages parked on an unusable carrier");
        let queue = self.broker.topology().carrier_queue(&self.carrier);
        ctx.add_stream(ReceiverStream::new(self.broker.subscribe(queue, PREFETCH)));
    }
}

impl StreamHandler<Incoming> for Rerouter {
    fn handle(&mut self, incoming: Incoming, _: &mut Self::Context) {
        match serde_json::from_slice::<CarrierTask>(&incoming.body) {
            Ok(CarrierTask::DeliverV1(mut delivery)) => {
                if !delivery.exclude.contains(&self.carrier) {
                    delivery.exclude.push(self.carrier.clone());
                }
                telemetry::routed(&delivery.route, "rerouted");
                self.root.do_send(Reroute { incoming, delivery });
            }
            // The carrier connection sends unreadable payloads to the dead
            // letters when it is back; leave them.
            Err(_) => drop(incoming),
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<StopRerouting> for Rerouter {
    type Result = ();

    fn handle(&mut self, _: StopRerouting, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Ping> for Rerouter {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}
