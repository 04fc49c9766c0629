//! Status events and the event log: the projector against real PostgreSQL
//! and RabbitMQ. Messages are sent through the API, then status events and
//! receipts are published straight to `<prefix>.events`, as actors and
//! carrier connections do.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use common::{accepted_id, client, eventually, post_message, sms, TestEnv};
use herald_actors::broker::{Broker, Outgoing};
use herald_actors::payload::{new_event_id, EventTask, ReceiptEvent, StatusEvent};
use herald_actors::{MessageId, TenantId};
use herald_carriers::{Receipt, ReceiptState};
use serde_json::Value;

const CARRIER: &str = "smsc-kigali";

async fn send(url: &str, key: &str, body: &str) -> String {
    accepted_id(post_message(url, key, &sms("+250788123456", body)).await).await
}

fn status(tenant: &str, id: &str, status: &str, refs: &[&str]) -> EventTask {
    EventTask::StatusV1(StatusEvent {
        event_id: new_event_id(),
        message_id: MessageId::from_trusted(id.into()),
        tenant_id: TenantId::from_trusted(tenant.into()),
        status: status.into(),
        carrier: Some(CARRIER.into()),
        carrier_refs: refs.iter().map(|r| r.to_string()).collect(),
        error: None,
        at: Utc::now(),
    })
}

fn receipt(carrier_ref: &str, state: ReceiptState) -> EventTask {
    EventTask::ReceiptV1(ReceiptEvent {
        event_id: new_event_id(),
        carrier: CARRIER.into(),
        receipt: Receipt {
            carrier_ref: carrier_ref.into(),
            state,
            error_code: (state != ReceiptState::Delivered).then(|| "001".into()),
            done_at: Some(Utc::now()),
            raw: format!("id:{carrier_ref} stat:{state:?}"),
            is_final: true,
        },
        received_at: Utc::now(),
    })
}

fn event_id(e: &EventTask) -> String {
    match e {
        EventTask::StatusV1(s) => s.event_id.clone(),
        EventTask::ReceiptV1(r) => r.event_id.clone(),
    }
}

async fn publish(broker: &Broker, events: &[EventTask]) {
    let bodies: Vec<Vec<u8>> = events
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();
    publish_raw(broker, &bodies).await;
}

async fn publish_raw(broker: &Broker, bodies: &[Vec<u8>]) {
    let exchange = broker.topology().events_exchange();
    let batch: Vec<Outgoing> = bodies
        .iter()
        .map(|b| Outgoing {
            exchange: exchange.clone(),
            routing_key: "status".into(),
            body: b.clone(),
            priority: 0,
        })
        .collect();
    broker
        .publish_confirmed(&batch)
        .await
        .expect("publish events");
}

async fn message(url: &str, key: &str, id: &str) -> Value {
    client()
        .get(format!("{url}/v1/messages/{id}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Whether `count_sql` (a `SELECT count(*) …` with `params`) comes to `want`
/// within `secs` seconds.
async fn counts(
    db: &tokio_postgres::Client,
    count_sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    want: i64,
    secs: u64,
) -> bool {
    eventually(Duration::from_secs(secs), || async {
        let n: i64 = db.query_one(count_sql, params).await.unwrap().get(0);
        n == want
    })
    .await
}

/// Wait until every one of these event ids is in the log.
async fn wait_logged(db: &tokio_postgres::Client, ids: &[String]) {
    let ok = counts(
        db,
        "SELECT count(*) FROM message_events WHERE event_id = ANY($1)",
        &[&ids],
        ids.len() as i64,
        20,
    )
    .await;
    assert!(ok, "events were not all logged: {ids:?}");
}

async fn wait_status(url: &str, key: &str, id: &str, want: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = message(url, key, id).await;
        if m["status"] == want {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "message never became {want}: {m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A counter or gauge from /metrics (0 when not yet exported).
async fn metric(url: &str, name: &str) -> f64 {
    common::metrics(url)
        .await
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(n, _)| *n == name)
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

/// The test profile, pointed at this environment's database.
fn test_config(env: &TestEnv) -> herald::config::Config {
    let mut config =
        herald::config::Config::load(&common::manifest_dir().join("config"), "test").unwrap();
    config.database.url =
        serde_json::from_value::<herald::config::Secret>(env.database_url().into()).unwrap();
    config
}

/// A store handle on this environment's database (already migrated).
fn store_for(env: &TestEnv) -> herald::store::Store {
    herald::store::Store::connect(&test_config(env).database).unwrap()
}

fn statuses(timeline: &Value) -> Vec<String> {
    timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_moves_forward_and_a_late_sent_is_logged_not_applied() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let broker = env.broker();
    let db = env.db().await;
    let id = send(&herald.url, &key, "Muraho").await;

    let first = [
        status(&tenant, &id, "sending", &[]),
        status(&tenant, &id, "sent", &["00A1B"]),
        receipt("a1b", ReceiptState::Delivered),
    ];
    publish(&broker, &first).await;
    let m = wait_status(&herald.url, &key, &id, "delivered").await;
    assert_eq!(m["carrier"], CARRIER);
    assert_eq!(m["carrier_ref"], "a1b", "stored in canonical form");

    let late = status(&tenant, &id, "sent", &[]);
    publish(&broker, std::slice::from_ref(&late)).await;
    wait_logged(&db, &[event_id(&late)]).await;

    let m = message(&herald.url, &key, &id).await;
    assert_eq!(
        m["status"], "delivered",
        "a late sent does not move it back"
    );
    assert_eq!(
        statuses(&m),
        ["queued", "sending", "sent", "delivered", "sent"]
    );
    let events = m["events"].as_array().unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let previous: Vec<Value> = events
        .iter()
        .map(|e| e["previous_status"].clone())
        .collect();
    assert_eq!(
        previous,
        [
            Value::Null,
            "queued".into(),
            "sending".into(),
            "sent".into(),
            "delivered".into()
        ]
    );
    let finals: Vec<bool> = events
        .iter()
        .map(|e| e["final"].as_bool().unwrap())
        .collect();
    assert_eq!(finals, [false, false, false, true, false]);
    assert_eq!(events[3]["carrier"], CARRIER);
    assert_eq!(events[3]["detail"]["raw"], "id:a1b stat:Delivered");
    assert_eq!(events[3]["detail"]["applied"], true);
    assert_eq!(events[4]["detail"]["applied"], false);
    let cursors: Vec<i64> = events
        .iter()
        .map(|e| e["cursor"].as_i64().unwrap())
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    let row = db
        .query_one("SELECT status_seq FROM messages WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_event_ids_are_applied_once() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let broker = env.broker();
    let db = env.db().await;
    let id = send(&herald.url, &key, "Muraho").await;

    let sending = status(&tenant, &id, "sending", &[]);
    let sent = status(&tenant, &id, "sent", &["77"]);
    // Twice in one batch, and again in a later one.
    publish(&broker, &[sending.clone(), sending.clone(), sent.clone()]).await;
    wait_logged(&db, &[event_id(&sending), event_id(&sent)]).await;
    let done = receipt("77", ReceiptState::Delivered);
    publish(
        &broker,
        &[sent.clone(), sending.clone(), done.clone(), done.clone()],
    )
    .await;
    wait_logged(&db, &[event_id(&done)]).await;
    // A marker after the duplicates: once it is logged, they were consumed.
    let marker = receipt("77", ReceiptState::Delivered);
    publish(&broker, std::slice::from_ref(&marker)).await;
    wait_logged(&db, &[event_id(&marker)]).await;

    let m = message(&herald.url, &key, &id).await;
    assert_eq!(
        statuses(&m),
        ["queued", "sending", "sent", "delivered", "delivered"]
    );
    assert_eq!(m["events"][4]["detail"]["applied"], false);
    assert!(
        metric(
            &herald.url,
            "herald_projector_events_total{outcome=\"duplicate\"}"
        )
        .await
            >= 4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_receipt_is_kept_and_matched_when_its_reference_lands() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let broker = env.broker();
    let db = env.db().await;
    let id = send(&herald.url, &key, "Muraho").await;

    let early = receipt("0000BEEF", ReceiptState::Delivered);
    publish(&broker, std::slice::from_ref(&early)).await;
    let parked = counts(&db, "SELECT count(*) FROM pending_receipts", &[], 1, 20).await;
    assert!(parked, "the early receipt was not parked");
    // The test profile counts receipts parked for more than a second.
    let counted = eventually(Duration::from_secs(20), || async {
        metric(&herald.url, "herald_receipts_unmatched").await >= 1.0
    })
    .await;
    assert!(counted, "herald_receipts_unmatched never counted it");
    let listed = store_for(&env)
        .unmatched_receipt_list(Duration::from_secs(1), 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].carrier, CARRIER);
    assert_eq!(listed[0].carrier_ref, "beef", "kept in canonical form");
    assert_eq!(listed[0].event_id, event_id(&early));
    // The operator sees it too.
    let admin: Value = client()
        .get(format!(
            "{}/v1/admin/receipts/unmatched?older_than_seconds=1",
            herald.url
        ))
        .bearer_auth("test-admin-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(admin["data"][0]["carrier_ref"], "beef", "{admin}");
    assert_eq!(admin["data"][0]["event_id"], event_id(&early).as_str());

    publish(&broker, &[status(&tenant, &id, "sent", &["beef"])]).await;
    let m = wait_status(&herald.url, &key, &id, "delivered").await;
    assert_eq!(statuses(&m), ["queued", "sent", "delivered"]);
    assert_eq!(m["events"][2]["detail"]["matched_late"], true);
    let left: i64 = db
        .query_one("SELECT count(*) FROM pending_receipts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let zero = eventually(Duration::from_secs(20), || async {
        metric(&herald.url, "herald_receipts_unmatched").await == 0.0
    })
    .await;
    assert!(zero, "the gauge did not fall back to 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_sms_follows_its_parts() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let broker = env.broker();
    let long = "Muraho! ".repeat(50); // 400 GSM characters: 3 segments
    let bad = send(&herald.url, &key, &long).await;
    let good = send(&herald.url, &key, &long).await;
    assert_eq!(message(&herald.url, &key, &bad).await["segments"], 3);

    publish(
        &broker,
        &[
            status(&tenant, &bad, "sent", &["b1", "b2", "b3"]),
            status(&tenant, &good, "sent", &["g1", "g2", "g3"]),
        ],
    )
    .await;
    // Receipts in separate batches, in any order.
    for (r, s) in [
        ("b1", ReceiptState::Delivered),
        ("g2", ReceiptState::Delivered),
        ("b2", ReceiptState::Delivered),
        ("g1", ReceiptState::Delivered),
    ] {
        publish(&broker, &[receipt(r, s)]).await;
    }
    let db = env.db().await;
    let partway = counts(
        &db,
        "SELECT count(*) FROM message_parts WHERE state IS NOT NULL",
        &[],
        4,
        20,
    )
    .await;
    assert!(partway);
    assert_eq!(message(&herald.url, &key, &bad).await["status"], "sent");
    assert_eq!(message(&herald.url, &key, &good).await["status"], "sent");

    publish(
        &broker,
        &[
            receipt("b3", ReceiptState::Undelivered),
            receipt("g3", ReceiptState::Delivered),
        ],
    )
    .await;
    let m = wait_status(&herald.url, &key, &bad, "undelivered").await;
    assert_eq!(
        statuses(&m),
        ["queued", "sent", "delivered", "delivered", "undelivered"]
    );
    let events = m["events"].as_array().unwrap();
    let parts: Vec<i64> = events[2..]
        .iter()
        .map(|e| e["detail"]["part"].as_i64().unwrap())
        .collect();
    assert_eq!(parts, [1, 2, 3], "every part's receipt is in the log");
    assert_eq!(events[2]["detail"]["applied"], false);
    assert_eq!(events[4]["detail"]["part_status"], "undelivered");
    assert_eq!(events[4]["final"], true);

    let m = wait_status(&herald.url, &key, &good, "delivered").await;
    assert_eq!(
        statuses(&m),
        ["queued", "sent", "delivered", "delivered", "delivered"]
    );
    assert_eq!(m["events"][4]["final"], true);
    assert_eq!(m["events"][3]["final"], false);
}

async fn page(url: &str, key: &str, after: i64, limit: i64) -> (Vec<Value>, i64) {
    let res = client()
        .get(format!("{url}/v1/events?after={after}&limit={limit}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    (
        v["data"].as_array().unwrap().clone(),
        v["next_after"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_feed_pages_in_cursor_order_with_no_gap_and_no_duplicate() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let (other, other_key) = env.create_tenant("other", &[]);
    let herald = env.start();
    let broker = env.broker();
    let db = env.db().await;

    // Bad parameters name their field.
    for (q, field) in [
        ("after=-3", "after"),
        ("after=x", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("since=1", "since"),
    ] {
        let res = client()
            .get(format!("{}/v1/events?{q}", herald.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{q}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["field"], field, "{q}: {v}");
    }
    let res = client()
        .get(format!("{}/v1/events", herald.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // While messages are accepted (queued events, written by group commit)
    // and events projected, a reader pages by `after` all along.
    let url = herald.url.clone();
    let writer_key = key.clone();
    let writer_tenant = tenant.clone();
    let writer_broker = broker.clone();
    let other_url = herald.url.clone();
    let writer = tokio::spawn(async move {
        for round in 0..15 {
            let mut events = Vec::new();
            for i in 0..4 {
                let id = send(&url, &writer_key, &format!("round {round} #{i}")).await;
                events.push(status(&writer_tenant, &id, "sending", &[]));
                events.push(status(
                    &writer_tenant,
                    &id,
                    "sent",
                    &[&format!("r{round}x{i}")],
                ));
                events.push(receipt(&format!("r{round}x{i}"), ReceiptState::Delivered));
            }
            send(&other_url, &other_key, "not yours").await;
            publish(&writer_broker, &events).await;
        }
    });
    let mut seen: Vec<i64> = Vec::new();
    let mut after = 0;
    while !writer.is_finished() {
        let (data, next) = page(&herald.url, &key, after, 7).await;
        for e in &data {
            seen.push(e["cursor"].as_i64().unwrap());
        }
        assert_eq!(
            next,
            data.last().map_or(after, |e| e["cursor"].as_i64().unwrap())
        );
        after = next;
    }
    writer.await.unwrap();
    eprintln!("{} events read while writing", seen.len());
    // 60 messages: queued + sending + sent + delivered each.
    let settled = counts(
        &db,
        "SELECT count(*) FROM message_events WHERE tenant_id = $1",
        &[&tenant],
        240,
        20,
    )
    .await;
    assert!(settled, "not every event was projected");
    loop {
        let (data, next) = page(&herald.url, &key, after, 7).await;
        if data.is_empty() {
            assert_eq!(next, after);
            break;
        }
        for e in &data {
            assert_eq!(e["message_id"].as_str().unwrap().len(), 36);
            seen.push(e["cursor"].as_i64().unwrap());
        }
        after = next;
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "out of order or duplicated"
    );
    let all: Vec<i64> = db
        .query(
            "SELECT cursor FROM message_events WHERE tenant_id = $1 ORDER BY cursor",
            &[&tenant],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, all, "paging by after missed or repeated events");
    let theirs: HashSet<i64> = db
        .query(
            "SELECT cursor FROM message_events WHERE tenant_id = $1",
            &[&other],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(theirs.len(), 15);
    assert!(
        seen.iter().all(|c| !theirs.contains(c)),
        "another tenant's events leaked"
    );

    // A page has the documented shape.
    let (data, _) = page(&herald.url, &key, 0, 4).await;
    let e = &data[0];
    for field in [
        "cursor",
        "message_id",
        "seq",
        "status",
        "previous_status",
        "final",
        "carrier",
        "detail",
        "at",
    ] {
        assert!(e.get(field).is_some(), "{field} missing in {e}");
    }
    assert_eq!(e["status"], "queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_take_few_transactions_and_poison_does_not_block() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let broker = env.broker();
    let db = env.db().await;
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(send(&herald.url, &key, &format!("bulk {i}")).await);
    }
    // Garbage first: it must not hold up what follows.
    publish_raw(
        &broker,
        &[b"{not json".to_vec(), br#"{"type":"status.v9"}"#.to_vec()],
    )
    .await;

    let before = metric(&herald.url, "herald_projector_batches_total").await;
    let mut events = Vec::new();
    let mut receipts = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        events.push(status(&tenant, id, "sending", &[]));
        events.push(status(&tenant, id, "sent", &[&format!("{n:x}")]));
    }
    for n in 0..ids.len() {
        let r = receipt(&format!("{n:x}"), ReceiptState::Delivered);
        receipts.push(r.clone());
        events.push(r.clone());
        events.push(r); // redelivered: ignored
    }
    for id in &ids {
        events.push(status(&tenant, id, "sent", &[])); // late: logged only
    }
    assert_eq!(events.len(), 1000);
    publish(&broker, &events).await;

    let all_logged = counts(
        &db,
        "SELECT count(*) FROM message_events WHERE tenant_id = $1",
        &[&tenant],
        1000,
        60,
    )
    .await;
    assert!(all_logged, "200 queued + 800 projected entries expected");
    let delivered: i64 = db
        .query_one(
            "SELECT count(*) FROM messages WHERE tenant_id = $1 AND status = 'delivered' \
             AND status_seq = 5",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered, 200);
    let batches = metric(&herald.url, "herald_projector_batches_total").await - before;
    eprintln!("1000 events applied in {batches} transactions");
    assert!(
        (1.0..=100.0).contains(&batches),
        "1000 events took {batches} transactions"
    );

    let dead = broker.drain(&broker.topology().dead_queue()).await.unwrap();
    assert_eq!(dead.len(), 2, "both poison payloads dead-lettered");
    let v: Value = serde_json::from_slice(&dead[0]).unwrap();
    assert_eq!(v["body"], "{not json");
    assert!(v["reason"].is_string());
    assert_eq!(
        metric(
            &herald.url,
            "herald_projector_events_total{outcome=\"malformed\"}"
        )
        .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_applied_event_is_broadcast_in_process_after_commit() {
    use herald::projector::{Projector, Settings};

    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let mut herald = env.start();
    let id = send(&herald.url, &key, "Muraho").await;
    // Stop the service so that only the projector below consumes events.
    assert!(herald.terminate(Duration::from_secs(30)).success());

    let config = test_config(&env);
    let projector = Projector::start(
        store_for(&env),
        env.broker(),
        Settings::from(&config.projector),
    );
    let mut changes = projector.subscribe();

    publish(
        &env.broker(),
        &[
            status(&tenant, &id, "sending", &[]),
            status(&tenant, &id, "sent", &["5"]),
            receipt("5", ReceiptState::Delivered),
        ],
    )
    .await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let change = tokio::time::timeout(Duration::from_secs(20), changes.recv())
            .await
            .expect("a broadcast within 20 s")
            .unwrap();
        got.push(change);
    }
    let seen: Vec<(i32, &str, Option<&str>, bool)> = got
        .iter()
        .map(|c| {
            (
                c.seq,
                c.status.as_str(),
                c.previous_status.as_deref(),
                c.is_final,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (2, "sending", Some("queued"), false),
            (3, "sent", Some("sending"), false),
            (4, "delivered", Some("sent"), true)
        ]
    );
    assert!(got.iter().all(|c| c.tenant_id.as_str() == tenant));
    assert!(got.iter().all(|c| c.message_id.as_str() == id));
    let db = env.db().await;
    let cursors: Vec<i64> = db
        .query(
            "SELECT cursor FROM message_events WHERE message_id = $1 AND seq > 1 ORDER BY seq",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        got.iter().map(|c| c.cursor).collect::<Vec<_>>(),
        cursors,
        "broadcast cursors are the committed ones"
    );
    projector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let mut herald = env.start();
    let db = env.db().await;
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(send(&herald.url, &key, &format!("drain {i}")).await);
    }
    let mut events = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        events.push(status(&tenant, id, "sending", &[]));
        events.push(status(&tenant, id, "sent", &[&format!("d{n}")]));
    }
    for n in 0..ids.len() {
        events.push(receipt(&format!("d{n}"), ReceiptState::Delivered));
    }
    // Publish in chunks while the service is told to stop.
    let broker = env.broker();
    let publisher = tokio::spawn(async move {
        for chunk in events.chunks(15) {
            publish(&broker, chunk).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(herald.terminate(Duration::from_secs(30)).success());
    drop(herald);
    publisher.await.unwrap();
    let before: i64 = db
        .query_one(
            "SELECT count(*) FROM message_events WHERE tenant_id = $1 AND seq > 1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!("{before} of 300 events applied before SIGTERM");

    let _herald = env.start();
    let done = counts(
        &db,
        "SELECT count(*) FROM messages WHERE tenant_id = $1 AND status = 'delivered'",
        &[&tenant],
        100,
        30,
    )
    .await;
    assert!(done, "not every message was delivered after the restart");
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT (message_id, seq)), \
                    count(*) FILTER (WHERE seq > 4) \
             FROM message_events WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 400, "queued + 3 events per message");
    assert_eq!(row.get::<_, i64>(1), 400, "seqs are unique per message");
    assert_eq!(row.get::<_, i64>(2), 0, "nothing applied twice");
}
