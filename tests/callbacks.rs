//! Carrier callbacks: `POST`/`GET /v1/callbacks/{carrier}` against real
//! PostgreSQL and RabbitMQ. Herald runs with a WhatsApp, an HTTP SMS, a voice
//! and an SMPP carrier whose endpoints accept connections and never answer,
//! so messages wait in flight and only the test moves them: it publishes the
//! `sent` event (with the carrier reference) to `<prefix>.events` as a
//! carrier connection would, then posts the carrier's signed callbacks.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use common::proxy::Proxy;
use common::{accepted_id, client, post_message, Herald, TestEnv};
use herald_actors::broker::{Broker, Outgoing};
use herald_actors::payload::{new_event_id, EventTask, StatusEvent};
use herald_actors::{MessageId, TenantId};
use herald_carriers::http_util::hmac_sha256_hex;
use herald_carriers::{voice, whatsapp};
use serde_json::{json, Value};

const WA: &str = "wa-test";
const SMS: &str = "sms-test";
const VOICE: &str = "voice-test";
const SMPP: &str = "smpp-test";
const WA_SECRET: &str = "wa-app-secret";
const WA_VERIFY: &str = "wa-verify-token";
const SMS_SECRET: &str = "sms-callback-secret";
const VOICE_SECRET: &str = "voice-callback-secret";

/// A TCP endpoint that accepts connections and never answers: submissions
/// to it stay in flight, so no carrier event races the test's.
async fn black_hole() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

fn carriers_toml(hole: SocketAddr) -> String {
    format!(
        r#"
[[carrier]]
id = "{WA}"
kind = "whatsapp"
tps = 50
[carrier.whatsapp]
base_url = "http://{hole}/v21.0"
phone_number_id = "106540352242922"
access_token = "token"
app_secret = "{WA_SECRET}"
verify_token = "{WA_VERIFY}"
timeout_ms = 600000

[[carrier]]
id = "{SMS}"
kind = "http_sms"
tps = 50
[carrier.http_sms]
url = "http://{hole}/sms"
body_template = '{{"to":"{{{{to}}}}","text":"{{{{body}}}}"}}'
id_pointer = "/id"
timeout_ms = 600000
[carrier.http_sms.callback]
items_pointer = "/statuses"
ref_pointer = "/id"
status_pointer = "/status"
error_code_pointer = "/error"
status_map = {{ DELIVRD = "delivered", UNDELIV = "undelivered" }}
[carrier.http_sms.callback.signature]
header = "X-Signature"
secret = "{SMS_SECRET}"

[[carrier]]
id = "{VOICE}"
kind = "voice"
tps = 50
[carrier.voice]
base_url = "http://{hole}/voice"
status_callback_url = "http://127.0.0.1/v1/callbacks/{VOICE}"
callback_secret = "{VOICE_SECRET}"
timeout_ms = 600000
{smpp}"#,
        smpp = common::carriers::smpp_carrier(SMPP, hole, 10.0, 1, 1)
    )
}

const ROUTES: &str = r#"
[[route]]
id = "wa-all"
channel = "whatsapp"
prefixes = ["+"]
carriers = ["wa-test"]

[[route]]
id = "sms-all"
channel = "sms"
prefixes = ["+"]
carriers = ["sms-test"]

[[route]]
id = "voice-all"
channel = "voice"
prefixes = ["+"]
carriers = ["voice-test"]
"#;

struct Setup {
    env: TestEnv,
    herald: Herald,
    tenant: String,
    key: String,
    broker: Broker,
}

async fn setup() -> Setup {
    setup_with(&[]).await
}

async fn setup_with(extra_env: &[(&str, String)]) -> Setup {
    let hole = black_hole().await;
    let mut env = TestEnv::new();
    env.use_carriers(&carriers_toml(hole), ROUTES, &[WA, SMS, VOICE, SMPP]);
    let (tenant, key) = env.create_tenant("acme", &["--rate", "1000"]);
    let herald = Herald::start_with(&env, extra_env);
    let broker = env.broker();
    Setup {
        env,
        herald,
        tenant,
        key,
        broker,
    }
}

/// Publish the `sent` event a carrier connection would, with its reference,
/// once the real connection has logged `sending` (its submission then hangs
/// in the black hole). Publishing earlier would let that `sending` land late,
/// after the test's callbacks, as the message's last log entry.
async fn sent(s: &Setup, id: &str, carrier: &str, carrier_ref: &str) {
    wait_status(s, id, "sending").await;
    let event = EventTask::StatusV1(StatusEvent {
        event_id: new_event_id(),
        message_id: MessageId::from_trusted(id.into()),
        tenant_id: TenantId::from_trusted(s.tenant.clone()),
        status: "sent".into(),
        carrier: Some(carrier.into()),
        carrier_refs: vec![carrier_ref.into()],
        error: None,
        at: Utc::now(),
    });
    s.broker
        .publish_confirmed(&[Outgoing {
            exchange: s.broker.topology().events_exchange(),
            routing_key: "status".into(),
            body: serde_json::to_vec(&event).unwrap(),
            priority: 0,
        }])
        .await
        .expect("publish sent");
}

async fn message(s: &Setup, id: &str) -> Value {
    client()
        .get(format!("{}/v1/messages/{id}", s.herald.url))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_status(s: &Setup, id: &str, want: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = message(s, id).await;
        if m["status"] == want {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "message never became {want}: {m}\nlog:\n{}",
            s.herald.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn statuses(m: &Value) -> Vec<String> {
    m["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

async fn callback(
    s: &Setup,
    carrier: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}/v1/callbacks/{carrier}", s.herald.url))
        .header("Content-Type", content_type)
        .body(body.to_vec());
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn wa_statuses(wamid: &str, status: &str, ts: u64) -> Vec<u8> {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "statuses": [{"id": wamid, "status": status, "timestamp": ts.to_string(),
                          "recipient_id": "243812345678"}]
        }}]}]
    })
    .to_string()
    .into_bytes()
}

fn wa_signed(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![(
        whatsapp::SIGNATURE_HEADER,
        whatsapp::webhook::sign(WA_SECRET.as_bytes(), body),
    )]
}

async fn send(s: &Setup, body: Value) -> String {
    accepted_id(post_message(&s.herald.url, &s.key, &body).await).await
}

/// A counter's value for one label set (0 when not exported yet).
async fn counter(s: &Setup, name: &str, labels: &[&str]) -> f64 {
    common::metric_sum(&common::metrics(&s.herald.url).await, name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_statuses_are_verified_and_move_the_message_to_delivered_then_read() {
    let s = setup().await;
    let db = s.env.db().await;
    let id = send(
        &s,
        json!({"channel":"whatsapp","to":"+243812345678","from":"+250788123456","body":"Bonjour"}),
    )
    .await;
    let wamid = "wamid.HBgMMjQzODEyMzQ1Njc4FQIAERgSQjFEMkUzRjQ1Njc4OUFCQ0QA";
    sent(&s, &id, WA, wamid).await;
    wait_status(&s, &id, "sent").await;

    // Forged, missing and malformed signatures: 401, nothing published.
    let delivered = wa_statuses(wamid, "delivered", 1_700_000_005);
    let forged = vec![(
        whatsapp::SIGNATURE_HEADER,
        whatsapp::webhook::sign(b"not-the-secret", &delivered),
    )];
    for headers in [
        forged,
        vec![],
        vec![(whatsapp::SIGNATURE_HEADER, "sha256=zz".to_owned())],
    ] {
        let (status, body) = callback(&s, WA, "application/json", &headers, &delivered).await;
        assert_eq!(status, 401, "{headers:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_signature");
    }

    // Correctly signed but not JSON, or JSON without entries: 400.
    let garbage = b"{\"entry\": [".to_vec();
    let (status, body) = callback(&s, WA, "application/json", &wa_signed(&garbage), &garbage).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_json");
    let empty = b"{}".to_vec();
    let (status, body) = callback(&s, WA, "application/json", &wa_signed(&empty), &empty).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "entry");

    // Signed delivered, then read.
    let (status, body) = callback(
        &s,
        WA,
        "application/json",
        &wa_signed(&delivered),
        &delivered,
    )
    .await;
    assert_eq!((status, &body), (200, &json!({"received": 1})));
    let m = wait_status(&s, &id, "delivered").await;
    assert_eq!(m["carrier"], WA);
    let read = wa_statuses(wamid, "read", 1_700_000_009);
    let (status, _) = callback(&s, WA, "application/json", &wa_signed(&read), &read).await;
    assert_eq!(status, 200);
    // The carrier retries the delivered callback (our 200 was lost): same
    // event id, logged once.
    let (status, _) = callback(
        &s,
        WA,
        "application/json",
        &wa_signed(&delivered),
        &delivered,
    )
    .await;
    assert_eq!(status, 200);
    let m = wait_status(&s, &id, "read").await;
    assert_eq!(
        m["events"].as_array().unwrap().last().unwrap()["final"],
        true
    );
    // Give a stray event time to land, then check the log: the refused
    // callbacks left nothing (they came first, so they would show up as a
    // second delivered), the retry was recognised.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = message(&s, &id).await;
    let log = statuses(&m);
    assert_eq!(
        log.iter().filter(|s| *s == "delivered").count(),
        1,
        "{log:?}"
    );
    assert_eq!(log.iter().filter(|s| *s == "read").count(), 1, "{log:?}");
    let parked: i64 = db
        .query_one("SELECT count(*) FROM pending_receipts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(parked, 0);

    // Meta's subscription handshake.
    let url = format!("{}/v1/callbacks/{WA}", s.herald.url);
    let res = client()
        .get(format!(
            "{url}?hub.mode=subscribe&hub.verify_token={WA_VERIFY}&hub.challenge=1158201444"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(res.text().await.unwrap(), "1158201444");
    let res = client()
        .get(format!(
            "{url}?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1158201444"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_verify_token");

    // Carriers that take no callbacks, or not this one.
    let (status, _) = callback(&s, "nobody", "application/json", &[], b"{}").await;
    assert_eq!(status, 404);
    let (status, _) = callback(&s, SMPP, "application/json", &[], b"{}").await;
    assert_eq!(status, 404);
    let res = client()
        .get(format!("{}/v1/callbacks/{VOICE}", s.herald.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);

    assert!(counter(&s, "herald_callbacks_total", &[WA, "invalid_signature"]).await >= 3.0);
    assert!(counter(&s, "herald_callbacks_total", &[WA, "outcome=\"accepted\""]).await >= 3.0);
    assert!(counter(&s, "herald_callback_receipts_total", &[WA]).await >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_and_http_sms_callbacks_correlate() {
    let s = setup().await;

    // Voice: form-encoded status callback signed with X-Voice-Signature.
    let call = send(
        &s,
        json!({"channel":"voice","to":"+250788123456","from":"+250788000111","say":"Your code is 1 2 3"}),
    )
    .await;
    let sid = "CA0f3c1d9a6b2e4c8d9e0f1a2b3c4d5e6f";
    sent(&s, &call, VOICE, sid).await;
    wait_status(&s, &call, "sent").await;
    let form = format!("CallSid={sid}&CallStatus=completed&CallDuration=12&Timestamp=1700000100");
    let form = form.as_bytes();
    let form_type = "application/x-www-form-urlencoded";
    let (status, body) = callback(
        &s,
        VOICE,
        form_type,
        &[(voice::SIGNATURE_HEADER, "00".repeat(32))],
        form,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_signature");
    // Past http.max_body_bytes: 413, as for the rest of the API.
    let huge = vec![b'a'; 70_000];
    let (status, body) = callback(&s, VOICE, form_type, &[], &huge).await;
    assert_eq!(status, 413, "{body}");
    let no_sid = b"CallStatus=completed";
    let (status, body) = callback(
        &s,
        VOICE,
        form_type,
        &[(
            voice::SIGNATURE_HEADER,
            voice::sign(VOICE_SECRET.as_bytes(), no_sid),
        )],
        no_sid,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "CallSid");
    let (status, body) = callback(
        &s,
        VOICE,
        form_type,
        &[(
            voice::SIGNATURE_HEADER,
            voice::sign(VOICE_SECRET.as_bytes(), form),
        )],
        form,
    )
    .await;
    assert_eq!((status, &body), (200, &json!({"received": 1})));
    let m = wait_status(&s, &call, "completed").await;
    assert_eq!(m["carrier"], VOICE);
    assert_eq!(statuses(&m).last().unwrap(), "completed");

    // HTTP SMS: the carrier's own JSON, read by its mapping, signed per its
    // configuration.
    let sms = send(&s, common::sms("+250788123456", "Muraho")).await;
    sent(&s, &sms, SMS, "MSG-0077").await;
    wait_status(&s, &sms, "sent").await;
    let report = json!({"statuses": [{"id": "MSG-0077", "status": "DELIVRD", "error": ""}]})
        .to_string()
        .into_bytes();
    let signed = |body: &[u8]| vec![("X-Signature", hmac_sha256_hex(SMS_SECRET.as_bytes(), body))];
    let (status, body) = callback(&s, SMS, "application/json", &[], &report).await;
    assert_eq!(status, 401, "unsigned: {body}");
    let malformed = b"{\"statuses\": [{\"status\": \"DELIVRD\"}]}";
    let (status, body) = callback(&s, SMS, "application/json", &signed(malformed), malformed).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "missing_field");
    let not_json = b"id=MSG-0077&status=DELIVRD";
    let (status, body) = callback(&s, SMS, "application/json", &signed(not_json), not_json).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_json");
    let (status, body) = callback(&s, SMS, "application/json", &signed(&report), &report).await;
    assert_eq!((status, &body), (200, &json!({"received": 1})));
    let m = wait_status(&s, &sms, "delivered").await;
    assert_eq!(m["carrier"], SMS);
    assert_eq!(statuses(&m).iter().filter(|s| *s == "delivered").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_down_answers_503_so_the_carrier_retries() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let s = setup_with(&[(
        "HERALD__BROKER__URL",
        format!("amqp://guest:guest@{}/%2f", proxy.addr),
    )])
    .await;
    let call = send(
        &s,
        json!({"channel":"voice","to":"+250788123456","from":"+250788000111","say":"Hello"}),
    )
    .await;
    let sid = "CA1111222233334444555566667777aaaa";
    sent(&s, &call, VOICE, sid).await;
    wait_status(&s, &call, "sent").await;
    let body = json!({"CallSid": sid, "CallStatus": "busy"}).to_string();
    let headers = [(
        voice::SIGNATURE_HEADER,
        voice::sign(VOICE_SECRET.as_bytes(), body.as_bytes()),
    )];

    proxy.cut();
    let res = client()
        .post(format!("{}/v1/callbacks/{VOICE}", s.herald.url))
        .header("Content-Type", "application/json")
        .header(headers[0].0, &headers[0].1)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "service_unavailable");

    proxy.restore();
    // The carrier retries until Herald has RabbitMQ back.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = callback(&s, VOICE, "application/json", &headers, body.as_bytes()).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            std::time::Instant::now() < deadline,
            "RabbitMQ never came back; log:\n{}",
            s.herald.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let m = wait_status(&s, &call, "busy").await;
    assert_eq!(statuses(&m).iter().filter(|s| *s == "busy").count(), 1);
    assert!(counter(&s, "herald_callbacks_total", &[VOICE, "unavailable"]).await >= 1.0);
}
