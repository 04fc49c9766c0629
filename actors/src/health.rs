//! The HealthMonitor: pings every watched actor on an interval and recreates
//! any that does not answer in time or whose mailbox is gone (a panic closes
//! it; actix's `Supervisor` restarts only actors that *stop*). Recreation
//! backs off per actor (doubling up to [`MAX_BACKOFF`]) so a crashing actor
//! cannot spin.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::telemetry;

/// How often every watched actor is pinged.
pub const PING_INTERVAL: Duration = Duration::from_millis(500);
/// How long an actor may take to answer a ping.
pub const PING_TIMEOUT: Duration = Duration::from_millis(2000);
/// Longest wait between two recreations of one actor.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Are you alive? Every actor of the tree answers it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

/// Makes a new instance of a watched actor and returns where to ping it.
pub type Factory = Box<dyn Fn() -> Recipient<Ping> + Send>;

struct Watched {
    kind: &'static str,
    ping: Recipient<Ping>,
    factory: Factory,
    restarts: u32,
    backoff: Duration,
    not_before: Instant,
    waiting: bool,
}

/// Watches actors, restarts the dead and the stuck.
#[derive(Default)]
pub struct HealthMonitor {
    watched: HashMap<String, Watched>,
}

/// Start watching an actor: `ping` reaches its running instance, `factory`
/// makes a new one when it is dead or stuck.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch {
    pub name: String,
    pub kind: &'static str,
    pub ping: Recipient<Ping>,
    pub factory: Factory,
}

/// Stop watching an actor (it is being retired on purpose).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unwatch(pub String);

/// Restart counts per watched actor name.
#[derive(Message)]
#[rtype(result = "HashMap<String, u32>")]
pub struct Restarts;

/// A ping went unanswered (internal).
#[derive(Message)]
#[rtype(result = "()")]
struct Unanswered {
    name: String,
    reason: &'static str,
}

/// A ping was answered (internal).
#[derive(Message)]
#[rtype(result = "()")]
struct Answered {
    name: String,
}

impl Actor for HealthMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(PING_INTERVAL, |act, ctx| act.ping_all(ctx));
    }
}

impl HealthMonitor {
    fn ping_all(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        for (name, w) in &mut self.watched {
            if w.waiting {
                continue;
            }
            w.waiting = true;
            let request = w.ping.send(Ping);
            let name = name.clone();
            let me = me.clone();
            actix::spawn(async move {
                match tokio::time::timeout(PING_TIMEOUT, request).await {
                    Ok(Ok(())) => me.do_send(Answered { name }),
                    Ok(Err(_)) => me.do_send(Unanswered {
                        name,
                        reason: "mailbox closed",
                    }),
                    Err(_) => me.do_send(Unanswered {
                        name,
                        reason: "ping timed out",
                    }),
                }
            });
        }
    }
}

impl Handler<Watch> for HealthMonitor {
    type Result = ();

    fn handle(&mut self, msg: Watch, _: &mut Self::Context) {
        self.watched.insert(
            msg.name,
            Watched {
                kind: msg.kind,
                ping: msg.ping,
                factory: msg.factory,
                restarts: 0,
                backoff: Duration::from_millis(100),
                not_before: Instant::now(),
                waiting: false,
            },
        );
    }
}

impl Handler<Answered> for HealthMonitor {
    type Result = ();

    fn handle(&mut self, msg: Answered, _: &mut Self::Context) {
        if let Some(w) = self.watched.get_mut(&msg.name) {
            w.waiting = false;
            w.backoff = Duration::from_millis(100);
        }
    }
}

impl Handler<Unanswered> for HealthMonitor {
    type Result = ();

    fn handle(&mut self, msg: Unanswered, ctx: &mut Self::Context) {
        let Some(w) = self.watched.get_mut(&msg.name) else {
            return;
        };
        let now = Instant::now();
        if now < w.not_before {
            // Backing off: look again when the wait is over.
            let wait = w.not_before - now;
            ctx.run_later(wait, move |act, ctx| {
                act.handle(msg, ctx);
            });
            return;
        }
        // A stuck actor still holds its mailbox: the new instance replaces
        // it; the old one's deliveries are requeued when it is dropped.
        w.ping = (w.factory)();
        w.restarts += 1;
        w.waiting = false;
        w.not_before = now + w.backoff;
        w.backoff = (w.backoff * 2).min(MAX_BACKOFF);
        telemetry::actor_restarted(w.kind, &msg.name, msg.reason);
    }
}

impl Handler<Unwatch> for HealthMonitor {
    type Result = ();

    fn handle(&mut self, msg: Unwatch, _: &mut Self::Context) {
        self.watched.remove(&msg.0);
    }
}

impl Handler<Restarts> for HealthMonitor {
    type Result = MessageResult<Restarts>;

    fn handle(&mut self, _: Restarts, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.watched
                .iter()
                .map(|(name, w)| (name.clone(), w.restarts))
                .collect(),
        )
    }
}
