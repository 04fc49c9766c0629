//! The full loop: an SMS through the actor tree to the SMSC simulator, which
//! answers DELIVRD; the webhook receiver gets every status change after
//! `queued`, signed, and a WebSocket client sees the same events in seq order.

mod common;

use std::time::Duration;

use common::carriers::{route, smpp_carrier, smsc};
use common::{accepted_id, client, eventually, post_message, sms, TestEnv};
use futures::StreamExt;
use herald_carriers::smpp::Behaviour;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "test-admin-token";

async fn bound(url: &str) -> bool {
    let tree: Value = client()
        .get(format!("{url}/v1/admin/actors"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null);
    tree["carriers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["carrier"] == "sim" && c["bound"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_delivered_by_the_simulator_reaches_webhook_and_stream() {
    let sim = smsc(Behaviour::default()).await;
    let mut env = TestEnv::new();
    env.use_carriers(
        &smpp_carrier("sim", sim.addr(), 100.0, 10, 1),
        &route("rw", &["+250"], "failover", &["sim"]),
        &["sim"],
    );
    let (_, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    assert!(eventually(Duration::from_secs(10), || bound(&herald.url)).await);
    let r = common::receiver::start().await;
    let res = client()
        .post(format!("{}/v1/webhooks/endpoints", herald.url))
        .bearer_auth(&key)
        .json(&json!({"url": r.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let secret = res.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let ws_url = format!(
        "{}/v1/stream?access_token={key}",
        herald.url.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let id =
        accepted_id(post_message(&herald.url, &key, &sms("+250788123456", "Muraho")).await).await;

    // The stream: every event up to the final one, in seq order.
    let mut streamed = Vec::new();
    while !streamed.iter().any(|e: &Value| e["final"] == true) {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["message_id"], id.as_str());
            streamed.push(v);
        }
    }
    let seqs: Vec<i64> = streamed
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(seqs, sorted, "in seq order");
    let statuses: Vec<&str> = streamed
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"sent"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"delivered"), "{statuses:?}");

    // The webhooks: the same events, each signed, each once.
    let got = r.wait_for(streamed.len(), Duration::from_secs(20)).await;
    assert!(got.iter().all(|g| common::receiver::verify(&secret, g)));
    let mut hooked: Vec<(i64, String)> = got
        .iter()
        .map(|g| {
            let v = g.json();
            (
                v["data"]["seq"].as_i64().unwrap(),
                v["data"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    hooked.sort();
    let expected: Vec<(i64, String)> = streamed
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(hooked, expected);
}
