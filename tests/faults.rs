//! Faults on the send path: RabbitMQ unreachable, PostgreSQL unreachable,
//! SIGTERM under load. Connections are cut with a TCP proxy the test
//! controls, never by stopping the shared services.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{client, eventually, sms, Herald, TestEnv};
use serde_json::Value;

async fn send(url: &str, key: &str, i: usize) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/messages"))
        .bearer_auth(key)
        .json(&sms("+250788123456", &format!("fault test {i}")))
        .send()
        .await
        .unwrap()
}

async fn unpublished(env: &TestEnv) -> i64 {
    env.db()
        .await
        .query_one(
            "SELECT coalesce(sum(cardinality(message_ids)), 0)::int8 FROM outbox",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// A broker handle with the environment's names, connecting through `proxy`.
fn broker_through(
    env: &TestEnv,
    proxy: &Proxy,
    timeout: Duration,
    confirm_timeout: Duration,
) -> herald_actors::broker::Broker {
    herald_actors::broker::Broker::new(herald_actors::broker::BrokerConfig {
        url: format!("amqp://guest:guest@{}/%2f", proxy.addr),
        prefix: env.name.clone(),
        shards: common::SHARDS,
        timeout,
        confirm_timeout,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_unreachable_then_back_publishes_every_message_once() {
    let env = TestEnv::new();
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let rabbit: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = Proxy::start(rabbit).await;
    let herald = Herald::start_with(
        &env,
        &[(
            "HERALD__BROKER__URL",
            format!("amqp://guest:guest@{}/%2f", proxy.addr),
        )],
    );

    // Healthy: one message goes straight through.
    let res = send(&herald.url, &key, 0).await;
    assert_eq!(res.status(), 202);
    let first: Value = res.json().await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            unpublished(&env).await == 0
        })
        .await
    );

    proxy.cut();
    let mut accepted = vec![first["id"].as_str().unwrap().to_owned()];
    for i in 1..=20 {
        let res = send(&herald.url, &key, i).await;
        assert_eq!(res.status(), 202, "accepting does not need RabbitMQ");
        let v: Value = res.json().await.unwrap();
        accepted.push(v["id"].as_str().unwrap().to_owned());
    }
    // readyz names the broker.
    let ready = client()
        .get(format!("{}/readyz", herald.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["failing"], serde_json::json!(["rabbitmq"]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        unpublished(&env).await,
        20,
        "held in the outbox while RabbitMQ is away"
    );

    proxy.restore();
    assert!(
        eventually(Duration::from_secs(20), || async {
            unpublished(&env).await == 0
        })
        .await,
        "the outbox drained after RabbitMQ came back; log:\n{}",
        herald.log()
    );
    let queued = env.drain_ingress().await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for q in &queued {
        *counts
            .entry(q["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        queued.len(),
        21,
        "each message published once: {counts:?}\nlog:\n{}",
        herald.log()
    );
    assert_eq!(
        counts.keys().cloned().collect::<HashSet<_>>(),
        accepted.into_iter().collect::<HashSet<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_answers_503_then_recovers() {
    let env = TestEnv::new();
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let pg: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = Proxy::start(pg).await;
    let via_proxy = env
        .database_url()
        .replace("127.0.0.1:5432", &proxy.addr.to_string());
    let herald = Herald::start_with(&env, &[("HERALD__DATABASE__URL", via_proxy)]);

    assert_eq!(send(&herald.url, &key, 0).await.status(), 202);
    proxy.cut();
    let started = Instant::now();
    let res = send(&herald.url, &key, 1).await;
    assert_eq!(res.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "503 comes promptly"
    );
    assert!(res.headers().contains_key("retry-after"));
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "service_unavailable");
    let ready = client()
        .get(format!("{}/readyz", herald.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["failing"], serde_json::json!(["postgres"]));

    proxy.restore();
    let recovered = eventually(Duration::from_secs(20), || async {
        send(&herald.url, &key, 2).await.status() == 202
    })
    .await;
    assert!(recovered, "accepting again once PostgreSQL is back");
    let count = common::count(&env, "SELECT count(*) FROM messages").await;
    assert_eq!(count, 2, "the refused request stored nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_no_accepted_message() {
    let env = TestEnv::new();
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let mut herald = env.start();
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    // Set just before SIGTERM: from then on a failed request means the
    // server is gone; before, the request is tried again.
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = client();
    // One request first: concurrent first requests to a just-started
    // Herald were seen closed unanswered here (on older builds too).
    let first = http
        .post(format!("{}/v1/messages", herald.url))
        .bearer_auth(&key)
        .json(&sms("+250788123456", "first"))
        .send()
        .await
        .expect("the first request is answered");
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    accepted
        .lock()
        .unwrap()
        .push(first["id"].as_str().unwrap().to_owned());
    let mut workers = Vec::new();
    for w in 0..8 {
        let accepted = accepted.clone();
        let stopping = stopping.clone();
        let http = http.clone();
        let url = format!("{}/v1/messages", herald.url);
        let key = key.clone();
        workers.push(tokio::spawn(async move {
            for i in 0.. {
                let res = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&sms("+250788123456", &format!("w{w} m{i}")))
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
                    Ok(r) => assert!(
                        r.status() == 503,
                        "only 202, or 503 while stopping: {}",
                        r.status()
                    ),
                    Err(_) if !stopping.load(std::sync::atomic::Ordering::SeqCst) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = accepted.lock().unwrap().len();
    assert!(before > 0, "load was flowing; log:\n{}", herald.log());
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    let status = tokio::task::spawn_blocking(move || {
        let s = herald.terminate(Duration::from_secs(30));
        (s, herald)
    })
    .await
    .unwrap();
    assert_eq!(
        status.0.code(),
        Some(0),
        "clean exit; log:\n{}",
        status.1.log()
    );
    for w in workers {
        w.await.unwrap();
    }
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    let db = env.db().await;
    let stored: HashSet<String> = db
        .query("SELECT id FROM messages", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&String> = accepted.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(missing.is_empty(), "accepted but not stored: {missing:?}");

    // Start again: whatever was committed but not yet published goes out, once.
    let _again = env.start();
    assert!(
        eventually(Duration::from_secs(20), || async {
            unpublished(&env).await == 0
        })
        .await
    );
    let queued = env.drain_ingress().await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for q in &queued {
        *counts
            .entry(q["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for id in &accepted {
        assert_eq!(counts.get(id), Some(&1), "{id} queued exactly once");
    }
    assert_eq!(queued.len(), stored.len(), "nothing queued twice");
    eprintln!(
        "accepted {} messages ({} before SIGTERM), all stored and queued once",
        accepted.len(),
        before
    );
}

/// A broker slower to confirm than a connection attempt may take is waited
/// for (up to `confirm_timeout`), not dropped and reconnected: on a busy box
/// that turned into a loop of reconnects in which little was published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_broker_is_waited_for_not_reconnected() {
    use herald_actors::broker::Outgoing;

    let env = TestEnv::new();
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let broker = broker_through(
        &env,
        &proxy,
        Duration::from_millis(500),
        Duration::from_secs(10),
    );
    broker.ensure_connected().await.expect("connects");
    let batch: Vec<Outgoing> = (0..20)
        .map(|i| Outgoing {
            exchange: broker.topology().events_exchange(),
            routing_key: "status".into(),
            body: format!("{{\"n\":{i}}}").into_bytes(),
            priority: 0,
        })
        .collect();

    // Each chunk held 400 ms both ways: a confirm takes about a second,
    // twice the connection attempt's timeout.
    proxy.slow_down(Duration::from_millis(400));
    let started = Instant::now();
    broker
        .publish_confirmed(&batch)
        .await
        .expect("a slow confirm is waited for");
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "the proxy did not slow the confirm down: {:?}",
        started.elapsed()
    );
    proxy.slow_down(Duration::ZERO);
    broker.publish_confirmed(&batch).await.expect("publishes");
    assert_eq!(proxy.connections(), 1, "the connection was dropped");
    let events = env.broker();
    assert_eq!(
        events
            .drain(&events.topology().events_queue())
            .await
            .unwrap()
            .len(),
        40
    );
}

/// A message no queue takes is not confirmed as published: its batch
/// fails, the handle declares its queues again on the same connection, and
/// the retry is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_no_queue_takes_fails_and_its_retry_finds_the_queue_again() {
    use herald_actors::broker::{BrokerError, Outgoing};

    let mut env = TestEnv::new();
    env.carrier_ids.push("gone".into());
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let broker = broker_through(
        &env,
        &proxy,
        Duration::from_secs(5),
        Duration::from_secs(15),
    );
    broker.ensure_connected().await.expect("connects");
    broker.declare_carrier("gone", &[]).await.expect("declares");
    let batch = [Outgoing {
        exchange: broker.topology().carrier_exchange(),
        routing_key: "gone".into(),
        body: b"{}".to_vec(),
        priority: 0,
    }];
    broker.publish_confirmed(&batch).await.expect("publishes");
    let connections = proxy.connections();

    // The carrier's queue deleted behind the handle's back.
    let other = env.broker();
    other.delete_carriers(&[("gone", 0)]).await.unwrap();
    let err = broker
        .publish_confirmed(&batch)
        .await
        .expect_err("no queue takes it");
    assert!(matches!(err, BrokerError::Unroutable { .. }), "{err}");
    broker
        .publish_confirmed(&batch)
        .await
        .expect("the queue is back, and the retry is queued");
    let queue = broker.topology().carrier_queue("gone");
    assert_eq!(other.drain(&queue).await.unwrap().len(), 1);
    assert_eq!(
        proxy.connections(),
        connections,
        "the connection was dropped"
    );
}

/// A packed AMQP message is handed on element by element; it is
/// acknowledged once every element is, and comes back whole when one
/// element is given back (or dropped by a holder that died).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packed_delivery_is_settled_element_by_element() {
    use herald_actors::broker::{Outgoing, Topology};
    use herald_actors::events::pack_all;

    let env = TestEnv::new();
    let broker = env.broker();
    broker.ensure_connected().await.expect("connects");
    let topology = broker.topology().clone();
    let out: Vec<Outgoing> = (0..3)
        .map(|i| Outgoing {
            exchange: topology.ingress_exchange(),
            routing_key: Topology::ingress_key(0),
            body: format!("{{\"n\":{i}}}").into_bytes(),
            priority: 0,
        })
        .collect();
    let packed = pack_all(out, 8);
    assert_eq!(packed.len(), 1, "three messages, one AMQP message");
    broker.publish_confirmed(&packed).await.expect("publishes");

    let mut inbox = broker.subscribe(topology.ingress_queue(0), 4);
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await
            .expect("a delivery in time")
            .expect("subscribed")
    };
    let body = |i: &herald_actors::broker::Incoming| String::from_utf8(i.body.clone()).unwrap();

    // One element given back, one dropped: the whole pack comes back, once.
    let (a, b, c) = (next().await, next().await, next().await);
    assert_eq!(
        [body(&a), body(&b), body(&c)],
        [r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#]
    );
    assert!(!a.redelivered);
    a.ack().await.unwrap();
    b.requeue().await.unwrap();
    drop(c);
    let (a, b, c) = (next().await, next().await, next().await);
    assert!(a.redelivered && b.redelivered && c.redelivered);
    assert_eq!(body(&c), r#"{"n":2}"#);

    // Every element acknowledged: gone for good.
    for i in [a, b, c] {
        i.ack().await.unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), inbox.recv())
            .await
            .is_err(),
        "nothing is redelivered once every element is acknowledged"
    );
    drop(inbox);
    let depth = eventually(Duration::from_secs(10), || async {
        broker
            .queue_depth(&topology.ingress_queue(0))
            .await
            .unwrap_or(1)
            == 0
    })
    .await;
    assert!(depth, "the queue is empty");
}
