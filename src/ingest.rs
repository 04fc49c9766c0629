//! Group commit for the accept path.
//!
//! Request handlers hand a validated [`MessageRecord`] to the [`Ingest`]
//! handle and wait for the outcome. One collector task gathers whatever is
//! waiting into a batch (up to `accept.max_batch`) and writes it with one
//! statement; at most `accept.concurrent_flushes` statements run at once.
//! Under light load a request is written alone at once; under heavy load
//! requests queue behind running flushes and share the next one, and a
//! small batch started while others are running waits up to a millisecond
//! for more, so the database sees few large statements instead of many
//! small ones.
//!
//! A request may ask to be admitted first (the tenant's rate limit and
//! idempotency replay, in Redis): the batch's admissions go to Redis in one
//! pipeline just before the write, so a request costs no round trip of its
//! own, and only the admitted messages are written. Without Redis every
//! request is written (PostgreSQL's unique index still finds replays) and
//! goes unthrottled.
//!
//! After a batch commits, its new messages go to the outbox relay to be
//! published. On shutdown the collector finishes what it holds, waits for
//! running flushes, then closes the relay's inbox.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::kv::{Admission, AdmitRequest, Kv, RateDecision};
use crate::message::MessageRecord;
use crate::outbox::Committed;
use crate::store::messages::Inserted;
use crate::store::{Store, StoreError};
use crate::telemetry;

/// Outcome of accepting one message.
pub type Accepted = Result<Outcome, StoreError>;

/// What became of one message handed to [`Ingest::accept`].
#[derive(Debug)]
pub enum Outcome {
    /// Written (or found already written), with the rate limit's decision
    /// when the request asked to be admitted and Redis answered.
    Written {
        inserted: Inserted,
        rate: Option<RateDecision>,
    },
    /// Not written: a replay answered from Redis, or over the rate limit.
    Refused(Admission),
}

/// The admission a request asks for: the tenant's budget, `rate` per
/// second with a burst of `burst` requests (the tenant and the idempotency
/// key are the message's).
#[derive(Debug, Clone, Copy)]
pub struct Admit {
    pub rate: f64,
    pub burst: f64,
}

/// A batch smaller than this waits up to [`LINGER`] for more while other
/// flushes are running.
const LINGER_BELOW: usize = 16;
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

struct Job {
    message: MessageRecord,
    admit: Option<Admit>,
    reply: oneshot::Sender<Accepted>,
}

/// Handle used by request handlers. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Job>,
}

/// Running collector; [`IngestTask::shutdown`] drains it.
pub struct IngestTask {
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Ingest {
    /// Start the collector. Committed batches are sent to `published`.
    pub fn start(
        store: Store,
        kv: Kv,
        max_batch: usize,
        concurrent_flushes: usize,
        committed: mpsc::Sender<Committed>,
    ) -> (Ingest, IngestTask) {
        let (tx, rx) = mpsc::channel(max_batch * concurrent_flushes * 4);
        let (stop_tx, stop_rx) = oneshot::channel();
        let writer = Arc::new(Writer {
            store,
            kv,
            committed,
        });
        let done = tokio::spawn(collect(writer, rx, stop_rx, max_batch, concurrent_flushes));
        (
            Ingest { tx },
            IngestTask {
                stop: stop_tx,
                done,
            },
        )
    }

    /// Admit (when `admit` is given) and write one message, batched with
    /// others; return once committed or refused.
    pub async fn accept(&self, message: MessageRecord, admit: Option<Admit>) -> Accepted {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                message,
                admit,
                reply,
            })
            .await
            .map_err(|_| StoreError::Unavailable("shutting down".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("shutting down".into())))
    }
}

impl IngestTask {
    /// Stop taking work, flush what is queued, wait for running flushes.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

/// What a flush writes with: shared by every flush of the collector.
struct Writer {
    store: Store,
    kv: Kv,
    /// Committed batches, for the outbox relay.
    committed: mpsc::Sender<Committed>,
}

async fn collect(
    writer: Arc<Writer>,
    mut rx: mpsc::Receiver<Job>,
    mut stop: oneshot::Receiver<()>,
    max_batch: usize,
    concurrent_flushes: usize,
) {
    let permits = Arc::new(Semaphore::new(concurrent_flushes));
    let mut stopping = false;
    loop {
        let first = if stopping {
            match rx.try_recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                _ = &mut stop => {
                    stopping = true;
                    rx.close();
                    continue;
                }
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        // While we waited for a permit, more may have arrived: take them too.
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Other flushes running: the database is busy, so a moment's wait
        // for more costs little latency and saves statements and commits.
        // Idle, a request is written at once.
        let others_running = permits.available_permits() + 1 < concurrent_flushes;
        if !stopping && others_running && batch.len() < LINGER_BELOW {
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < max_batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    _ => break,
                }
            }
        }
        let writer = writer.clone();
        tokio::spawn(async move {
            flush(&writer, batch).await;
            drop(permit);
        });
    }
    // Wait for running flushes before the relay's inbox closes.
    let _ = permits.acquire_many(concurrent_flushes as u32).await;
}

/// The admissions of a batch, in its order: `None` for a request that did
/// not ask, or for all of them when Redis did not answer.
async fn admit(kv: &Kv, batch: &[Job]) -> Vec<Option<Admission>> {
    let asked: Vec<AdmitRequest> = batch
        .iter()
        .filter_map(|j| {
            j.admit.map(|a| AdmitRequest {
                tenant: j.message.tenant_id.as_str(),
                key: j.message.idempotency_key.as_deref(),
                rate: a.rate,
                burst: a.burst,
            })
        })
        .collect();
    if asked.is_empty() {
        return batch.iter().map(|_| None).collect();
    }
    let started = Instant::now();
    let answers = kv.admit_many(&asked).await;
    telemetry::accept_stage("admit", started.elapsed());
    let mut answers = match answers {
        Ok(answers) => answers.into_iter(),
        Err(e) => {
            telemetry::redis_error("admit", &e);
            return batch.iter().map(|_| None).collect();
        }
    };
    batch
        .iter()
        .map(|j| j.admit.and_then(|_| answers.next()))
        .collect()
}

async fn flush(writer: &Writer, batch: Vec<Job>) {
    let Writer {
        store,
        kv,
        committed,
    } = writer;
    let admissions = admit(kv, &batch).await;
    let mut messages = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for (job, admission) in batch.into_iter().zip(admissions) {
        match admission {
            Some(Admission::Rate(d)) if d.allowed => {
                messages.push(job.message);
                replies.push((job.reply, Some(d)));
            }
            Some(refused) => {
                let _ = job.reply.send(Ok(Outcome::Refused(refused)));
            }
            None => {
                messages.push(job.message);
                replies.push((job.reply, None));
            }
        }
    }
    if messages.is_empty() {
        return;
    }
    let started = Instant::now();
    match store.insert_messages(&messages).await {
        Ok((outcomes, batch)) => {
            telemetry::accept_batch_flushed(messages.len(), started.elapsed());
            let fresh: Vec<MessageRecord> = messages
                .into_iter()
                .zip(&outcomes)
                .filter(|(_, o)| matches!(o, Inserted::New))
                .map(|(m, _)| m)
                .collect();
            if let Some(batch) = batch.filter(|_| !fresh.is_empty()) {
                // The relay's inbox is bounded, so a relay behind the accept
                // rate costs no memory: when it is full (or the relay is gone
                // at the very end of shutdown) the rows, committed, are left
                // to the sweep, which publishes them after `outbox.grace_ms`.
                let n = fresh.len();
                let done = Committed {
                    batch,
                    messages: fresh,
                };
                if committed.try_send(done).is_err() {
                    telemetry::outbox_left_to_sweep(n);
                }
            }
            for ((reply, rate), inserted) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(Outcome::Written { inserted, rate }));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, messages = messages.len(), "group commit failed");
            let text = e.to_string();
            let unavailable = matches!(e, StoreError::Unavailable(_));
            for (reply, _) in replies {
                let err = if unavailable {
                    StoreError::Unavailable(text.clone())
                } else {
                    StoreError::Corrupt(text.clone())
                };
                let _ = reply.send(Err(err));
            }
        }
    }
}
