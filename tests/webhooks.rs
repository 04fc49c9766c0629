//! Signed webhooks against real PostgreSQL, RabbitMQ and a receiver started
//! by the test. Status events are published straight to `<prefix>.events`,
//! as actors and carrier connections do; the projector applies them and the
//! dispatcher turns them into deliveries.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::receiver::{self, verify, Receiver};
use common::{accepted_id, client, eventually, post_message, sms, TestEnv};
use herald_actors::broker::{Broker, Outgoing};
use herald_actors::payload::{new_event_id, EventTask, StatusEvent};
use herald_actors::{MessageId, TenantId};
use serde_json::{json, Value};

const CARRIER: &str = "smsc-kigali";

async fn send(url: &str, key: &str, body: Value) -> String {
    accepted_id(post_message(url, key, &body).await).await
}

fn status(tenant: &str, id: &str, status: &str) -> EventTask {
    EventTask::StatusV1(StatusEvent {
        event_id: new_event_id(),
        message_id: MessageId::from_trusted(id.into()),
        tenant_id: TenantId::from_trusted(tenant.into()),
        status: status.into(),
        carrier: Some(CARRIER.into()),
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
    broker
        .publish_confirmed(&batch)
        .await
        .expect("publish events");
}

async fn create_endpoint(url: &str, key: &str, target: &str) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/webhooks/endpoints"))
        .bearer_auth(key)
        .json(&json!({"url": target, "description": "test receiver"}))
        .send()
        .await
        .unwrap()
}

/// Create an endpoint; (id, secret).
async fn endpoint(url: &str, key: &str, r: &Receiver) -> (String, String) {
    let res = create_endpoint(url, key, &r.url).await;
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

async fn get(url: &str, key: &str, path: &str) -> (u16, Value) {
    let res = client()
        .get(format!("{url}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let code = res.status().as_u16();
    (code, res.json().await.unwrap_or(Value::Null))
}

/// The README's verification snippet and, when installed, the PyPI
/// `standardwebhooks` package verify every request (an independent
/// implementation of the specification). Skipped without python3.
fn python_verifies(secret: &str, got: &[common::receiver::Received]) {
    const SCRIPT: &str = r#"
import base64, hashlib, hmac, json, sys, time

def verify(secret, headers, body):
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(ts)) > 300:
        return False
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    expected = base64.b64encode(mac).decode()
    return any(hmac.compare_digest(s.split(",", 1)[1], expected)
               for s in headers["webhook-signature"].split() if s.startswith("v1,"))

cases = json.load(sys.stdin)
try:
    from standardwebhooks import Webhook
except ImportError:
    Webhook = None
    print("standardwebhooks not installed; README snippet only", file=sys.stderr)
for c in cases:
    body = c["body"].encode()
    assert verify(c["secret"], c["headers"], body), c
    assert not verify(c["secret"], c["headers"], body + b" "), c
    if Webhook is not None:
        Webhook(c["secret"]).verify(body, c["headers"])
print("verified", len(cases))
"#;
    let cases: Vec<Value> = got
        .iter()
        .map(|g| json!({"secret": secret, "headers": g.headers, "body": g.body}))
        .collect();
    let child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("python3 not found: skipping the independent verification");
        return;
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&cases).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python verification failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

async fn cleanup(env: &TestEnv) {
    let _ = env
        .broker()
        .delete_webhooks(common::WEBHOOK_DELAY_QUEUES)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_secret_shown_once_attempts_visible_and_replay() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let broker = env.broker();
    let r = receiver::start().await;
    let (endpoint_id, secret) = endpoint(&herald.url, &key, &r).await;
    assert!(secret.starts_with("whsec_"));

    // The secret is never shown again.
    let (code, list) = get(&herald.url, &key, "/v1/webhooks/endpoints").await;
    assert_eq!(code, 200);
    assert_eq!(list["data"][0]["id"], endpoint_id.as_str());
    assert!(list["data"][0].get("secret").is_none(), "{list}");
    assert!(!list.to_string().contains(&secret));
    let (_, one) = get(
        &herald.url,
        &key,
        &format!("/v1/webhooks/endpoints/{endpoint_id}"),
    )
    .await;
    assert!(one.get("secret").is_none() && !one.to_string().contains(&secret));
    // Stored sealed, not in clear.
    let stored: Vec<u8> = env
        .db()
        .await
        .query_one("SELECT secret_sealed FROM webhook_endpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!String::from_utf8_lossy(&stored).contains(&secret[6..]));

    let id = send(
        &herald.url,
        &key,
        json!({"channel":"sms","to":"+250788123456","from":"HERALD","body":"Muraho",
               "metadata":{"order":"1234"}}),
    )
    .await;
    publish(
        &broker,
        &[
            status(&tenant, &id, "sending"),
            status(&tenant, &id, "sent"),
        ],
    )
    .await;
    publish(&broker, &[status(&tenant, &id, "delivered")]).await;

    let got = r.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    let mut seqs = Vec::new();
    for g in &got {
        assert!(verify(&secret, g), "signature must verify: {g:#?}");
        assert!(!verify(
            "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZyE=",
            g
        ));
        let v = g.json();
        assert_eq!(v["type"], "message.status");
        assert_eq!(v["data"]["id"], id.as_str());
        assert_eq!(v["data"]["channel"], "sms");
        assert_eq!(v["data"]["to"], "+250788123456");
        assert_eq!(v["data"]["carrier"], CARRIER);
        assert_eq!(v["data"]["metadata"]["order"], "1234");
        assert_eq!(
            g.header("webhook-id"),
            format!("evt_{}", v["data"]["cursor"]),
            "webhook-id names the event"
        );
        seqs.push((
            v["data"]["seq"].as_i64().unwrap(),
            v["data"]["status"].clone(),
        ));
    }
    python_verifies(&secret, &got);
    seqs.sort_by_key(|s| s.0);
    assert_eq!(
        seqs,
        vec![
            (2, json!("sending")),
            (3, json!("sent")),
            (4, json!("delivered"))
        ]
    );
    let last = got
        .iter()
        .find(|g| g.json()["data"]["status"] == "delivered")
        .unwrap();
    assert_eq!(last.json()["data"]["final"], true);
    assert_eq!(last.json()["data"]["message"]["status"], "delivered");

    // Every attempt is on the message.
    let ok = eventually(Duration::from_secs(10), || async {
        let (_, m) = get(&herald.url, &key, &format!("/v1/messages/{id}")).await;
        m["webhook_attempts"].as_array().map_or(0, |a| a.len()) == 3
    })
    .await;
    assert!(ok);
    let (_, m) = get(&herald.url, &key, &format!("/v1/messages/{id}")).await;
    for a in m["webhook_attempts"].as_array().unwrap() {
        assert_eq!(a["outcome"], "succeeded", "{a}");
        assert_eq!(a["status_code"], 200);
        assert_eq!(a["attempt"], 1);
        assert_eq!(a["endpoint_id"], endpoint_id.as_str());
        assert_eq!(a["url"], r.url.as_str());
        assert!(a["latency_ms"].is_i64());
    }

    // Replay re-sends with the same ids.
    let res = client()
        .post(format!(
            "{}/v1/webhooks/endpoints/{endpoint_id}/replay?since=0",
            herald.url
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["replayed"], 3);
    let again = r.wait_for(6, Duration::from_secs(20)).await;
    let mut first: Vec<&str> = again[..3].iter().map(|g| g.header("webhook-id")).collect();
    let mut second: Vec<&str> = again[3..].iter().map(|g| g.header("webhook-id")).collect();
    first.sort();
    second.sort();
    assert_eq!(first, second);

    // Deleted: gone from the listing, nothing more delivered.
    let res = client()
        .delete(format!(
            "{}/v1/webhooks/endpoints/{endpoint_id}",
            herald.url
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (code, _) = get(
        &herald.url,
        &key,
        &format!("/v1/webhooks/endpoints/{endpoint_id}"),
    )
    .await;
    assert_eq!(code, 404);
    let (_, list) = get(&herald.url, &key, "/v1/webhooks/endpoints").await;
    assert_eq!(list["data"], json!([]));
    cleanup(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_keep_the_webhook_id_and_410_disables_the_endpoint() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let broker = env.broker();
    let flaky = receiver::start().await;
    flaky.script(&[500, 500]);
    let (flaky_id, flaky_secret) = endpoint(&herald.url, &key, &flaky).await;
    let gone = receiver::start().await;
    gone.script(&[410]);
    let (gone_id, _) = endpoint(&herald.url, &key, &gone).await;

    let id = send(&herald.url, &key, sms("+250788123456", "Muraho")).await;
    publish(&broker, &[status(&tenant, &id, "sent")]).await;

    let got = flaky.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(
        got.iter().map(|g| g.answered).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    let ids: Vec<&str> = got.iter().map(|g| g.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0] && i.starts_with("evt_")),
        "{ids:?}"
    );
    assert!(got.iter().all(|g| verify(&flaky_secret, g)));
    assert!(got
        .iter()
        .all(|g| g.body == got[0].body || g.json()["data"]["seq"] == 2));

    // 410: disabled at once, the tenant told, nothing retried.
    gone.wait_for(1, Duration::from_secs(20)).await;
    let ok = eventually(Duration::from_secs(10), || async {
        let (_, e) = get(
            &herald.url,
            &key,
            &format!("/v1/webhooks/endpoints/{gone_id}"),
        )
        .await;
        e["enabled"] == false && told(&e)
    })
    .await;
    assert!(ok);
    let (_, e) = get(
        &herald.url,
        &key,
        &format!("/v1/webhooks/endpoints/{gone_id}"),
    )
    .await;
    assert_eq!(e["disabled_reason"], "gone");
    let types: Vec<&str> = e["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["message.status", "endpoint.disabled"], "{e}");

    // Attempts on the message: the flaky endpoint's three, the gone one's one.
    let ok = eventually(Duration::from_secs(10), || async {
        let (_, m) = get(&herald.url, &key, &format!("/v1/messages/{id}")).await;
        m["webhook_attempts"].as_array().map_or(0, |a| a.len()) == 4
    })
    .await;
    assert!(ok);
    let (_, m) = get(&herald.url, &key, &format!("/v1/messages/{id}")).await;
    let flaky_attempts: Vec<(i64, String, Option<i64>)> = m["webhook_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["endpoint_id"] == flaky_id.as_str())
        .map(|a| {
            assert!(a["webhook_id"] == ids[0]);
            (
                a["attempt"].as_i64().unwrap(),
                a["outcome"].as_str().unwrap().to_owned(),
                a["status_code"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        flaky_attempts,
        vec![
            (1, "retrying".into(), Some(500)),
            (2, "retrying".into(), Some(500)),
            (3, "succeeded".into(), Some(200)),
        ]
    );
    let retrying = &m["webhook_attempts"].as_array().unwrap()[0];
    assert!(retrying["next_try_at"].is_string() || retrying["endpoint_id"] == gone_id.as_str());

    // A disabled endpoint gets nothing more.
    publish(&broker, &[status(&tenant, &id, "delivered")]).await;
    flaky.wait_for(4, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gone.received().len(), 1);
    cleanup(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_succeeds_is_given_up_after_the_last_retry() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let r = receiver::start().await;
    r.script(&[503, 500, 500, 500, 500]);
    endpoint(&herald.url, &key, &r).await;
    let id = send(&herald.url, &key, sms("+250788123456", "Muraho")).await;
    publish(&env.broker(), &[status(&tenant, &id, "sent")]).await;
    // 1 + 3 retries (test profile), then no more.
    r.wait_for(4, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(r.received().len(), 4);
    let (_, m) = get(&herald.url, &key, &format!("/v1/messages/{id}")).await;
    let outcomes: Vec<&str> = m["webhook_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["retrying", "retrying", "retrying", "failed"]);
    assert!(m["webhook_attempts"][3]["next_try_at"].is_null());
    cleanup(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_url_takes_precedence_and_is_signed_with_the_callback_secret() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let endpoint_receiver = receiver::start().await;
    endpoint(&herald.url, &key, &endpoint_receiver).await;
    let callback = receiver::start().await;
    let mut body = sms("+250788123456", "Muraho");
    body["callback_url"] = json!(callback.url);
    let id = send(&herald.url, &key, body).await;
    publish(&env.broker(), &[status(&tenant, &id, "sent")]).await;
    let got = callback.wait_for(1, Duration::from_secs(20)).await;
    let (code, s) = get(&herald.url, &key, "/v1/webhooks/callback-secret").await;
    assert_eq!(code, 200);
    assert!(verify(s["secret"].as_str().unwrap(), &got[0]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(endpoint_receiver.received().is_empty());
    cleanup(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_urls_are_refused_unless_allowed_and_bad_requests_are_named() {
    let mut env = TestEnv::new();
    env.set("HERALD__WEBHOOKS__ALLOW_PRIVATE", "false");
    let (_, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest",
        "http://[::1]/hook",
    ] {
        let res = create_endpoint(&herald.url, &key, url).await;
        assert_eq!(res.status(), 422, "{url}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_url", "{url}");
        assert_eq!(v["error"]["field"], "url");
    }
    let res = create_endpoint(&herald.url, &key, "ftp://example.com/").await;
    assert_eq!(res.status(), 422);
    let res = client()
        .post(format!("{}/v1/webhooks/endpoints", herald.url))
        .bearer_auth(&key)
        .json(&json!({"url": "https://example.com/", "colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let res = client()
        .get(format!("{}/v1/webhooks/endpoints", herald.url))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        common::count(&env, "SELECT count(*) FROM webhook_endpoints").await,
        0
    );
    cleanup(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_every_event_once_it_is_back() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    // Reserve a port, then leave it closed: connections are refused.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let res = create_endpoint(&herald.url, &key, &format!("http://{addr}/hook")).await;
    assert_eq!(res.status(), 201);
    let secret = res.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = send(&herald.url, &key, sms("+250788123456", "one")).await;
    let b = send(&herald.url, &key, sms("+250788123457", "two")).await;
    publish(
        &env.broker(),
        &[status(&tenant, &a, "sent"), status(&tenant, &b, "sent")],
    )
    .await;
    let refused = eventually(Duration::from_secs(10), || async {
        common::count(
            &env,
            "SELECT count(*) FROM webhook_attempts WHERE error = 'connection failed'",
        )
        .await
            >= 2
    })
    .await;
    assert!(refused, "first attempts fail while the receiver is down");

    let r = receiver::start_at(&addr).await;
    let got = r.wait_for(2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_all = r.received();
    assert_eq!(got_all.len(), 2, "each event once: {got:#?}");
    let mut ids: Vec<&str> = got_all.iter().map(|g| g.header("webhook-id")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2);
    assert!(got_all.iter().all(|g| verify(&secret, g)));
    let delivered: Vec<String> = got_all
        .iter()
        .map(|g| g.json()["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(delivered.contains(&a) && delivered.contains(&b));
    cleanup(&env).await;
}

/// Whether an endpoint's attempts hold the `endpoint.disabled` notice. It
/// is recorded just after the endpoint is disabled (in a separate write), so
/// a reader may see the endpoint disabled a moment before it.
fn told(endpoint: &Value) -> bool {
    endpoint["attempts"]
        .as_array()
        .is_some_and(|a| a.iter().any(|a| a["type"] == "endpoint.disabled"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let r = receiver::start().await;
    r.script(&[429]);
    endpoint(&herald.url, &key, &r).await;
    let id = send(&herald.url, &key, sms("+250788123456", "Muraho")).await;
    publish(&env.broker(), &[status(&tenant, &id, "sent")]).await;
    let got = r.wait_for(2, Duration::from_secs(20)).await;
    let waited = got[1].at - got[0].at;
    // Without Retry-After the test profile would retry after ~200 ms.
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    cleanup(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_too_long_is_disabled_and_the_tenant_told() {
    let mut env = TestEnv::new();
    env.set("HERALD__WEBHOOKS__DISABLE_AFTER_SECONDS", "0");
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let r = receiver::start().await;
    r.script(&[500; 10]);
    let (endpoint_id, _) = endpoint(&herald.url, &key, &r).await;
    let id = send(&herald.url, &key, sms("+250788123456", "Muraho")).await;
    publish(&env.broker(), &[status(&tenant, &id, "sent")]).await;
    let ok = eventually(Duration::from_secs(20), || async {
        let (_, e) = get(
            &herald.url,
            &key,
            &format!("/v1/webhooks/endpoints/{endpoint_id}"),
        )
        .await;
        e["enabled"] == false && told(&e)
    })
    .await;
    assert!(ok, "disabled after failing past disable_after_seconds");
    let (_, e) = get(
        &herald.url,
        &key,
        &format!("/v1/webhooks/endpoints/{endpoint_id}"),
    )
    .await;
    assert_eq!(e["disabled_reason"], "failing");
    let notice = e["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "endpoint.disabled")
        .cloned();
    assert!(notice.is_some(), "{e}");
    // The retry in flight finds it disabled: nothing more is sent.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(r.received().len(), 2);
    cleanup(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_does_not_hold_back_another_endpoint() {
    let mut env = TestEnv::new();
    env.set("HERALD__WEBHOOKS__ENDPOINT_CONCURRENCY", "1");
    let (tenant, key) = env.create_tenant("acme", &[]);
    // A receiver that accepts connections and never answers.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_url = format!("http://{}/hook", slow.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = slow.accept().await {
            held.push(s);
        }
    });
    let herald = env.start();
    let res = create_endpoint(&herald.url, &key, &slow_url).await;
    assert_eq!(res.status(), 201);
    let fast = receiver::start().await;
    endpoint(&herald.url, &key, &fast).await;
    let mut events = Vec::new();
    for i in 0..10 {
        let id = send(&herald.url, &key, sms("+250788123456", &format!("n{i}"))).await;
        events.push(status(&tenant, &id, "sent"));
    }
    publish(&env.broker(), &events).await;
    // The fast endpoint gets all ten well within the slow one's 3 s timeout.
    let got = fast.wait_for(10, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 10);
    cleanup(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_just_before_a_crash_is_still_delivered() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let mut herald = env.start();
    let r = receiver::start().await;
    endpoint(&herald.url, &key, &r).await;
    let id = send(&herald.url, &key, sms("+250788123456", "Muraho")).await;
    // Killed without a chance to publish anything more.
    herald.child.kill().unwrap();
    herald.child.wait().unwrap();
    // What the projector had committed when the process died.
    env.db()
        .await
        .execute(
            "INSERT INTO message_events (message_id, tenant_id, seq, status, previous_status, \
               final, carrier, detail, at, event_id) \
             VALUES ($1, $2, 2, 'sent', 'queued', false, 'smsc-kigali', '{}', now(), 'crash-1')",
            &[&id, &tenant],
        )
        .await
        .unwrap();
    let _herald = env.start();
    let got = r.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["data"]["status"], "sent");
    assert_eq!(got[0].json()["data"]["id"], id.as_str());
    cleanup(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_receives_only_the_statuses_it_asked_for() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let everything = receiver::start().await;
    endpoint(&herald.url, &key, &everything).await;
    let finals = receiver::start().await;
    let res = client()
        .post(format!("{}/v1/webhooks/endpoints", herald.url))
        .bearer_auth(&key)
        .json(&json!({"url": finals.url, "statuses": ["undelivered", "delivered", "delivered"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["statuses"], json!(["delivered", "undelivered"]));
    let (_, listed) = get(&herald.url, &key, "/v1/webhooks/endpoints").await;
    let statuses: Vec<&Value> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["statuses"])
        .collect();
    assert!(statuses.contains(&&Value::Null), "{listed}");
    assert!(statuses.contains(&&json!(["delivered", "undelivered"])));

    // A status that is not one of Herald's, or none at all: 422, nothing stored.
    for (statuses, field) in [
        (json!(["sent", "deliverd"]), "statuses[1]"),
        (json!([]), "statuses"),
    ] {
        let res = client()
            .post(format!("{}/v1/webhooks/endpoints", herald.url))
            .bearer_auth(&key)
            .json(&json!({"url": finals.url, "statuses": statuses}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{statuses}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_value");
        assert_eq!(v["error"]["field"], field);
    }
    assert_eq!(
        common::count(&env, "SELECT count(*) FROM webhook_endpoints").await,
        2
    );

    let id = send(&herald.url, &key, sms("+250788123456", "Muraho")).await;
    let broker = env.broker();
    publish(&broker, &[status(&tenant, &id, "sent")]).await;
    // Deliveries to one endpoint may arrive out of order (README): the
    // second status goes out once the first has arrived.
    everything.wait_for(1, Duration::from_secs(20)).await;
    publish(&broker, &[status(&tenant, &id, "delivered")]).await;
    let all = everything.wait_for(2, Duration::from_secs(20)).await;
    let wanted = finals.wait_for(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status_of = |r: &common::receiver::Received| r.json()["data"]["status"].clone();
    assert_eq!(
        all.iter().map(status_of).collect::<Vec<_>>(),
        vec![json!("sent"), json!("delivered")]
    );
    assert_eq!(finals.received().len(), 1);
    assert_eq!(status_of(&wanted[0]), json!("delivered"));
    cleanup(&env).await;
}
