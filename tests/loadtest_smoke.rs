//! herald-loadtest against a real Herald and SMSC simulator, briefly: a few
//! hundred messages from two tenants, every one accepted, submitted once,
//! receipted, reported on the stream and by signed webhook, none lost.

mod common;

use std::time::Duration;

use common::bench::{smsc_with_control, wait_bound};
use common::carriers::{route, smpp_carrier};
use common::TestEnv;
use herald_carriers::smpp::Behaviour;
use herald_loadtest::Options;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_smoke_loses_nothing_and_duplicates_nothing() {
    let sim = smsc_with_control(Behaviour {
        receipts: true,
        receipt_delay_ms: 20,
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new();
    env.use_carriers(
        &smpp_carrier("sim", sim.addr(), 1000.0, 10, 1),
        &route("rw", &["+250"], "failover", &["sim"]),
        &["sim"],
    );
    let keys: Vec<String> = ["lt-a", "lt-b"]
        .iter()
        .map(|n| env.create_tenant(n, &["--rate", "100000"]).1)
        .collect();
    let herald = env.start();
    assert!(
        wait_bound(
            &herald.url,
            "test-admin-token",
            "sim",
            Duration::from_secs(15)
        )
        .await,
        "carrier never bound; log:\n{}",
        herald.log()
    );

    let mut opts = Options::new(&herald.url, keys, 100.0, Duration::from_secs(3));
    opts.drain = Duration::from_secs(60);
    // A warm-up second first: it must complete too, and stay out of the
    // figures (the carrier's count is by phase).
    opts.warmup = Duration::from_secs(1);
    opts.smsc_control = Some(format!("http://{}", sim.http_addr().unwrap()));
    let report = herald_loadtest::run(opts).await.expect("load test runs");
    println!("{}", report.table());

    let warmup = report.warmup.clone().expect("the warm-up is reported");
    assert_eq!(
        (warmup.attempted, warmup.accepted),
        (100, 100),
        "{warmup:?}"
    );
    assert_eq!((warmup.errors, warmup.lost), (0, 0), "{warmup:?}");
    assert_eq!(report.attempted, 300, "{report:#?}");
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert_eq!(report.accepted, 300);
    assert_eq!(report.lost, 0, "lost messages; log:\n{}", herald.log());
    assert!(report.drained);
    assert_eq!(report.delivered, 300, "finals: {:?}", report.finals);
    assert_eq!(report.finals.get("delivered"), Some(&300));
    assert_eq!(report.stream_final_missing, 0);
    assert_eq!(report.webhook_final_missing, 0);
    assert_eq!(report.webhook_duplicates, 0);
    assert_eq!(report.bad_signatures, 0);
    assert_eq!(report.carrier_submits, Some(300));
    assert_eq!(report.carrier_duplicates, Some(0));
    // Sane numbers: the rate held, latencies ordered and bounded.
    assert!(
        (80.0..=120.0).contains(&report.accepted_per_s),
        "{}",
        report.accepted_per_s
    );
    let a = &report.accept_latency_ms;
    assert_eq!(a.count, 300);
    assert!(
        a.p50 > 0.0 && a.p50 <= a.p99 && a.p99 <= a.max && a.max < 5_000.0,
        "{a:?}"
    );
    assert_eq!(report.to_delivered_ms.count, 300);
    assert_eq!(report.to_sent_ms.count, 300);
    assert!(report.to_sent_ms.p50 <= report.to_delivered_ms.p50);
    // The receipt comes 20 ms after the submit at the earliest.
    assert!(
        report.to_delivered_ms.p50 >= 20.0,
        "{:?}",
        report.to_delivered_ms
    );
    assert!(
        report.webhooks_received >= 600,
        "{}",
        report.webhooks_received
    );
    assert_eq!(report.per_tenant.len(), 2);
    assert!(report
        .per_tenant
        .iter()
        .all(|t| t.accepted == 150 && t.lost == 0));
    assert!(!report.timeline.is_empty());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["lost"], 0);
}
