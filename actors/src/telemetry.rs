//! Named telemetry events of the actor layer: each both logs (where useful)
//! and updates metrics. Labels are bounded: carrier ids and actor kinds come
//! from configuration, outcomes from a fixed set.

use metrics::{counter, gauge, histogram};

/// An actor was recreated (after a stop, a panic or a missed ping).
pub fn actor_restarted(kind: &'static str, name: &str, reason: &str) {
    counter!("herald_actor_restarts_total", "kind" => kind).increment(1);
    tracing::warn!(kind, actor = name, reason, "actor restarted");
}

/// A submission answered by a carrier.
pub fn carrier_submitted(carrier: &str, outcome: &'static str, seconds: f64) {
    counter!("herald_carrier_submits_total", "carrier" => carrier.to_owned(), "outcome" => outcome)
        .increment(1);
    histogram!("herald_carrier_submit_duration_seconds", "carrier" => carrier.to_owned())
        .record(seconds);
}

/// The current rate limit of a carrier connection.
pub fn carrier_rate(carrier: &str, bind: u32, rate: f64) {
    gauge!("herald_carrier_tps_limit", "carrier" => carrier.to_owned(), "bind" => bind.to_string())
        .set(rate);
}

/// A carrier connection's breaker opened or closed.
pub fn breaker_changed(carrier: &str, open: bool) {
    gauge!("herald_carrier_breaker_open", "carrier" => carrier.to_owned()).set(if open {
        1.0
    } else {
        0.0
    });
    if open {
        tracing::warn!(carrier, "breaker opened");
    } else {
        tracing::info!(carrier, "breaker closed");
    }
}

/// A carrier connection bound or lost its bind.
pub fn carrier_bound(carrier: &str, bind: u32, bound: bool) {
    gauge!("herald_carrier_bound", "carrier" => carrier.to_owned(), "bind" => bind.to_string())
        .set(if bound { 1.0 } else { 0.0 });
}

/// A message routed, or refused for lack of a route.
pub fn routed(route: &str, outcome: &'static str) {
    counter!("herald_messages_routed_total", "route" => route.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// A message left Herald's hands with a final outcome at the actor layer.
pub fn message_outcome(carrier: &str, status: &'static str) {
    counter!("herald_messages_outcome_total", "carrier" => carrier.to_owned(), "status" => status)
        .increment(1);
}

/// A payload that could not be read went to the dead-letter queue.
pub fn poison(queue_kind: &'static str, reason: &str) {
    counter!("herald_poison_messages_total", "queue" => queue_kind).increment(1);
    tracing::error!(
        queue = queue_kind,
        reason,
        "unreadable payload sent to the dead-letter queue"
    );
}

/// AMQP messages confirmed by the broker, by exchange.
pub fn published(exchange: &str, n: u64) {
    counter!("herald_broker_published_total", "exchange" => exchange.to_owned()).increment(n);
}

/// A publish from an actor failed; the delivery goes back to its queue.
pub fn publish_failed(what: &'static str, error: &dyn std::fmt::Display) {
    counter!("herald_actor_publish_failures_total", "what" => what).increment(1);
    tracing::warn!(what, %error, "publish failed; the delivery returns to its queue");
}

/// Every state of a carrier connection, as a 0/1 gauge per state.
pub fn carrier_state(carrier: &str, bind: u32, state: &'static str) {
    for s in [
        "bound",
        "unbound",
        "standby",
        "paused",
        "breaker_open",
        "throttled",
    ] {
        gauge!("herald_carrier_state", "carrier" => carrier.to_owned(), "bind" => bind.to_string(), "state" => s)
            .set(if s == state { 1.0 } else { 0.0 });
    }
}

/// A redelivered message was already accepted by a carrier: not sent again.
pub fn duplicate_suppressed(carrier: &str) {
    counter!("herald_duplicates_suppressed_total", "carrier" => carrier.to_owned()).increment(1);
}

/// A tenant over its share: a message moved to its shard's overflow queue.
pub fn overflowed(shard: u16) {
    counter!("herald_tenant_overflow_total", "shard" => shard.to_string()).increment(1);
}

/// Messages waiting in a carrier's queue.
pub fn carrier_queue_depth(carrier: &str, depth: u32) {
    gauge!("herald_carrier_queue_depth", "carrier" => carrier.to_owned()).set(f64::from(depth));
}

/// A carrier's latency or error rate climbed: its rate was lowered before
/// it starts refusing.
pub fn carrier_strained(carrier: &str, why: &'static str) {
    counter!("herald_carrier_strain_total", "carrier" => carrier.to_owned(), "why" => why)
        .increment(1);
    tracing::warn!(carrier, why, "carrier strained; lowering its rate");
}
