//! The HTTP SMS adapter against its simulator on a free port, with status
//! callbacks caught by a tiny local receiver.

mod common;

use std::time::Duration;

use common::Receiver;
use herald_carriers::http_sms::sim::{self, Faults, HttpSmsSimConfig, SmsOutcomes};
use herald_carriers::http_sms::HttpSmsConnection;
use herald_carriers::{
    CarrierConnection, CarrierError, Channel, Content, ReceiptState, Submission,
};

fn sms(to: &str, body: &str) -> Submission {
    Submission {
        message_id: "msg_01".into(),
        channel: Channel::Sms,
        to: to.into(),
        from: "Herald".into(),
        content: Content::Text { body: body.into() },
        validity: None,
        receipts: true,
    }
}

async fn sim_with(faults: Faults) -> sim::Handle {
    sim::start(HttpSmsSimConfig {
        api_key: Some("key-1".into()),
        callback_secret: Some("cb-secret".into()),
        outcomes: SmsOutcomes {
            delivered: 1.0,
            undelivered: 0.0,
            expired: 0.0,
            rejected: 0.0,
        },
        sent_after_ms: 5,
        final_after_ms: 40,
        faults,
        seed: Some(1),
        workers: 1,
        ..HttpSmsSimConfig::default()
    })
    .await
    .unwrap()
}

fn connect(sim: &sim::Handle, callback_url: Option<&str>) -> HttpSmsConnection {
    HttpSmsConnection::new(sim::carrier_config(
        &sim.base_url(),
        Some("key-1"),
        callback_url,
        Some("cb-secret"),
    ))
    .unwrap()
}

#[tokio::test]
async fn submit_then_signed_callbacks_become_receipts() {
    let receiver = Receiver::start("/callbacks/http-sms", sim::SIGNATURE_HEADER).await;
    let sim = sim_with(Faults::default()).await;
    let conn = connect(&sim, Some(&receiver.url));

    let submitted = conn
        .submit(sms("+447700900123", "héllo \"world\" {{to}}"))
        .await
        .unwrap();
    assert_eq!(submitted.carrier_refs.len(), 1);
    let id = submitted.carrier_refs[0].clone();
    assert!(id.starts_with("hsm_"));

    let caught = receiver.wait(2).await;
    let mut receipts = Vec::new();
    for c in &caught {
        receipts.extend(
            conn.verify_and_parse_callback(&c.body, c.signature.as_deref())
                .unwrap(),
        );
    }
    receipts.sort_by_key(|r| r.is_final);
    assert_eq!(receipts.len(), 2);
    assert!(receipts.iter().all(|r| r.carrier_ref == id));
    assert_eq!(receipts[0].state, ReceiptState::Sent);
    assert!(!receipts[0].is_final);
    assert_eq!(receipts[1].state, ReceiptState::Delivered);
    assert!(receipts[1].is_final);
    assert!(receipts[1].done_at.is_some());

    // A tampered body is refused.
    let c = &caught[0];
    let mut tampered = c.body.clone();
    tampered.push(b' ');
    assert!(conn
        .verify_and_parse_callback(&tampered, c.signature.as_deref())
        .is_err());

    // The simulator recorded what it received, also over GET /stats.
    assert!(sim.wait_callbacks(2, Duration::from_secs(5)).await);
    let stats = sim.stats();
    assert_eq!(stats.accepted, 1);
    let record = &stats.messages[&id];
    assert_eq!(record.to, "+447700900123");
    assert_eq!(record.request["text"], "héllo \"world\" {{to}}");
    assert_eq!(record.request["client_ref"], "msg_01");
    let over_http: serde_json::Value = reqwest::get(format!("{}/stats", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http["accepted"], 1);

    let health = conn.health();
    assert!(health.bound);
    assert_eq!(health.in_flight, 0);
    assert!(health.last_round_trip.is_some());

    sim.shutdown().await;
    receiver.stop().await;
}

#[tokio::test]
async fn undelivered_outcome_carries_error_code() {
    let receiver = Receiver::start("/callbacks/http-sms", sim::SIGNATURE_HEADER).await;
    let sim = sim::start(HttpSmsSimConfig {
        callback_url: Some(receiver.url.clone()),
        send_sent_status: false,
        final_after_ms: 1,
        outcomes: SmsOutcomes {
            delivered: 0.0,
            undelivered: 1.0,
            expired: 0.0,
            rejected: 0.0,
        },
        workers: 1,
        ..HttpSmsSimConfig::default()
    })
    .await
    .unwrap();
    // No auth, callback URL from the simulator's own config.
    let conn =
        HttpSmsConnection::new(sim::carrier_config(&sim.base_url(), None, None, None)).unwrap();
    let id = conn
        .submit(sms("+15550001111", "x"))
        .await
        .unwrap()
        .carrier_refs[0]
        .clone();
    let caught = receiver.wait(1).await;
    let receipts = conn.parse_callback(&caught[0].body).unwrap();
    assert_eq!(receipts[0].carrier_ref, id);
    assert_eq!(receipts[0].state, ReceiptState::Undelivered);
    assert_eq!(receipts[0].error_code.as_deref(), Some("001"));
    assert!(receipts[0].is_final);
    sim.shutdown().await;
    receiver.stop().await;
}

#[tokio::test]
async fn rate_cap_throttles_with_retry_after() {
    let sim = sim_with(Faults {
        rate_cap_per_sec: Some(1),
        ..Faults::default()
    })
    .await;
    let conn = connect(&sim, None);
    conn.submit(sms("+15550001111", "one")).await.unwrap();
    let err = conn.submit(sms("+15550001111", "two")).await.unwrap_err();
    match err {
        CarrierError::Throttled {
            retry_after, code, ..
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
            assert_eq!(code, "throttled");
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert_eq!(sim.stats().throttled, 1);
    assert_eq!(conn.health().consecutive_errors, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn server_errors_are_temporary() {
    let sim = sim_with(Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let conn = connect(&sim, None);
    let err = conn.submit(sms("+15550001111", "x")).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Temporary { code, .. } if code == "unavailable"),
        "{err:?}"
    );
    assert_eq!(conn.health().errors, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn client_errors_are_permanent() {
    let sim = sim_with(Faults {
        error_rate: 1.0,
        error_status: 422,
        error_code: "invalid_destination".into(),
        ..Faults::default()
    })
    .await;
    let conn = connect(&sim, None);
    let err = conn.submit(sms("+15550001111", "x")).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Permanent { code, .. } if code == "invalid_destination"),
        "{err:?}"
    );
    // Validation by the carrier itself.
    let err = conn.submit(sms("not-a-number", "x")).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Permanent { code, .. } if code == "invalid_to"),
        "{err:?}"
    );
    // Permanent errors are about the message, not the carrier's health.
    assert_eq!(conn.health().consecutive_errors, 0);

    // A wrong key is a 401: permanent too.
    let wrong = HttpSmsConnection::new(sim::carrier_config(
        &sim.base_url(),
        Some("wrong"),
        None,
        None,
    ))
    .unwrap();
    let err = wrong.submit(sms("+15550001111", "x")).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Permanent { code, .. } if code == "unauthorized"),
        "{err:?}"
    );
    assert_eq!(sim.stats().rejected, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn slow_answers_time_out_as_temporary() {
    let sim = sim_with(Faults {
        slow_rate: 1.0,
        slow_ms: 1_500,
        ..Faults::default()
    })
    .await;
    let mut config = sim::carrier_config(&sim.base_url(), Some("key-1"), None, None);
    config.timeout_ms = 200;
    let conn = HttpSmsConnection::new(config).unwrap();
    let err = conn.submit(sms("+15550001111", "x")).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Temporary { code, .. } if code == "timeout"),
        "{err:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn refused_connection_is_lost_and_close_refuses_more() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conn = HttpSmsConnection::new(sim::carrier_config(
        &format!("http://127.0.0.1:{port}"),
        None,
        None,
        None,
    ))
    .unwrap();
    let err = conn.submit(sms("+15550001111", "x")).await.unwrap_err();
    assert!(
        matches!(err, CarrierError::ConnectionLost { .. }),
        "{err:?}"
    );
    assert!(!conn.health().bound);

    conn.close().await;
    let err = conn.submit(sms("+15550001111", "x")).await.unwrap_err();
    assert!(
        matches!(err, CarrierError::ConnectionLost { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn control_routes_change_faults_and_serve_records() {
    let sim = sim_with(Faults::default()).await;
    let conn = connect(&sim, None);
    let id = conn
        .submit(sms("+15550001111", "first"))
        .await
        .unwrap()
        .carrier_refs[0]
        .clone();

    let http = reqwest::Client::new();
    let base = sim.base_url();
    let summary: serde_json::Value = http
        .get(format!("{base}/stats?summary=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["accepted"], 1);
    assert_eq!(summary["messages"], serde_json::json!({}));
    let record: serde_json::Value = http
        .get(format!("{base}/stats/messages/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["request"]["text"], "first");
    let missing = http
        .get(format!("{base}/stats/messages/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    // Switch on 5xx over HTTP, as an operator would mid-demo.
    let set = http
        .put(format!("{base}/faults"))
        .json(&serde_json::json!({"server_error_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert!(set.status().is_success());
    let faults: serde_json::Value = http
        .get(format!("{base}/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults["server_error_rate"], 1.0);
    assert!(matches!(
        conn.submit(sms("+15550001111", "second")).await,
        Err(CarrierError::Temporary { .. })
    ));
    sim.shutdown().await;
}
