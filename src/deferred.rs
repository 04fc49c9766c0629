//! The lane for work that can wait.
//!
//! A request to `POST /v1/messages` is answered once its row is committed;
//! everything after that (publishing from the outbox, projecting statuses,
//! webhooks, the live stream's relay) can wait a few milliseconds without
//! anyone noticing, and comes in bursts. On a machine that is busy, an
//! accept that shares threads with those bursts waits behind them for the
//! CPU. So that work runs on a runtime of its own whose threads run at a
//! lower priority (a higher nice value, Linux): the scheduler then runs an
//! accept first when both are ready, and the deferred work takes whatever
//! CPU is left, which at any load the machine can carry is all it needs.
//!
//! Raising a thread's nice value needs no privilege; lowering it again
//! does, so the nice value is set only on this runtime's own threads.

use std::future::Future;

use tokio::runtime::{Handle, Runtime};

/// The deferred-work runtime. Dropping it stops its tasks without waiting
/// (shut them down first).
pub struct Deferred {
    runtime: Option<Runtime>,
}

impl Deferred {
    /// A runtime of `threads` workers, each `nice` steps of nice value
    /// below the thread that starts it (0: the same priority).
    pub fn start(threads: usize, nice: i32) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("herald-deferred")
            .on_thread_start(move || lower_priority(nice))
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    pub fn handle(&self) -> &Handle {
        self.runtime
            .as_ref()
            .expect("runtime until dropped")
            .handle()
    }

    /// Run `start` on this runtime, so the tasks it spawns (and the
    /// database connections they open) live here.
    pub async fn start_here<F, T>(&self, start: F) -> T
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        match self.handle().spawn(start).await {
            Ok(t) => t,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime inside another one would block it.
            runtime.shutdown_background();
        }
    }
}

/// Raise the calling thread's nice value by `by` (to at most 19; Linux;
/// elsewhere, and for 0, nothing). A failure is logged: the thread then
/// runs as before.
fn lower_priority(by: i32) {
    if by == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls about the calling thread itself;
        // errno is cleared first because -1 is also a valid nice value.
        let r = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            *libc::__errno_location() = 0;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            if now == -1 && *libc::__errno_location() != 0 {
                -1
            } else {
                libc::setpriority(libc::PRIO_PROCESS, tid, (now + by).min(19))
            }
        };
        if r != 0 {
            tracing::warn!(by, error = %std::io::Error::last_os_error(),
                "could not lower the priority of a deferred-work thread");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn own_nice() -> i32 {
        // SAFETY: as above.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        }
    }

    #[tokio::test]
    async fn deferred_work_runs_at_the_lower_priority_and_the_caller_keeps_its_own() {
        let before = own_nice();
        let lane = Deferred::start(1, 5).unwrap();
        let there = lane.start_here(async { own_nice() }).await;
        assert_eq!(there, (before + 5).min(19));
        assert_eq!(own_nice(), before, "the calling thread is untouched");
    }
}
