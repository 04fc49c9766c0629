//! WhatsApp Cloud API: sending text and template messages, Meta's error codes,
//! status webhooks ([`webhook`]) and a simulator ([`sim`]).
//!
//! Data enters as a [`Submission`] with [`Content::Text`] or
//! [`Content::Template`]; it leaves as `POST {base_url}/{phone_number_id}/messages`
//! with the bearer token, in Meta's JSON shape ([`request_body`]). The answer's
//! `messages[0].id` (the `wamid`) is the carrier reference. Failures are
//! classified by Meta's `error.code` first ([`ERROR_CODES`],
//! [`classify_error`]) and by HTTP status when the code is unknown.
//!
//! Status webhooks come back through Herald's `POST /v1/callbacks/whatsapp`:
//! [`webhook::verify_signature`] checks `X-Hub-Signature-256`,
//! [`webhook::parse_statuses`] turns `entry[].changes[].value.statuses[]` into
//! [`Receipt`](crate::Receipt)s, and [`webhook::verify_subscription`] answers
//! Meta's `GET` verification handshake.

pub mod sim;
pub mod webhook;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::connection::{CarrierConnection, CarrierError, Content, Health, Submission, Submitted};
use crate::http_util::{self, HealthTracker};

pub use crate::http_util::SignatureError;
pub use webhook::{
    parse_statuses, verify_signature, verify_subscription, verify_subscription_query,
    HandshakeError, WebhookError, SIGNATURE_HEADER,
};

/// How Herald talks to one WhatsApp Business phone number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatsappConfig {
    /// Graph API root including the version, e.g.
    /// `https://graph.facebook.com/v21.0` (or a simulator's `http://…/v21.0`).
    pub base_url: String,
    /// The sending phone number's id (not the number itself).
    pub phone_number_id: String,
    /// System-user access token, sent as `Authorization: Bearer …`.
    pub access_token: String,
    /// The app secret that signs webhooks (`X-Hub-Signature-256`).
    pub app_secret: String,
    /// The token Meta echoes in the subscription handshake.
    pub verify_token: String,
    /// Deadline for one send, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How long to back off when throttled and no `Retry-After` came (Meta
    /// rarely sends one), in milliseconds.
    #[serde(default = "default_throttle_backoff_ms")]
    pub throttle_backoff_ms: u64,
}

fn default_timeout_ms() -> u64 {
    15_000
}

fn default_throttle_backoff_ms() -> u64 {
    1_000
}

/// How an error code is to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Slow down and retry.
    Throttled,
    /// Retry later.
    Temporary,
    /// Do not retry.
    Permanent,
}

/// Meta's error codes Herald knows, how each is treated, and what it means.
/// Codes not listed fall back to the HTTP status (429 throttles, 5xx is
/// temporary, other 4xx permanent).
pub const ERROR_CODES: &[(i64, ErrorKind, &str)] = &[
    (4, ErrorKind::Throttled, "API too many calls"),
    (80007, ErrorKind::Throttled, "WABA rate limit hit"),
    (130429, ErrorKind::Throttled, "throughput rate limit hit"),
    (131048, ErrorKind::Throttled, "spam rate limit hit"),
    (
        131056,
        ErrorKind::Throttled,
        "pair rate limit hit (same recipient)",
    ),
    (1, ErrorKind::Temporary, "API unknown error"),
    (
        2,
        ErrorKind::Temporary,
        "API service temporarily unavailable",
    ),
    (131000, ErrorKind::Temporary, "something went wrong"),
    (131016, ErrorKind::Temporary, "service unavailable"),
    (131057, ErrorKind::Temporary, "account in maintenance mode"),
    (
        133004,
        ErrorKind::Temporary,
        "server temporarily unavailable",
    ),
    (0, ErrorKind::Permanent, "authentication exception"),
    (3, ErrorKind::Permanent, "API method not permitted"),
    (10, ErrorKind::Permanent, "permission denied"),
    (100, ErrorKind::Permanent, "invalid parameter"),
    (190, ErrorKind::Permanent, "access token expired or invalid"),
    (200, ErrorKind::Permanent, "permission not granted"),
    (368, ErrorKind::Permanent, "blocked for policy violations"),
    (131005, ErrorKind::Permanent, "access denied"),
    (131008, ErrorKind::Permanent, "required parameter missing"),
    (131009, ErrorKind::Permanent, "parameter value invalid"),
    (131021, ErrorKind::Permanent, "recipient cannot be sender"),
    (131026, ErrorKind::Permanent, "message undeliverable"),
    (
        131030,
        ErrorKind::Permanent,
        "recipient not in allowed list",
    ),
    (131031, ErrorKind::Permanent, "business account locked"),
    (
        131042,
        ErrorKind::Permanent,
        "business eligibility payment issue",
    ),
    (
        131047,
        ErrorKind::Permanent,
        "re-engagement message: more than 24 hours since the customer last replied",
    ),
    (131051, ErrorKind::Permanent, "unsupported message type"),
    (131052, ErrorKind::Permanent, "media download error"),
    (131053, ErrorKind::Permanent, "media upload error"),
    (
        132000,
        ErrorKind::Permanent,
        "template parameter count mismatch",
    ),
    (132001, ErrorKind::Permanent, "template does not exist"),
    (
        132005,
        ErrorKind::Permanent,
        "template hydrated text too long",
    ),
    (
        132007,
        ErrorKind::Permanent,
        "template format character policy violated",
    ),
    (
        132012,
        ErrorKind::Permanent,
        "template parameter format mismatch",
    ),
    (132015, ErrorKind::Permanent, "template is paused"),
    (132016, ErrorKind::Permanent, "template is disabled"),
    (133010, ErrorKind::Permanent, "phone number not registered"),
];

/// How Meta's error `code` is to be treated, if Herald knows it.
pub fn error_kind(code: i64) -> Option<ErrorKind> {
    ERROR_CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, kind, _)| *kind)
}

/// Normalise a failed send: by `code` when known, else by HTTP status.
/// `retry_after` is used for throttles.
pub fn classify_error(
    http_status: u16,
    code: Option<i64>,
    text: String,
    retry_after: Option<Duration>,
) -> CarrierError {
    let code_text = code
        .map(|c| c.to_string())
        .unwrap_or_else(|| http_status.to_string());
    match code.and_then(error_kind) {
        Some(ErrorKind::Throttled) => CarrierError::Throttled {
            retry_after,
            code: code_text,
            text,
        },
        Some(ErrorKind::Temporary) => CarrierError::Temporary {
            code: code_text,
            text,
        },
        Some(ErrorKind::Permanent) => CarrierError::Permanent {
            code: code_text,
            text,
        },
        None => http_util::status_error(http_status, retry_after, code_text, text),
    }
}

/// The send request for one submission, in Meta's shape. Only text and
/// template content can travel on WhatsApp; anything else is permanent.
pub fn request_body(submission: &Submission) -> Result<Value, CarrierError> {
    let to = submission.to.trim_start_matches('+');
    match &submission.content {
        Content::Text { body } => Ok(json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": false, "body": body},
        })),
        Content::Template {
            name,
            language,
            params,
        } => {
            let mut template = json!({
                "name": name,
                "language": {"code": language},
            });
            if !params.is_empty() {
                let parameters: Vec<Value> = params
                    .iter()
                    .map(|p| json!({"type": "text", "text": p}))
                    .collect();
                template["components"] = json!([{"type": "body", "parameters": parameters}]);
            }
            Ok(json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "template",
                "template": template,
            }))
        }
        other => Err(CarrierError::Permanent {
            code: "unsupported_content".into(),
            text: format!("WhatsApp sends text or templates, not {other:?}"),
        }),
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("cannot build HTTP client: {0}")]
    Client(String),
}

/// A connection to one WhatsApp Business phone number.
#[derive(Debug)]
pub struct WhatsappConnection {
    config: WhatsappConfig,
    messages_url: String,
    client: reqwest::Client,
    health: HealthTracker,
}

impl WhatsappConnection {
    /// Validate the configuration and build the client.
    pub fn new(config: WhatsappConfig) -> Result<Self, ConfigError> {
        for (name, value) in [
            ("base_url", &config.base_url),
            ("phone_number_id", &config.phone_number_id),
            ("access_token", &config.access_token),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::Empty(name));
            }
        }
        let client = http_util::build_client(Duration::from_millis(config.timeout_ms))
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        let messages_url = format!(
            "{}/{}/messages",
            config.base_url.trim_end_matches('/'),
            config.phone_number_id
        );
        Ok(WhatsappConnection {
            config,
            messages_url,
            client,
            health: HealthTracker::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &WhatsappConfig {
        &self.config
    }

    /// Verify a status webhook's signature with this number's app secret,
    /// then read its statuses.
    pub fn verify_and_parse_webhook(
        &self,
        body: &[u8],
        signature_header: Option<&str>,
    ) -> Result<Vec<crate::Receipt>, WebhookError> {
        verify_signature(self.config.app_secret.as_bytes(), body, signature_header)?;
        parse_statuses(body)
    }

    /// Answer Meta's subscription handshake with this number's verify token.
    pub fn answer_handshake(
        &self,
        mode: Option<&str>,
        verify_token: Option<&str>,
        challenge: Option<&str>,
    ) -> Result<String, HandshakeError> {
        verify_subscription(mode, verify_token, challenge, &self.config.verify_token)
    }

    async fn send(&self, submission: &Submission) -> Result<Submitted, CarrierError> {
        let body = request_body(submission)?;
        let request = self
            .client
            .post(&self.messages_url)
            .bearer_auth(&self.config.access_token)
            .json(&body);
        let answer = http_util::send(request).await?;
        let json = answer.json();
        if !answer.is_success() {
            let error = json.as_ref().and_then(|v| v.get("error"));
            let code = error.and_then(|e| e.get("code")).and_then(Value::as_i64);
            let text = match error {
                Some(e) => {
                    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                    match e.pointer("/error_data/details").and_then(Value::as_str) {
                        Some(details) => format!("{message}: {details}"),
                        None => message.to_owned(),
                    }
                }
                None => answer.excerpt(),
            };
            let retry_after = answer
                .retry_after
                .or(Some(Duration::from_millis(self.config.throttle_backoff_ms)));
            return Err(classify_error(answer.status, code, text, retry_after));
        }
        let wamid = json
            .as_ref()
            .and_then(|v| v.pointer("/messages/0/id"))
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| answer.missing_ref("messages[0].id"))?;
        Ok(Submitted {
            carrier_refs: vec![wamid.to_owned()],
        })
    }
}

#[async_trait::async_trait]
impl CarrierConnection for WhatsappConnection {
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

    fn submission(content: Content) -> Submission {
        Submission {
            message_id: "msg_1".into(),
            channel: Channel::Whatsapp,
            to: "+15551234567".into(),
            from: "15550000000".into(),
            content,
            validity: None,
            receipts: true,
        }
    }

    #[test]
    fn text_body_in_metas_shape() {
        let body = request_body(&submission(Content::Text {
            body: "hi \"there\"".into(),
        }))
        .unwrap();
        assert_eq!(
            body,
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "15551234567",
                "type": "text",
                "text": {"preview_url": false, "body": "hi \"there\""},
            })
        );
    }

    #[test]
    fn template_body_in_metas_shape() {
        let body = request_body(&submission(Content::Template {
            name: "order_update".into(),
            language: "en_US".into(),
            params: vec!["Ada".into(), "42".into()],
        }))
        .unwrap();
        assert_eq!(body["type"], "template");
        assert_eq!(
            body["template"],
            json!({
                "name": "order_update",
                "language": {"code": "en_US"},
                "components": [{"type": "body", "parameters": [
                    {"type": "text", "text": "Ada"},
                    {"type": "text", "text": "42"},
                ]}],
            })
        );
        let bare = request_body(&submission(Content::Template {
            name: "hello_world".into(),
            language: "en".into(),
            params: vec![],
        }))
        .unwrap();
        assert!(bare["template"].get("components").is_none());
        assert!(matches!(
            request_body(&submission(Content::Say { text: "x".into() })),
            Err(CarrierError::Permanent { .. })
        ));
    }

    #[test]
    fn error_code_table() {
        let secs = Some(Duration::from_secs(2));
        let kind =
            |status: u16, code: Option<i64>| match classify_error(status, code, "t".into(), secs) {
                CarrierError::Throttled { retry_after, .. } => {
                    assert_eq!(retry_after, secs);
                    ErrorKind::Throttled
                }
                CarrierError::Temporary { .. } => ErrorKind::Temporary,
                CarrierError::Permanent { .. } => ErrorKind::Permanent,
                CarrierError::ConnectionLost { .. } => panic!("not from an answer"),
            };
        let cases = [
            (400, Some(130429), ErrorKind::Throttled),
            (400, Some(131056), ErrorKind::Throttled),
            (400, Some(4), ErrorKind::Throttled),
            (400, Some(80007), ErrorKind::Throttled),
            (400, Some(131047), ErrorKind::Permanent),
            (400, Some(131026), ErrorKind::Permanent),
            (400, Some(131051), ErrorKind::Permanent),
            (400, Some(100), ErrorKind::Permanent),
            (401, Some(190), ErrorKind::Permanent),
            (400, Some(132001), ErrorKind::Permanent),
            (500, Some(1), ErrorKind::Temporary),
            (503, Some(2), ErrorKind::Temporary),
            (400, Some(131000), ErrorKind::Temporary),
            (503, Some(131016), ErrorKind::Temporary),
            (400, Some(133004), ErrorKind::Temporary),
            // The code wins over the status...
            (500, Some(131026), ErrorKind::Permanent),
            // ...and unknown codes fall back to the status.
            (429, Some(999_999), ErrorKind::Throttled),
            (502, None, ErrorKind::Temporary),
            (500, Some(999_999), ErrorKind::Temporary),
            (404, None, ErrorKind::Permanent),
            (400, Some(999_999), ErrorKind::Permanent),
        ];
        for (status, code, expected) in cases {
            assert_eq!(
                kind(status, code),
                expected,
                "status {status} code {code:?}"
            );
        }
        // The raw code is kept.
        assert!(matches!(
            classify_error(400, Some(131047), "t".into(), None),
            CarrierError::Permanent { code, .. } if code == "131047"
        ));
        // No code twice in the table.
        let mut codes: Vec<i64> = ERROR_CODES.iter().map(|(c, _, _)| *c).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ERROR_CODES.len());
    }

    #[test]
    fn empty_config_is_refused() {
        let config = WhatsappConfig {
            base_url: "http://x".into(),
            phone_number_id: " ".into(),
            access_token: "t".into(),
            app_secret: "s".into(),
            verify_token: "v".into(),
            timeout_ms: 1000,
            throttle_backoff_ms: 1000,
        };
        assert_eq!(
            WhatsappConnection::new(config).unwrap_err(),
            ConfigError::Empty("phone_number_id")
        );
    }
}
