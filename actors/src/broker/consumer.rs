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

/// One delivery from a queue. Acknowledge it only after the next durable
/// step. One dropped without being settled (its holder crashed or stopped)
/// is given back to the queue at once, so nothing waits for a channel to
/// close to be redelivered.
pub struct Incoming {
    pub body: Vec<u8>,
    /// RabbitMQ delivered this before (to us or another consumer).
    pub redelivered: bool,
    acker: Option<Acker>,
}

impl Incoming {
    /// Done with it: RabbitMQ forgets it. Bounded by [`SETTLE_TIMEOUT`]: on
    /// a channel that died meanwhile the broker redelivers it anyway.
    pub async fn ack(mut self) -> Result<(), BrokerError> {
        if let Some(acker) = self.acker.take() {
            tokio::time::timeout(SETTLE_TIMEOUT, acker.ack(BasicAckOptions::default()))
                .await
                .map_err(|_| BrokerError::Timeout)??;
        }
        Ok(())
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

    /// Give it back to the queue, to be delivered again.
    pub async fn requeue(mut self) -> Result<(), BrokerError> {
        if let Some(acker) = self.acker.take() {
            tokio::time::timeout(SETTLE_TIMEOUT, acker.nack(requeue()))
                .await
                .map_err(|_| BrokerError::Timeout)??;
        }
        Ok(())
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
        if let Some(acker) = self.acker.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = tokio::time::timeout(SETTLE_TIMEOUT, acker.nack(requeue())).await;
                });
            }
        }
    }
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

    /// Consume `queue` with at most `prefetch` unacknowledged deliveries,
    /// reconnecting as needed. The queue must exist (declared with the
    /// topology or by its owner).
    pub fn subscribe(&self, queue: String, prefetch: u16) -> mpsc::Receiver<Incoming> {
        let (tx, rx) = mpsc::channel(usize::from(prefetch.max(1)));
        let broker = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                if tx.is_closed() {
                    return;
                }
                match broker.consume_until_lost(&queue, prefetch, &tx).await {
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
        tx: &mpsc::Sender<Incoming>,
    ) -> Result<(), BrokerError> {
        let channel = self.consuming_channel().await?;
        self.inner.topology.declare(&channel).await?;
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
            let incoming = Incoming {
                body: delivery.data,
                redelivered: delivery.redelivered,
                acker: Some(delivery.acker),
            };
            if tx.send(incoming).await.is_err() {
                let _ = channel.close(200, "consumer stopped".into()).await;
                return Ok(());
            }
        }
        Err(BrokerError::Unreachable("consumer stream ended".into()))
    }
}
