//! Group commit for any store call: concurrent callers hand one request each
//! to a [`Batcher`] and wait for their answer; one collector gathers what is
//! waiting into a batch and runs the work once for all of it. Alone, a
//! request runs at once (no timer, no added latency); under load, requests
//! queue behind the running batches (at most `concurrency`) and share the
//! next one, so the database sees a few statements with many rows instead of
//! many statements with one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herald_actors::pace::Pace;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// The batcher is gone (shutdown) or its work answered too few requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("batch worker unavailable")]
pub struct Closed;

/// A request and where its answer goes (none for [`Batcher::offer`]).
type Job<Q, A> = (Q, Option<oneshot::Sender<A>>);

/// A handle on one collector. Cheap to clone; the collector stops when the
/// last handle is dropped, after answering what it holds.
pub struct Batcher<Q, A> {
    tx: mpsc::Sender<Job<Q, A>>,
}

impl<Q, A> Clone for Batcher<Q, A> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    /// Start a collector. `work` gets up to `max_batch` requests in arrival
    /// order and must answer each, in the same order.
    pub fn start<F, Fut>(max_batch: usize, concurrency: usize, work: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<A>> + Send + 'static,
    {
        Self::start_paced(max_batch, concurrency, None, work)
    }

    /// [`Batcher::start`], but under load a batch starts no sooner than
    /// `period` after the previous one ([`Pace`]): fewer, larger batches
    /// for work whose callers can wait that long.
    pub fn start_paced<F, Fut>(
        max_batch: usize,
        concurrency: usize,
        period: Option<Duration>,
        work: F,
    ) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<A>> + Send + 'static,
    {
        let mut pace = period.map(Pace::new);
        let max_batch = max_batch.max(1);
        let concurrency = concurrency.max(1);
        let (tx, mut rx) = mpsc::channel::<Job<Q, A>>(max_batch * concurrency * 2);
        let work = Arc::new(work);
        let slots = Arc::new(Semaphore::new(concurrency));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                if let Some(pace) = &mut pace {
                    pace.round().await;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                // Gathered once a slot is free: what arrived meanwhile rides along.
                let mut jobs = vec![first];
                while jobs.len() < max_batch {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let work = work.clone();
                tokio::spawn(async move {
                    let (requests, replies): (Vec<Q>, Vec<_>) = jobs.into_iter().unzip();
                    let answers = work(requests).await;
                    // A reply left without an answer is dropped: its caller
                    // sees `Closed`.
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        if let Some(reply) = reply {
                            let _ = reply.send(answer);
                        }
                    }
                    drop(slot);
                });
            }
        });
        Self { tx }
    }

    /// Hand in one request whose answer nobody waits for. False when the
    /// collector is full or gone: the request was dropped.
    pub fn offer(&self, request: Q) -> bool {
        self.tx.try_send((request, None)).is_ok()
    }

    /// Hand in one request and wait for its answer.
    pub async fn call(&self, request: Q) -> Result<A, Closed> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((request, Some(reply)))
            .await
            .map_err(|_| Closed)?;
        answer.await.map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_lone_request_runs_at_once_and_concurrent_ones_share_batches() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let b = Batcher::start(8, 1, move |xs: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                xs.into_iter().map(|x| x * 2).collect::<Vec<_>>()
            }
        });
        assert_eq!(b.call(21).await, Ok(42));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let answers = futures::future::join_all((0..40u32).map(|i| {
            let b = b.clone();
            async move { b.call(i).await }
        }))
        .await;
        assert_eq!(
            answers,
            (0..40u32).map(|i| Ok(i * 2)).collect::<Vec<_>>(),
            "each caller gets its own answer"
        );
        let batches = calls.load(Ordering::SeqCst) - 1;
        assert!(
            (5..40).contains(&batches),
            "40 requests at 8 per batch took {batches} batches"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_batcher_gathers_what_arrives_within_the_period() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let b = Batcher::start_paced(
            64,
            1,
            Some(Duration::from_millis(20)),
            move |xs: Vec<u32>| {
                seen.lock().unwrap().push(xs.len());
                async move { xs }
            },
        );
        // Alone: at once.
        assert_eq!(b.call(0).await, Ok(0));
        // Three more within the period: one batch, when it has passed.
        let started = tokio::time::Instant::now();
        let answers = futures::future::join_all((1..4u32).map(|i| {
            let b = b.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(i as u64)).await;
                b.call(i).await
            }
        }))
        .await;
        assert_eq!(answers, vec![Ok(1), Ok(2), Ok(3)]);
        assert_eq!(*sizes.lock().unwrap(), vec![1, 3]);
        assert_eq!(started.elapsed(), Duration::from_millis(20));
    }

    #[tokio::test]
    async fn a_short_answer_leaves_the_rest_closed() {
        let b = Batcher::start(4, 1, |xs: Vec<u32>| async move {
            xs.into_iter().skip(1).collect::<Vec<_>>()
        });
        assert_eq!(b.call(1).await, Err(Closed));
    }
}
