//! `--target kannel`: the same open-loop schedule against Kannel's HTTP
//! sendsms interface (smsbox), for the peer comparison
//! (`scripts/bench-peers.sh`, `make bench-peers`).
//!
//! Request *i* is `GET /cgi-bin/sendsms` with a unique text (`lt <tag> 0 <i>`)
//! and, when `--dlr-mask` is non-zero, its own `dlr-url` pointing at the
//! built-in DLR receiver (`/dlr?i=<i>&t=%d`), so every delivery report names
//! the request it belongs to. Accept latency runs from the intended start to
//! smsbox's answer (`202 0: Accepted for delivery`), as for Herald.
//!
//! Completion:
//! - with DLRs: the DLR callback of type 8 (SMSC ack) is `sent`, of type 1
//!   `delivered`, of type 2 `undelivered`, of type 16 `rejected`; a request
//!   with no final DLR within the drain time is lost; a second callback of
//!   one (request, type) is a duplicate;
//! - without DLRs: the SMSC simulator is the only witness. The drain waits
//!   until its `submit_sm_ok` counter (`GET /stats`) has grown by the number
//!   accepted; then `GET /received` says which of this run's texts arrived
//!   (lost = accepted minus distinct texts, duplicates = texts seen twice).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::report::{Percentiles, Report};
use crate::tracker::{histogram, Tracker};
use crate::Options;

/// The DLR receiver's state: the phase's tracker and the callbacks seen.
struct Dlrs {
    tracker: Arc<Tracker>,
    /// Callbacks by (request, DLR type).
    seen: Mutex<HashMap<(u64, u32), u32>>,
    callbacks: std::sync::atomic::AtomicU64,
}

/// What a DLR type means as a status, and whether it is final.
pub fn dlr_status(kind: u32) -> Option<(&'static str, bool)> {
    match kind {
        1 => Some(("delivered", true)),
        2 => Some(("undelivered", true)),
        4 => Some(("buffered", false)),
        8 => Some(("sent", false)),
        16 => Some(("rejected", true)),
        _ => None,
    }
}

/// `i=<n>&t=<type>` from a DLR callback's query string.
pub fn parse_dlr_query(q: &str) -> Option<(u64, u32)> {
    let (mut i, mut t) = (None, None);
    for pair in q.split('&') {
        match pair.split_once('=') {
            Some(("i", v)) => i = v.parse().ok(),
            Some(("t", v)) => t = v.parse().ok(),
            _ => {}
        }
    }
    Some((i?, t?))
}

async fn start_receiver(addr: SocketAddr, dlrs: Arc<Dlrs>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let dlrs = dlrs.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| on_dlr(dlrs.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

async fn on_dlr(
    dlrs: Arc<Dlrs>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let now = Instant::now();
    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
    let Some((i, kind)) = req.uri().query().and_then(parse_dlr_query) else {
        *res.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(res);
    };
    dlrs.callbacks.fetch_add(1, Ordering::Relaxed);
    let first = {
        let mut seen = dlrs.seen.lock().unwrap_or_else(|p| p.into_inner());
        let n = seen.entry((i, kind)).or_insert(0);
        *n += 1;
        *n == 1
    };
    if !first {
        dlrs.tracker
            .webhook_duplicates
            .fetch_add(1, Ordering::Relaxed);
    } else if let Some((status, fin)) = dlr_status(kind) {
        dlrs.tracker.stream_event(&i.to_string(), status, fin, now);
    }
    Ok(res)
}

/// Submits accepted at the SMSC simulator so far (`GET /stats`).
async fn smsc_ok(http: &reqwest::Client, ctl: &str) -> anyhow::Result<u64> {
    let v: serde_json::Value = http
        .get(format!("{ctl}/stats"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    v["submit_sm_ok"]
        .as_u64()
        .context("no submit_sm_ok in /stats")
}

/// Run the load described by `opts` against Kannel's sendsms and return its
/// figures (stream fields carry the DLR callbacks; webhook fields are off).
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let ctl = opts
        .smsc_control
        .clone()
        .context("--target kannel needs --smsc-control (the SMSC simulator counts deliveries)")?
        .trim_end_matches('/')
        .to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let tracker = Arc::new(Tracker::default());
    let dlrs = Arc::new(Dlrs {
        tracker: tracker.clone(),
        seen: Mutex::new(HashMap::new()),
        callbacks: std::sync::atomic::AtomicU64::new(0),
    });
    let with_dlr = opts.dlr_mask != 0;
    let dlr_base = if with_dlr {
        let addr = crate::observers()
            .spawn(start_receiver(opts.webhook_listen, dlrs.clone()))
            .await??;
        Some(format!("http://{addr}/dlr"))
    } else {
        None
    };
    let base_ok = smsc_ok(&http, &ctl)
        .await
        .context("SMSC simulator control")?;

    let rate = opts.rate;
    let total = (rate * opts.duration.as_secs_f64()).round() as u64;
    let start = Instant::now();

    // Progress line and timeline, every second.
    let (prog_stop, mut prog_rx) = watch::channel(false);
    let progress = {
        let tracker = tracker.clone();
        let quiet = opts.quiet;
        let http = http.clone();
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let mut timeline = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = (0, 0, 0);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = prog_rx.changed() => return timeline,
                }
                let at_smsc = smsc_ok(&http, &ctl)
                    .await
                    .unwrap_or(0)
                    .saturating_sub(base_ok);
                let fin = if with_dlr {
                    tracker.stream_finals.load(Ordering::Relaxed)
                } else {
                    at_smsc
                };
                let s = tracker.second(start.elapsed().as_secs(), &mut last, fin);
                if !quiet {
                    eprintln!(
                        "[{:>4}s] sent {:>5}/s accepted {:>5}/s errors {:>4}/s in flight {:>5} | p99 accept {:>8.2} ms max {:>8.2} | at SMSC {:>8} final DLRs {:>8}",
                        s.t, s.attempted, s.accepted, s.errors,
                        tracker.in_flight.load(Ordering::Relaxed),
                        s.accept_p99_ms, s.accept_max_ms, at_smsc,
                        tracker.stream_finals.load(Ordering::Relaxed),
                    );
                }
                timeline.push(s);
            }
        })
    };

    // The open-loop schedule (as for Herald: due at start + i / rate).
    let sendsms = format!("{}/cgi-bin/sendsms", opts.url);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut i: u64 = 0;
    while i < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        while i < due {
            let intended = start + Duration::from_secs_f64(i as f64 / rate);
            tracker.attempted.fetch_add(1, Ordering::Relaxed);
            if tracker.in_flight.load(Ordering::Relaxed) >= opts.max_in_flight {
                tracker.error("client_overload".into());
                i += 1;
                continue;
            }
            tracker.in_flight.fetch_add(1, Ordering::Relaxed);
            let to = format!("{}{:07}", opts.to_prefix, i % 10_000_000);
            let mut query = vec![
                ("username", opts.kannel_user.clone()),
                ("password", opts.kannel_password.clone()),
                ("from", "HERALD".to_owned()),
                ("to", to),
                ("text", format!("lt {tag} 0 {i}")),
            ];
            if let Some(base) = &dlr_base {
                query.push(("dlr-mask", opts.dlr_mask.to_string()));
                query.push(("dlr-url", format!("{base}?i={i}&t=%d")));
            }
            let req = http.get(&sendsms).query(&query);
            let tracker = tracker.clone();
            tokio::spawn(async move {
                match req.send().await {
                    Ok(res) if matches!(res.status().as_u16(), 200 | 202) => {
                        let now = Instant::now();
                        let _ = res.bytes().await;
                        tracker.accepted(i.to_string(), 0, intended, now);
                    }
                    Ok(res) => {
                        let status = res.status().as_u16();
                        let text = res.text().await.unwrap_or_default();
                        let code = text.split(':').next().unwrap_or("-").trim().to_owned();
                        tracker.error(format!("{status} {code}"));
                    }
                    Err(e) => tracker.transport_error(&e),
                }
                tracker.in_flight.fetch_sub(1, Ordering::Relaxed);
            });
            i += 1;
        }
    }
    let send_elapsed = start.elapsed().max(opts.duration);

    // Wait for answers and for completion. Without DLRs the last completion
    // is when the SMSC's count last grew (polled every 50 ms, also while
    // answers are still awaited).
    let drain_start = Instant::now();
    let deadline = drain_start + opts.drain;
    let mut drained = false;
    let (mut last_count, mut last_change) = (None, drain_start);
    while Instant::now() < deadline {
        let answered = tracker.in_flight.load(Ordering::Relaxed) == 0;
        let accepted = tracker.accepted.load(Ordering::Relaxed);
        let complete = if with_dlr {
            tracker.unfinished(true, false) == 0
        } else {
            let n = smsc_ok(&http, &ctl)
                .await
                .unwrap_or(0)
                .saturating_sub(base_ok);
            if last_count.is_some_and(|c| n > c) {
                last_change = Instant::now();
            }
            last_count = Some(n);
            n >= accepted
        };
        if answered && complete {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let accepted = tracker.accepted.load(Ordering::Relaxed);
    let drain_s = drain_start.elapsed().as_secs_f64();
    let _ = prog_stop.send(true);
    let mut timeline = progress.await.unwrap_or_default();

    // What the SMSC received of this run.
    let received: Vec<serde_json::Value> = http
        .get(format!("{ctl}/received"))
        .timeout(Duration::from_secs(300))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
        .context("GET /received")?;
    let prefix = format!("lt {tag} 0 ");
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for r in &received {
        if r["status"].as_u64() != Some(0) {
            continue;
        }
        if let Some(n) = r["text"]
            .as_str()
            .and_then(|t| t.strip_prefix(&prefix))
            .and_then(|n| n.parse().ok())
        {
            *counts.entry(n).or_insert(0) += 1;
        }
    }
    let submits: u64 = counts.values().sum();
    let dup_submits = counts.values().filter(|c| **c > 1).count() as u64;

    let mut to_sent = histogram();
    let mut to_delivered = histogram();
    let mut finals: BTreeMap<String, u64> = BTreeMap::new();
    let (mut delivered, mut lost) = (0, 0);
    let completed_s;
    {
        let msgs = tracker.lock_msgs();
        for (id, m) in msgs.iter() {
            let Some(intended) = m.intended else { continue };
            let us =
                |at: Instant| (at.saturating_duration_since(intended).as_micros() as u64).max(1);
            if let Some(at) = m.sent_at {
                to_sent.saturating_record(us(at));
            }
            if let Some(at) = m.delivered_at {
                to_delivered.saturating_record(us(at));
            }
            if with_dlr {
                match &m.stream_final {
                    Some(s) => {
                        *finals.entry(s.clone()).or_insert(0) += 1;
                        if s == "delivered" {
                            delivered += 1;
                        }
                    }
                    None => lost += 1,
                }
            } else {
                let at_smsc = id
                    .parse::<u64>()
                    .ok()
                    .is_some_and(|n| counts.contains_key(&n));
                if at_smsc {
                    *finals.entry("submitted".into()).or_insert(0) += 1;
                    delivered += 1;
                } else {
                    lost += 1;
                }
            }
        }
        crate::fill_latency_by_second(&mut timeline, msgs.values(), start);
        completed_s = if with_dlr {
            crate::last_completion(msgs.values(), start)
        } else {
            last_change.saturating_duration_since(start).as_secs_f64()
        };
    }

    let accept_latency_ms = Percentiles::of(&tracker.lock_accept());
    let errors = tracker.lock_errors().clone();
    Ok(Report {
        target: "kannel".into(),
        url: opts.url.clone(),
        target_rate: rate,
        duration_s: opts.duration.as_secs_f64(),
        tenants: 1,
        mix: opts.mix.clone(),
        attempted: tracker.attempted.load(Ordering::Relaxed),
        accepted,
        accepted_per_s: accepted as f64 / send_elapsed.as_secs_f64().max(0.001),
        errors,
        accept_latency_ms,
        to_sent_ms: Percentiles::of(&to_sent),
        to_delivered_ms: Percentiles::of(&to_delivered),
        finals,
        delivered,
        lost,
        stream_final_missing: if with_dlr { lost } else { 0 },
        webhook_final_missing: 0,
        drain_s,
        completed_s,
        drained,
        stream_events: dlrs.callbacks.load(Ordering::Relaxed),
        stream_reconnects: 0,
        webhooks: false,
        webhooks_received: 0,
        webhook_duplicates: tracker.webhook_duplicates.load(Ordering::Relaxed),
        webhook_redeliveries: 0,
        bad_signatures: 0,
        carrier_submits: Some(submits),
        carrier_duplicates: Some(dup_submits),
        per_tenant: Vec::new(),
        timeline,
        find_max: None,
        warmup: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dlr_callbacks() {
        assert_eq!(parse_dlr_query("i=42&t=1"), Some((42, 1)));
        assert_eq!(parse_dlr_query("t=8&i=7&x=y"), Some((7, 8)));
        assert_eq!(parse_dlr_query("i=7"), None);
        assert_eq!(parse_dlr_query("i=x&t=1"), None);
        assert_eq!(dlr_status(1), Some(("delivered", true)));
        assert_eq!(dlr_status(8), Some(("sent", false)));
        assert_eq!(dlr_status(3), None);
    }
}
