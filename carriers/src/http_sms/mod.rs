//! HTTP SMS: a generic JSON REST carrier, described by configuration rather
//! than code, and its simulator ([`sim`]).
//!
//! Data enters as a [`Submission`]: the configured JSON body template is
//! filled in (placeholders such as `"{{to}}"` are replaced by JSON-escaped
//! values) and POSTed to the carrier's URL with the configured auth header.
//! The carrier's id is read from the answer at a JSON pointer and leaves as
//! [`Submitted`]; failures leave as [`CarrierError`] (429 throttles, honouring
//! `Retry-After`; 5xx and timeouts are temporary; other 4xx are permanent;
//! failed connects lose the connection).
//!
//! Status callbacks come back through Herald's `POST /v1/callbacks/{carrier}`;
//! [`CallbackMapping::parse`] (or [`parse_callback`]) turns their bodies into
//! [`Receipt`]s using JSON pointers for the reference, status and error code
//! and a table from the carrier's status words to [`ReceiptState`].

pub mod sim;

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::connection::{
    CarrierConnection, CarrierError, Content, Health, Receipt, ReceiptState, Submission, Submitted,
};
pub use crate::http_util::AuthHeader;
use crate::http_util::{self, json_scalar, HealthTracker, SignatureError};

/// Placeholders a body template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "to",
    "to_digits",
    "from",
    "body",
    "message_id",
    "callback_url",
    "validity_secs",
];

/// How one HTTP SMS carrier is spoken to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpSmsConfig {
    /// Where submissions are POSTed.
    pub url: String,
    /// Sent with every submission.
    #[serde(default)]
    pub auth: Option<AuthHeader>,
    /// The request body: JSON (or a string holding JSON) whose string values
    /// may contain the [`PLACEHOLDERS`] as `{{name}}`. A value that is exactly
    /// one placeholder becomes that value; placeholders inside longer strings
    /// are substituted in place. Keys are left alone.
    pub body_template: Value,
    /// JSON pointer (RFC 6901) to the carrier's id in a successful answer,
    /// e.g. `/message_id` or `/messages/0/id`; an array of ids there gives
    /// one carrier reference per part.
    pub id_pointer: String,
    /// Where the carrier should send status callbacks (`{{callback_url}}`).
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Deadline for one submission, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How the carrier's status callbacks read.
    pub callback: CallbackMapping,
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// How to read a carrier's status callbacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackMapping {
    /// JSON pointer to an array of status objects when the carrier batches
    /// them (e.g. `/statuses`). Without it, a body that is an array is read as
    /// a batch and an object as one status.
    #[serde(default)]
    pub items_pointer: Option<String>,
    /// Pointer (within one status object) to the carrier's id.
    pub ref_pointer: String,
    /// Pointer to the carrier's status word.
    pub status_pointer: String,
    /// Pointer to the carrier's error code, if it sends one.
    #[serde(default)]
    pub error_code_pointer: Option<String>,
    /// Pointer to the time of the status: RFC 3339 or Unix seconds.
    #[serde(default)]
    pub timestamp_pointer: Option<String>,
    /// Carrier status word -> Herald state; matched case-insensitively.
    /// Statuses not in the table are skipped (and logged).
    pub status_map: HashMap<String, ReceiptState>,
    /// If set, callbacks must carry this signature.
    #[serde(default)]
    pub signature: Option<CallbackSignature>,
}

/// A hex HMAC-SHA256 of the raw callback body, in a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackSignature {
    /// e.g. `X-Signature`.
    pub header: String,
    pub secret: String,
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("body template is not valid JSON: {0}")]
    Template(String),
    #[error("unknown placeholder {{{{{0}}}}} in body template")]
    UnknownPlaceholder(String),
    #[error("invalid JSON pointer {0:?}: it must be empty or start with '/'")]
    Pointer(String),
    #[error("cannot build HTTP client: {0}")]
    Client(String),
}

/// A callback body that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("callback body is not JSON: {0}")]
    Json(String),
    #[error("callback has no array at {0}")]
    NoItems(String),
    #[error("callback status has no carrier reference at {0}")]
    MissingRef(String),
    #[error("callback status has no status at {0}")]
    MissingStatus(String),
    #[error("callback signature refused: {0}")]
    Signature(#[from] SignatureError),
}

fn check_pointer(p: &str) -> Result<(), ConfigError> {
    if p.is_empty() || p.starts_with('/') {
        Ok(())
    } else {
        Err(ConfigError::Pointer(p.to_owned()))
    }
}

impl CallbackMapping {
    fn validate(&self) -> Result<(), ConfigError> {
        check_pointer(&self.ref_pointer)?;
        check_pointer(&self.status_pointer)?;
        for p in [
            &self.items_pointer,
            &self.error_code_pointer,
            &self.timestamp_pointer,
        ]
        .into_iter()
        .flatten()
        {
            check_pointer(p)?;
        }
        Ok(())
    }

    /// Check a callback's signature header against [`Self::signature`];
    /// always passes when no signature is configured.
    pub fn verify(&self, body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
        match &self.signature {
            Some(sig) => http_util::verify_signature_header(sig.secret.as_bytes(), body, header),
            None => Ok(()),
        }
    }

    /// Read a callback body into receipts, in the order the carrier listed
    /// them. Statuses the table does not know are skipped.
    pub fn parse(&self, body: &[u8]) -> Result<Vec<Receipt>, CallbackError> {
        let doc: Value =
            serde_json::from_slice(body).map_err(|e| CallbackError::Json(e.to_string()))?;
        let items: Vec<&Value> = match &self.items_pointer {
            Some(p) => doc
                .pointer(p)
                .and_then(Value::as_array)
                .ok_or_else(|| CallbackError::NoItems(p.clone()))?
                .iter()
                .collect(),
            None => match &doc {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            },
        };
        let mut receipts = Vec::with_capacity(items.len());
        for item in items {
            let carrier_ref = item
                .pointer(&self.ref_pointer)
                .and_then(json_scalar)
                .ok_or_else(|| CallbackError::MissingRef(self.ref_pointer.clone()))?;
            let status = item
                .pointer(&self.status_pointer)
                .and_then(json_scalar)
                .ok_or_else(|| CallbackError::MissingStatus(self.status_pointer.clone()))?;
            let Some(state) = self.lookup(&status) else {
                tracing::warn!(status = %status, "http sms callback: unmapped carrier status skipped");
                continue;
            };
            let error_code = self
                .error_code_pointer
                .as_deref()
                .and_then(|p| item.pointer(p))
                .and_then(json_scalar)
                .filter(|c| !c.is_empty());
            let done_at = self
                .timestamp_pointer
                .as_deref()
                .and_then(|p| item.pointer(p))
                .and_then(http_util::parse_timestamp);
            receipts.push(Receipt {
                carrier_ref,
                state,
                error_code,
                done_at,
                raw: item.to_string(),
                is_final: state.is_final(),
            });
        }
        Ok(receipts)
    }

    fn lookup(&self, status: &str) -> Option<ReceiptState> {
        self.status_map.get(status).copied().or_else(|| {
            self.status_map
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(status))
                .map(|(_, v)| *v)
        })
    }
}

/// Read a callback body with `mapping` (see [`CallbackMapping::parse`]).
pub fn parse_callback(
    mapping: &CallbackMapping,
    body: &[u8],
) -> Result<Vec<Receipt>, CallbackError> {
    mapping.parse(body)
}

/// The values a template's placeholders take for one submission.
fn placeholder_value(name: &str, s: &Submission, text: &str, cfg: &HttpSmsConfig) -> String {
    match name {
        "to" => s.to.clone(),
        "to_digits" => s.to.trim_start_matches('+').to_owned(),
        "from" => s.from.clone(),
        "body" => text.to_owned(),
        "message_id" => s.message_id.clone(),
        "callback_url" => cfg.callback_url.clone().unwrap_or_default(),
        "validity_secs" => s
            .validity
            .map(|v| v.as_secs().to_string())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Every `{{name}}` in `s`, in order.
fn placeholders_in(s: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        found.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    found
}

fn check_template(v: &Value) -> Result<(), ConfigError> {
    match v {
        Value::String(s) => {
            for name in placeholders_in(s) {
                if !PLACEHOLDERS.contains(&name) {
                    return Err(ConfigError::UnknownPlaceholder(name.to_owned()));
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(check_template),
        Value::Object(map) => map.values().try_for_each(check_template),
        _ => Ok(()),
    }
}

fn fill_string(s: &str, value_of: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        out.push_str(&value_of(after[..end].trim()));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn fill(v: &Value, value_of: &dyn Fn(&str) -> String) -> Value {
    match v {
        Value::String(s) => Value::String(fill_string(s, value_of)),
        Value::Array(items) => Value::Array(items.iter().map(|i| fill(i, value_of)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill(v, value_of)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Render the request body for one submission (exposed for tests and for
/// operators checking a template).
pub fn render_body(
    cfg: &HttpSmsConfig,
    template: &Value,
    s: &Submission,
) -> Result<Value, CarrierError> {
    let text = match &s.content {
        Content::Text { body } => body.as_str(),
        other => {
            return Err(CarrierError::Permanent {
                code: "unsupported_content".into(),
                text: format!("HTTP SMS sends text only, not {other:?}"),
            })
        }
    };
    Ok(fill(template, &|name| {
        placeholder_value(name, s, text, cfg)
    }))
}

/// A connection to one HTTP SMS carrier: a pooled HTTP client and the
/// configuration that shapes its requests.
#[derive(Debug)]
pub struct HttpSmsConnection {
    config: HttpSmsConfig,
    template: Value,
    client: reqwest::Client,
    health: HealthTracker,
}

impl HttpSmsConnection {
    /// Validate the configuration and build the client.
    pub fn new(config: HttpSmsConfig) -> Result<Self, ConfigError> {
        let template = match &config.body_template {
            Value::String(text) => {
                serde_json::from_str(text).map_err(|e| ConfigError::Template(e.to_string()))?
            }
            other => other.clone(),
        };
        check_template(&template)?;
        check_pointer(&config.id_pointer)?;
        config.callback.validate()?;
        let client = http_util::build_client(Duration::from_millis(config.timeout_ms))
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(HttpSmsConnection {
            config,
            template,
            client,
            health: HealthTracker::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &HttpSmsConfig {
        &self.config
    }

    /// Read a status callback body (see [`CallbackMapping::parse`]).
    pub fn parse_callback(&self, body: &[u8]) -> Result<Vec<Receipt>, CallbackError> {
        self.config.callback.parse(body)
    }

    /// Verify then read a status callback.
    pub fn verify_and_parse_callback(
        &self,
        body: &[u8],
        signature_header: Option<&str>,
    ) -> Result<Vec<Receipt>, CallbackError> {
        self.config.callback.verify(body, signature_header)?;
        self.config.callback.parse(body)
    }

    async fn send(&self, submission: &Submission) -> Result<Submitted, CarrierError> {
        let body = render_body(&self.config, &self.template, submission)?;
        let mut request = self.client.post(&self.config.url).json(&body);
        if let Some(auth) = &self.config.auth {
            request = request.header(auth.name.as_str(), auth.value.as_str());
        }
        let answer = http_util::send(request).await?;
        let json = answer.json();
        if !answer.is_success() {
            let code = json
                .as_ref()
                .and_then(error_code_of)
                .unwrap_or_else(|| answer.status.to_string());
            return Err(http_util::status_error(
                answer.status,
                answer.retry_after,
                code,
                answer.excerpt(),
            ));
        }
        let carrier_refs = json
            .as_ref()
            .and_then(|v| v.pointer(&self.config.id_pointer))
            .map(carrier_refs_at)
            .unwrap_or_default();
        if carrier_refs.is_empty() {
            let at = format!("id at {}", self.config.id_pointer);
            return Err(answer.missing_ref(&at));
        }
        Ok(Submitted { carrier_refs })
    }
}

/// The id(s) at the id pointer: one scalar, or an array of scalars (one per
/// part, for carriers that split long messages themselves).
fn carrier_refs_at(v: &Value) -> Vec<String> {
    let ids: Vec<String> = match v {
        Value::Array(items) => items.iter().filter_map(json_scalar).collect(),
        other => json_scalar(other).into_iter().collect(),
    };
    ids.into_iter().filter(|id| !id.is_empty()).collect()
}

/// The carrier's error code from common error shapes: `/error/code`,
/// `/error_code`, `/code`, or `/error` when it is a string.
fn error_code_of(v: &Value) -> Option<String> {
    ["/error/code", "/error_code", "/code", "/error"]
        .iter()
        .find_map(|p| v.pointer(p).and_then(json_scalar))
}

#[async_trait::async_trait]
impl CarrierConnection for HttpSmsConnection {
    async fn submit(&self, submission: Submission) -> Result<Submitted, CarrierError> {
        self.health.track(self.send(&submission)).await
    }

    fn health(&self) -> Health {
        self.health.snapshot()
    }

    async fn close(&self) {
        self.health.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Channel;

    fn mapping() -> CallbackMapping {
        CallbackMapping {
            items_pointer: None,
            ref_pointer: "/id".into(),
            status_pointer: "/state".into(),
            error_code_pointer: Some("/err".into()),
            timestamp_pointer: Some("/ts".into()),
            status_map: HashMap::from([
                ("DELIVRD".to_string(), ReceiptState::Delivered),
                ("UNDELIV".to_string(), ReceiptState::Undelivered),
                ("ENROUTE".to_string(), ReceiptState::Sent),
            ]),
            signature: None,
        }
    }

    fn submission(body: &str) -> Submission {
        Submission {
            message_id: "msg_1".into(),
            channel: Channel::Sms,
            to: "+15551234567".into(),
            from: "Herald".into(),
            content: Content::Text { body: body.into() },
            validity: Some(Duration::from_secs(60)),
            receipts: true,
        }
    }

    fn config(template: Value) -> HttpSmsConfig {
        HttpSmsConfig {
            url: "http://127.0.0.1:1/send".into(),
            auth: None,
            body_template: template,
            id_pointer: "/id".into(),
            callback_url: Some("http://cb".into()),
            timeout_ms: 1000,
            callback: mapping(),
        }
    }

    #[test]
    fn template_escapes_and_substitutes() {
        let template = serde_json::json!({
            "dest": "{{to}}",
            "msisdn": "{{to_digits}}",
            "text": "{{body}}",
            "meta": {"ref": "herald:{{message_id}}", "cb": "{{callback_url}}"},
            "list": ["{{from}}", 5, true],
            "ttl": "{{validity_secs}}"
        });
        let cfg = config(template.clone());
        let body = render_body(&cfg, &template, &submission("quote \" and \\ and {{to}}")).unwrap();
        assert_eq!(body["dest"], "+15551234567");
        assert_eq!(body["msisdn"], "15551234567");
        // Substituted values are never re-scanned for placeholders.
        assert_eq!(body["text"], "quote \" and \\ and {{to}}");
        assert_eq!(body["meta"]["ref"], "herald:msg_1");
        assert_eq!(body["meta"]["cb"], "http://cb");
        assert_eq!(body["list"], serde_json::json!(["Herald", 5, true]));
        assert_eq!(body["ttl"], "60");
        let text = serde_json::to_string(&body).unwrap();
        assert!(text.contains(r#"quote \" and \\ and"#));
    }

    #[test]
    fn template_as_json_text_and_unknown_placeholders() {
        let ok = config(Value::String(r#"{"to":"{{to}}","text":"{{body}}"}"#.into()));
        assert!(HttpSmsConnection::new(ok).is_ok());
        let bad = config(serde_json::json!({"to": "{{recipient}}"}));
        assert_eq!(
            HttpSmsConnection::new(bad).unwrap_err(),
            ConfigError::UnknownPlaceholder("recipient".into())
        );
        let broken = config(Value::String("{not json".into()));
        assert!(matches!(
            HttpSmsConnection::new(broken),
            Err(ConfigError::Template(_))
        ));
        let mut pointer = config(serde_json::json!({}));
        pointer.id_pointer = "id".into();
        assert!(matches!(
            HttpSmsConnection::new(pointer),
            Err(ConfigError::Pointer(_))
        ));
    }

    #[test]
    fn non_text_content_is_permanent() {
        let cfg = config(serde_json::json!({}));
        let mut s = submission("x");
        s.content = Content::Say { text: "hi".into() };
        assert!(matches!(
            render_body(&cfg, &serde_json::json!({}), &s),
            Err(CarrierError::Permanent { .. })
        ));
    }

    #[test]
    fn callback_single_batch_and_unknown() {
        let m = mapping();
        let one = m
            .parse(br#"{"id":"abc","state":"delivrd","ts":"2024-01-02T03:04:05Z"}"#)
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].carrier_ref, "abc");
        assert_eq!(one[0].state, ReceiptState::Delivered);
        assert!(one[0].is_final);
        assert_eq!(
            one[0].done_at.unwrap().to_rfc3339(),
            "2024-01-02T03:04:05+00:00"
        );

        let batch = m
            .parse(br#"[{"id":7,"state":"ENROUTE","ts":1700000000},{"id":"b","state":"UNDELIV","err":"001"},{"id":"c","state":"WEIRD"}]"#)
            .unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].carrier_ref, "7");
        assert_eq!(batch[0].state, ReceiptState::Sent);
        assert!(!batch[0].is_final);
        assert!(batch[0].done_at.is_some());
        assert_eq!(batch[1].error_code.as_deref(), Some("001"));

        let mut items = mapping();
        items.items_pointer = Some("/results".into());
        let r = items
            .parse(br#"{"results":[{"id":"x","state":"DELIVRD"}]}"#)
            .unwrap();
        assert_eq!(r[0].carrier_ref, "x");
        assert!(matches!(
            items.parse(br#"{"other":[]}"#),
            Err(CallbackError::NoItems(_))
        ));
    }

    #[test]
    fn callback_garbage_is_an_error_not_a_panic() {
        let m = mapping();
        assert!(matches!(m.parse(b"\xff\x00"), Err(CallbackError::Json(_))));
        assert!(matches!(
            m.parse(br#"{"state":"DELIVRD"}"#),
            Err(CallbackError::MissingRef(_))
        ));
        assert!(matches!(
            m.parse(br#"{"id":"a"}"#),
            Err(CallbackError::MissingStatus(_))
        ));
        assert!(matches!(
            m.parse(br#"{"id":{"x":1},"state":"DELIVRD"}"#),
            Err(CallbackError::MissingRef(_))
        ));
    }

    #[test]
    fn carrier_refs_from_scalars_and_arrays() {
        assert_eq!(carrier_refs_at(&serde_json::json!("a")), vec!["a"]);
        assert_eq!(carrier_refs_at(&serde_json::json!(12)), vec!["12"]);
        assert_eq!(
            carrier_refs_at(&serde_json::json!(["p1", "", 3, {"x": 1}])),
            vec!["p1", "3"]
        );
        assert!(carrier_refs_at(&serde_json::json!(null)).is_empty());
        assert!(carrier_refs_at(&serde_json::json!("")).is_empty());
    }

    #[test]
    fn config_reads_from_json() {
        let config: HttpSmsConfig = serde_json::from_str(
            r#"{
                "url": "https://api.example.test/sms",
                "auth": {"name": "X-Api-Key", "value": "k"},
                "body_template": "{\"to\":\"{{to}}\",\"text\":\"{{body}}\"}",
                "id_pointer": "/id",
                "callback": {
                    "ref_pointer": "/id",
                    "status_pointer": "/status",
                    "status_map": {"DELIVRD": "delivered", "EXPIRED": "expired"}
                }
            }"#,
        )
        .unwrap();
        assert_eq!(config.timeout_ms, 10_000);
        assert_eq!(
            config.callback.status_map["DELIVRD"],
            ReceiptState::Delivered
        );
        assert!(HttpSmsConnection::new(config).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn callback_parse_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = mapping().parse(&body);
        }

        #[test]
        fn callback_parse_never_panics_on_json(s in "[\\[\\]{}\":,a-z0-9 /]{0,80}") {
            let _ = mapping().parse(s.as_bytes());
        }
    }

    #[test]
    fn callback_signature() {
        let mut m = mapping();
        m.signature = Some(CallbackSignature {
            header: "X-Signature".into(),
            secret: "s3cret".into(),
        });
        let body = br#"{"id":"a","state":"DELIVRD"}"#;
        let sig = http_util::hmac_sha256_hex(b"s3cret", body);
        assert_eq!(m.verify(body, Some(&sig)), Ok(()));
        assert_eq!(m.verify(body, Some(&format!("sha256={sig}"))), Ok(()));
        assert_eq!(m.verify(body, None), Err(SignatureError::Missing));
        assert_eq!(m.verify(b"{}", Some(&sig)), Err(SignatureError::Mismatch));
    }
}
