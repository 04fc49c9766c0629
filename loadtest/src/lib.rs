//! herald-loadtest: an open-loop load generator that treats Herald as a black
//! box, exactly as tenants would: `POST /v1/messages` on a fixed schedule (each
//! request with its own `Idempotency-Key`), completion watched on the live
//! stream (`GET /v1/stream`) and through a built-in webhook receiver that
//! verifies every signature.
//!
//! Open loop: request *i* is due at `start + i / rate` whatever happened to
//! the ones before; it is spawned when due and its latency is measured from
//! that due time, so a stalled server shows as latency (no coordinated
//! omission), never as a politely slower client.

pub mod kannel;
pub mod report;
pub mod stream;
pub mod tracker;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use tokio::sync::{oneshot, watch};

use report::{FindMax, Percentiles, Report, Second, Step, TenantReport, Warmup};
use tracker::{histogram, Tracker};

/// Command-line options (also built directly by tests).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "herald-loadtest",
    about = "Open-loop load generator for Herald"
)]
pub struct Options {
    /// What to load: `herald` (POST /v1/messages) or `kannel` (smsbox's
    /// GET /cgi-bin/sendsms, for the peer comparison; see `kannel`).
    #[arg(long, default_value = "herald", value_parser = ["herald", "kannel"])]
    pub target: String,
    /// Herald's (or smsbox's sendsms) base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Kannel sendsms-user username (`--target kannel`).
    #[arg(long, default_value = "bench")]
    pub kannel_user: String,
    /// Kannel sendsms-user password (`--target kannel`).
    #[arg(long, default_value = "bench")]
    pub kannel_password: String,
    /// Kannel `dlr-mask` on every request (`--target kannel`; 0: no
    /// receipts, no DLR callbacks). 11 = SMSC ack + delivered + undelivered,
    /// the callbacks Herald's `sent` and final webhooks correspond to.
    #[arg(long, default_value_t = 0)]
    pub dlr_mask: u32,
    /// Requests started per second (all tenants together).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long to send, e.g. 60s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// How long to wait after sending for every accepted message to reach a
    /// final status; what has not is lost.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Tenants to use (the first N keys); default: every key given.
    #[arg(long)]
    pub tenants: Option<usize>,
    /// Tenant API keys, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub keys: Vec<String>,
    /// A file of tenant API keys, one a line.
    #[arg(long)]
    pub keys_file: Option<PathBuf>,
    /// Channel mix in percent, e.g. sms=90,whatsapp=8,voice=2.
    #[arg(long, default_value = "sms=100", value_parser = parse_mix)]
    pub mix: BTreeMap<String, u32>,
    /// Admin token (used to read the actor tree at the end, if given).
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Do not register webhook endpoints (watch the stream only).
    #[arg(long)]
    pub no_webhooks: bool,
    /// The statuses the webhook endpoints ask for, comma-separated (e.g.
    /// sent,delivered,undelivered,failed,expired,rejected: Kannel's
    /// dlr-mask 11); default: every status. Completion needs the final ones.
    #[arg(long, value_delimiter = ',')]
    pub webhook_statuses: Option<Vec<String>>,
    /// Where the webhook receiver listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub webhook_listen: SocketAddr,
    /// The SMSC simulator's control URL (e.g. http://127.0.0.1:8775): count
    /// this run's submissions there and report any message submitted twice.
    #[arg(long)]
    pub smsc_control: Option<String>,
    /// Requests in flight past which a due request is not sent but counted as
    /// `client_overload` (protects the generator itself).
    #[arg(long, default_value_t = 20_000)]
    pub max_in_flight: u64,
    /// Send at --rate for this long first and leave it out of the figures
    /// (connections opened, caches and pools filled, as on a system that has
    /// been running); its messages must still all complete, and any loss or
    /// error there is reported (`warmup` in the JSON). 0: none.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Ramp the rate from --rate by --step-rate every --step-duration and
    /// report the highest rate sustained within the SLO.
    #[arg(long)]
    pub find_max: bool,
    #[arg(long)]
    pub step_rate: Option<f64>,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub step_duration: Duration,
    #[arg(long, default_value_t = 12)]
    pub max_steps: u32,
    /// p99 accept latency SLO for --find-max (ms).
    #[arg(long, default_value_t = 50.0)]
    pub slo_ms: f64,
    /// Destination numbers: this E.164 prefix followed by digits of the
    /// request number (the default is a Rwandan mobile range).
    #[arg(long, default_value = "+25078")]
    pub to_prefix: String,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl Options {
    /// Options for `rate`/s during `duration` with these keys, everything
    /// else at its default.
    pub fn new(url: &str, keys: Vec<String>, rate: f64, duration: Duration) -> Options {
        let mut o = Options::parse_from(["herald-loadtest"]);
        o.url = url.trim_end_matches('/').to_owned();
        o.keys = keys;
        o.rate = rate;
        o.duration = duration;
        o
    }
}

/// `60s`, `500ms`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (e.g. 60s, 500ms, 2m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// `sms=90,whatsapp=8,voice=2`.
pub fn parse_mix(s: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut mix = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("mix entry {part:?} is not channel=weight"))?;
        let k = k.trim().to_owned();
        if !matches!(k.as_str(), "sms" | "whatsapp" | "voice") {
            return Err(format!("unknown channel {k:?} (sms, whatsapp, voice)"));
        }
        let v: u32 = v
            .trim()
            .parse()
            .map_err(|_| format!("weight of {k} is not a whole number"))?;
        mix.insert(k, v);
    }
    if mix.values().sum::<u32>() == 0 {
        return Err("the mix has no weight".into());
    }
    Ok(mix)
}

/// The channel of request `i`: a fixed pseudo-random spread over the weights.
fn channel_of(mix: &[(String, u32)], i: u64) -> &str {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    // splitmix64
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let mut slot = (z % total as u64) as u32;
    for (c, w) in mix {
        if slot < *w {
            return c;
        }
        slot -= w;
    }
    &mix[0].0
}

/// The request body of request `i`.
pub fn message_body(channel: &str, to: &str, text: &str) -> serde_json::Value {
    match channel {
        "whatsapp" => {
            serde_json::json!({"channel": "whatsapp", "to": to, "from": "+250788000000", "body": text})
        }
        "voice" => {
            serde_json::json!({"channel": "voice", "to": to, "from": "+250788000000", "say": text})
        }
        _ => serde_json::json!({"channel": "sms", "to": to, "from": "HERALD", "body": text}),
    }
}

/// The threads that watch for completions (the live stream, the webhook
/// and DLR receivers), apart from those that send and time the requests:
/// a burst of callbacks then does not delay the reading of an answer and
/// inflate the accept latency measured.
pub fn observers() -> &'static tokio::runtime::Handle {
    static OBSERVERS: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    OBSERVERS
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("loadtest-observe")
                .enable_all()
                .build()
                .expect("observer runtime builds")
        })
        .handle()
}

/// What stays up across phases: HTTP client, tenants, streams, receiver.
struct Session {
    opts: Options,
    http: reqwest::Client,
    keys: Vec<String>,
    tag: String,
    tracker: Arc<RwLock<Arc<Tracker>>>,
    receiver: Arc<webhook::Receiver>,
    endpoints: Vec<(String, String)>,
    stop: watch::Sender<bool>,
}

impl Session {
    fn new_phase(&self) -> Arc<Tracker> {
        let t = Arc::new(Tracker::default());
        *self.tracker.write().unwrap_or_else(|p| p.into_inner()) = t.clone();
        *self
            .receiver
            .tracker
            .write()
            .unwrap_or_else(|p| p.into_inner()) = t.clone();
        t
    }

    async fn start(opts: Options) -> anyhow::Result<Session> {
        let mut keys = opts.keys.clone();
        if let Some(f) = &opts.keys_file {
            let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        if let Some(n) = opts.tenants {
            if keys.len() < n {
                bail!("--tenants {n} but only {} key(s) given", keys.len());
            }
            keys.truncate(n);
        }
        if keys.is_empty() {
            bail!("no tenant keys: pass --keys k1,k2 or --keys-file (create tenants with `herald tenant create`)");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let first = Arc::new(Tracker::default());
        let tracker = Arc::new(RwLock::new(first.clone()));
        let receiver = Arc::new(webhook::Receiver {
            keys: RwLock::new(vec![None; keys.len()]),
            tracker: RwLock::new(first),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut s = Session {
            opts: opts.clone(),
            http,
            keys,
            tag,
            tracker,
            receiver,
            endpoints: Vec::new(),
            stop,
        };

        // Webhook endpoints, one per tenant, pointing at our receiver.
        if !opts.no_webhooks {
            let addr = observers()
                .spawn(webhook::start(opts.webhook_listen, s.receiver.clone()))
                .await??;
            for (i, key) in s.keys.iter().enumerate() {
                let res = s
                    .http
                    .post(format!("{}/v1/webhooks/endpoints", opts.url))
                    .bearer_auth(key)
                    .json(&serde_json::json!({
                        "url": format!("http://{addr}/t/{i}"),
                        "description": format!("herald-loadtest {}", s.tag),
                        "statuses": opts.webhook_statuses,
                    }))
                    .send()
                    .await
                    .context("register webhook endpoint")?;
                let status = res.status();
                let v: serde_json::Value = res.json().await.unwrap_or_default();
                if status.as_u16() != 201 && status.as_u16() != 200 {
                    bail!("registering a webhook endpoint for tenant {i}: {status} {v}");
                }
                let secret = v["secret"].as_str().context("no secret in the answer")?;
                let id = v["id"].as_str().unwrap_or_default().to_owned();
                s.receiver.keys.write().unwrap_or_else(|p| p.into_inner())[i] =
                    Some(webhook::secret_key(secret)?);
                s.endpoints.push((key.clone(), id));
            }
        }

        // Streams, one per tenant, connected before anything is sent.
        let ws_base = opts
            .url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let mut readies = Vec::new();
        for key in &s.keys {
            // A tenant with no events yet: `after=0` (no gap between connect
            // and the first live event). Otherwise live only.
            let probe: serde_json::Value = s
                .http
                .get(format!("{}/v1/events?after=0&limit=1", opts.url))
                .bearer_auth(key)
                .send()
                .await
                .context("GET /v1/events")?
                .json()
                .await
                .unwrap_or_default();
            let fresh = probe["data"].as_array().is_some_and(|d| d.is_empty());
            let (tx, rx) = oneshot::channel();
            observers().spawn(stream::follow(
                ws_base.clone(),
                key.clone(),
                fresh.then_some(0),
                s.tracker.clone(),
                tx,
                stop_rx.clone(),
            ));
            readies.push(rx);
        }
        for r in readies {
            tokio::time::timeout(Duration::from_secs(10), r)
                .await
                .context("the live stream did not connect within 10 s")?
                .ok();
        }
        Ok(s)
    }

    /// Send at `rate` for `duration`, then drain; the phase's figures.
    async fn phase(&self, rate: f64, duration: Duration, phase: u32) -> Report {
        let tracker = self.new_phase();
        let total = (rate * duration.as_secs_f64()).round() as u64;
        let mix: Vec<(String, u32)> = self
            .opts
            .mix
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let keys = Arc::new(self.keys.clone());
        let start = Instant::now();

        // Progress line and timeline, every second.
        let (prog_stop, mut prog_rx) = watch::channel(false);
        let progress = {
            let tracker = tracker.clone();
            let quiet = self.opts.quiet;
            let want_webhook = !self.opts.no_webhooks;
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
                    let fin = tracker.stream_finals.load(Ordering::Relaxed);
                    let s = tracker.second(start.elapsed().as_secs(), &mut last, fin);
                    if !quiet {
                        eprintln!(
                            "[{:>4}s] sent {:>5}/s accepted {:>5}/s errors {:>4}/s in flight {:>5} | p99 accept {:>8.2} ms max {:>8.2} | final {:>8} webhooks {:>8}{}",
                            s.t, s.attempted, s.accepted, s.errors,
                            tracker.in_flight.load(Ordering::Relaxed),
                            s.accept_p99_ms, s.accept_max_ms, fin,
                            tracker.webhook_finals.load(Ordering::Relaxed),
                            if want_webhook { "" } else { " (off)" },
                        );
                    }
                    timeline.push(s);
                }
            })
        };

        // The open-loop schedule.
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut i: u64 = 0;
        while i < total {
            tick.tick().await;
            let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
            while i < due {
                let intended = start + Duration::from_secs_f64(i as f64 / rate);
                self.spawn_request(&tracker, &keys, &mix, phase, i, intended);
                i += 1;
            }
        }
        let send_elapsed = start.elapsed().max(duration);

        // Wait for answers, then for final statuses.
        let want_webhook = !self.opts.no_webhooks;
        let drain_start = Instant::now();
        let deadline = drain_start + self.opts.drain;
        while tracker.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut drained = false;
        while Instant::now() < deadline {
            if tracker.in_flight.load(Ordering::Relaxed) == 0
                && tracker.unfinished(true, want_webhook) == 0
            {
                drained = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let drain_s = drain_start.elapsed().as_secs_f64();
        let _ = prog_stop.send(true);
        let timeline = progress.await.unwrap_or_default();

        let mut report = self.report(&tracker, rate, duration, send_elapsed, drain_s, drained);
        report.timeline = timeline;
        report.completed_s = last_completion(tracker.lock_msgs().values(), start);
        fill_latency_by_second(&mut report.timeline, tracker.lock_msgs().values(), start);
        if let Some(ctl) = &self.opts.smsc_control {
            match self.smsc_check(ctl, phase).await {
                Ok((subs, dups)) => {
                    report.carrier_submits = Some(subs);
                    report.carrier_duplicates = Some(dups);
                }
                Err(e) => eprintln!("herald-loadtest: SMSC control {ctl}: {e:#}"),
            }
        }
        report
    }

    fn spawn_request(
        &self,
        tracker: &Arc<Tracker>,
        keys: &Arc<Vec<String>>,
        mix: &[(String, u32)],
        phase: u32,
        i: u64,
        intended: Instant,
    ) {
        tracker.attempted.fetch_add(1, Ordering::Relaxed);
        if tracker.in_flight.load(Ordering::Relaxed) >= self.opts.max_in_flight {
            tracker.error("client_overload".into());
            return;
        }
        tracker.in_flight.fetch_add(1, Ordering::Relaxed);
        let tenant = (i % keys.len() as u64) as usize;
        let channel = channel_of(mix, i);
        let to = format!("{}{:07}", self.opts.to_prefix, i % 10_000_000);
        let text = format!("lt {} {phase} {i}", self.tag);
        let body = message_body(channel, &to, &text);
        let req = self
            .http
            .post(format!("{}/v1/messages", self.opts.url))
            .bearer_auth(&keys[tenant])
            .header("Idempotency-Key", format!("lt-{}-{phase}-{i}", self.tag))
            .json(&body);
        let tracker = tracker.clone();
        tokio::spawn(async move {
            match req.send().await {
                Ok(res) if res.status().as_u16() == 202 => {
                    let now = Instant::now();
                    match res.json::<serde_json::Value>().await {
                        Ok(v) => match v["id"].as_str() {
                            Some(id) => tracker.accepted(id.to_owned(), tenant, intended, now),
                            None => tracker.error("202 without id".into()),
                        },
                        Err(_) => tracker.error("202 unreadable body".into()),
                    }
                }
                Ok(res) => {
                    let status = res.status().as_u16();
                    let v: serde_json::Value = res.json().await.unwrap_or_default();
                    let code = v["error"]["code"].as_str().unwrap_or("-").to_owned();
                    tracker.error(format!("{status} {code}"));
                }
                Err(e) => tracker.transport_error(&e),
            }
            tracker.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }

    fn report(
        &self,
        t: &Tracker,
        rate: f64,
        duration: Duration,
        send_elapsed: Duration,
        drain_s: f64,
        drained: bool,
    ) -> Report {
        let want_webhook = !self.opts.no_webhooks;
        let mut to_sent = histogram();
        let mut to_delivered = histogram();
        let mut finals: BTreeMap<String, u64> = BTreeMap::new();
        let (mut delivered, mut lost, mut stream_missing, mut webhook_missing) = (0, 0, 0, 0);
        let mut per: HashMap<usize, (u64, u64, u64, hdrhistogram::Histogram<u64>)> = HashMap::new();
        for m in t.lock_msgs().values() {
            let Some(intended) = m.intended else { continue };
            let pt = per
                .entry(m.tenant)
                .or_insert_with(|| (0, 0, 0, histogram()));
            pt.0 += 1;
            let us =
                |at: Instant| (at.saturating_duration_since(intended).as_micros() as u64).max(1);
            if let Some(at) = m.sent_at {
                to_sent.saturating_record(us(at));
            }
            if let Some(at) = m.delivered_at {
                to_delivered.saturating_record(us(at));
                pt.3.saturating_record(us(at));
            }
            let fin = m.stream_final.as_ref().or(m.webhook_final.as_ref());
            match fin {
                Some(s) => {
                    *finals.entry(s.clone()).or_insert(0) += 1;
                    if s == "delivered" {
                        delivered += 1;
                        pt.1 += 1;
                    }
                }
                None => {
                    lost += 1;
                    pt.2 += 1;
                }
            }
            if m.stream_final.is_none() {
                stream_missing += 1;
            }
            if want_webhook && m.webhook_final.is_none() {
                webhook_missing += 1;
            }
        }
        let mut per_tenant: Vec<TenantReport> = per
            .into_iter()
            .map(|(tenant, (accepted, delivered, lost, h))| TenantReport {
                tenant,
                accepted,
                delivered,
                lost,
                to_delivered_ms: Percentiles::of(&h),
            })
            .collect();
        per_tenant.sort_by_key(|p| p.tenant);
        let accepted = t.accepted.load(Ordering::Relaxed);
        Report {
            target: "herald".into(),
            url: self.opts.url.clone(),
            target_rate: rate,
            duration_s: duration.as_secs_f64(),
            tenants: self.keys.len(),
            mix: self.opts.mix.clone(),
            attempted: t.attempted.load(Ordering::Relaxed),
            accepted,
            accepted_per_s: accepted as f64 / send_elapsed.as_secs_f64().max(0.001),
            errors: t.lock_errors().clone(),
            accept_latency_ms: Percentiles::of(&t.lock_accept()),
            to_sent_ms: Percentiles::of(&to_sent),
            to_delivered_ms: Percentiles::of(&to_delivered),
            finals,
            delivered,
            lost,
            stream_final_missing: stream_missing,
            webhook_final_missing: webhook_missing,
            drain_s,
            completed_s: 0.0,
            drained,
            stream_events: t.stream_events.load(Ordering::Relaxed),
            stream_reconnects: t.stream_reconnects.load(Ordering::Relaxed),
            webhooks: want_webhook,
            webhooks_received: t.webhooks.load(Ordering::Relaxed),
            webhook_duplicates: t.webhook_duplicates.load(Ordering::Relaxed),
            webhook_redeliveries: t.webhook_redeliveries.load(Ordering::Relaxed),
            bad_signatures: t.bad_signatures.load(Ordering::Relaxed),
            carrier_submits: None,
            carrier_duplicates: None,
            per_tenant,
            timeline: Vec::new(),
            find_max: None,
            warmup: None,
        }
    }

    /// Count this phase's messages at the SMSC simulator (`GET /received`).
    async fn smsc_check(&self, ctl: &str, phase: u32) -> anyhow::Result<(u64, u64)> {
        let received: Vec<serde_json::Value> = self
            .http
            .get(format!("{}/received", ctl.trim_end_matches('/')))
            .timeout(Duration::from_secs(120))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let prefix = format!("lt {} {phase} ", self.tag);
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for r in &received {
            if r["status"].as_u64() != Some(0) {
                continue;
            }
            if let Some(text) = r["text"].as_str() {
                if text.starts_with(&prefix) {
                    *counts.entry(text).or_insert(0) += 1;
                }
            }
        }
        let subs = counts.values().sum();
        let dups = counts.values().filter(|c| **c > 1).count() as u64;
        Ok((subs, dups))
    }

    async fn finish(self) {
        let _ = self.stop.send(true);
        for (key, id) in &self.endpoints {
            if id.is_empty() {
                continue;
            }
            let _ = self
                .http
                .delete(format!("{}/v1/webhooks/endpoints/{id}", self.opts.url))
                .bearer_auth(key)
                .send()
                .await;
        }
    }
}

/// Seconds from `start` to the last message's completion (0 if none).
pub fn last_completion<'a>(
    msgs: impl Iterator<Item = &'a tracker::MsgState>,
    start: Instant,
) -> f64 {
    msgs.filter_map(|m| m.final_at)
        .max()
        .map_or(0.0, |at| at.saturating_duration_since(start).as_secs_f64())
}

/// Request -> delivered latency by the second each request was due in,
/// written into the timeline (the latency-over-time plot): second `t` of the
/// timeline covers requests due in `[t-1, t)` after `start`.
pub fn fill_latency_by_second<'a>(
    timeline: &mut Vec<Second>,
    msgs: impl Iterator<Item = &'a tracker::MsgState>,
    start: Instant,
) {
    let mut by_second: BTreeMap<u64, hdrhistogram::Histogram<u64>> = BTreeMap::new();
    for m in msgs {
        let (Some(intended), Some(at)) = (m.intended, m.delivered_at) else {
            continue;
        };
        let t = intended.saturating_duration_since(start).as_secs() + 1;
        let us = (at.saturating_duration_since(intended).as_micros() as u64).max(1);
        by_second
            .entry(t)
            .or_insert_with(histogram)
            .saturating_record(us);
    }
    for (t, h) in by_second {
        let p = Percentiles::of(&h);
        match timeline.iter_mut().find(|s| s.t == t) {
            Some(s) => {
                s.delivered = p.count;
                s.delivered_p50_ms = p.p50;
                s.delivered_p99_ms = p.p99;
            }
            None => timeline.push(Second {
                t,
                delivered: p.count,
                delivered_p50_ms: p.p50,
                delivered_p99_ms: p.p99,
                ..Second::default()
            }),
        }
    }
    timeline.sort_by_key(|s| s.t);
}

/// The phase number of the warm-up (message texts and idempotency keys carry
/// their phase; the measured phases count from 0).
const WARMUP_PHASE: u32 = 9999;

/// Whether `--warmup` asks for one; says so unless `--quiet`.
fn warming_up(opts: &Options) -> bool {
    if !opts.warmup.is_zero() && !opts.quiet {
        eprintln!("--- warm-up: {:.0}/s for {:?}", opts.rate, opts.warmup);
    }
    !opts.warmup.is_zero()
}

/// Run the load described by `opts` against Herald (or, with `--target
/// kannel`, Kannel) and return its figures.
pub async fn run(mut opts: Options) -> anyhow::Result<Report> {
    opts.url = opts.url.trim_end_matches('/').to_owned();
    if opts.rate.is_nan() || opts.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    if opts.target == "kannel" {
        if opts.find_max {
            bail!("--find-max is for Herald only");
        }
        let warmup = if warming_up(&opts) {
            let mut first = opts.clone();
            first.duration = opts.warmup;
            Some(Warmup::of(&kannel::run(first).await?))
        } else {
            None
        };
        let mut report = kannel::run(opts).await?;
        report.warmup = warmup;
        return Ok(report);
    }
    let session = Session::start(opts.clone()).await?;
    let warmup = if warming_up(&opts) {
        let r = session.phase(opts.rate, opts.warmup, WARMUP_PHASE).await;
        Some(Warmup::of(&r))
    } else {
        None
    };
    let mut report = if opts.find_max {
        let step = opts.step_rate.unwrap_or((opts.rate / 4.0).max(10.0));
        let mut steps = Vec::new();
        let mut best = None;
        let mut last = None;
        for n in 0..opts.max_steps {
            let rate = opts.rate + step * n as f64;
            if !opts.quiet {
                eprintln!(
                    "--- step {}: {rate:.0}/s for {:?}",
                    n + 1,
                    opts.step_duration
                );
            }
            let r = session.phase(rate, opts.step_duration, n).await;
            let errors: u64 = r.errors.values().sum();
            let passed =
                r.lost == 0 && errors == 0 && r.drained && r.accept_latency_ms.p99 <= opts.slo_ms;
            steps.push(Step {
                rate,
                accepted_per_s: r.accepted_per_s,
                accept_p99_ms: r.accept_latency_ms.p99,
                lost: r.lost,
                errors,
                drained: r.drained,
                passed,
            });
            if passed {
                best = Some(rate);
                last = Some(r);
            } else {
                last = Some(r);
                break;
            }
        }
        let mut r = last.expect("at least one step");
        r.find_max = Some(FindMax {
            slo_p99_ms: opts.slo_ms,
            max_rate: best,
            steps,
        });
        r
    } else {
        session.phase(opts.rate, opts.duration, 0).await
    };
    report.warmup = warmup;
    session.finish().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn parses_and_spreads_the_mix() {
        let mix = parse_mix("sms=90,whatsapp=8,voice=2").unwrap();
        assert_eq!(mix["sms"], 90);
        assert!(parse_mix("fax=1").is_err());
        assert!(parse_mix("sms=0").is_err());
        let mix: Vec<(String, u32)> = mix.into_iter().collect();
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for i in 0..100_000 {
            *counts.entry(channel_of(&mix, i)).or_insert(0) += 1;
        }
        assert!((89_000..91_000).contains(&counts["sms"]), "{counts:?}");
        assert!((7_500..8_500).contains(&counts["whatsapp"]), "{counts:?}");
        assert!((1_700..2_300).contains(&counts["voice"]), "{counts:?}");
    }

    #[test]
    fn options_parse_from_the_command_line() {
        let o = Options::try_parse_from([
            "herald-loadtest",
            "--rate",
            "2000",
            "--duration",
            "60s",
            "--keys",
            "a,b",
            "--mix",
            "sms=90,whatsapp=8,voice=2",
            "--drain",
            "30s",
        ])
        .unwrap();
        assert_eq!(o.rate, 2000.0);
        assert_eq!(o.keys, vec!["a", "b"]);
        assert_eq!(o.drain, Duration::from_secs(30));
    }
}
