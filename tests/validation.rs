//! Bad input gets a clear 4xx with a code and the field, and changes nothing.

mod common;

use common::{client, TestEnv};
use serde_json::{json, Value};

/// (what, content type, raw body, status, code, field)
type Case = (
    &'static str,
    &'static str,
    String,
    u16,
    &'static str,
    Option<&'static str>,
);

fn cases() -> Vec<Case> {
    let ok = json!({"channel":"sms","to":"+250788123456","from":"HERALD","body":"hi"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b.to_string()
    };
    let without = |k: &str| {
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove(k);
        b.to_string()
    };
    let json = "application/json";
    let wa = |extra: Value| {
        let mut b = json!({"channel":"whatsapp","to":"+250788123456","from":"+250788000111"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    let voice = |extra: Value| {
        let mut b = json!({"channel":"voice","to":"+250788123456","from":"+250788000111"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    let meta: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    vec![
        (
            "malformed JSON",
            json,
            "{\"channel\":".into(),
            400,
            "invalid_json",
            None,
        ),
        ("empty body", json, "".into(), 400, "invalid_json", None),
        (
            "not JSON at all",
            json,
            "channel=sms".into(),
            400,
            "invalid_json",
            None,
        ),
        (
            "trailing garbage",
            json,
            format!("{ok} x"),
            400,
            "invalid_json",
            None,
        ),
        (
            "wrong content type",
            "text/plain",
            ok.to_string(),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "form content type",
            "application/x-www-form-urlencoded",
            ok.to_string(),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "body over 64 KiB",
            json,
            with("body", json!("a".repeat(70_000))),
            413,
            "payload_too_large",
            None,
        ),
        (
            "JSON array",
            json,
            "[1,2]".into(),
            422,
            "invalid_type",
            Some("body"),
        ),
        (
            "unknown field",
            json,
            with("colour", json!("blue")),
            422,
            "unknown_field",
            Some("colour"),
        ),
        (
            "missing channel",
            json,
            without("channel"),
            422,
            "missing_field",
            Some("channel"),
        ),
        (
            "missing to",
            json,
            without("to"),
            422,
            "missing_field",
            Some("to"),
        ),
        (
            "missing from",
            json,
            without("from"),
            422,
            "missing_field",
            Some("from"),
        ),
        (
            "unknown channel",
            json,
            with("channel", json!("fax")),
            422,
            "invalid_value",
            Some("channel"),
        ),
        (
            "to is a number",
            json,
            with("to", json!(250788123456u64)),
            422,
            "invalid_type",
            Some("to"),
        ),
        (
            "to without plus",
            json,
            with("to", json!("250788123456")),
            422,
            "invalid_phone_number",
            Some("to"),
        ),
        (
            "to with letters",
            json,
            with("to", json!("+25078812345a")),
            422,
            "invalid_phone_number",
            Some("to"),
        ),
        (
            "to too short",
            json,
            with("to", json!("+2507")),
            422,
            "invalid_phone_number",
            Some("to"),
        ),
        (
            "to not in the plan",
            json,
            with("to", json!("+2500000000")),
            422,
            "invalid_phone_number",
            Some("to"),
        ),
        (
            "sender id too long",
            json,
            with("from", json!("ABCDEFGHIJKL")),
            422,
            "invalid_sender",
            Some("from"),
        ),
        (
            "sender id with accents",
            json,
            with("from", json!("HÉRALD")),
            422,
            "invalid_sender",
            Some("from"),
        ),
        (
            "empty sender",
            json,
            with("from", json!("")),
            422,
            "invalid_sender",
            Some("from"),
        ),
        (
            "sms without body",
            json,
            without("body"),
            422,
            "missing_field",
            Some("body"),
        ),
        (
            "sms with blank body",
            json,
            with("body", json!("   ")),
            422,
            "empty_field",
            Some("body"),
        ),
        (
            "sms over max segments",
            json,
            with("body", json!("a".repeat(153 * 10 + 1))),
            422,
            "too_many_segments",
            Some("body"),
        ),
        (
            "sms ucs2 over max segments",
            json,
            with("body", json!("ж".repeat(67 * 10 + 1))),
            422,
            "too_many_segments",
            Some("body"),
        ),
        (
            "sms with template",
            json,
            with("template", json!({"name":"otp","language":"en"})),
            422,
            "field_not_allowed",
            Some("template"),
        ),
        (
            "sms with say",
            json,
            with("say", json!("hello")),
            422,
            "field_not_allowed",
            Some("say"),
        ),
        (
            "whatsapp with neither",
            json,
            wa(json!({})),
            422,
            "missing_field",
            Some("body"),
        ),
        (
            "whatsapp with both",
            json,
            wa(json!({"body":"x","template":{"name":"otp","language":"en"}})),
            422,
            "conflicting_fields",
            Some("template"),
        ),
        (
            "whatsapp alphanumeric sender",
            json,
            json!({"channel":"whatsapp","to":"+250788123456","from":"HERALD","body":"x"})
                .to_string(),
            422,
            "invalid_sender",
            Some("from"),
        ),
        (
            "template bad name",
            json,
            wa(json!({"template":{"name":"Bad Name","language":"en"}})),
            422,
            "invalid_template",
            Some("template.name"),
        ),
        (
            "template bad language",
            json,
            wa(json!({"template":{"name":"otp","language":"english"}})),
            422,
            "invalid_template",
            Some("template.language"),
        ),
        (
            "template missing language",
            json,
            wa(json!({"template":{"name":"otp"}})),
            422,
            "missing_field",
            Some("template.language"),
        ),
        (
            "template unknown field",
            json,
            wa(json!({"template":{"name":"otp","language":"en","lang":"x"}})),
            422,
            "unknown_field",
            Some("template.lang"),
        ),
        (
            "template empty param",
            json,
            wa(json!({"template":{"name":"otp","language":"en","params":[""]}})),
            422,
            "invalid_template",
            Some("template.params[0]"),
        ),
        (
            "whatsapp body too long",
            json,
            wa(json!({"body":"a".repeat(4097)})),
            422,
            "body_too_long",
            Some("body"),
        ),
        (
            "voice with neither",
            json,
            voice(json!({})),
            422,
            "missing_field",
            Some("say"),
        ),
        (
            "voice with both",
            json,
            voice(json!({"say":"x","audio_url":"https://example.com/a.mp3"})),
            422,
            "conflicting_fields",
            Some("audio_url"),
        ),
        (
            "voice with body",
            json,
            voice(json!({"body":"x"})),
            422,
            "field_not_allowed",
            Some("body"),
        ),
        (
            "voice audio ftp url",
            json,
            voice(json!({"audio_url":"ftp://example.com/a.mp3"})),
            422,
            "invalid_url",
            Some("audio_url"),
        ),
        (
            "callback not a URL",
            json,
            with("callback_url", json!("not a url")),
            422,
            "invalid_url",
            Some("callback_url"),
        ),
        (
            "callback relative",
            json,
            with("callback_url", json!("/hooks")),
            422,
            "invalid_url",
            Some("callback_url"),
        ),
        (
            "validity negative",
            json,
            with("validity_seconds", json!(-5)),
            422,
            "invalid_value",
            Some("validity_seconds"),
        ),
        (
            "validity too long",
            json,
            with("validity_seconds", json!(10_000_000)),
            422,
            "invalid_validity",
            Some("validity_seconds"),
        ),
        (
            "validity a string",
            json,
            with("validity_seconds", json!("3600")),
            422,
            "invalid_type",
            Some("validity_seconds"),
        ),
        (
            "scheduled_at not a time",
            json,
            with("scheduled_at", json!("tomorrow")),
            422,
            "invalid_value",
            Some("scheduled_at"),
        ),
        (
            "scheduled_at in the past",
            json,
            with("scheduled_at", json!("2020-01-01T00:00:00Z")),
            422,
            "invalid_schedule",
            Some("scheduled_at"),
        ),
        (
            "scheduled_at too far",
            json,
            with("scheduled_at", json!("2099-01-01T00:00:00Z")),
            422,
            "invalid_schedule",
            Some("scheduled_at"),
        ),
        (
            "priority unknown",
            json,
            with("priority", json!("urgent")),
            422,
            "invalid_value",
            Some("priority"),
        ),
        (
            "metadata not an object",
            json,
            with("metadata", json!(["a"])),
            422,
            "invalid_type",
            Some("metadata"),
        ),
        (
            "metadata too many keys",
            json,
            with("metadata", Value::Object(meta)),
            422,
            "invalid_metadata",
            Some("metadata"),
        ),
        (
            "metadata non-string value",
            json,
            with("metadata", json!({"n": 5})),
            422,
            "invalid_metadata",
            Some("metadata.n"),
        ),
        (
            "metadata value too long",
            json,
            with("metadata", json!({"n": "x".repeat(501)})),
            422,
            "invalid_metadata",
            Some("metadata.n"),
        ),
        (
            "metadata key too long",
            json,
            with("metadata", json!({"k".repeat(41): "v"})),
            422,
            "invalid_metadata",
            Some("metadata"),
        ),
    ]
}

#[tokio::test]
async fn every_bad_input_is_a_clear_4xx_and_stores_nothing() {
    let env = TestEnv::new();
    let (_, key) = env.create_tenant("acme", &["--rate", "100000"]);
    let herald = env.start();
    let cases = cases();
    assert!(cases.len() >= 30);
    let http = client();
    let mut failures = Vec::new();
    for (what, content_type, body, status, code, field) in &cases {
        let res = http
            .post(format!("{}/v1/messages", herald.url))
            .bearer_auth(&key)
            .header("content-type", *content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let got_status = res.status().as_u16();
        let err: Value = res.json().await.unwrap_or(Value::Null);
        let got_code = err["error"]["code"].as_str().unwrap_or("");
        let got_field = err["error"]["field"].as_str();
        let message = err["error"]["message"].as_str().unwrap_or("");
        if got_status != *status || got_code != *code || got_field != *field || message.is_empty() {
            failures.push(format!(
                "{what}: expected {status} {code} {field:?}, got {got_status} {got_code} {got_field:?} ({err})"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // A bad Idempotency-Key is refused too.
    let res = http
        .post(format!("{}/v1/messages", herald.url))
        .bearer_auth(&key)
        .header("idempotency-key", "x".repeat(300))
        .json(&common::sms("+250788123456", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    let count = common::count(&env, "SELECT count(*) FROM messages").await;
    assert_eq!(count, 0, "nothing stored for refused requests");
    assert_eq!(env.ingress_depth().await, 0, "nothing queued");
    let log = herald.log();
    assert!(!log.contains("panicked"), "{log}");
}
