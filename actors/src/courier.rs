//! Courier: moves deliveries on in batches. An actor hands it a delivery
//! and the one message that is its next step; the courier's task takes
//! every move waiting, publishes their messages packed (`events::pack_all`)
//! with one confirm, then acknowledges the deliveries (or, when the
//! publish fails, gives them all back). Under load the rounds are paced
//! ([`crate::pace`]) and the moves that arrive meanwhile make the next
//! batch, so RabbitMQ sees few large publishes instead of one per message;
//! when idle a move goes out alone at once.
//!
//! The task ends when the courier handle is dropped and every move handed
//! to it is done, so an actor that stops does not cut its moves short.

use futures::future::join_all;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::broker::{Broker, Incoming, Outgoing};
use crate::events;
use crate::pace::{Pace, ROUND_PERIOD};
use crate::telemetry;

/// Most moves published with one confirm.
const BATCH_MAX: usize = 512;

struct Move {
    incoming: Incoming,
    out: Outgoing,
    /// Held until the move is done (a share of a tenant's flow).
    keep: Option<OwnedSemaphorePermit>,
}

/// A handle on one courier task. Moves are done in the order given.
pub struct Courier {
    tx: mpsc::UnboundedSender<Move>,
}

impl Courier {
    /// Start a courier packing up to `pack` messages of one destination
    /// into an AMQP message; `what` names it in logs and metrics.
    pub fn start(broker: Broker, what: &'static str, pack: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(broker, what, pack, rx));
        Courier { tx }
    }

    /// Publish `out`, then acknowledge `incoming`; drop `keep` after.
    pub fn send(&self, incoming: Incoming, out: Outgoing, keep: Option<OwnedSemaphorePermit>) {
        // The task outlives every handle, so this cannot fail; if it did,
        // the dropped delivery would go back to its queue.
        let _ = self.tx.send(Move {
            incoming,
            out,
            keep,
        });
    }
}

async fn run(
    broker: Broker,
    what: &'static str,
    pack: usize,
    mut rx: mpsc::UnboundedReceiver<Move>,
) {
    let mut batch = Vec::new();
    let mut pace = Pace::new(ROUND_PERIOD);
    while let Some(first) = rx.recv().await {
        pace.round().await;
        batch.push(first);
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut incomings = Vec::with_capacity(batch.len());
        let mut outs = Vec::with_capacity(batch.len());
        let mut keeps = Vec::new();
        for m in batch.drain(..) {
            incomings.push(m.incoming);
            outs.push(m.out);
            keeps.extend(m.keep);
        }
        match broker
            .publish_confirmed(&events::pack_all(outs, pack))
            .await
        {
            Ok(()) => {
                join_all(incomings.into_iter().map(|i| async move {
                    let _ = i.ack().await;
                }))
                .await;
            }
            Err(e) => {
                telemetry::publish_failed(what, &e);
                join_all(incomings.into_iter().map(|i| async move {
                    let _ = i.requeue().await;
                }))
                .await;
            }
        }
        drop(keeps);
    }
}
