//! Logs and metrics. Logs go through `tracing` to stderr, human or JSON.
//! Metrics are Prometheus text at `/metrics`. Each thing worth counting is a
//! named event below: one function that both logs (where useful) and updates
//! its metrics, so names and labels are defined once. Labels are bounded
//! (route pattern, status, channel, reason), never ids or raw error strings.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::{LogConfig, LogFormat};

/// Install the global `tracing` subscriber.
pub fn init_logging(config: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Latency buckets (seconds) for every `*_duration_seconds` histogram.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Install the Prometheus recorder and describe Herald's metrics.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), DURATION_BUCKETS)?
        .install_recorder()?;
    metrics::describe_counter!(
        "herald_http_requests_total",
        "HTTP requests answered, by route pattern and status code"
    );
    metrics::describe_histogram!(
        "herald_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency, by route pattern"
    );
    metrics::describe_counter!(
        "herald_messages_accepted_total",
        "Messages accepted (202), by channel"
    );
    metrics::describe_counter!(
        "herald_messages_rejected_total",
        "Send requests refused, by error code"
    );
    metrics::describe_counter!(
        "herald_outbox_published_total",
        "Messages published to RabbitMQ by the outbox relay, by path (fast, sweep)"
    );
    metrics::describe_counter!(
        "herald_broker_publish_failures_total",
        "Failed publish batches to RabbitMQ"
    );
    metrics::describe_gauge!(
        "herald_broker_connected",
        "1 when the last RabbitMQ operation succeeded"
    );
    metrics::describe_counter!(
        "herald_redis_errors_total",
        "Redis commands that failed, by operation"
    );
    metrics::describe_histogram!(
        "herald_accept_batch_size",
        "Messages written per group-commit statement"
    );
    metrics::describe_histogram!(
        "herald_accept_flush_duration_seconds",
        metrics::Unit::Seconds,
        "Duration of one group-commit statement"
    );
    metrics::describe_histogram!(
        "herald_accept_stage_seconds",
        metrics::Unit::Seconds,
        "Time spent in a stage of the accept path (admit: a group commit's Redis pipeline of rate limits and replays; commit: a send request from hand-over to the group commit until written or refused)"
    );
    metrics::describe_counter!(
        "herald_projector_batches_total",
        "Status projector transactions committed (each applies a whole batch of events)"
    );
    metrics::describe_counter!(
        "herald_projector_events_total",
        "Events taken by the status projector, by outcome (applied, logged, duplicate, parked, matched_late, unknown_message, malformed)"
    );
    metrics::describe_histogram!(
        "herald_projector_batch_size",
        "Events applied per status projector transaction"
    );
    metrics::describe_histogram!(
        "herald_projector_batch_duration_seconds",
        metrics::Unit::Seconds,
        "Duration of one status projector transaction"
    );
    metrics::describe_counter!(
        "herald_projector_failures_total",
        "Status projector transactions that failed, by kind (unavailable, refused)"
    );
    metrics::describe_counter!(
        "herald_projector_dead_lettered_total",
        "Events the status projector sent to the dead-letter queue"
    );
    metrics::describe_gauge!(
        "herald_receipts_unmatched",
        "Receipts parked longer than projector.unmatched_after_seconds with no matching carrier reference"
    );
    // --- webhooks and live stream (issue 5) ---
    metrics::describe_counter!(
        "herald_webhook_tasks_published_total",
        "Webhook delivery tasks published by the dispatcher (one per event and target)"
    );
    metrics::describe_counter!(
        "herald_webhook_attempts_total",
        "Webhook delivery attempts, by outcome (succeeded, retrying, failed, gone, refused, deferred, skipped, malformed)"
    );
    metrics::describe_histogram!(
        "herald_webhook_duration_seconds",
        metrics::Unit::Seconds,
        "Time a webhook receiver took to answer"
    );
    metrics::describe_counter!(
        "herald_webhook_endpoints_disabled_total",
        "Webhook endpoints disabled, by reason (gone, failing)"
    );
    metrics::describe_gauge!(
        "herald_stream_clients",
        "WebSocket live stream clients connected to this node"
    );
    metrics::describe_counter!(
        "herald_stream_disconnects_total",
        "WebSocket live stream clients disconnected by Herald, by reason (slow, timeout, resync, unavailable, shutdown)"
    );
    // --- end webhooks and live stream ---
    // --- carrier callbacks (issue 5) ---
    metrics::describe_counter!(
        "herald_callbacks_total",
        "Carrier callbacks (POST and GET /v1/callbacks/{carrier}), by carrier and outcome (accepted, ignored, invalid_signature, malformed, unavailable, unsupported, verified, refused)"
    );
    metrics::describe_counter!(
        "herald_callback_receipts_total",
        "Receipts from carrier callbacks published to the events queue, by carrier"
    );
    // --- end carrier callbacks ---
    Ok(handle)
}

/// One HTTP request answered.
pub fn http_request(route: &str, status: u16, elapsed: Duration) {
    counter!("herald_http_requests_total", "route" => route.to_owned(), "status" => status.to_string())
        .increment(1);
    histogram!("herald_http_request_duration_seconds", "route" => route.to_owned())
        .record(elapsed.as_secs_f64());
}

/// Messages this process accepted since it started (the dashboard's
/// "accepted" rate).
static ACCEPTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Messages this process accepted since it started.
pub fn accepted_total() -> u64 {
    ACCEPTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A message accepted.
pub fn message_accepted(channel: &'static str) {
    ACCEPTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    counter!("herald_messages_accepted_total", "channel" => channel).increment(1);
}

/// A send request refused, by its error code.
pub fn message_rejected(code: &'static str) {
    counter!("herald_messages_rejected_total", "code" => code).increment(1);
}

/// Time spent in a stage of the accept path (`admit`: one group commit's
/// Redis pipeline; `commit`: one send request's hand-over until written).
pub fn accept_stage(stage: &'static str, elapsed: Duration) {
    histogram!("herald_accept_stage_seconds", "stage" => stage).record(elapsed.as_secs_f64());
}

/// One group-commit flush written.
pub fn accept_batch_flushed(size: usize, elapsed: Duration) {
    histogram!("herald_accept_batch_size").record(size as f64);
    histogram!("herald_accept_flush_duration_seconds").record(elapsed.as_secs_f64());
}

/// Messages published to RabbitMQ and confirmed.
pub fn outbox_published(path: &'static str, count: usize) {
    counter!("herald_outbox_published_total", "path" => path).increment(count as u64);
    gauge!("herald_broker_connected").set(1.0);
}

/// Committed messages the relay's fast path had no room for: the sweep
/// publishes them after the grace.
pub fn outbox_left_to_sweep(count: usize) {
    counter!("herald_outbox_left_to_sweep_total").increment(count as u64);
}

/// A publish batch failed; its messages stay in the outbox.
pub fn broker_publish_failed(count: usize, error: &dyn std::fmt::Display) {
    counter!("herald_broker_publish_failures_total").increment(1);
    gauge!("herald_broker_connected").set(0.0);
    tracing::warn!(messages = count, %error, "publish to RabbitMQ failed; messages stay in the outbox");
}

/// A Redis command failed and the caller degraded.
pub fn redis_error(operation: &'static str, error: &dyn std::fmt::Display) {
    counter!("herald_redis_errors_total", "operation" => operation).increment(1);
    tracing::warn!(operation, %error, "redis command failed; degrading");
}

/// One status projector batch committed.
pub fn projector_batch(
    events: usize,
    elapsed: Duration,
    report: &crate::projector::fold::FoldReport,
) {
    counter!("herald_projector_batches_total").increment(1);
    histogram!("herald_projector_batch_size").record(events as f64);
    histogram!("herald_projector_batch_duration_seconds").record(elapsed.as_secs_f64());
    for (outcome, n) in [
        ("applied", report.applied),
        ("logged", report.logged),
        ("duplicate", report.duplicate),
        ("parked", report.parked),
        ("matched_late", report.matched_late),
        ("unknown_message", report.unknown_message),
    ] {
        if n > 0 {
            counter!("herald_projector_events_total", "outcome" => outcome).increment(n as u64);
        }
    }
    tracing::debug!(target: "herald::projector", events, elapsed_ms = elapsed.as_millis() as u64,
        applied = report.applied, logged = report.logged, duplicate = report.duplicate,
        parked = report.parked, "status batch applied");
}

/// An event on `<prefix>.events` that could not be decoded.
pub fn projector_malformed(reason: &str) {
    counter!("herald_projector_events_total", "outcome" => "malformed").increment(1);
    tracing::warn!(target: "herald::projector", %reason, "malformed event; dead-lettered and acknowledged");
}

/// A status projector transaction failed (`unavailable`: retried; `refused`:
/// the batch is split to find the poison event).
pub fn projector_failed(kind: &'static str, error: &dyn std::fmt::Display) {
    counter!("herald_projector_failures_total", "kind" => kind).increment(1);
    tracing::warn!(target: "herald::projector", kind, %error, "status batch failed");
}

/// A status entered the event log (committed), by channel and status: the
/// whole life of messages, receipts included (`delivered`, `read`, …).
pub fn statuses_logged(channel: &str, status: &str, count: u64) {
    counter!("herald_message_statuses_total", "channel" => channel.to_owned(), "status" => status.to_owned())
        .increment(count);
}

/// An event sent to `<prefix>.dead`.
pub fn projector_dead_lettered() {
    counter!("herald_projector_dead_lettered_total").increment(1);
}

/// Receipts parked past the threshold with nothing to match.
pub fn receipts_unmatched(count: i64) {
    gauge!("herald_receipts_unmatched").set(count as f64);
}

// --- webhooks and live stream (issue 5) ---

/// The dispatcher published delivery tasks.
pub fn webhook_tasks_published(n: usize) {
    counter!("herald_webhook_tasks_published_total").increment(n as u64);
}

/// One webhook delivery attempt ended (`latency`: when the receiver was asked).
pub fn webhook_attempt(outcome: &str, latency: Option<Duration>) {
    counter!("herald_webhook_attempts_total", "outcome" => outcome.to_owned()).increment(1);
    if let Some(l) = latency {
        histogram!("herald_webhook_duration_seconds").record(l.as_secs_f64());
    }
}

/// A webhook endpoint was disabled.
pub fn webhook_endpoint_disabled(reason: &str) {
    tracing::warn!(target: "herald::webhooks", reason, "webhook endpoint disabled");
    counter!("herald_webhook_endpoints_disabled_total", "reason" => reason.to_owned()).increment(1);
}

/// A live stream client connected (`+1`) or left (`-1`).
pub fn stream_clients(delta: f64) {
    gauge!("herald_stream_clients").increment(delta);
}

/// Herald closed a live stream client.
pub fn stream_disconnected(reason: &'static str) {
    tracing::info!(target: "herald::stream", reason, "stream client disconnected");
    counter!("herald_stream_disconnects_total", "reason" => reason).increment(1);
}

// --- carrier callbacks (issue 5) ---

/// A carrier callback answered; `receipts` were published (accepted only).
/// `carrier` is a configured carrier id, or `unknown`.
pub fn callback(carrier: &str, outcome: crate::api::v1::callbacks::Outcome, receipts: usize) {
    use crate::api::v1::callbacks::Outcome;
    let label = outcome.as_str();
    counter!("herald_callbacks_total", "carrier" => carrier.to_owned(), "outcome" => label)
        .increment(1);
    if receipts > 0 {
        counter!("herald_callback_receipts_total", "carrier" => carrier.to_owned())
            .increment(receipts as u64);
    }
    match outcome {
        Outcome::InvalidSignature
        | Outcome::Malformed
        | Outcome::Unavailable
        | Outcome::Refused => {
            tracing::warn!(target: "herald::callbacks", carrier, outcome = label, "carrier callback refused")
        }
        _ => {
            tracing::debug!(target: "herald::callbacks", carrier, outcome = label, receipts, "carrier callback")
        }
    }
}

// --- end carrier callbacks ---
