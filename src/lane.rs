//! Lanes: runtimes of their own for the two halves of Herald's work.
//!
//! **The accept lane.** A request to `POST /v1/messages` crosses the HTTP
//! worker, the group commit, Redis and PostgreSQL. On a shared
//! multi-threaded runtime each hand-off inside Herald can wake another
//! thread, and on a busy machine each wake-up waits for a CPU. So the group
//! commit, its flushes, its database connections and its Redis connection
//! run on one thread of their own, at the API's priority: inside Herald an
//! accept crosses that thread and the HTTP worker's, and nothing else.
//!
//! **The deferred lane.** Everything after the accept (publishing from the
//! outbox, projecting statuses, webhooks, the live stream's relay) can wait
//! a few milliseconds without anyone noticing, and comes in bursts. On a
//! machine that is busy, an accept that shares threads with those bursts
//! waits behind them for the CPU. So that work runs on a runtime of its own
//! whose threads run at a lower priority (a higher nice value, Linux): the
//! scheduler then runs an accept first when both are ready, and the
//! deferred work takes whatever CPU is left, which at any load the machine
//! can carry is all it needs.
//!
//! Raising a thread's nice value needs no privilege; lowering it again
//! does, so the nice value is set only on a lane's own threads.

use std::future::Future;

use tokio::runtime::{Handle, Runtime};

/// A lane's runtime. Dropping it stops its tasks without waiting (shut
/// them down first).
pub struct Lane {
    runtime: Option<Runtime>,
}

impl Lane {
    /// A runtime of `threads` workers named `name`, each `nice` steps of
    /// nice value below the thread that starts it (0: the same priority).
    pub fn start(name: &str, threads: usize, nice: i32) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
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

impl Drop for Lane {
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
                "could not lower the priority of a lane's thread");
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
    async fn a_lane_runs_at_its_lower_priority_and_the_caller_keeps_its_own() {
        let before = own_nice();
        let lane = Lane::start("test-lane", 1, 5).unwrap();
        let there = lane.start_here(async { own_nice() }).await;
        assert_eq!(there, (before + 5).min(19));
        assert_eq!(own_nice(), before, "the calling thread is untouched");
    }
}
