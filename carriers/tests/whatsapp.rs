//! The WhatsApp Cloud API adapter against its simulator on a free port, with
//! signed status webhooks caught by a tiny local receiver.

mod common;

use std::time::Duration;

use common::{Caught, Receiver};
use herald_carriers::whatsapp::sim::{self, Faults, WhatsappOutcomes, WhatsappSimConfig};
use herald_carriers::whatsapp::{
    HandshakeError, SignatureError, WebhookError, WhatsappConnection, SIGNATURE_HEADER,
};
use herald_carriers::{
    CarrierConnection, CarrierError, Channel, Content, Receipt, ReceiptState, Submission,
};

fn text(body: &str) -> Submission {
    Submission {
        message_id: "msg_wa1".into(),
        channel: Channel::Whatsapp,
        to: "+15551234567".into(),
        from: "15550000000".into(),
        content: Content::Text { body: body.into() },
        validity: None,
        receipts: true,
    }
}

fn template() -> Submission {
    Submission {
        content: Content::Template {
            name: "order_update".into(),
            language: "en_US".into(),
            params: vec!["Ada".into(), "42".into()],
        },
        ..text("")
    }
}

fn sim_config(
    webhook_url: Option<&str>,
    outcomes: WhatsappOutcomes,
    faults: Faults,
) -> WhatsappSimConfig {
    WhatsappSimConfig {
        webhook_url: webhook_url.map(str::to_owned),
        phone_number_id: Some("106540352242922".into()),
        sent_after_ms: 5,
        delivered_after_ms: 40,
        read_after_ms: 80,
        outcomes,
        faults,
        seed: Some(3),
        workers: 1,
        ..WhatsappSimConfig::default()
    }
}

async fn setup(
    webhook_url: Option<&str>,
    outcomes: WhatsappOutcomes,
    faults: Faults,
) -> (sim::Handle, WhatsappConnection) {
    let config = sim_config(webhook_url, outcomes, faults);
    let sim = sim::start(config.clone()).await.unwrap();
    let conn = WhatsappConnection::new(sim::carrier_config(&sim.base_url(), &config)).unwrap();
    (sim, conn)
}

fn only(delivered: f64, read: f64, failed: f64) -> WhatsappOutcomes {
    WhatsappOutcomes {
        delivered,
        read,
        failed,
    }
}

fn receipts_from(conn: &WhatsappConnection, caught: &[Caught]) -> Vec<Receipt> {
    let mut receipts: Vec<Receipt> = caught
        .iter()
        .flat_map(|c| {
            conn.verify_and_parse_webhook(&c.body, c.signature.as_deref())
                .unwrap()
        })
        .collect();
    receipts.sort_by_key(|r| r.done_at.map(|t| t.timestamp()).unwrap_or(0));
    receipts.sort_by_key(|r| match r.state {
        ReceiptState::Sent => 0,
        ReceiptState::Delivered => 1,
        _ => 2,
    });
    receipts
}

#[tokio::test]
async fn text_is_sent_delivered_and_read() {
    let receiver = Receiver::start("/v1/callbacks/whatsapp", SIGNATURE_HEADER).await;
    let (sim, conn) = setup(Some(&receiver.url), only(0.0, 1.0, 0.0), Faults::default()).await;

    let submitted = conn.submit(text("hello \"you\"")).await.unwrap();
    let wamid = submitted.carrier_refs[0].clone();
    assert!(wamid.starts_with("wamid."), "{wamid}");

    let caught = receiver.wait(3).await;
    let receipts = receipts_from(&conn, &caught);
    let states: Vec<(ReceiptState, bool)> =
        receipts.iter().map(|r| (r.state, r.is_final)).collect();
    assert_eq!(
        states,
        vec![
            (ReceiptState::Sent, false),
            (ReceiptState::Delivered, true),
            (ReceiptState::Read, true),
        ]
    );
    assert!(receipts.iter().all(|r| r.carrier_ref == wamid));

    // What the simulator received is Meta's text shape.
    assert!(sim.wait_callbacks(3, Duration::from_secs(5)).await);
    let stats = sim.stats();
    let record = &stats.messages[&wamid];
    assert_eq!(record.kind, "text");
    assert_eq!(record.to, "15551234567");
    assert_eq!(record.request["messaging_product"], "whatsapp");
    assert_eq!(record.request["type"], "text");
    assert_eq!(record.request["text"]["body"], "hello \"you\"");
    let mut acknowledged = record.callbacks.clone();
    acknowledged.sort();
    assert_eq!(acknowledged, vec!["delivered", "read", "sent"]);

    sim.shutdown().await;
    receiver.stop().await;
}

#[tokio::test]
async fn template_failure_carries_meta_error_code() {
    let receiver = Receiver::start("/v1/callbacks/whatsapp", SIGNATURE_HEADER).await;
    let (sim, conn) = setup(Some(&receiver.url), only(0.0, 0.0, 1.0), Faults::default()).await;

    let wamid = conn.submit(template()).await.unwrap().carrier_refs[0].clone();
    let caught = receiver.wait(1).await;
    let receipts = receipts_from(&conn, &caught);
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].carrier_ref, wamid);
    assert_eq!(receipts[0].state, ReceiptState::Failed);
    assert!(receipts[0].is_final);
    assert_eq!(receipts[0].error_code.as_deref(), Some("131026"));

    let stats = sim.stats();
    let request = &stats.messages[&wamid].request;
    assert_eq!(request["type"], "template");
    assert_eq!(request["template"]["name"], "order_update");
    assert_eq!(request["template"]["language"]["code"], "en_US");
    assert_eq!(request["template"]["components"][0]["type"], "body");
    assert_eq!(
        request["template"]["components"][0]["parameters"][1],
        serde_json::json!({"type": "text", "text": "42"})
    );

    sim.shutdown().await;
    receiver.stop().await;
}

#[tokio::test]
async fn webhook_signature_is_enforced() {
    let receiver = Receiver::start("/v1/callbacks/whatsapp", SIGNATURE_HEADER).await;
    let (sim, conn) = setup(Some(&receiver.url), only(1.0, 0.0, 0.0), Faults::default()).await;
    conn.submit(text("hi")).await.unwrap();
    let caught = receiver.wait(1).await;
    let c = &caught[0];
    assert!(c.signature.as_deref().unwrap().starts_with("sha256="));

    // Correct signature passes.
    assert!(conn
        .verify_and_parse_webhook(&c.body, c.signature.as_deref())
        .is_ok());
    // Missing header.
    assert_eq!(
        conn.verify_and_parse_webhook(&c.body, None),
        Err(WebhookError::Signature(SignatureError::Missing))
    );
    // Signed with another secret.
    let forged = herald_carriers::whatsapp::webhook::sign(b"not-the-secret", &c.body);
    assert_eq!(
        conn.verify_and_parse_webhook(&c.body, Some(&forged)),
        Err(WebhookError::Signature(SignatureError::Mismatch))
    );
    // Body changed after signing.
    let mut tampered = c.body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        conn.verify_and_parse_webhook(&tampered, c.signature.as_deref()),
        Err(WebhookError::Signature(SignatureError::Mismatch))
    );
    // Garbage in the header.
    assert_eq!(
        conn.verify_and_parse_webhook(&c.body, Some("sha1=abc")),
        Err(WebhookError::Signature(SignatureError::Malformed))
    );
    sim.shutdown().await;
    receiver.stop().await;
}

#[tokio::test]
async fn subscription_handshake() {
    let (sim, conn) = setup(None, only(1.0, 0.0, 0.0), Faults::default()).await;
    assert_eq!(
        conn.answer_handshake(Some("subscribe"), Some("sim-verify-token"), Some("8675309")),
        Ok("8675309".to_string())
    );
    assert_eq!(
        conn.answer_handshake(Some("subscribe"), Some("guess"), Some("8675309")),
        Err(HandshakeError::TokenMismatch)
    );
    assert_eq!(
        conn.answer_handshake(None, Some("sim-verify-token"), Some("8675309")),
        Err(HandshakeError::NotSubscribe)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_cap_throttles_with_130429_and_retry_after() {
    let (sim, conn) = setup(
        None,
        only(1.0, 0.0, 0.0),
        Faults {
            rate_cap_per_sec: Some(1),
            ..Faults::default()
        },
    )
    .await;
    conn.submit(text("one")).await.unwrap();
    match conn.submit(text("two")).await.unwrap_err() {
        CarrierError::Throttled {
            retry_after, code, ..
        } => {
            assert_eq!(code, "130429");
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert_eq!(sim.stats().throttled, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_error_codes_are_mapped() {
    let (sim, conn) = setup(None, only(1.0, 0.0, 0.0), Faults::default()).await;
    let inject = |status: u16, code: &str| Faults {
        error_rate: 1.0,
        error_status: status,
        error_code: code.into(),
        ..Faults::default()
    };

    // Pair rate limit without Retry-After: the configured backoff is used.
    sim.set_faults(inject(400, "131056"));
    match conn.submit(text("x")).await.unwrap_err() {
        CarrierError::Throttled {
            retry_after, code, ..
        } => {
            assert_eq!(code, "131056");
            assert_eq!(retry_after, Some(Duration::from_millis(1_000)));
        }
        other => panic!("expected Throttled, got {other:?}"),
    }

    sim.set_faults(inject(400, "131047"));
    let err = conn.submit(text("x")).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Permanent { code, text } if code == "131047" && text.contains("Injected")),
        "{err:?}"
    );

    sim.set_faults(inject(500, "131000"));
    let err = conn.submit(text("x")).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Temporary { code, .. } if code == "131000"),
        "{err:?}"
    );

    // A bare 5xx without Meta's envelope.
    sim.set_faults(Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    });
    let err = conn.submit(text("x")).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Temporary { code, .. } if code == "503"),
        "{err:?}"
    );

    // The simulator's own validation and auth are permanent.
    sim.set_faults(Faults::default());
    let mut bad = text("x");
    bad.to = "nope".into();
    let err = conn.submit(bad).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Permanent { code, .. } if code == "100"),
        "{err:?}"
    );
    let mut config = conn.config().clone();
    config.access_token = "stolen".into();
    let intruder = WhatsappConnection::new(config).unwrap();
    let err = intruder.submit(text("x")).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Permanent { code, .. } if code == "190"),
        "{err:?}"
    );

    // Unsupported content never reaches the wire.
    let mut say = text("x");
    say.content = Content::Say { text: "x".into() };
    assert!(matches!(
        conn.submit(say).await,
        Err(CarrierError::Permanent { .. })
    ));

    let stats = sim.stats();
    assert_eq!(stats.injected_errors, 3);
    assert_eq!(stats.server_errors, 1);
    assert_eq!(stats.rejected, 2);
    assert_eq!(stats.accepted, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn pair_rate_limit_throttles_the_same_recipient() {
    let config = WhatsappSimConfig {
        pair_rate_limit_ms: Some(60_000),
        ..sim_config(None, only(1.0, 0.0, 0.0), Faults::default())
    };
    let sim = sim::start(config.clone()).await.unwrap();
    let conn = WhatsappConnection::new(sim::carrier_config(&sim.base_url(), &config)).unwrap();
    conn.submit(text("first")).await.unwrap();
    match conn.submit(text("again")).await.unwrap_err() {
        CarrierError::Throttled {
            code, retry_after, ..
        } => {
            assert_eq!(code, "131056");
            assert!(retry_after.is_some());
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    // Another recipient is fine.
    let mut other = text("hello");
    other.to = "+15557654321".into();
    conn.submit(other).await.unwrap();
    let stats = sim.stats();
    assert_eq!((stats.accepted, stats.throttled), (2, 1));
    sim.shutdown().await;
}
