//! Consuming a queue that survives broker restarts.
//!
//! [`Broker::subscribe`] starts a task that owns one channel, consumes one
//! queue with a prefetch limit and forwards each delivery as an
//! [`Incoming`]. The subscriptions of one [`Broker`] handle share one AMQP
//! connection (one socket and one lapin I/O thread, not one per consumer);
//! unacknowledged deliveries belong to the channel, so closing a channel
//! hands them back exactly as closing a connection would. When the
//! connection drops, each subscription reconnects (the first one opens the
//! new shared connection) with back-off and consumes again; deliveries not
//! yet acknowledged are redelivered by RabbitMQ, so the consumer must be
//! idempotent. The task ends when the receiving side is dropped.
//!
//! Packed deliveries: a body that is a JSON array (see [`crate::events::pack`])
//! carries several messages. [`Broker::subscribe`] hands each element on
//! as an [`Incoming`] of its own, which its holder settles as if it were
//! alone; the AMQP message is acknowledged once every element is, and given
//! back whole when any element is given back (its other elements are then
//! redelivered too, which idempotent consumers absorb).
//! [`Broker::subscribe_whole`] leaves such bodies as they are.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::Acker;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::mpsc;

use super::{Broker, BrokerError, Outgoing};

/// How long a stopped consumer's channel stays open for acknowledgements
/// already under way.
const ACK_GRACE: Duration = Duration::from_secs(2);

/// Longest wait for an acknowledgement to be written.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One delivery from a queue (or one element of a packed delivery).
/// Acknowledge it only after the next durable step. One dropped without
/// being settled (its holder crashed or stopped) is given back to the queue
/// at once, so nothing waits for a channel to close to be redelivered.
pub struct Incoming {
    pub body: Vec<u8>,
    /// RabbitMQ delivered this before (to us or another consumer).
    pub redelivered: bool,
    acker: Option<Settler>,
}

/// Who settles a delivery with RabbitMQ.
enum Settler {
    /// The whole AMQP message.
    Whole(Acker),
    /// One element of a packed AMQP message.
    Part(Arc<Pack>),
}

/// A packed AMQP message being settled element by element.
struct Pack {
    acker: Mutex<Option<Acker>>,
    /// Elements not settled yet.
    left: AtomicUsize,
    /// An element was given back: so is the whole message.
    give_back: AtomicBool,
}

impl Pack {
    /// One element settled; the last one settles the AMQP message.
    async fn settle(&self, give_back: bool) -> Result<(), BrokerError> {
        if give_back {
            self.give_back.store(true, Ordering::SeqCst);
        }
        if self.left.fetch_sub(1, Ordering::SeqCst) != 1 {
            return Ok(());
        }
        let acker = self.acker.lock().expect("pack lock").take();
        match acker {
            Some(acker) => finish(acker, self.give_back.load(Ordering::SeqCst)).await,
            None => Ok(()),
        }
    }
}

/// Acknowledge an AMQP message, or give it back. Bounded by
/// [`SETTLE_TIMEOUT`]: on a channel that died meanwhile the broker
/// redelivers it anyway.
async fn finish(acker: Acker, give_back: bool) -> Result<(), BrokerError> {
    let settled = if give_back {
        tokio::time::timeout(SETTLE_TIMEOUT, acker.nack(requeue())).await
    } else {
        tokio::time::timeout(SETTLE_TIMEOUT, acker.ack(BasicAckOptions::default())).await
    };
    settled.map_err(|_| BrokerError::Timeout)??;
    Ok(())
}

impl Settler {
    async fn settle(self, give_back: bool) -> Result<(), BrokerError> {
        match self {
            Settler::Whole(acker) => finish(acker, give_back).await,
            Settler::Part(pack) => pack.settle(give_back).await,
        }
    }
}

impl Incoming {
    /// Done with it: RabbitMQ forgets it (a packed one once all its
    /// elements are done).
    pub async fn ack(mut self) -> Result<(), BrokerError> {
        match self.acker.take() {
            Some(settler) => settler.settle(false).await,
            None => Ok(()),
        }
    }

    /// The next durable step, then the acknowledgement: publish `out`
    /// (confirmed), then acknowledge; when the publish fails, give the
    /// delivery back to its queue. Dying between the two means a
    /// redelivery, never a loss.
    pub async fn hand_over(self, broker: &Broker, out: &[Outgoing]) -> Result<(), BrokerError> {
        match broker.publish_confirmed(out).await {
            Ok(()) => {
                let _ = self.ack().await;
                Ok(())
            }
            Err(e) => {
                let _ = self.requeue().await;
                Err(e)
            }
        }
    }

    /// Give it back to the queue, to be delivered again (a packed one
    /// whole, once all its elements are settled).
    pub async fn requeue(mut self) -> Result<(), BrokerError> {
        match self.acker.take() {
            Some(settler) => settler.settle(true).await,
            None => Ok(()),
        }
    }
}

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..Default::default()
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(settler) = self.acker.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = settler.settle(true).await;
                });
            }
        }
    }
}

/// The deliveries one AMQP message stands for: its elements when `split`
/// and the body is a non-empty JSON array, else the message itself (a body
/// that only looks like an array goes whole to its consumer, which refuses
/// it as it would any unreadable payload).
fn unpack(body: Vec<u8>, redelivered: bool, acker: Acker, split: bool) -> Vec<Incoming> {
    let whole = |body, acker| {
        vec![Incoming {
            body,
            redelivered,
            acker: Some(Settler::Whole(acker)),
        }]
    };
    if !split || body.first() != Some(&b'[') {
        return whole(body, acker);
    }
    let elements = match serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(&body) {
        Ok(elements) if !elements.is_empty() => elements,
        _ => return whole(body, acker),
    };
    let pack = Arc::new(Pack {
        acker: Mutex::new(Some(acker)),
        left: AtomicUsize::new(elements.len()),
        give_back: AtomicBool::new(false),
    });
    elements
        .into_iter()
        .map(|raw| Incoming {
            body: raw.get().as_bytes().to_vec(),
            redelivered,
            acker: Some(Settler::Part(pack.clone())),
        })
        .collect()
}

impl Broker {
    /// A new channel on the shared consuming connection, opening that
    /// connection first when there is none or it is gone.
    async fn consuming_channel(&self) -> Result<lapin::Channel, BrokerError> {
        let mut held = self.inner.consuming.lock().await;
        if let Some(c) = held.as_ref() {
            if c.status().connected() {
                return Ok(c.create_channel().await?);
            }
            *held = None;
        }
        let connect = Connection::connect(&self.inner.config.url, ConnectionProperties::default());
        let connection = tokio::time::timeout(self.inner.config.timeout, connect)
            .await
            .map_err(|_| BrokerError::Unreachable("connection attempt timed out".into()))?
            .map_err(|e| BrokerError::Unreachable(e.to_string()))?;
        let channel = connection.create_channel().await?;
        *held = Some(connection);
        Ok(channel)
    }

    /// Consume `queue` with at most `prefetch` unacknowledged AMQP messages,
    /// reconnecting as needed, packed ones split into their elements. The
    /// queue must exist (declared with the topology or by its owner).
    pub fn subscribe(&self, queue: String, prefetch: u16) -> mpsc::Receiver<Incoming> {
        self.consume(queue, prefetch, true)
    }

    /// As [`Broker::subscribe`], every AMQP message whole (the consumer
    /// reads packed bodies itself).
    pub fn subscribe_whole(&self, queue: String, prefetch: u16) -> mpsc::Receiver<Incoming> {
        self.consume(queue, prefetch, false)
    }

    fn consume(&self, queue: String, prefetch: u16, split: bool) -> mpsc::Receiver<Incoming> {
        let (tx, rx) = mpsc::channel(usize::from(prefetch.max(1)));
        let broker = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                if tx.is_closed() {
                    return;
                }
                match broker
                    .consume_until_lost(&queue, prefetch, split, &tx)
                    .await
                {
                    Ok(()) => return, // receiver gone
                    Err(e) => {
                        tracing::warn!(target: "herald::broker", %queue, error = %e,
                            "consumer lost; reconnecting");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        });
        rx
    }

    async fn consume_until_lost(
        &self,
        queue: &str,
        prefetch: u16,
        split: bool,
        tx: &mpsc::Sender<Incoming>,
    ) -> Result<(), BrokerError> {
        let channel = self.consuming_channel().await?;
        self.declare_all(&channel).await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::debug!(target: "herald::broker", %queue, prefetch, "consuming");
        loop {
            let delivery = tokio::select! {
                next = consumer.next() => match next {
                    Some(d) => d?,
                    None => break,
                },
                // The owner is gone (stopped or crashed). Stop deliveries,
                // give acknowledgements already under way a moment to land
                // (else their messages would be delivered twice), then close:
                // whatever is still unacknowledged goes to its successor.
                _ = tx.closed() => {
                    let _ = channel
                        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                        .await;
                    tokio::time::sleep(ACK_GRACE).await;
                    let _ = channel.close(200, "consumer stopped".into()).await;
                    return Ok(());
                }
            };
            for incoming in unpack(delivery.data, delivery.redelivered, delivery.acker, split) {
                if tx.send(incoming).await.is_err() {
                    let _ = channel.close(200, "consumer stopped".into()).await;
                    return Ok(());
                }
            }
        }
        Err(BrokerError::Unreachable("consumer stream ended".into()))
    }
}
