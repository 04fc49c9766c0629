//! The durable send path against real PostgreSQL, RabbitMQ and Redis.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{client, eventually, sms, TestEnv};
use serde_json::{json, Value};

async fn post(url: &str, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/messages"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// POST a raw JSON body with an `Idempotency-Key`.
async fn post_once(url: &str, key: &str, idem: &str, body: String) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/messages"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("idempotency-key", idem)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_sent_message_is_stored_then_queued_once() {
    let env = TestEnv::new();
    let (tenant, key) = env.create_tenant("acme", &[]);
    let herald = env.start();

    let res = post(
        &herald.url,
        &key,
        &sms("+250788123456", "Muraho from Kigali"),
    )
    .await;
    assert_eq!(res.status(), 202);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(res.headers().contains_key("x-request-id"));
    assert!(res.headers().contains_key("ratelimit-remaining"));
    let body: Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("msg_"));
    assert_eq!(location, format!("/v1/messages/{id}"));
    assert_eq!(body["status"], "queued");
    assert_eq!(body["channel"], "sms");
    assert_eq!(body["to"], "+250788123456");
    assert_eq!(body["from"], "HERALD");
    assert_eq!(body["segments"], 1);
    assert_eq!(body["encoding"], "gsm7");
    assert!(body["created_at"].is_string());

    // The row is committed, with its first event.
    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT tenant_id, status, to_number FROM messages WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), tenant);
    assert_eq!(row.get::<_, String>(1), "queued");

    // It reaches the tenant's ingress shard exactly once, and leaves the outbox.
    let published = eventually(Duration::from_secs(10), || async {
        db.query_one(
            "SELECT count(*) FROM outbox WHERE $1 = ANY(message_ids)",
            &[&id],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 0
    })
    .await;
    assert!(published, "message was never marked published");
    let queued = env.drain_ingress().await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["type"], "submit.v1");
    assert_eq!(queued[0]["id"], id.as_str());
    assert_eq!(queued[0]["tenant_id"], tenant.as_str());
    assert_eq!(queued[0]["content"]["body"], "Muraho from Kigali");

    // GET shows the message with its timeline.
    let got = common::get_json(&format!("{}{location}", herald.url), &key).await;
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["body"], "Muraho from Kigali");
    assert_eq!(got["events"][0]["status"], "queued");
    assert_eq!(got["events"][0]["seq"], 1);
    assert_eq!(got["created_at"], body["created_at"]);
}

#[tokio::test]
async fn every_channel_is_accepted_with_its_content() {
    let env = TestEnv::new();
    let (_, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let cases = [
        json!({"channel":"sms","to":"+256772123456","from":"12345","body":"Ссылка: ✓", "validity_seconds": 3600, "priority":"high", "metadata":{"order":"42"}}),
        json!({"channel":"whatsapp","to":"+243812345678","from":"+250788123456","template":{"name":"otp","language":"en","params":["123456"]}}),
        json!({"channel":"whatsapp","to":"+243812345678","from":"+250788123456","body":"Bonjour"}),
        json!({"channel":"voice","to":"+250788123456","from":"+250788000111","say":"Your code is 1 2 3"}),
        json!({"channel":"voice","to":"+250788123456","from":"+250788000111","audio_url":"https://example.com/a.mp3","callback_url":"https://example.com/cb"}),
        json!({"channel":"sms","to":"+250788123456","from":"HERALD","body":"later","scheduled_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()}),
    ];
    for case in &cases {
        let res = post(&herald.url, &key, case).await;
        assert_eq!(res.status(), 202, "{case}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["channel"], case["channel"]);
    }
    let ucs2: Value = post(&herald.url, &key, &cases[0])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ucs2["encoding"], "ucs2");
    assert_eq!(ucs2["priority"], "high");
    assert_eq!(ucs2["metadata"]["order"], "42");
    assert!(ucs2["expires_at"].is_string());
    let long: Value = post(&herald.url, &key, &sms("+250788123456", &"a".repeat(307)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(long["segments"], 3);
}

#[tokio::test]
async fn idempotency_key_replays_and_conflicts() {
    let env = TestEnv::new();
    let (_, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let send = |body: String, idem: &'static str| post_once(&herald.url, &key, idem, body);
    let first = send(
        r#"{"channel":"sms","to":"+250788123456","from":"HERALD","body":"once"}"#.into(),
        "order-1",
    )
    .await;
    assert_eq!(first.status(), 202);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first: Value = first.json().await.unwrap();

    // Same body, other key order and spacing: the original answer.
    let again = send(
        r#"{ "body":"once", "from":"HERALD", "to":"+250788123456", "channel":"sms" }"#.into(),
        "order-1",
    )
    .await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    // Different body, same key: 409, nothing created.
    let conflict = send(
        r#"{"channel":"sms","to":"+250788123456","from":"HERALD","body":"twice"}"#.into(),
        "order-1",
    )
    .await;
    assert_eq!(conflict.status(), 409);
    let err: Value = conflict.json().await.unwrap();
    assert_eq!(err["error"]["code"], "idempotency_conflict");

    // Redis forgets (flush): PostgreSQL's unique index still prevents a duplicate.
    let redis = redis::Client::open(common::REDIS).unwrap();
    let mut c = redis.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:idem:*", env.name))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut c)
        .await
        .unwrap();
    let after_flush = send(
        r#"{"channel":"sms","to":"+250788123456","from":"HERALD","body":"once"}"#.into(),
        "order-1",
    )
    .await;
    assert_eq!(after_flush.status(), 202);
    assert_eq!(after_flush.headers()["idempotent-replayed"], "true");
    let after: Value = after_flush.json().await.unwrap();
    assert_eq!(after["id"], first["id"]);
    let conflict = send(
        r#"{"channel":"sms","to":"+250788123456","from":"HERALD","body":"other"}"#.into(),
        "order-1",
    )
    .await;
    assert_eq!(conflict.status(), 409);

    // Concurrent first uses of one key create one message.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            send(
                r#"{"channel":"sms","to":"+250788123456","from":"HERALD","body":"race"}"#.into(),
                "order-2",
            )
        })
        .collect();
    let mut ids = HashSet::new();
    for res in futures::future::join_all(racers).await {
        assert_eq!(res.status(), 202);
        let v: Value = res.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one message for one key");

    let count = common::count(&env, "SELECT count(*) FROM messages").await;
    assert_eq!(count, 2, "order-1 and order-2, nothing else");
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401_and_store_nothing() {
    let env = TestEnv::new();
    let (_, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let url = format!("{}/v1/messages", herald.url);
    let body = sms("+250788123456", "hi");
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("wrong key", Some("Bearer hk_thisisnotakey".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("basic scheme", Some(format!("Basic {key}"))),
        ("key without scheme", Some(key.clone())),
        (
            "key with a byte changed",
            Some(format!("Bearer {}x", &key[..key.len() - 1])),
        ),
    ];
    for (what, header) in cases {
        let mut req = client().post(&url).json(&body);
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{what}");
        assert!(res.headers().contains_key("www-authenticate"), "{what}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], "unauthorized", "{what}");
    }
    let res = client().get(format!("{url}?limit=1")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let count = common::count(&env, "SELECT count(*) FROM messages").await;
    assert_eq!(count, 0);
}

#[tokio::test]
async fn tenants_see_only_their_own_messages() {
    let env = TestEnv::new();
    let (_, key_a) = env.create_tenant("alpha", &[]);
    let (_, key_b) = env.create_tenant("beta", &["--channels", "sms"]);
    let herald = env.start();
    let a: Value = post(&herald.url, &key_a, &sms("+250788123456", "for alpha"))
        .await
        .json()
        .await
        .unwrap();
    let id = a["id"].as_str().unwrap();
    let res = client()
        .get(format!("{}/v1/messages/{id}", herald.url))
        .bearer_auth(&key_b)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let list = common::get_json(&format!("{}/v1/messages", herald.url), &key_b).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // beta may only send SMS.
    let res = post(
        &herald.url,
        &key_b,
        &json!({"channel":"voice","to":"+250788123456","from":"+250788000111","say":"hi"}),
    )
    .await;
    assert_eq!(res.status(), 403);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "channel_not_allowed");
    assert_eq!(err["error"]["field"], "channel");
    // Unknown and malformed ids are 404 too.
    for bad in ["msg_00000000000000000000000000000000", "nope"] {
        let res = client()
            .get(format!("{}/v1/messages/{bad}", herald.url))
            .bearer_auth(&key_a)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{bad}");
    }
}

#[tokio::test]
async fn listing_filters_and_pages_without_gaps() {
    let env = TestEnv::new();
    let (_, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    let mut sent = HashSet::new();
    for i in 0..7 {
        let to = if i % 3 == 0 {
            "+256772123456"
        } else {
            "+250788123456"
        };
        let v: Value = post(&herald.url, &key, &sms(to, &format!("n{i}")))
            .await
            .json()
            .await
            .unwrap();
        sent.insert(v["id"].as_str().unwrap().to_owned());
    }
    let get = |query: String| {
        let url = herald.url.clone();
        let key = key.clone();
        async move {
            client()
                .get(format!("{url}/v1/messages?{query}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
        }
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=3&cursor={c}"),
            None => "limit=3".into(),
        };
        let page: Value = get(q).await.json().await.unwrap();
        for m in page["data"].as_array().unwrap() {
            seen.push(m["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), sent);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "newest first");

    let by_to: Value = get("to=%2B256772123456".into()).await.json().await.unwrap();
    assert_eq!(by_to["data"].as_array().unwrap().len(), 3);
    let voice: Value = get("channel=voice".into()).await.json().await.unwrap();
    assert_eq!(voice["data"].as_array().unwrap().len(), 0);
    let queued: Value = get("status=queued&created_after=2020-01-01T00:00:00Z".into())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(queued["data"].as_array().unwrap().len(), 7);
    for (query, field) in [
        ("status=bogus", "status"),
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("created_after=yesterday", "created_after"),
        ("cursor=zzz", "cursor"),
        ("colour=blue", "colour"),
    ] {
        let res = get(query.into()).await;
        assert_eq!(res.status(), 400, "{query}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["field"], field, "{query}");
    }
}

#[tokio::test]
async fn the_tenant_rate_limit_answers_429_with_headers() {
    let env = TestEnv::new();
    // 1 message/s with the default 2 s burst: 2 pass at once, then 429.
    let (_, key) = env.create_tenant("slow", &["--rate", "1"]);
    let herald = env.start();
    let mut statuses = Vec::new();
    let mut limited = None;
    for i in 0..5 {
        let res = post(&herald.url, &key, &sms("+250788123456", &format!("m{i}"))).await;
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            limited = Some(res);
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        2,
        "{statuses:?}"
    );
    let res = limited.expect("a 429");
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry));
    assert_eq!(res.headers()["ratelimit-limit"], "1");
    assert_eq!(res.headers()["ratelimit-remaining"], "0");
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "rate_limited");
    let count = common::count(&env, "SELECT count(*) FROM messages").await;
    assert_eq!(count, 2, "refused requests store nothing");
}

#[tokio::test]
async fn a_replay_is_answered_even_over_the_rate_limit() {
    let env = TestEnv::new();
    // 1 message/s with a 2 s burst: two new messages use the budget up.
    let (_, key) = env.create_tenant("retrying", &["--rate", "1"]);
    let herald = env.start();
    let send = |idem: &'static str, body: &'static str| {
        post_once(
            &herald.url,
            &key,
            idem,
            sms("+250788123456", body).to_string(),
        )
    };
    let first = send("pay-1", "one").await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    // The remembered answer is written after the response: wait for it.
    let redis = redis::Client::open(common::REDIS).unwrap();
    let mut c = redis.get_multiplexed_async_connection().await.unwrap();
    for _ in 0..100 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:idem:*", env.name))
            .query_async(&mut c)
            .await
            .unwrap();
        if !keys.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(send("pay-2", "two").await.status(), 202);
    assert_eq!(send("pay-3", "three").await.status(), 429, "over the limit");

    let again = send("pay-1", "one").await;
    assert_eq!(again.status(), 202, "a replay costs nothing");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "the remembered answer");
    assert_eq!(send("pay-1", "other").await.status(), 409);
    let count = common::count(&env, "SELECT count(*) FROM messages").await;
    assert_eq!(count, 2);
}

#[tokio::test]
async fn concurrent_sends_share_group_commits() {
    let env = TestEnv::new();
    let (_, key) = env.create_tenant("busy", &["--rate", "100000"]);
    let herald = env.start();
    let http = client();
    let sends: Vec<_> = (0..300)
        .map(|i| {
            let http = http.clone();
            let url = format!("{}/v1/messages", herald.url);
            let key = key.clone();
            async move {
                let res = http
                    .post(url)
                    .bearer_auth(key)
                    .json(&sms("+250788123456", &format!("bulk {i}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202);
                let v: Value = res.json().await.unwrap();
                v["id"].as_str().unwrap().to_owned()
            }
        })
        .collect();
    let ids: HashSet<String> = futures::future::join_all(sends).await.into_iter().collect();
    assert_eq!(ids.len(), 300);

    let metrics = common::metrics(&herald.url).await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(value("herald_accept_batch_size_sum"), 300.0);
    assert!(
        value("herald_accept_batch_size_count") < 300.0,
        "300 concurrent requests were written in fewer statements"
    );

    // All published exactly once.
    let db = env.db().await;
    let done = eventually(Duration::from_secs(15), || async {
        db.query_one("SELECT count(*) FROM outbox", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
    })
    .await;
    assert!(done);
    let queued = env.drain_ingress().await;
    let queued_ids: Vec<String> = queued
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(queued_ids.len(), 300);
    assert_eq!(queued_ids.into_iter().collect::<HashSet<_>>(), ids);
}

#[tokio::test]
async fn health_readiness_metrics_and_request_ids() {
    let env = TestEnv::new();
    let herald = env.start();
    let http = client();
    let res = http
        .get(format!("{}/healthz", herald.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http
        .get(format!("{}/readyz", herald.url))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "trace-me-123");
    let ready: Value = res.json().await.unwrap();
    assert_eq!(ready["checks"]["postgres"], "ok");
    assert_eq!(ready["checks"]["rabbitmq"], "ok");
    assert_eq!(ready["checks"]["redis"], "ok");
    let res = http
        .get(format!("{}/nowhere", herald.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "not_found");
    let res = http
        .delete(format!("{}/v1/messages", herald.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let metrics = common::metrics(&herald.url).await;
    assert!(
        metrics.contains("herald_http_requests_total{route=\"/readyz\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("herald_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("herald_http_requests_total{route=\"unmatched\",status=\"404\"}"));
}

/// One `GET /healthz` on an open connection; true when it was answered 200.
async fn healthz_on(conn: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if conn
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => buf[..n].starts_with(b"HTTP/1.1 200"),
        _ => false,
    }
}

#[tokio::test]
async fn an_idle_connection_is_kept_for_the_configured_keep_alive_then_closed() {
    use tokio::io::AsyncReadExt;
    let mut env = TestEnv::new();
    env.set("HERALD__HTTP__KEEP_ALIVE_SECONDS", "2");
    let herald = env.start();
    let addr = herald.url.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();

    assert!(healthz_on(&mut conn).await);
    // Idle for less than the keep-alive: the same connection still answers.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(healthz_on(&mut conn).await);
    // Idle for longer: Herald has closed it (the read sees the end).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection was not closed: {read:?}"
    );
}

#[tokio::test]
async fn redis_forgetting_its_scripts_or_being_away_does_not_stop_sending() {
    let env = TestEnv::new();
    let (_, key) = env.create_tenant("acme", &[]);
    let herald = env.start();
    assert_eq!(
        post(&herald.url, &key, &sms("+250788123456", "warm"))
            .await
            .status(),
        202
    );

    // Redis restarted and lost its scripts: admission loads the script
    // again and still answers with the rate limit.
    let redis = redis::Client::open(common::REDIS).unwrap();
    let mut c = redis.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .unwrap();
    let res = post(&herald.url, &key, &sms("+250788123456", "after flush")).await;
    assert_eq!(res.status(), 202);
    assert!(res.headers().contains_key("ratelimit-remaining"));

    // Redis away: messages are accepted unthrottled, and a replay is still
    // found (by PostgreSQL's unique index).
    let mut away = TestEnv::new();
    away.set("HERALD__REDIS__URL", "redis://127.0.0.1:9/");
    away.set("HERALD__REDIS__TIMEOUT_MS", "200");
    let (_, key) = away.create_tenant("acme", &[]);
    let herald = away.start();
    let body = sms("+250788123456", "no redis").to_string();
    let first = post_once(&herald.url, &key, "no-redis-1", body.clone()).await;
    assert_eq!(first.status(), 202);
    assert!(!first.headers().contains_key("ratelimit-remaining"));
    let first: Value = first.json().await.unwrap();
    let again = post_once(&herald.url, &key, "no-redis-1", body).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(
        common::count(&away, "SELECT count(*) FROM messages").await,
        1
    );
    let metrics = common::metrics(&herald.url).await;
    assert!(
        common::metric_sum(
            &metrics,
            "herald_redis_errors_total",
            &["operation=\"admit\""]
        ) >= 2.0
    );
}
