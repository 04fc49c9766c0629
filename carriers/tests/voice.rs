//! The voice adapter against its simulator on a free port, with signed call
//! status callbacks caught by a tiny local receiver.

mod common;

use std::time::Duration;

use common::{Caught, Receiver};
use herald_carriers::voice::sim::{self, Faults, VoiceOutcomes, VoiceSimConfig};
use herald_carriers::voice::{CallbackError, SignatureError, VoiceConnection, SIGNATURE_HEADER};
use herald_carriers::{
    CarrierConnection, CarrierError, Channel, Content, Receipt, ReceiptState, Submission,
};

fn call(content: Content) -> Submission {
    Submission {
        message_id: "msg_call1".into(),
        channel: Channel::Voice,
        to: "+15551234567".into(),
        from: "+15550000000".into(),
        content,
        validity: None,
        receipts: true,
    }
}

fn say() -> Submission {
    call(Content::Say {
        text: "Your code is 4 2 4 2".into(),
    })
}

fn outcome(completed: f64, busy: f64, no_answer: f64, failed: f64) -> VoiceOutcomes {
    VoiceOutcomes {
        completed,
        busy,
        no_answer,
        failed,
    }
}

async fn setup(
    callback_url: &str,
    outcomes: VoiceOutcomes,
    faults: Faults,
) -> (sim::Handle, VoiceConnection) {
    let config = VoiceSimConfig {
        auth_token: Some("voice-token".into()),
        ringing_after_ms: 5,
        answered_after_ms: 30,
        ended_after_ms: 60,
        outcomes,
        faults,
        seed: Some(5),
        workers: 1,
        ..VoiceSimConfig::default()
    };
    let sim = sim::start(config.clone()).await.unwrap();
    let conn =
        VoiceConnection::new(sim::carrier_config(&sim.base_url(), &config, callback_url)).unwrap();
    (sim, conn)
}

fn receipts(conn: &VoiceConnection, caught: &[Caught]) -> Vec<Receipt> {
    let mut receipts: Vec<Receipt> = caught
        .iter()
        .map(|c| {
            assert_eq!(c.content_type, "application/x-www-form-urlencoded");
            conn.verify_and_parse_callback(&c.body, c.signature.as_deref())
                .unwrap()
        })
        .collect();
    // Callbacks are due in order but may be acknowledged out of order on
    // a busy machine: order them by the call's progress.
    receipts.sort_by_key(|r| match r.state {
        ReceiptState::Sent => 0,
        ReceiptState::Ringing => 1,
        ReceiptState::InProgress => 2,
        _ => 3,
    });
    receipts
}

#[tokio::test]
async fn answered_call_rings_progresses_and_completes() {
    let receiver = Receiver::start("/v1/callbacks/voice", SIGNATURE_HEADER).await;
    let (sim, conn) = setup(
        &receiver.url,
        outcome(1.0, 0.0, 0.0, 0.0),
        Faults::default(),
    )
    .await;

    let sid = conn.submit(say()).await.unwrap().carrier_refs[0].clone();
    assert!(sid.starts_with("CA"), "{sid}");

    let caught = receiver.wait(3).await;
    let got: Vec<(ReceiptState, bool)> = receipts(&conn, &caught)
        .iter()
        .map(|r| {
            assert_eq!(r.carrier_ref, sid);
            (r.state, r.is_final)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (ReceiptState::Ringing, false),
            (ReceiptState::InProgress, false),
            (ReceiptState::Completed, true),
        ]
    );

    let stats = sim.stats();
    let record = &stats.messages[&sid];
    assert_eq!(record.kind, "say");
    assert_eq!(record.request["Say"], "Your code is 4 2 4 2");
    assert_eq!(record.request["StatusCallback"], receiver.url.as_str());
    assert_eq!(record.request["ClientRef"], "msg_call1");
    sim.shutdown().await;
    receiver.stop().await;
}

#[tokio::test]
async fn busy_no_answer_and_failed_are_final() {
    let receiver = Receiver::start("/v1/callbacks/voice", SIGNATURE_HEADER).await;
    let (sim, conn) = setup(
        &receiver.url,
        outcome(0.0, 1.0, 0.0, 0.0),
        Faults::default(),
    )
    .await;
    let audio = call(Content::Audio {
        url: "https://example.test/greeting.mp3".into(),
    });
    let sid = conn.submit(audio).await.unwrap().carrier_refs[0].clone();
    let caught = receiver.wait(2).await;
    let r = receipts(&conn, &caught);
    assert_eq!(r[1].carrier_ref, sid);
    assert_eq!((r[0].state, r[0].is_final), (ReceiptState::Ringing, false));
    assert_eq!((r[1].state, r[1].is_final), (ReceiptState::Busy, true));
    assert_eq!(sim.stats().messages[&sid].kind, "play");
    sim.shutdown().await;
    receiver.stop().await;

    let receiver = Receiver::start("/v1/callbacks/voice", SIGNATURE_HEADER).await;
    let (sim, conn) = setup(
        &receiver.url,
        outcome(0.0, 0.0, 1.0, 0.0),
        Faults::default(),
    )
    .await;
    conn.submit(say()).await.unwrap();
    let r = receipts(&conn, &receiver.wait(2).await);
    assert_eq!((r[1].state, r[1].is_final), (ReceiptState::NoAnswer, true));
    sim.shutdown().await;
    receiver.stop().await;

    let receiver = Receiver::start("/v1/callbacks/voice", SIGNATURE_HEADER).await;
    let (sim, conn) = setup(
        &receiver.url,
        outcome(0.0, 0.0, 0.0, 1.0),
        Faults::default(),
    )
    .await;
    conn.submit(say()).await.unwrap();
    let r = receipts(&conn, &receiver.wait(1).await);
    assert_eq!((r[0].state, r[0].is_final), (ReceiptState::Failed, true));
    assert_eq!(r[0].error_code.as_deref(), Some("31005"));
    sim.shutdown().await;
    receiver.stop().await;
}

#[tokio::test]
async fn callback_signature_is_enforced() {
    let receiver = Receiver::start("/v1/callbacks/voice", SIGNATURE_HEADER).await;
    let (sim, conn) = setup(
        &receiver.url,
        outcome(0.0, 0.0, 0.0, 1.0),
        Faults::default(),
    )
    .await;
    conn.submit(say()).await.unwrap();
    let caught = receiver.wait(1).await;
    let c = &caught[0];
    assert!(conn
        .verify_and_parse_callback(&c.body, c.signature.as_deref())
        .is_ok());
    assert_eq!(
        conn.verify_and_parse_callback(&c.body, None),
        Err(CallbackError::Signature(SignatureError::Missing))
    );
    let forged = herald_carriers::voice::sign(b"guess", &c.body);
    assert_eq!(
        conn.verify_and_parse_callback(&c.body, Some(&forged)),
        Err(CallbackError::Signature(SignatureError::Mismatch))
    );
    let mut tampered = c.body.clone();
    tampered.extend_from_slice(b"&CallStatus=completed");
    assert_eq!(
        conn.verify_and_parse_callback(&tampered, c.signature.as_deref()),
        Err(CallbackError::Signature(SignatureError::Mismatch))
    );
    sim.shutdown().await;
    receiver.stop().await;
}

#[tokio::test]
async fn errors_are_classified() {
    let (sim, conn) = setup(
        "http://127.0.0.1:9/unused",
        outcome(1.0, 0.0, 0.0, 0.0),
        Faults {
            rate_cap_per_sec: Some(1),
            ..Faults::default()
        },
    )
    .await;
    conn.submit(say()).await.unwrap();
    match conn.submit(say()).await.unwrap_err() {
        CarrierError::Throttled {
            retry_after, code, ..
        } => {
            assert_eq!(code, "20429");
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
        }
        other => panic!("expected Throttled, got {other:?}"),
    }

    sim.set_faults(Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    });
    let err = conn.submit(say()).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Temporary { code, .. } if code == "20503"),
        "{err:?}"
    );

    sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: 400,
        error_code: "21215".into(),
        ..Faults::default()
    });
    let err = conn.submit(say()).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Permanent { code, .. } if code == "21215"),
        "{err:?}"
    );

    sim.set_faults(Faults::default());
    let mut bad = say();
    bad.to = "5551234".into();
    let err = conn.submit(bad).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Permanent { code, .. } if code == "21211"),
        "{err:?}"
    );
    let mut config = conn.config().clone();
    config.auth = None;
    let anonymous = VoiceConnection::new(config).unwrap();
    let err = anonymous.submit(say()).await.unwrap_err();
    assert!(
        matches!(&err, CarrierError::Permanent { code, .. } if code == "20003"),
        "{err:?}"
    );
    let err = conn
        .submit(call(Content::Template {
            name: "t".into(),
            language: "en".into(),
            params: vec![],
        }))
        .await
        .unwrap_err();
    assert!(matches!(err, CarrierError::Permanent { .. }));

    let stats = sim.stats();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.throttled, 1);
    assert_eq!(stats.server_errors, 1);
    assert_eq!(stats.injected_errors, 1);
    assert_eq!(stats.rejected, 2);
    sim.shutdown().await;
}
