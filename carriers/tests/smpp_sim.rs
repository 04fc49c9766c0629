//! The SMPP client against the SMPP simulator, over real TCP on free ports.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_carriers::encoding::SplitMode;
use herald_carriers::smpp::{
    Behaviour, IdStyle, OutcomeMix, ReceiptIdFormat, SmppClient, SmppConfig, SmppError, SmscConfig,
    SmscHandle, SmscSim,
};
use herald_carriers::{
    CarrierConnection, CarrierError, Channel, Content, Receipt, ReceiptState, Submission,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

async fn sim(config: SmscConfig) -> SmscHandle {
    SmscSim::start(config).await.expect("simulator starts")
}

fn sim_config(behaviour: Behaviour) -> SmscConfig {
    SmscConfig {
        credentials: vec![("herald".into(), "secret".into())],
        behaviour,
        ..Default::default()
    }
}

fn client_config(sim: &SmscHandle) -> SmppConfig {
    SmppConfig {
        host: sim.addr().ip().to_string(),
        port: sim.addr().port(),
        system_id: "herald".into(),
        password: "secret".into(),
        request_timeout: Duration::from_secs(5),
        enquire_link_interval: Duration::from_secs(5),
        enquire_link_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

async fn connect(config: SmppConfig) -> (Arc<SmppClient>, mpsc::Receiver<Receipt>) {
    let (c, r) = SmppClient::connect(config).await.expect("binds");
    (Arc::new(c), r)
}

fn sms(n: usize, body: &str) -> Submission {
    Submission {
        message_id: format!("msg_{n}"),
        channel: Channel::Sms,
        to: format!("+2507880{n:05}"),
        from: "Herald".into(),
        content: Content::Text { body: body.into() },
        validity: Some(Duration::from_secs(3600)),
        receipts: true,
    }
}

async fn receipts(rx: &mut mpsc::Receiver<Receipt>, n: usize) -> Vec<Receipt> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(r)) => out.push(r),
            other => panic!("expected {n} receipts, got {} then {other:?}", out.len()),
        }
    }
    out
}

#[tokio::test]
async fn submit_and_receipt_correlate() {
    let sim = sim(sim_config(Behaviour::default())).await;
    let (client, mut rx) = connect(client_config(&sim)).await;
    let sent = client.submit(sms(1, "Hello from Kigali")).await.unwrap();
    assert_eq!(sent.carrier_refs.len(), 1);
    let r = receipts(&mut rx, 1).await;
    assert_eq!(r[0].carrier_ref, sent.carrier_refs[0]);
    assert_eq!(r[0].state, ReceiptState::Delivered);
    assert!(r[0].is_final);
    assert!(r[0].raw.contains("stat:DELIVRD"));
    let got = sim.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, "Hello from Kigali");
    assert_eq!(got[0].destination_addr, "250788000001");
    assert_eq!(got[0].source_addr, "Herald");
    assert_eq!(got[0].data_coding, 0);
    let h = client.health();
    assert!(h.bound);
    assert!(h.last_round_trip.is_some());
    assert_eq!(h.in_flight, 0);
    client.close().await;
    assert!(!client.health().bound);
    sim.shutdown().await;
}

#[tokio::test]
async fn window_is_never_exceeded() {
    for window in [1usize, 5] {
        let sim = sim(sim_config(Behaviour {
            latency_ms: 20,
            receipts: false,
            ..Default::default()
        }))
        .await;
        let (client, _rx) = connect(SmppConfig {
            window,
            ..client_config(&sim)
        })
        .await;
        let mut tasks = Vec::new();
        for n in 0..40 {
            let c = client.clone();
            tasks.push(tokio::spawn(
                async move { c.submit(sms(n, "window")).await },
            ));
        }
        // While they run, health never reports more than the window.
        for _ in 0..10 {
            assert!(client.health().in_flight as usize <= window);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for t in tasks {
            t.await.unwrap().expect("submitted");
        }
        let stats = sim.stats();
        assert_eq!(stats.submit_sm, 40);
        assert!(
            stats.max_in_flight as usize <= window,
            "window {window}, sim saw {}",
            stats.max_in_flight
        );
        if window > 1 {
            assert!(stats.max_in_flight > 1, "the window is used for pipelining");
        }
        assert_eq!(stats.window_exceeded, 0);
        client.close().await;
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn throttling_surfaces_as_throttled() {
    let sim = sim(sim_config(Behaviour {
        max_tps: Some(50),
        receipts: false,
        ..Default::default()
    }))
    .await;
    let (client, _rx) = connect(SmppConfig {
        window: 50,
        ..client_config(&sim)
    })
    .await;
    let mut tasks = Vec::new();
    for n in 0..200 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.submit(sms(n, "fast")).await }));
    }
    let mut throttled = 0;
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CarrierError::Throttled { code, text, .. }) => {
                assert_eq!(code, "0x00000058");
                assert_eq!(text, "ESME_RTHROTTLED");
                throttled += 1;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(throttled > 0 && ok > 0, "ok {ok} throttled {throttled}");
    assert_eq!(sim.stats().throttled, throttled);
    let h = client.health();
    assert_eq!(h.errors, throttled);
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn error_statuses_map_to_kinds() {
    let sim = sim(sim_config(Behaviour {
        error_rate: 1.0,
        ..Default::default()
    }))
    .await;
    let (client, _rx) = connect(client_config(&sim)).await;
    for (status, check) in [
        (0x08u32, "temporary"),
        (0x14, "temporary"),
        (0x0B, "permanent"),
        (0x58, "throttled"),
    ] {
        sim.update_behaviour(|b| b.error_status = status);
        let err = client.submit(sms(1, "x")).await.unwrap_err();
        let kind = match err {
            CarrierError::Temporary { .. } => "temporary",
            CarrierError::Permanent { .. } => "permanent",
            CarrierError::Throttled { .. } => "throttled",
            CarrierError::ConnectionLost { .. } => "lost",
        };
        assert_eq!(kind, check, "status {status:#x}");
    }
    assert_eq!(client.health().consecutive_errors, 4);
    sim.update_behaviour(|b| b.error_rate = 0.0);
    client.submit(sms(1, "x")).await.unwrap();
    assert_eq!(client.health().consecutive_errors, 0);
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn dropped_connection_fails_in_flight_promptly() {
    let sim = sim(sim_config(Behaviour {
        latency_ms: 60_000,
        drop_after_pdus: Some(3), // bind, submit, submit -> gone
        ..Default::default()
    }))
    .await;
    let interval = Duration::from_millis(1000);
    let (client, mut rx) = connect(SmppConfig {
        enquire_link_interval: interval,
        enquire_link_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(30),
        ..client_config(&sim)
    })
    .await;
    let started = Instant::now();
    let a = tokio::spawn({
        let c = client.clone();
        async move { c.submit(sms(1, "one")).await }
    });
    let b = tokio::spawn({
        let c = client.clone();
        async move { c.submit(sms(2, "two")).await }
    });
    for t in [a, b] {
        match t.await.unwrap() {
            Err(CarrierError::ConnectionLost { .. }) => {}
            other => panic!("expected ConnectionLost, got {other:?}"),
        }
    }
    assert!(started.elapsed() < interval, "took {:?}", started.elapsed());
    assert!(matches!(
        client.submit(sms(3, "after")).await,
        Err(CarrierError::ConnectionLost { .. })
    ));
    assert!(!client.health().bound);
    // The receipt channel closes with the connection.
    assert!(tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .unwrap()
        .is_none());
    assert_eq!(sim.stats().dropped_connections, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn stalled_smsc_is_detected_by_enquire_link() {
    let sim = sim(sim_config(Behaviour::default())).await;
    let interval = Duration::from_millis(300);
    let timeout = Duration::from_millis(200);
    let (client, _rx) = connect(SmppConfig {
        enquire_link_interval: interval,
        enquire_link_timeout: timeout,
        request_timeout: Duration::from_secs(30),
        ..client_config(&sim)
    })
    .await;
    sim.update_behaviour(|b| b.stall = true);
    let started = Instant::now();
    let result = client.submit(sms(1, "into the void")).await;
    assert!(
        matches!(result, Err(CarrierError::ConnectionLost { .. })),
        "{result:?}"
    );
    let took = started.elapsed();
    assert!(
        took <= interval + timeout + Duration::from_millis(500),
        "took {took:?}"
    );
    assert_eq!(client.lost().await, "enquire_link unanswered");
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_shutdown_is_connection_lost() {
    let sim = sim(sim_config(Behaviour {
        latency_ms: 60_000,
        ..Default::default()
    }))
    .await;
    let (client, _rx) = connect(client_config(&sim)).await;
    let pending = tokio::spawn({
        let c = client.clone();
        async move { c.submit(sms(1, "x")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(client.health().in_flight, 1);
    let started = Instant::now();
    sim.shutdown().await;
    assert!(matches!(
        pending.await.unwrap(),
        Err(CarrierError::ConnectionLost { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn receipts_of_every_format_correlate() {
    let upper10 = IdStyle::default();
    let lower_bare = IdStyle {
        hex: true,
        uppercase: false,
        width: 0,
    };
    let decimal = IdStyle {
        hex: false,
        uppercase: false,
        width: 0,
    };
    let decimal_padded = IdStyle {
        hex: false,
        uppercase: false,
        width: 12,
    };
    let hex_upper_bare = IdStyle {
        hex: true,
        uppercase: true,
        width: 0,
    };
    // (name, resp id, text id, text?, tlvs?, client rule)
    let cases = [
        (
            "text+tlv",
            upper10,
            upper10,
            true,
            true,
            ReceiptIdFormat::Same,
        ),
        (
            "text only, other case and padding",
            upper10,
            lower_bare,
            true,
            false,
            ReceiptIdFormat::Same,
        ),
        (
            "tlv only",
            upper10,
            upper10,
            false,
            true,
            ReceiptIdFormat::Same,
        ),
        (
            "hex resp, decimal text",
            upper10,
            decimal,
            true,
            false,
            ReceiptIdFormat::HexInRespDecimalInReceipt,
        ),
        (
            "decimal resp, hex text",
            decimal_padded,
            hex_upper_bare,
            true,
            false,
            ReceiptIdFormat::DecimalInRespHexInReceipt,
        ),
        (
            "hex resp, decimal text, tlv wins",
            upper10,
            decimal,
            true,
            true,
            ReceiptIdFormat::Same,
        ),
    ];
    for (name, resp_id, text_id, text, tlvs, rule) in cases {
        let sim = sim(SmscConfig {
            resp_id,
            receipt_text_id: text_id,
            receipt_text: text,
            receipt_tlvs: tlvs,
            first_message_id: 2580,
            ..sim_config(Behaviour {
                receipt_delay_ms: 5,
                outcomes: OutcomeMix {
                    delivered: 1,
                    undelivered: 1,
                    expired: 1,
                    rejected: 1,
                },
                ..Default::default()
            })
        })
        .await;
        let (client, mut rx) = connect(SmppConfig {
            receipt_id_format: rule,
            ..client_config(&sim)
        })
        .await;
        let mut refs = HashSet::new();
        for n in 0..12 {
            let s = client.submit(sms(n, "receipt me")).await.unwrap();
            refs.insert(s.carrier_refs[0].clone());
        }
        let got = receipts(&mut rx, 12).await;
        let receipt_refs: HashSet<_> = got.iter().map(|r| r.carrier_ref.clone()).collect();
        assert_eq!(receipt_refs, refs, "case {name}");
        for r in &got {
            assert!(matches!(
                r.state,
                ReceiptState::Delivered
                    | ReceiptState::Undelivered
                    | ReceiptState::Expired
                    | ReceiptState::Rejected
            ));
            if text {
                assert!(r.done_at.is_some(), "case {name}");
            }
        }
        client.close().await;
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn outcome_mix_is_reported() {
    let sim = sim(sim_config(Behaviour {
        outcomes: OutcomeMix {
            delivered: 0,
            undelivered: 0,
            expired: 0,
            rejected: 1,
        },
        ..Default::default()
    }))
    .await;
    let (client, mut rx) = connect(client_config(&sim)).await;
    client.submit(sms(1, "no")).await.unwrap();
    let r = receipts(&mut rx, 1).await;
    assert_eq!(r[0].state, ReceiptState::Rejected);
    assert_eq!(r[0].error_code.as_deref(), Some("001"));
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn three_part_ucs2_message() {
    let text: String = "Муракозе cyane! ".repeat(10); // 160 chars, not GSM-7
    for mode in [SplitMode::Udh8, SplitMode::Udh16, SplitMode::Sar] {
        let sim = sim(sim_config(Behaviour::default())).await;
        let (client, mut rx) = connect(SmppConfig {
            split_mode: mode,
            ..client_config(&sim)
        })
        .await;
        let sent = client.submit(sms(7, &text)).await.unwrap();
        assert_eq!(sent.carrier_refs.len(), 3, "{mode:?}");
        let got = sim.received();
        assert_eq!(got.len(), 3, "{mode:?}");
        let reference = got[0].concat.expect("concatenated").0;
        for (i, part) in got.iter().enumerate() {
            assert_eq!(part.data_coding, 8);
            assert_eq!(part.concat, Some((reference, 3, i as u8 + 1)), "{mode:?}");
            assert_eq!(
                herald_carriers::smpp::normalize_ref(&part.message_id),
                sent.carrier_refs[i]
            );
            assert_eq!(part.esm_class & 0x40 != 0, mode != SplitMode::Sar);
        }
        let whole: String = got.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(whole, text);
        let r = receipts(&mut rx, 3).await;
        let receipt_refs: HashSet<_> = r.iter().map(|r| r.carrier_ref.clone()).collect();
        let refs: HashSet<_> = sent.carrier_refs.iter().cloned().collect();
        assert_eq!(receipt_refs, refs);
        // A second message gets another reference.
        client.submit(sms(8, &text)).await.unwrap();
        let again = sim.received();
        assert_ne!(again[3].concat.unwrap().0, reference);
        client.close().await;
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn early_receipt_is_still_delivered() {
    let sim = sim(sim_config(Behaviour {
        latency_ms: 500,
        early_receipt: true,
        ..Default::default()
    }))
    .await;
    let (client, mut rx) = connect(client_config(&sim)).await;
    let submit = tokio::spawn({
        let c = client.clone();
        async move { c.submit(sms(1, "early bird")).await }
    });
    // The receipt arrives while the submit is still waiting for its answer.
    let r = receipts(&mut rx, 1).await;
    assert!(!submit.is_finished());
    let sent = submit.await.unwrap().unwrap();
    assert_eq!(r[0].carrier_ref, sent.carrier_refs[0]);
    assert_eq!(sim.stats().deliver_sm_resp, 1);
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn bind_refusals() {
    let sim = sim(sim_config(Behaviour::default())).await;
    let wrong = SmppClient::connect(SmppConfig {
        password: "nope".into(),
        ..client_config(&sim)
    })
    .await;
    assert!(matches!(
        wrong,
        Err(SmppError::BindRefused { status: 0x0D, .. })
    ));
    sim.update_behaviour(|b| b.refuse_bind = true);
    assert!(SmppClient::connect(client_config(&sim)).await.is_err());
    assert_eq!(sim.stats().binds_refused, 2);
    let nobody = SmppClient::connect(SmppConfig {
        port: 1,
        ..client_config(&sim)
    })
    .await;
    assert!(matches!(nobody, Err(SmppError::Connect { .. })));
    sim.shutdown().await;
}

#[tokio::test]
async fn answers_the_smscs_enquire_link_and_unbinds_on_close() {
    let sim = sim(sim_config(Behaviour {
        enquire_link_ms: Some(30),
        ..Default::default()
    }))
    .await;
    let (client, _rx) = connect(client_config(&sim)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(sim.stats().enquire_link_resp >= 3);
    client.close().await;
    assert_eq!(sim.stats().unbind, 1);
    assert!(matches!(
        client.submit(sms(1, "late")).await,
        Err(CarrierError::ConnectionLost { .. })
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn transmitter_and_receiver_binds() {
    use herald_carriers::smpp::BindMode;
    let sim = sim(sim_config(Behaviour::default())).await;
    let (rx_client, mut rx) = connect(SmppConfig {
        bind_mode: BindMode::Receiver,
        ..client_config(&sim)
    })
    .await;
    let (tx_client, _none) = connect(SmppConfig {
        bind_mode: BindMode::Transmitter,
        ..client_config(&sim)
    })
    .await;
    let sent = tx_client.submit(sms(1, "split binds")).await.unwrap();
    let r = receipts(&mut rx, 1).await;
    assert_eq!(r[0].carrier_ref, sent.carrier_refs[0]);
    assert!(matches!(
        rx_client.submit(sms(1, "x")).await,
        Err(CarrierError::Permanent { .. })
    ));
    tx_client.close().await;
    rx_client.close().await;
    sim.shutdown().await;
}

async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: sim\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

#[tokio::test]
async fn http_control_endpoint() {
    let sim = sim(SmscConfig {
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..sim_config(Behaviour::default())
    })
    .await;
    let web = sim.http_addr().unwrap();
    let (client, _rx) = connect(client_config(&sim)).await;
    client.submit(sms(1, "counted")).await.unwrap();
    let stats: serde_json::Value =
        serde_json::from_str(&http(web, "GET", "/stats", "").await).unwrap();
    assert_eq!(stats["submit_sm"], 1);
    assert_eq!(stats["binds_ok"], 1);
    let b: serde_json::Value = serde_json::from_str(
        &http(
            web,
            "POST",
            "/faults",
            r#"{"error_rate": 1.0, "error_status": 11}"#,
        )
        .await,
    )
    .unwrap();
    assert_eq!(b["error_rate"], 1.0);
    assert!(matches!(
        client.submit(sms(2, "now failing")).await,
        Err(CarrierError::Permanent { .. })
    ));
    let received: serde_json::Value =
        serde_json::from_str(&http(web, "GET", "/received", "").await).unwrap();
    assert_eq!(received.as_array().unwrap().len(), 2);
    http(web, "POST", "/reset", "").await;
    assert_eq!(sim.stats().submit_sm, 0);
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_timed_out_submit_keeps_its_window_slot() {
    let sim = sim(sim_config(Behaviour {
        latency_ms: 400,
        receipts: false,
        ..Default::default()
    }))
    .await;
    let (client, _rx) = connect(SmppConfig {
        window: 1,
        request_timeout: Duration::from_millis(100),
        ..client_config(&sim)
    })
    .await;
    match client.submit(sms(1, "slow")).await {
        Err(CarrierError::Temporary { code, .. }) => assert_eq!(code, "timeout"),
        other => panic!("{other:?}"),
    }
    // The SMSC has not answered the first one yet: no slot for a second.
    match client.submit(sms(2, "blocked")).await {
        Err(CarrierError::Temporary { code, .. }) => assert_eq!(code, "window_timeout"),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.health().in_flight, 1);
    assert_eq!(sim.stats().submit_sm, 1);
    // Once the late answer arrives the slot is free again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client.health().in_flight, 0);
    sim.update_behaviour(|b| b.latency_ms = 0);
    client.submit(sms(3, "fine")).await.unwrap();
    assert_eq!(sim.stats().max_in_flight, 1);
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_sim_records_order_and_duplicates() {
    let sim = sim(sim_config(Behaviour {
        receipts: false,
        ..Default::default()
    }))
    .await;
    let (client, _rx) = connect(SmppConfig {
        window: 1,
        ..client_config(&sim)
    })
    .await;
    for n in [1, 2, 2, 3] {
        client.submit(sms(n, &format!("n={n}"))).await.unwrap();
    }
    let got = sim.received();
    let texts: Vec<_> = got.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(texts, ["n=1", "n=2", "n=2", "n=3"]);
    let ids: HashSet<_> = got.iter().map(|r| r.message_id.clone()).collect();
    assert_eq!(ids.len(), 4, "every submit gets its own id");
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_submit_has_one_outcome_and_every_ref_one_receipt() {
    let sim = sim(sim_config(Behaviour {
        latency_ms: 1,
        error_rate: 0.1,
        receipt_delay_ms: 2,
        outcomes: OutcomeMix {
            delivered: 3,
            undelivered: 1,
            expired: 1,
            rejected: 1,
        },
        ..Default::default()
    }))
    .await;
    let (client, mut rx) = connect(SmppConfig {
        window: 50,
        ..client_config(&sim)
    })
    .await;
    let total = 2000;
    let mut tasks = Vec::new();
    for n in 0..total {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            // Every 10th message is long: 2 GSM-7 parts.
            let body = if n % 10 == 0 {
                "x".repeat(200)
            } else {
                format!("m{n}")
            };
            c.submit(sms(n, &body)).await
        }));
    }
    let mut refs = HashSet::new();
    let mut failed = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) => {
                for r in s.carrier_refs {
                    assert!(refs.insert(r), "duplicate carrier ref");
                }
            }
            Err(CarrierError::Temporary { .. }) => failed += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    let stats = sim.stats();
    let parts_sent = total as u64 + total as u64 / 10;
    assert_eq!(stats.submit_sm, parts_sent);
    assert!(failed > 0);
    // Receipts: one per accepted part, including accepted parts of messages
    // whose other part failed.
    let expected = stats.submit_sm_ok as usize;
    let got = receipts(&mut rx, expected).await;
    let receipt_refs: HashSet<_> = got.iter().map(|r| r.carrier_ref.clone()).collect();
    assert_eq!(receipt_refs.len(), expected, "no duplicate receipts");
    assert!(refs.is_subset(&receipt_refs));
    assert!(stats.max_in_flight <= 50);
    assert!(tokio::time::timeout(Duration::from_millis(100), rx.recv())
        .await
        .is_err());
    client.close().await;
    assert_eq!(sim.stats().deliver_sm_resp, expected as u64);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_long_message_is_not_half_sent_for_want_of_window() {
    let sim = sim(sim_config(Behaviour {
        latency_ms: 400,
        receipts: false,
        ..Default::default()
    }))
    .await;
    let (client, _rx) = connect(SmppConfig {
        window: 2,
        request_timeout: Duration::from_millis(150),
        ..client_config(&sim)
    })
    .await;
    // The first times out and keeps one of the two slots.
    match client.submit(sms(1, "slow")).await {
        Err(CarrierError::Temporary { code, .. }) => assert_eq!(code, "timeout"),
        other => panic!("{other:?}"),
    }
    // Two parts, one free slot: nothing goes out, so a retry doubles nothing.
    match client.submit(sms(2, &"x".repeat(200))).await {
        Err(CarrierError::Temporary { code, .. }) => assert_eq!(code, "window_timeout"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.stats().submit_sm, 1);
    client.close().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn out_of_range_control_values_do_not_kill_connections() {
    let sim = sim(SmscConfig {
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..sim_config(Behaviour::default())
    })
    .await;
    let web = sim.http_addr().unwrap();
    let (client, _rx) = connect(SmppConfig {
        request_timeout: Duration::from_millis(200),
        ..client_config(&sim)
    })
    .await;
    let max = u64::MAX;
    let weight = u32::MAX;
    http(
        web,
        "POST",
        "/faults",
        &format!(
            r#"{{"latency_ms": {max}, "receipt_delay_ms": {max},
                "outcomes": {{"delivered": {weight}, "undelivered": {weight},
                              "expired": {weight}, "rejected": {weight}}}}}"#
        ),
    )
    .await;
    // Answered never (in this run), but the connection stays up.
    match client.submit(sms(1, "patient")).await {
        Err(CarrierError::Temporary { code, .. }) => assert_eq!(code, "timeout"),
        other => panic!("{other:?}"),
    }
    assert!(client.health().bound);
    assert_eq!(sim.stats().dropped_connections, 0);
    sim.shutdown().await;
}
