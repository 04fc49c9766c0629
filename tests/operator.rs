//! The operator's controls in the admin API (what the dashboard's buttons
//! call): pause holds a carrier's queue, drain sends it through the route's
//! other carrier, resume lets it go again; a test message as a tenant; the
//! webhook endpoints' health; the admin stream's authentication and ticks.

mod common;

use std::time::Duration;

use common::carriers::*;
use common::*;
use futures::StreamExt;
use herald_carriers::smpp::Behaviour;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn admin_post(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = client().post(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn send(base: &str, key: &str, tag: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let body = sms("+250788123456", &format!("{tag} {i}"));
        ids.push(accepted_id(post_message(base, key, &body).await).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_a_carriers_queue_drain_moves_it_and_resume_lets_it_go() {
    let a = smsc(Behaviour::default()).await;
    // `b` refuses binds at first: while `a` is paused, nothing is usable.
    let b = smsc(Behaviour {
        refuse_bind: true,
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new();
    env.use_carriers(
        &format!(
            "{}{}",
            smpp_carrier("a", a.addr(), 500.0, 10, 1),
            smpp_carrier("b", b.addr(), 500.0, 10, 1)
        ),
        &route("rw", &["+250"], "failover", &["a", "b"]),
        &["a", "b"],
    );
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let herald = env.start();
    let url = &herald.url;
    assert!(eventually(Duration::from_secs(10), || carrier_bound(url, Some("a"))).await);

    // Refused without the token, unknown carriers are 404, wrong method 405.
    assert_eq!(
        admin_post(url, "/v1/admin/carriers/a/pause", None).await.0,
        401
    );
    let (status, body) = admin_post(url, "/v1/admin/carriers/zz/pause", Some(ADMIN)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let res = client()
        .get(format!("{url}/v1/admin/carriers/a/pause"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    // No other usable carrier: draining `a` is refused and changes nothing.
    let (status, body) = admin_post(url, "/v1/admin/carriers/a/drain", Some(ADMIN)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("no_alternative"))
    );
    assert_eq!(admin_tree(url).await["paused"], json!([]));

    // Paused: bound, but nothing is sent; the messages wait.
    let (status, body) = admin_post(url, "/v1/admin/carriers/a/pause", Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"carrier": "a", "paused": true, "draining": false})
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            let tree = admin_tree(url).await;
            tree["carriers"][0]["paused"] == true && tree["carriers"][0]["bound"] == true
        })
        .await
    );
    let held = send(url, &key, "held", 30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        received(&a, "held").len(),
        0,
        "a paused carrier sends nothing"
    );
    assert_eq!(received(&b, "held").len(), 0);

    // `b` comes up; draining `a` moves its queue to `b`.
    b.update_behaviour(|x| x.refuse_bind = false);
    assert!(eventually(Duration::from_secs(15), || carrier_bound(url, Some("b"))).await);
    let (status, body) = admin_post(url, "/v1/admin/carriers/a/drain", Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(admin_tree(url).await["draining"], json!(["a"]));
    assert!(
        eventually(Duration::from_secs(20), || async {
            received(&b, "held").len() == held.len()
        })
        .await,
        "the held messages went out through b: {} of {}; log:\n{}",
        received(&b, "held").len(),
        held.len(),
        herald.log()
    );
    assert_eq!(received(&a, "held").len(), 0);
    assert!(received(&b, "held").values().all(|n| *n == 1), "each once");

    // Resumed: `a` (first in the failover order) takes new messages again.
    let (status, body) = admin_post(url, "/v1/admin/carriers/a/resume", Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"carrier": "a", "paused": false, "draining": false})
    );
    let tree = admin_tree(url).await;
    assert_eq!(
        (tree["paused"].clone(), tree["draining"].clone()),
        (json!([]), json!([]))
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            admin_tree(url).await["carriers"][0]["usable"] == true
        })
        .await
    );
    let after = send(url, &key, "after", 10).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            received(&a, "after").len() == after.len()
        })
        .await,
        "after resume, a sends again: a {:?}, b {:?}; log:\n{}",
        received(&a, "after"),
        received(&b, "after"),
        herald.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_message_goes_out_as_a_tenant_and_the_admin_views_answer() {
    let sim = smsc(Behaviour::default()).await;
    let mut env = TestEnv::new();
    env.use_carriers(
        &smpp_carrier("sim", sim.addr(), 500.0, 10, 1),
        &route("rw", &["+250"], "failover", &["sim"]),
        &["sim"],
    );
    let (tenant, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let herald = env.start();
    let url = &herald.url;
    assert!(eventually(Duration::from_secs(10), || carrier_bound(url, Some("sim"))).await);

    // A test message, as the given tenant.
    let post = |query: &str, body: Value, token: Option<&str>| {
        let mut req = client()
            .post(format!("{url}/v1/admin/messages{query}"))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let body = sms("+250788123456", "from the operator");
    assert_eq!(post("", body.clone(), None).await.unwrap().status(), 401);
    let res = post(&format!("?tenant_id={tenant}"), body.clone(), Some(ADMIN))
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        eventually(Duration::from_secs(15), || async {
            get_message(url, &key, &id).await["status"] == "delivered"
        })
        .await,
        "the test message is the tenant's, and delivered"
    );
    // Bad input: clear 4xx, nothing accepted.
    let res = post("?tenant_id=tnt_nope", body.clone(), Some(ADMIN))
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["field"],
        "tenant_id"
    );
    let res = post("", json!({"channel": "sms", "to": "12"}), Some(ADMIN))
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let res = post("?nope=1", body, Some(ADMIN)).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(count(&env, "SELECT count(*) FROM messages").await, 1);

    // Webhook endpoints across tenants, with their record.
    let res = client()
        .post(format!("{url}/v1/webhooks/endpoints"))
        .bearer_auth(&key)
        .json(&json!({"url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let hooks = get_json(&format!("{url}/v1/admin/webhooks"), ADMIN).await;
    assert_eq!(hooks["data"][0]["tenant_id"], tenant.as_str());
    assert_eq!(hooks["data"][0]["url"], "http://127.0.0.1:9/hook");
    assert!(hooks["data"][0]["failures_24h"].is_i64());

    // The admin stream: refused without the token; with it, ticks and events.
    let ws = url.replacen("http://", "ws://", 1);
    assert!(
        tokio_tungstenite::connect_async(format!("{ws}/v1/admin/stream"))
            .await
            .is_err()
    );
    assert!(
        tokio_tungstenite::connect_async(format!("{ws}/v1/admin/stream?access_token=wrong"))
            .await
            .is_err()
    );
    let (mut stream, _) =
        tokio_tungstenite::connect_async(format!("{ws}/v1/admin/stream?access_token={ADMIN}"))
            .await
            .expect("admin stream");
    let another = send(url, &key, "live", 1).await.remove(0);
    let mut tick = None;
    let mut delivered = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while (tick.is_none() || !delivered) && tokio::time::Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_secs(2), stream.next()).await
        else {
            continue;
        };
        let frame: Value = serde_json::from_str(&t).unwrap();
        match frame["type"].as_str() {
            // A tick after the last message was accepted.
            Some("tick") if frame["accepted_total"].as_u64() >= Some(2) => tick = Some(frame),
            Some("event")
                if frame["message_id"] == another.as_str() && frame["status"] == "delivered" =>
            {
                assert_eq!(frame["tenant_id"], tenant.as_str());
                delivered = true;
            }
            _ => {}
        }
    }
    assert!(
        tick.is_some(),
        "a tick frame counting both messages accepted"
    );
    assert!(delivered, "the delivered event came over the admin stream");
}
