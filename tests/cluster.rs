//! Several nodes, hard kills and broker cuts: binds held once, nothing lost.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::carriers::{received, route, smpp_carrier, smsc};
use common::proxy::Proxy;
use common::{admin_tree, carrier_bound, client, eventually, sms, Herald, TestEnv};
use herald_carriers::smpp::{Behaviour, SmscHandle};
use serde_json::Value;

/// Send `n` messages through `url`, `concurrency` at a time; returns the
/// accepted ids. Stops at the first connection error (the node died).
async fn load(url: String, key: String, tag: &'static str, n: usize) -> Vec<String> {
    let http = client();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            let (accepted, next) = (accepted.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= n {
                        return;
                    }
                    let res = http
                        .post(format!("{url}/v1/messages"))
                        .bearer_auth(&key)
                        .json(&sms("+250788123456", &format!("{tag} {i}")))
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status() == 202 => {
                            let v: Value = r.json().await.unwrap();
                            accepted
                                .lock()
                                .unwrap()
                                .push(v["id"].as_str().unwrap().to_owned());
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let ids = accepted.lock().unwrap().clone();
    ids
}

fn one_carrier(env: &mut TestEnv, sim: &SmscHandle, tps: f64) {
    env.use_carriers(
        &smpp_carrier("sim", sim.addr(), tps, 10, 1),
        &route("rw", &["+250"], "failover", &["sim"]),
        &["sim"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_hold_one_bind_twice_and_a_dead_holder_hands_it_over() {
    let sim = smsc(Behaviour::default()).await;
    let mut env = TestEnv::new();
    one_carrier(&mut env, &sim, 1000.0);
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let mut a = env.start();
    let mut b = env.start();
    let either = eventually(Duration::from_secs(15), || async {
        carrier_bound(&a.url, None).await || carrier_bound(&b.url, None).await
    })
    .await;
    assert!(either, "one node binds");

    // Watch the SMSC: never two open connections for the one bind.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let worst = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let (watching, worst) = (watching.clone(), worst.clone());
        let stats = sim.stats_fn();
        tokio::spawn(async move {
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                worst.fetch_max(
                    stats().connections_open,
                    std::sync::atomic::Ordering::SeqCst,
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let first = load(b.url.clone(), key.clone(), "two", 200).await;
    assert_eq!(first.len(), 200);
    assert!(
        eventually(Duration::from_secs(20), || async {
            received(&sim, "two").len() == 200
        })
        .await,
        "messages sent through either node go out"
    );

    // Kill the holder; the other takes the bind within the lease time.
    let a_holds = carrier_bound(&a.url, None).await;
    let (holder, survivor) = if a_holds { (&mut a, &b) } else { (&mut b, &a) };
    let started = Instant::now();
    holder.child.kill().unwrap();
    let _ = holder.child.wait();
    let moved = eventually(Duration::from_secs(15), || {
        carrier_bound(&survivor.url, None)
    })
    .await;
    assert!(
        moved,
        "the surviving node took the bind; log:\n{}",
        survivor.log()
    );
    let took = started.elapsed();
    let after = load(survivor.url.clone(), key.clone(), "after", 100).await;
    assert_eq!(after.len(), 100);
    assert!(
        eventually(Duration::from_secs(20), || async {
            received(&sim, "after").len() == 100
        })
        .await,
        "messages flow through the new holder"
    );
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    watcher.await.unwrap();
    assert_eq!(
        worst.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the bind was never held twice"
    );
    eprintln!("bind moved to the surviving node in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_flow_then_start_every_accepted_message_reaches_a_final_state() {
    let sim = smsc(Behaviour {
        latency_ms: 2,
        receipt_delay_ms: 100,
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new();
    one_carrier(&mut env, &sim, 400.0);
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let herald = env.start();
    assert!(eventually(Duration::from_secs(10), || carrier_bound(&herald.url, None)).await);

    let loading = tokio::spawn(load(herald.url.clone(), key.clone(), "k9", 1500));
    // Mid-flow: the carrier has seen some, far from all.
    let flowing = eventually(Duration::from_secs(60), || async {
        received(&sim, "k9").len() >= 150
    })
    .await;
    assert!(flowing, "load reached the carrier");
    let pid = herald.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    let accepted = loading.await.unwrap();
    assert!(
        accepted.len() > 100,
        "load was flowing ({})",
        accepted.len()
    );
    drop(herald);

    let again = env.start();
    let db = env.db().await;
    let finished = eventually(Duration::from_secs(90), || async {
        let row = db
            .query_one(
                "SELECT count(*) FROM messages WHERE id = ANY($1) \
                 AND status IN ('delivered','undelivered','failed','expired','rejected')",
                &[&accepted],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) as usize == accepted.len()
    })
    .await;
    let statuses: Vec<(String, i64)> = db
        .query(
            "SELECT status, count(*) FROM messages WHERE id = ANY($1) GROUP BY status",
            &[&accepted],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        finished,
        "every accepted message reaches a final state: {statuses:?}; log:\n{}",
        again.log()
    );
    let counts = received(&sim, "k9");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "accepted {}, at the carrier {} distinct, {duplicates} duplicates; statuses {statuses:?}",
        accepted.len(),
        counts.len()
    );
    // What a bind can have answered and not yet recorded in the ledger: its
    // window (10) and its settling backlog.
    let bound = 10 * (1 + herald_actors::carrier::SETTLING_PER_SLOT);
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates: more than the window and the settling backlog ({bound}) of the one bind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_cut_during_flow_loses_nothing() {
    let sim = smsc(Behaviour::default()).await;
    let rabbit: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = Proxy::start(rabbit).await;
    let mut env = TestEnv::new();
    one_carrier(&mut env, &sim, 300.0);
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let herald = Herald::start_with(
        &env,
        &[(
            "HERALD__BROKER__URL",
            format!("amqp://guest:guest@{}/%2f", proxy.addr),
        )],
    );
    assert!(eventually(Duration::from_secs(10), || carrier_bound(&herald.url, None)).await);
    let loading = tokio::spawn(load(herald.url.clone(), key.clone(), "cut", 900));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    proxy.restore();
    let accepted = loading.await.unwrap();
    assert_eq!(accepted.len(), 900, "accepting never needed RabbitMQ");
    let all = eventually(Duration::from_secs(60), || async {
        received(&sim, "cut").len() == 900
    })
    .await;
    let tree = admin_tree(&herald.url).await;
    assert!(
        all,
        "{} of 900 reached the carrier after the cut; tree {tree}; log:\n{}",
        received(&sim, "cut").len(),
        herald.log()
    );
    let duplicates: usize = received(&sim, "cut").values().map(|n| n - 1).sum();
    eprintln!("RabbitMQ cut for 2 s mid-flow: 900 of 900 delivered, {duplicates} duplicates");
}
