//! Messages through the actor tree to a real SMPP server (Herald's SMSC
//! simulator): exactly once, at the configured rate, through faults.

mod common;

use std::time::{Duration, Instant};

use common::carriers::{received, route, smpp_carrier, smsc};
use common::{
    accepted_id, admin_tree, carrier_bound, client, eventually, get_message, metrics, post_message,
    sms, Herald, TestEnv, ADMIN,
};
use herald_carriers::smpp::{Behaviour, SmscHandle};
use serde_json::Value;

/// Send `n` messages with bodies `"{tag} {i}"`, `concurrency` at a time.
async fn send_many(herald: &Herald, key: &str, tag: &str, n: usize, to: &str) -> Vec<String> {
    use futures::StreamExt;
    // 64 requests in flight at all times (not in rounds of 64 waiting for
    // the slowest), in order.
    futures::stream::iter(0..n)
        .map(|j| {
            let url = herald.url.clone();
            let key = key.to_owned();
            let body = sms(to, &format!("{tag} {j}"));
            async move { accepted_id(post_message(&url, &key, &body).await).await }
        })
        .buffered(64)
        .collect()
        .await
}

/// An SMSC simulator, an environment whose one carrier `sim` (route `rw`
/// for +250) points at it, a tenant key, and Herald started with the bind up.
async fn with_sim(
    behaviour: Behaviour,
    tps: f64,
    binds: u32,
) -> (SmscHandle, TestEnv, String, Herald) {
    let sim = smsc(behaviour).await;
    let mut env = TestEnv::new();
    env.use_carriers(
        &smpp_carrier("sim", sim.addr(), tps, 10, binds),
        &route("rw", &["+250"], "failover", &["sim"]),
        &["sim"],
    );
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let herald = env.start();
    assert!(
        eventually(Duration::from_secs(10), || carrier_bound(
            &herald.url,
            Some("sim")
        ))
        .await
    );
    (sim, env, key, herald)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_smsc_exactly_once_at_the_configured_rate() {
    const N: usize = 10_000;
    const TPS: f64 = 500.0;
    let (sim, _env, key, herald) = with_sim(
        Behaviour {
            latency_ms: 2,
            receipt_delay_ms: 50,
            ..Default::default()
        },
        TPS,
        2,
    )
    .await;

    // Sample the SMSC's counter while the load flows.
    let started = Instant::now();
    let sampling = async {
        let mut samples = Vec::new();
        loop {
            let n = sim.stats().submit_sm_ok;
            samples.push((started.elapsed(), n));
            if n as usize >= N || started.elapsed() > Duration::from_secs(90) {
                return samples;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (samples, _) = tokio::join!(
        sampling,
        send_many(&herald, &key, "load", N, "+250788123456")
    );
    let elapsed = started.elapsed();
    let arrived = eventually(Duration::from_secs(20), || async {
        received(&sim, "load").len() == N
    })
    .await;
    let refused: Vec<u32> = sim
        .received()
        .iter()
        .filter(|r| r.status != 0)
        .map(|r| r.status)
        .collect();
    assert!(
        arrived,
        "only {} of {N} arrived; refused statuses {refused:?}; log:\n{}",
        received(&sim, "load").len(),
        herald.log()
    );

    let c = received(&sim, "load");
    assert_eq!(c.len(), N, "every message arrived");
    assert!(c.values().all(|n| *n == 1), "none twice");
    // No faster than the rate allows (with its 0.1 s burst), and not much slower.
    let floor = N as f64 / TPS * 0.9;
    assert!(
        elapsed.as_secs_f64() >= floor,
        "{elapsed:?} is faster than {TPS}/s"
    );
    // A sanity bound only (the machine may be busy with other tests);
    // throughput proper is measured by the benchmark, not here.
    assert!(
        elapsed.as_secs_f64() <= N as f64 / TPS * 3.0 + 30.0,
        "{elapsed:?}: far slower than {TPS}/s"
    );
    // Never above the rate by more than 5% over any second.
    let mut worst = 0u64;
    for (i, (t0, n0)) in samples.iter().enumerate() {
        for (t1, n1) in &samples[i..] {
            if *t1 - *t0 >= Duration::from_secs(1) {
                let secs = (*t1 - *t0).as_secs_f64();
                let per_second = ((n1 - n0) as f64 / secs) as u64;
                worst = worst.max(per_second);
                break;
            }
        }
    }
    assert!(
        worst as f64 <= TPS * 1.05,
        "peak {worst}/s over a one-second window exceeds {TPS}/s by more than 5%"
    );
    eprintln!("{N} messages in {elapsed:?}; peak {worst}/s for a configured {TPS}/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_bind_is_restarted_and_every_message_still_goes_out() {
    const N: usize = 600;
    let (sim, _env, key, herald) = with_sim(
        Behaviour {
            latency_ms: 1,
            drop_after_pdus: Some(250),
            ..Default::default()
        },
        1000.0,
        1,
    )
    .await;
    send_many(&herald, &key, "drop", N, "+250788123456").await;
    let all = eventually(Duration::from_secs(60), || async {
        received(&sim, "drop").len() == N
    })
    .await;
    assert!(
        all,
        "only {} of {N} arrived; log:\n{}",
        received(&sim, "drop").len(),
        herald.log()
    );
    let c = received(&sim, "drop");
    let duplicates: usize = c.values().map(|n| n - 1).sum();
    let drops = sim.stats().dropped_connections as usize;
    assert!(drops >= 2, "the simulator dropped the bind ({drops})");
    assert!(
        duplicates <= drops * 10,
        "{duplicates} duplicates for {drops} drops exceeds the window of 10 per drop"
    );
    let tree = admin_tree(&herald.url).await;
    let restarts = tree["carriers"][0]["restarts"].as_u64().unwrap();
    assert!(restarts >= 2, "restarts counted: {tree}");
    let metrics = metrics(&herald.url).await;
    assert!(metrics.contains("herald_actor_restarts_total{kind=\"carrier_connection\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_lost_under_a_running_herald_come_back_and_nothing_is_lost() {
    const N: usize = 200;
    let (sim, env, key, herald) = with_sim(
        Behaviour {
            latency_ms: 1,
            ..Default::default()
        },
        1000.0,
        1,
    )
    .await;
    send_many(&herald, &key, "before", N, "+250788123456").await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            received(&sim, "before").len() == N
        })
        .await
    );

    // As a broker reset would leave it: every exchange and queue of this
    // Herald gone, the carrier's and the webhooks' too.
    env.delete_topology().await.unwrap();

    // Herald declares it all again when it reconnects; meanwhile a publish
    // no queue would take comes back and is published again, not dropped.
    send_many(&herald, &key, "after", N, "+250788123456").await;
    let all = eventually(Duration::from_secs(60), || async {
        received(&sim, "after").len() == N
    })
    .await;
    let c = received(&sim, "after");
    assert!(
        all,
        "only {} of {N} accepted after the reset reached the SMSC; log:\n{}",
        c.len(),
        herald.log()
    );
    let twice = c.values().filter(|n| **n > 1).count();
    eprintln!("{N} of {N} after the reset; {twice} submitted twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_actor_is_back_within_the_health_interval_and_nothing_is_lost() {
    let (sim, _env, key, herald) = with_sim(Behaviour::default(), 1000.0, 1).await;

    for name in ["carrier:sim:0", "route:rw"] {
        let res = client()
            .post(format!("{}/v1/admin/actors/{name}/crash", herald.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202, "{name}");
        let back = eventually(Duration::from_secs(5), || async {
            let tree = admin_tree(&herald.url).await;
            tree["restarts"][name].as_u64().unwrap_or(0) >= 1
        })
        .await;
        assert!(back, "{name} was not recreated; log:\n{}", herald.log());
    }
    assert!(
        eventually(Duration::from_secs(10), || carrier_bound(
            &herald.url,
            Some("sim")
        ))
        .await
    );
    send_many(&herald, &key, "after", 200, "+250788123456").await;
    let all = eventually(Duration::from_secs(30), || async {
        received(&sim, "after").len() == 200
    })
    .await;
    assert!(
        all,
        "{} of 200; log:\n{}",
        received(&sim, "after").len(),
        herald.log()
    );

    let res = client()
        .post(format!("{}/v1/admin/actors/nobody/crash", herald.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = client()
        .get(format!("{}/v1/admin/actors", herald.url))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_lowers_the_rate_and_it_climbs_back() {
    let (sim, _env, key, herald) = with_sim(
        Behaviour {
            max_tps: Some(100),
            ..Default::default()
        },
        400.0,
        1,
    )
    .await;
    send_many(&herald, &key, "thr", 800, "+250788123456").await;
    let rate = |tree: &Value| tree["carriers"][0]["rate"].as_f64().unwrap();
    let lowered = eventually(Duration::from_secs(10), || async {
        rate(&admin_tree(&herald.url).await) < 400.0
    })
    .await;
    assert!(lowered, "the rate came down under throttling");
    let all = eventually(Duration::from_secs(60), || async {
        received(&sim, "thr").len() == 800
    })
    .await;
    assert!(all, "{} of 800 arrived", received(&sim, "thr").len());
    assert!(sim.stats().throttled > 0, "the simulator did throttle");
    // The carrier stops throttling: the rate climbs back to the configured
    // one (a tenth of it per quiet second).
    sim.update_behaviour(|b| b.max_tps = None);
    send_many(&herald, &key, "calm", 50, "+250788123456").await;
    let climbed = eventually(Duration::from_secs(60), || async {
        rate(&admin_tree(&herald.url).await) >= 400.0
    })
    .await;
    assert!(
        climbed,
        "the rate climbs back to 400: {}",
        admin_tree(&herald.url).await
    );
    let metrics = metrics(&herald.url).await;
    assert!(
        metrics.contains("herald_carrier_tps_limit{carrier=\"sim\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_carrier_fails_over_to_the_next() {
    let sim = smsc(Behaviour::default()).await;
    // Nothing listens on the primary's port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let mut env = TestEnv::new();
    env.use_carriers(
        &format!(
            "{}{}",
            smpp_carrier("primary", dead_addr, 1000.0, 10, 1),
            smpp_carrier("backup", sim.addr(), 1000.0, 10, 1)
        ),
        &route("rw", &["+250"], "failover", &["primary", "backup"]),
        &["primary", "backup"],
    );
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let herald = env.start();
    assert!(
        eventually(Duration::from_secs(10), || carrier_bound(
            &herald.url,
            Some("backup")
        ))
        .await
    );
    send_many(&herald, &key, "fo", 200, "+250788123456").await;
    let all = eventually(Duration::from_secs(30), || async {
        received(&sim, "fo").len() == 200
    })
    .await;
    assert!(
        all,
        "{} of 200 went out through the backup",
        received(&sim, "fo").len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_parked_on_a_dead_carrier_are_rerouted() {
    let primary = smsc(Behaviour::default()).await;
    let backup = smsc(Behaviour::default()).await;
    let mut env = TestEnv::new();
    env.use_carriers(
        &format!(
            "{}{}",
            smpp_carrier("primary", primary.addr(), 1000.0, 10, 1),
            smpp_carrier("backup", backup.addr(), 1000.0, 10, 1)
        ),
        &route("rw", &["+250"], "failover", &["primary", "backup"]),
        &["primary", "backup"],
    );
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let herald = env.start();
    assert!(
        eventually(Duration::from_secs(10), || carrier_bound(
            &herald.url,
            Some("primary")
        ))
        .await
    );
    assert!(
        eventually(Duration::from_secs(10), || carrier_bound(
            &herald.url,
            Some("backup")
        ))
        .await
    );
    // The primary stops answering: what it holds, and what reaches its queue
    // before the route hears of it, is parked there.
    primary.update_behaviour(|b| {
        b.stall = true;
        b.refuse_bind = true;
    });
    send_many(&herald, &key, "park", 300, "+250788123456").await;
    let all = eventually(Duration::from_secs(40), || async {
        received(&backup, "park").len() == 300
    })
    .await;
    assert!(
        all,
        "{} of 300 reached the backup; primary answered {}; log:\n{}",
        received(&backup, "park").len(),
        received(&primary, "park").len(),
        herald.log()
    );
    assert_eq!(
        received(&primary, "park").len(),
        0,
        "the stalled primary answered nothing"
    );
    let metrics = metrics(&herald.url).await;
    assert!(
        metrics.contains("outcome=\"rerouted\""),
        "parked messages were re-routed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_does_not_delay_others_and_high_priority_overtakes_bulk() {
    let sim = smsc(Behaviour::default()).await;
    let mut env = TestEnv::new();
    env.use_carriers(
        &smpp_carrier("sim", sim.addr(), 100.0, 10, 1),
        &route("rw", &["+250"], "failover", &["sim"]),
        &["sim"],
    );
    let (_, flood_key) = env.create_tenant("flood", &["--rate", "100000"]);
    let (_, quiet_key) = env.create_tenant("quiet", &["--rate", "100000"]);
    let herald = env.start();
    assert!(
        eventually(Duration::from_secs(10), || carrier_bound(
            &herald.url,
            Some("sim")
        ))
        .await
    );

    // 4,000 bulk messages: 40 s of this carrier's 100/s (sending them takes
    // a debug build on a busy machine 20-26 s).
    send_many(&herald, &flood_key, "bulk", 4000, "+250788123456").await;
    let backlog = 4000 - received(&sim, "bulk").len();
    assert!(backlog > 1000, "the flood is still queued ({backlog} left)");

    // Another tenant's messages, and the flooder's own urgent ones.
    let started = Instant::now();
    send_many(&herald, &quiet_key, "quiet", 10, "+250788123456").await;
    for i in 0..5 {
        let mut body = sms("+250788123456", &format!("urgent {i}"));
        body["priority"] = "high".into();
        accepted_id(post_message(&herald.url, &flood_key, &body).await).await;
    }
    let through = eventually(Duration::from_secs(10), || async {
        received(&sim, "quiet").len() == 10 && received(&sim, "urgent").len() == 5
    })
    .await;
    let waited = started.elapsed();
    let bulk_done = received(&sim, "bulk").len();
    assert!(
        through,
        "quiet {} of 10, urgent {} of 5 after {waited:?}",
        received(&sim, "quiet").len(),
        received(&sim, "urgent").len()
    );
    // Alone this takes about 2 s (15 s of backlog ahead); the bound leaves
    // room for a machine busy with other tests.
    assert!(
        waited < Duration::from_secs(8),
        "the quiet tenant and the urgent messages waited {waited:?} behind a flood"
    );
    assert!(
        bulk_done < 4000,
        "measured while the flood was still flowing"
    );
    eprintln!(
        "quiet tenant and high priority through in {waited:?} with {} bulk messages still waiting",
        4000 - bulk_done
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_messages_go_out_through_the_cloud_api_carrier() {
    use herald_carriers::whatsapp::sim::{carrier_config, start, WhatsappSimConfig};
    let sim_config = WhatsappSimConfig::default();
    let sim = start(sim_config.clone()).await.unwrap();
    let wa = carrier_config(&format!("http://{}", sim.addr()), &sim_config);
    let mut env = TestEnv::new();
    env.use_carriers(
        &format!(
            r#"
[[carrier]]
id = "wa"
kind = "whatsapp"
tps = 100
window = 10
[carrier.whatsapp]
base_url = "{}"
phone_number_id = "{}"
access_token = "{}"
app_secret = "{}"
verify_token = "{}"
"#,
            wa.base_url, wa.phone_number_id, wa.access_token, wa.app_secret, wa.verify_token
        ),
        r#"
[[route]]
id = "wa-all"
channel = "whatsapp"
prefixes = ["+"]
carriers = ["wa"]
"#,
        &["wa"],
    );
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let herald = env.start();
    assert!(
        eventually(Duration::from_secs(10), || carrier_bound(
            &herald.url,
            Some("wa")
        ))
        .await
    );
    let body = serde_json::json!({
        "channel": "whatsapp", "to": "+250788123456", "from": "+250788000111",
        "template": {"name": "otp", "language": "en", "params": ["123456"]}
    });
    let id = accepted_id(post_message(&herald.url, &key, &body).await).await;
    let sent = eventually(Duration::from_secs(15), || async {
        let m = get_message(&herald.url, &key, &id).await;
        m["status"] == "sent"
            && m["carrier_ref"]
                .as_str()
                .is_some_and(|r| r.starts_with("wamid"))
    })
    .await;
    assert!(
        sent,
        "the message was sent with a wamid; log:\n{}",
        herald.log()
    );
    assert_eq!(sim.stats().accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_slowing_down_gets_a_lower_rate_before_it_refuses() {
    let (sim, _env, key, herald) = with_sim(
        Behaviour {
            latency_ms: 2,
            ..Default::default()
        },
        1000.0,
        1,
    )
    .await;
    send_many(&herald, &key, "before", 200, "+250788123456").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            received(&sim, "before").len() == 200
        })
        .await
    );
    // The carrier slows down tenfold and more; it never refuses.
    sim.update_behaviour(|b| b.latency_ms = 250);
    send_many(&herald, &key, "slow", 100, "+250788123456").await;
    let lowered = eventually(Duration::from_secs(30), || async {
        admin_tree(&herald.url).await["carriers"][0]["rate"]
            .as_f64()
            .unwrap()
            < 1000.0
    })
    .await;
    assert!(lowered, "the rate came down as latency climbed");
    assert!(metrics(&herald.url)
        .await
        .contains("herald_carrier_strain_total{carrier=\"sim\",why=\"latency\"}"));
    assert_eq!(sim.stats().throttled, 0, "the carrier never had to refuse");
    assert!(
        eventually(Duration::from_secs(60), || async {
            received(&sim, "slow").len() == 100
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_reload_through_the_admin_api_and_on_sighup() {
    let (sim, env, key, herald) = with_sim(Behaviour::default(), 1000.0, 1).await;
    let status = |id: String| {
        let (url, key) = (herald.url.clone(), key.clone());
        async move { get_message(&url, &key, &id).await }
    };
    // Uganda has no route yet: failed with no_route, at once.
    let ug =
        accepted_id(post_message(&herald.url, &key, &sms("+256772123456", "ug one")).await).await;
    let failed = eventually(Duration::from_secs(10), || async {
        let m = status(ug.clone()).await;
        m["status"] == "failed"
            && m["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e.to_string().contains("no_route")))
    })
    .await;
    assert!(
        failed,
        "no route: failed with no_route; {}",
        status(ug.clone()).await
    );

    // Add the route and reload.
    let routes = std::env::temp_dir().join(format!("{}-routes.toml", env.name));
    std::fs::write(
        &routes,
        format!(
            "{}{}",
            route("rw", &["+250"], "failover", &["sim"]),
            route("ug", &["+256"], "failover", &["sim"])
        ),
    )
    .unwrap();
    let res = client()
        .post(format!("{}/v1/admin/routing/reload", herald.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let summary: Value = res.json().await.unwrap();
    assert_eq!(summary["routes_started"], serde_json::json!(["ug"]));
    accepted_id(post_message(&herald.url, &key, &sms("+256772123456", "ug two")).await).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            received(&sim, "ug two").len() == 1
        })
        .await,
        "the new route carries Uganda"
    );

    // A broken file is refused and changes nothing.
    std::fs::write(&routes, "[[route]]\nid = \"x\"\n").unwrap();
    let res = client()
        .post(format!("{}/v1/admin/routing/reload", herald.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);

    // SIGHUP: back to Rwanda only.
    std::fs::write(&routes, route("rw", &["+250"], "failover", &["sim"])).unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &herald.child.id().to_string()])
        .status()
        .unwrap();
    let dropped = eventually(Duration::from_secs(10), || async {
        admin_tree(&herald.url).await["routes"] == serde_json::json!(["rw"])
    })
    .await;
    assert!(
        dropped,
        "SIGHUP reloaded the routes: {}",
        admin_tree(&herald.url).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_message_goes_out_when_due_not_before() {
    let (sim, _env, key, herald) = with_sim(Behaviour::default(), 1000.0, 1).await;
    let due = chrono::Utc::now() + chrono::Duration::seconds(4);
    let mut body = sms("+250788123456", "later please");
    body["scheduled_at"] = due.to_rfc3339().into();
    let res = post_message(&herald.url, &key, &body).await;
    assert_eq!(res.status(), 202);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["status"], "scheduled");
    accepted_id(post_message(&herald.url, &key, &sms("+250788123456", "right now")).await).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            received(&sim, "right now").len() == 1
        })
        .await
    );
    assert_eq!(
        received(&sim, "later please").len(),
        0,
        "not before it is due"
    );
    let arrived = eventually(Duration::from_secs(15), || async {
        received(&sim, "later please").len() == 1
    })
    .await;
    assert!(arrived, "the scheduled message went out");
    let late = chrono::Utc::now() - due;
    assert!(
        late >= chrono::Duration::zero() - chrono::Duration::milliseconds(600),
        "sent {late} after its time: not early"
    );
    assert!(
        late < chrono::Duration::seconds(5),
        "sent {late} after its time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_errors_are_retried_through_delay_queues_then_fail() {
    let (sim, _env, key, herald) = with_sim(
        Behaviour {
            error_rate: 1.0,
            error_status: herald_carriers::smpp::pdu::status::ESME_RSYSERR,
            ..Default::default()
        },
        1000.0,
        1,
    )
    .await;
    let id =
        accepted_id(post_message(&herald.url, &key, &sms("+250788123456", "doomed")).await).await;
    // Three attempts (delays 200 ms, 500 ms), then failed with the reason.
    let failed = eventually(Duration::from_secs(20), || async {
        get_message(&herald.url, &key, &id).await["status"] == "failed"
    })
    .await;
    let m = get_message(&herald.url, &key, &id).await;
    assert!(failed, "{m}");
    assert!(m.to_string().contains("retries_exhausted"), "{m}");
    let attempts = sim.received().iter().filter(|r| r.text == "doomed").count();
    assert_eq!(attempts, 3, "max_attempts = 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_receipt_is_correlated_end_to_end() {
    let (_sim, _env, key, herald) = with_sim(
        Behaviour {
            early_receipt: true,
            latency_ms: 20,
            ..Default::default()
        },
        1000.0,
        1,
    )
    .await;
    let id =
        accepted_id(post_message(&herald.url, &key, &sms("+250788123456", "fast dlr")).await).await;
    let delivered = eventually(Duration::from_secs(20), || async {
        get_message(&herald.url, &key, &id).await["status"] == "delivered"
    })
    .await;
    assert!(delivered, "{}", get_message(&herald.url, &key, &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_its_validity_expires_without_being_sent() {
    // The carrier is away; it comes back after the message's validity. Its
    // port stays bound (never answering) until then, so that no other
    // test's server can take it meanwhile.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = spare.local_addr().unwrap();
    let mut env = TestEnv::new();
    env.use_carriers(
        &smpp_carrier("sim", addr, 1000.0, 10, 1),
        &route("rw", &["+250"], "failover", &["sim"]),
        &["sim"],
    );
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let herald = env.start();
    let mut body = sms("+250788123456", "too late");
    body["validity_seconds"] = 60.into();
    let id = accepted_id(post_message(&herald.url, &key, &body).await).await;
    tokio::time::sleep(Duration::from_secs(62)).await;
    drop(spare);
    let sim = herald_carriers::smpp::SmscSim::start(herald_carriers::smpp::SmscConfig {
        smpp_addr: addr,
        credentials: vec![("herald".into(), "secret".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let expired = eventually(Duration::from_secs(30), || async {
        get_message(&herald.url, &key, &id).await["status"] == "expired"
    })
    .await;
    assert!(expired, "{}", get_message(&herald.url, &key, &id).await);
    assert_eq!(received(&sim, "too late").len(), 0, "never sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_again_after_sending_are_not_sent_twice() {
    let (sim, env, key, herald) = with_sim(Behaviour::default(), 1000.0, 1).await;
    const N: usize = 20;
    let ids = send_many(&herald, &key, "again", N, "+250788123456").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            received(&sim, "again").len() == N
        })
        .await,
        "all {N} reached the SMSC"
    );
    // Their batch comes back (as after a crash between the publish and its
    // record): the outbox sweep publishes every message again.
    let db = env.db().await;
    db.execute(
        "INSERT INTO outbox (message_ids, created_at) VALUES ($1, now() - interval '1 hour')",
        &[&ids],
    )
    .await
    .unwrap();
    let suppressed = eventually(Duration::from_secs(20), || async {
        common::metric_sum(
            &metrics(&herald.url).await,
            "herald_duplicates_suppressed_total",
            &[],
        ) >= N as f64
    })
    .await;
    assert!(
        suppressed,
        "the ledger stopped every copy; metrics:\n{}",
        metrics(&herald.url).await
    );
    let c = received(&sim, "again");
    assert_eq!(c.len(), N);
    assert!(c.values().all(|n| *n == 1), "none submitted twice: {c:?}");
    for id in &ids {
        let m = get_message(&herald.url, &key, id).await;
        assert!(m["status"] == "sent" || m["status"] == "delivered", "{m}");
    }
}
