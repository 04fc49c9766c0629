//! Throughput of the SMPP simulator and of the SMPP client.
//!
//! ```sh
//! cargo run -p herald-carriers --release --example smpp_bench [seconds-per-run]
//! ```
//!
//! 1. Simulator capacity: a raw pipelining ESME (pre-encoded submit_sm,
//!    written in batches, up to 20 000 unanswered, no client logic) on 1 and
//!    on 4 connections; submit_sm_resp per second.
//! 2. Client throughput: [`SmppClient`] on one bind with window 1, 10 and 50
//!    (concurrent submitters = 2 x window), receipts requested and drained.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use herald_carriers::smpp::pdu::{self, Bind, Body, Pdu, ShortMessage};
use herald_carriers::smpp::{Behaviour, SmppClient, SmppConfig, SmscConfig, SmscSim};
use herald_carriers::{CarrierConnection, Channel, Content, Submission};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(Duration::from_secs(secs)));
}

async fn run(run_for: Duration) {
    let sim = SmscSim::start(SmscConfig {
        record: false,
        behaviour: Behaviour {
            receipts: true,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("sim");
    let addr = sim.addr();
    println!("SMSC simulator on {addr}, {} s per run", run_for.as_secs());

    for conns in [1usize, 4] {
        let counted = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..conns {
            tasks.push(tokio::spawn(blast(addr, run_for, counted.clone())));
        }
        for t in tasks {
            t.await.expect("blaster");
        }
        let n = counted.load(Ordering::Relaxed);
        println!(
            "simulator capacity, raw pipelined ESME x{conns}: {n} submit_sm in {:.2?} = {:.0} submit_sm/s",
            started.elapsed(),
            n as f64 / started.elapsed().as_secs_f64()
        );
    }

    for window in [1usize, 10, 50] {
        let (client, mut receipts) = SmppClient::connect(SmppConfig {
            host: addr.ip().to_string(),
            port: addr.port(),
            system_id: "bench".into(),
            password: "bench".into(),
            window,
            ..Default::default()
        })
        .await
        .expect("bind");
        let client = Arc::new(client);
        let drained = tokio::spawn(async move {
            let mut n = 0u64;
            while receipts.recv().await.is_some() {
                n += 1;
            }
            n
        });
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = started + run_for;
        let mut tasks = Vec::new();
        for w in 0..window * 2 {
            let (client, ok, failed) = (client.clone(), ok.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    let s = Submission {
                        message_id: format!("msg_{w}_{i}"),
                        channel: Channel::Sms,
                        to: "+250788123456".into(),
                        from: "Herald".into(),
                        content: Content::Text {
                            body: "Your code is 123456".into(),
                        },
                        validity: None,
                        receipts: true,
                    };
                    match client.submit(s).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for t in tasks {
            t.await.expect("submitter");
        }
        let took = started.elapsed();
        let h = client.health();
        client.close().await;
        let receipts = drained.await.unwrap_or(0);
        let n = ok.load(Ordering::Relaxed);
        println!(
            "client window {window:>2}: {n} submitted ({} failed) in {took:.2?} = {:.0} submit/s, last round trip {:?}, {receipts} receipts",
            failed.load(Ordering::Relaxed),
            n as f64 / took.as_secs_f64(),
            h.last_round_trip
        );
    }
    let stats = sim.stats();
    println!(
        "simulator stats: submit_sm {} ok {} deliver_sm {} deliver_sm_resp {} max_in_flight {}",
        stats.submit_sm,
        stats.submit_sm_ok,
        stats.deliver_sm_sent,
        stats.deliver_sm_resp,
        stats.max_in_flight
    );
    sim.shutdown().await;
}

/// Bind, then keep up to 20 000 submit_sm unanswered until `run_for` has
/// passed; count submit_sm_resp.
async fn blast(addr: std::net::SocketAddr, run_for: Duration, counted: Arc<AtomicU64>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::new();
    Pdu::new(
        1,
        Body::BindTransmitter(Bind {
            system_id: "blast".into(),
            password: "blast".into(),
            interface_version: pdu::INTERFACE_VERSION_34,
            ..Default::default()
        }),
    )
    .encode(&mut buf);
    wr.write_all(&buf).await.expect("bind");
    // One batch of 500 pre-encoded submit_sm (no receipts requested).
    let mut batch = BytesMut::new();
    for i in 0..500u32 {
        Pdu::new(
            i + 2,
            Body::SubmitSm(Box::new(ShortMessage {
                source_addr: "Herald".into(),
                source_addr_ton: 5,
                destination_addr: "250788123456".into(),
                dest_addr_ton: 1,
                dest_addr_npi: 1,
                short_message: Bytes::from_static(b"Your code is 123456"),
                ..Default::default()
            })),
        )
        .encode(&mut batch);
    }
    let batch = batch.freeze();
    let sent = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + run_for;
    let writer = {
        let (sent, answered) = (sent.clone(), answered.clone());
        tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                if sent.load(Ordering::Relaxed) - answered.load(Ordering::Relaxed) > 20_000 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                if wr.write_all(&batch).await.is_err() {
                    return;
                }
                sent.fetch_add(500, Ordering::Relaxed);
            }
            // Keep the write half open until the reader is done.
            tokio::time::sleep(Duration::from_secs(2)).await;
        })
    };
    let mut rbuf = BytesMut::with_capacity(256 * 1024);
    let mut bound = false;
    loop {
        while let Ok(Some(p)) = pdu::try_decode(&mut rbuf) {
            match p.body {
                Body::BindTransmitterResp(_) => bound = true,
                Body::SubmitSmResp(_) => {
                    answered.fetch_add(1, Ordering::Relaxed);
                    if tokio::time::Instant::now() < deadline {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
        }
        if tokio::time::Instant::now() >= deadline
            && answered.load(Ordering::Relaxed) >= sent.load(Ordering::Relaxed)
        {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(2), rd.read_buf(&mut rbuf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    assert!(bound, "blaster bound");
    writer.abort();
}
