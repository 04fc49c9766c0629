//! The figures of a run: what `--json` writes and the table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One second of the run (sending, then draining).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    pub t: u64,
    pub attempted: u64,
    pub accepted: u64,
    pub errors: u64,
    pub finals: u64,
    /// Accept latency p99 of the requests answered in this second (ms).
    pub accept_p99_ms: f64,
    pub accept_max_ms: f64,
    /// Requests due in this second that were delivered, and their request
    /// -> delivered latency (ms): the latency-over-time plot.
    pub delivered: u64,
    pub delivered_p50_ms: f64,
    pub delivered_p99_ms: f64,
}

/// Per-tenant figures.
#[derive(Debug, Clone, Serialize)]
pub struct TenantReport {
    pub tenant: usize,
    pub accepted: u64,
    pub delivered: u64,
    pub lost: u64,
    pub to_delivered_ms: Percentiles,
}

/// One step of `--find-max`.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: f64,
    pub accepted_per_s: f64,
    pub accept_p99_ms: f64,
    pub lost: u64,
    pub errors: u64,
    pub drained: bool,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindMax {
    pub slo_p99_ms: f64,
    /// Highest rate sustained for a whole step within the SLO, with zero
    /// loss, zero errors and a drained backlog; `None` if none did.
    pub max_rate: Option<f64>,
    pub steps: Vec<Step>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `herald` or `kannel`.
    pub target: String,
    pub url: String,
    pub target_rate: f64,
    pub duration_s: f64,
    pub tenants: usize,
    pub mix: BTreeMap<String, u32>,
    pub attempted: u64,
    pub accepted: u64,
    /// Accepted requests per second of the sending phase.
    pub accepted_per_s: f64,
    /// Errors by `"<HTTP status> <code>"` (or `transport …`, `client_overload`).
    pub errors: BTreeMap<String, u64>,
    /// From the intended start of each request to its 202 (corrected for
    /// coordinated omission).
    pub accept_latency_ms: Percentiles,
    /// From the intended start to the `sent` event on the stream.
    pub to_sent_ms: Percentiles,
    /// From the intended start to the `delivered` event on the stream.
    pub to_delivered_ms: Percentiles,
    /// Final statuses (from the stream, else the webhook) by status.
    pub finals: BTreeMap<String, u64>,
    pub delivered: u64,
    /// Accepted with no final status (stream nor webhook) within the drain time.
    pub lost: u64,
    /// Accepted with no final event on the stream.
    pub stream_final_missing: u64,
    /// Accepted with no final webhook (0 when webhooks are off).
    pub webhook_final_missing: u64,
    pub drain_s: f64,
    /// From the start of sending to the last completion seen (final status
    /// on the stream and webhook; for Kannel the final DLR, or the last
    /// submit at the SMSC): `delivered / completed_s` is the end-to-end rate.
    pub completed_s: f64,
    /// Everything accepted reached a final status (and webhook) in time.
    pub drained: bool,
    pub stream_events: u64,
    pub stream_reconnects: u64,
    pub webhooks: bool,
    pub webhooks_received: u64,
    /// Two webhooks with different `webhook-id` for one (message, seq).
    pub webhook_duplicates: u64,
    /// The same `webhook-id` again (a retry; allowed).
    pub webhook_redeliveries: u64,
    pub bad_signatures: u64,
    /// submit_sm accepted at the SMSC for this run's messages (`--smsc-control`).
    pub carrier_submits: Option<u64>,
    /// Messages of this run submitted more than once at the SMSC.
    pub carrier_duplicates: Option<u64>,
    pub per_tenant: Vec<TenantReport>,
    pub timeline: Vec<Second>,
    pub find_max: Option<FindMax>,
    /// The warm-up before the measured run (`--warmup`), left out of every
    /// other figure.
    pub warmup: Option<Warmup>,
}

/// What the warm-up sent and whether all of it completed.
#[derive(Debug, Clone, Serialize)]
pub struct Warmup {
    pub duration_s: f64,
    pub attempted: u64,
    pub accepted: u64,
    pub errors: u64,
    pub lost: u64,
    pub accept_p99_ms: f64,
}

impl Warmup {
    pub fn of(r: &Report) -> Warmup {
        Warmup {
            duration_s: r.duration_s,
            attempted: r.attempted,
            accepted: r.accepted,
            errors: r.errors.values().sum(),
            lost: r.lost,
            accept_p99_ms: r.accept_latency_ms.p99,
        }
    }
}

fn row(out: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        out,
        "  {name:<22} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        p.count, p.p50, p.p90, p.p99, p.p999, p.max
    );
}

impl Report {
    /// The human table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "herald-loadtest against {} ({})", self.url, self.target);
        let mix: Vec<String> = self.mix.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            o,
            "  target {:.0}/s for {:.1}s, {} tenant(s), mix {}, webhooks {}",
            self.target_rate,
            self.duration_s,
            self.tenants,
            mix.join(","),
            if self.webhooks { "on" } else { "off" }
        );
        if let Some(w) = &self.warmup {
            let _ = writeln!(
                o,
                "  warm-up first (not in the figures below): {:.1}s, accepted {}/{}, errors {}, lost {}, accept p99 {:.2} ms",
                w.duration_s, w.accepted, w.attempted, w.errors, w.lost, w.accept_p99_ms
            );
        }
        let _ = writeln!(
            o,
            "  attempted {}  accepted {}  ({:.1}/s)  errors {}",
            self.attempted,
            self.accepted,
            self.accepted_per_s,
            self.errors.values().sum::<u64>()
        );
        for (k, v) in &self.errors {
            let _ = writeln!(o, "    {k}: {v}");
        }
        let _ = writeln!(
            o,
            "  latency (ms)              count       p50       p90       p99     p99.9       max"
        );
        row(&mut o, "accept (202)", &self.accept_latency_ms);
        row(&mut o, "request -> sent", &self.to_sent_ms);
        row(&mut o, "request -> delivered", &self.to_delivered_ms);
        let finals: Vec<String> = self
            .finals
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(o, "  final statuses: {}", finals.join(" "));
        let _ = writeln!(
            o,
            "  delivered {}  lost {}  (no final on stream {}, no final webhook {})  drained {} in {:.1}s",
            self.delivered,
            self.lost,
            self.stream_final_missing,
            self.webhook_final_missing,
            self.drained,
            self.drain_s
        );
        if self.completed_s > 0.0 {
            let _ = writeln!(
                o,
                "  last completion {:.1}s after the start: end to end {:.1}/s",
                self.completed_s,
                self.delivered as f64 / self.completed_s
            );
        }
        if self.target == "kannel" {
            let _ = writeln!(
                o,
                "  DLR callbacks {} (duplicates {}); no DLRs: completion counted at the SMSC",
                self.stream_events, self.webhook_duplicates
            );
        } else {
            let _ = writeln!(
                o,
                "  stream events {} (reconnects {})  webhooks {} (duplicates {}, redeliveries {}, bad signatures {})",
                self.stream_events,
                self.stream_reconnects,
                self.webhooks_received,
                self.webhook_duplicates,
                self.webhook_redeliveries,
                self.bad_signatures
            );
        }
        match (self.carrier_submits, self.carrier_duplicates) {
            (Some(s), Some(d)) => {
                let _ = writeln!(
                    o,
                    "  at the SMSC: {s} submit_sm ok, {d} message(s) submitted twice"
                );
            }
            _ => {
                let _ = writeln!(o, "  at the SMSC: not checked (no --smsc-control)");
            }
        }
        if self.per_tenant.len() > 1 {
            for t in &self.per_tenant {
                let _ = writeln!(
                    o,
                    "  tenant {:<3} accepted {:>8} delivered {:>8} lost {:>4} delivered p50 {:>8.2} p99 {:>8.2} ms",
                    t.tenant, t.accepted, t.delivered, t.lost, t.to_delivered_ms.p50, t.to_delivered_ms.p99
                );
            }
        }
        if let Some(f) = &self.find_max {
            let _ = writeln!(o, "  find-max (SLO p99 accept <= {} ms):", f.slo_p99_ms);
            for s in &f.steps {
                let _ = writeln!(
                    o,
                    "    {:>8.0}/s -> {:>8.1}/s accepted, p99 {:>8.2} ms, lost {}, errors {}, drained {}: {}",
                    s.rate,
                    s.accepted_per_s,
                    s.accept_p99_ms,
                    s.lost,
                    s.errors,
                    s.drained,
                    if s.passed { "pass" } else { "FAIL" }
                );
            }
            match f.max_rate {
                Some(r) => {
                    let _ = writeln!(o, "  highest sustained rate: {r:.0}/s");
                }
                None => {
                    let _ = writeln!(o, "  no step passed");
                }
            }
        }
        o
    }
}
