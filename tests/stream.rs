//! The WebSocket live stream against real PostgreSQL, RabbitMQ and Redis:
//! live events in order, resume with `after` without gap or duplicate (also
//! across two nodes), narrowing, and authentication before the upgrade.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{accepted_id, client, post_message, sms, TestEnv};
use futures::{SinkExt, StreamExt};
use herald_actors::broker::{Broker, Outgoing};
use herald_actors::payload::{new_event_id, EventTask, StatusEvent};
use herald_actors::{MessageId, TenantId};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(url: &str, key: &str) -> String {
    accepted_id(post_message(url, key, &sms("+250788123456", "Muraho")).await).await
}

fn status(tenant: &str, id: &str, status: &str) -> EventTask {
    EventTask::StatusV1(StatusEvent {
        event_id: new_event_id(),
        message_id: MessageId::from_trusted(id.into()),
        tenant_id: TenantId::from_trusted(tenant.into()),
        status: status.into(),
        carrier: Some("smsc-kigali".into()),
        carrier_refs: Vec::new(),
        error: None,
        at: Utc::now(),
    })
}

async fn publish(broker: &Broker, events: &[EventTask]) {
    let exchange = broker.topology().events_exchange();
    let batch: Vec<Outgoing> = events
        .iter()
        .map(|e| Outgoing {
            exchange: exchange.clone(),
            routing_key: "status".into(),
            body: serde_json::to_vec(e).unwrap(),
            priority: 0,
        })
        .collect();
    broker.publish_confirmed(&batch).await.unwrap();
}

fn ws_url(http: &str, query: &str) -> String {
    format!("{}/v1/stream?{query}", http.replacen("http://", "ws://", 1))
}

async fn connect(http: &str, key: &str, query: &str) -> Ws {
    let url = ws_url(http, &format!("access_token={key}&{query}"));
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    ws
}

/// The next event frame (skipping pings and acks), or None after `within`.
async fn next_event(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match m.expect("frame") {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v.get("cursor").is_some() {
                    return Some(v);
                }
            }
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

async fn take(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        match next_event(ws, Duration::from_secs(20)).await {
            Some(v) => out.push(v),
            None => panic!("expected {n} events, got {}: {out:#?}", out.len()),
        }
    }
    out
}

/// The tenant's whole log after `after`, from the pull API.
async fn feed(url: &str, key: &str, after: i64) -> Vec<i64> {
    let v: Value = client()
        .get(format!("{url}/v1/events?after={after}&limit=1000"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cursor"].as_i64().unwrap())
        .collect()
}

fn cursors(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["cursor"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_token_is_refused_before_the_upgrade() {
    let env = TestEnv::new();
    let (_, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    for query in ["", "access_token=nope"] {
        let err = tokio_tungstenite::connect_async(ws_url(&herald.url, query))
            .await
            .expect_err("refused");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 401),
            other => panic!("expected 401, got {other:?}"),
        }
    }
    // The header works as well as the query parameter.
    let mut req = ws_url(&herald.url, "").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_in_order_then_resume_without_gap_or_duplicate() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let broker = env.broker();
    let a = send(&herald.url, &key).await;

    let mut ws = connect(&herald.url, &key, "").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(
        &broker,
        &[
            status(&tenant, &a, "sending"),
            status(&tenant, &a, "sent"),
            status(&tenant, &a, "delivered"),
        ],
    )
    .await;
    let live = take(&mut ws, 3).await;
    assert_eq!(
        live.iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(live[2]["status"], "delivered");
    assert_eq!(live[2]["final"], true);
    assert_eq!(live[2]["channel"], "sms");
    assert_eq!(live[2]["message_id"], a.as_str());
    assert_eq!(live[2]["carrier"], "smsc-kigali");
    let last = *cursors(&live).last().unwrap();
    ws.close(None).await.unwrap();
    drop(ws);

    // Away: more happens.
    let b = send(&herald.url, &key).await;
    publish(&broker, &[status(&tenant, &b, "sent")]).await;
    let c = send(&herald.url, &key).await;
    publish(
        &broker,
        &[
            status(&tenant, &c, "sent"),
            status(&tenant, &b, "delivered"),
        ],
    )
    .await;
    let missed = loop {
        let f = feed(&herald.url, &key, last).await;
        if f.len() == 5 {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Resume: the missed events, then live ones; none twice, none lost.
    let mut ws = connect(&herald.url, &key, &format!("after={last}")).await;
    let replayed = take(&mut ws, 5).await;
    assert_eq!(cursors(&replayed), missed);
    publish(&broker, &[status(&tenant, &c, "delivered")]).await;
    let more = take(&mut ws, 1).await;
    assert_eq!(more[0]["message_id"], c.as_str());
    assert_eq!(more[0]["status"], "delivered");
    assert!(next_event(&mut ws, Duration::from_millis(700))
        .await
        .is_none());
    let all: Vec<i64> = cursors(&replayed)
        .into_iter()
        .chain(cursors(&more))
        .collect();
    assert_eq!(all, feed(&herald.url, &key, last).await, "exactly the log");

    // Another tenant sees none of it.
    let (_, other_key) = env.create_tenant("other", &[]);
    let mut other = connect(&herald.url, &other_key, "after=0").await;
    assert!(next_event(&mut other, Duration::from_millis(700))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_narrow_by_message_and_channel() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let broker = env.broker();
    let a = send(&herald.url, &key).await;
    let b = send(&herald.url, &key).await;
    let mut ws = connect(&herald.url, &key, "").await;
    ws.send(Message::Text(
        json!({"subscribe": {"message_ids": [b]}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let ack = loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => break t,
            _ => continue,
        }
    };
    assert!(ack.contains("subscribed"), "{ack}");
    publish(
        &broker,
        &[status(&tenant, &a, "sent"), status(&tenant, &b, "sent")],
    )
    .await;
    let got = take(&mut ws, 1).await;
    assert_eq!(got[0]["message_id"], b.as_str());
    assert!(next_event(&mut ws, Duration::from_millis(700))
        .await
        .is_none());

    let mut voice_only = connect(&herald.url, &key, "channels=voice").await;
    publish(&broker, &[status(&tenant, &a, "delivered")]).await;
    assert!(next_event(&mut voice_only, Duration::from_millis(1000))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_projected_on_one_node_reach_clients_on_another() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let a = env.start();
    let b = env.start();
    let broker = env.broker();
    let mut on_a = connect(&a.url, &key, "").await;
    let mut on_b = connect(&b.url, &key, "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Both nodes' projectors compete for the events: each client must see
    // all of them, whichever node applied them.
    let mut ids = Vec::new();
    for _ in 0..6 {
        let id = send(&a.url, &key).await;
        publish(&broker, &[status(&tenant, &id, "sent")]).await;
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen_a = take(&mut on_a, 6).await;
    let seen_b = take(&mut on_b, 6).await;
    let mut ca = cursors(&seen_a);
    let mut cb = cursors(&seen_b);
    ca.sort();
    cb.sort();
    assert_eq!(ca, cb);
    ca.dedup();
    assert_eq!(ca.len(), 6);
    assert!(next_event(&mut on_b, Duration::from_millis(700))
        .await
        .is_none());

    // Resume on the other node.
    let last = *cursors(&seen_b).iter().max().unwrap();
    drop(on_b);
    let id = &ids[0];
    publish(&broker, &[status(&tenant, id, "delivered")]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut again = connect(&a.url, &key, &format!("after={last}")).await;
    let got = take(&mut again, 1).await;
    assert_eq!(got[0]["status"], "delivered");
    assert!(next_event(&mut again, Duration::from_millis(700))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_is_closed_and_resumes_without_gap() {
    let mut env = TestEnv::new();
    env.set("HERALD__STREAM__CLIENT_BUFFER", "2");
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let broker = env.broker();
    let id = send(&herald.url, &key).await;
    let mut ws = connect(&herald.url, &key, "").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A late `sent` is logged each time: 300 log entries in a burst.
    let burst: Vec<EventTask> = (0..300).map(|_| status(&tenant, &id, "sent")).collect();
    publish(&broker, &burst).await;

    let mut seen = Vec::new();
    let reason = loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("closed in time")
            .expect("a frame")
            .expect("frame ok");
        match m {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                seen.push(v["cursor"].as_i64().unwrap());
            }
            Message::Close(Some(frame)) => break frame,
            Message::Close(None) => panic!("closed without a reason"),
            _ => {}
        }
    };
    assert_eq!(u16::from(reason.code), 1008, "{reason:?}");
    let after: i64 = reason
        .reason
        .rsplit("after=")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if let Some(max) = seen.iter().max() {
        assert_eq!(after, *max, "the close reason names the last cursor sent");
    }

    let full = loop {
        let f = feed(&herald.url, &key, 0).await;
        if f.len() == 301 {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rest_expected: Vec<i64> = full.iter().copied().filter(|c| *c > after).collect();
    let mut again = connect(&herald.url, &key, &format!("after={after}")).await;
    let rest = take(&mut again, rest_expected.len()).await;
    assert_eq!(cursors(&rest), rest_expected, "no gap, no duplicate");
    let mut all = seen.clone();
    all.extend(cursors(&rest));
    let mut dedup = all.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), all.len(), "nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_announced_by_another_node_through_redis_reach_local_clients() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let mut ws = connect(&herald.url, &key, "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // What another node's hub publishes after its projector committed.
    let announcement = json!({
        "node": "another-node",
        "events": [[tenant, {
            "cursor": 987654, "message_id": "msg_00000000000000000000000000000001",
            "seq": 2, "status": "sent", "previous_status": "queued", "final": false,
            "carrier": "smsc-kigali", "detail": {}, "at": Utc::now(), "channel": "sms"
        }], ["tnt_someone_else", {
            "cursor": 987655, "message_id": "msg_00000000000000000000000000000002",
            "seq": 2, "status": "sent", "previous_status": "queued", "final": false,
            "carrier": null, "detail": {}, "at": Utc::now(), "channel": "sms"
        }]]
    });
    let redis = redis::Client::open(common::REDIS).unwrap();
    let mut c = redis.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{}:events", env.name))
        .arg(announcement.to_string())
        .query_async(&mut c)
        .await
        .unwrap();
    let got = take(&mut ws, 1).await;
    assert_eq!(got[0]["cursor"], 987654);
    assert_eq!(got[0]["channel"], "sms");
    assert!(got[0].get("tenant_id").is_none());
    // Another tenant's event is not passed on.
    assert!(next_event(&mut ws, Duration::from_millis(700))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_going_away_and_exits() {
    let env = TestEnv::new();
    let (_, key) = env.create_tenant("acme", &[]);
    let mut herald = env.start();
    let mut ws = connect(&herald.url, &key, "").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = herald.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let frame = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(f))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = frame.expect("a close reason");
    assert_eq!(u16::from(frame.code), 1001);
    assert!(frame.reason.contains("after="), "{frame:?}");
    let status = tokio::task::spawn_blocking(move || herald.terminate(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(status.success());
}
