//! Voice: a generic programmable-voice provider in a Twilio-like shape, and
//! its simulator ([`sim`]).
//!
//! Data enters as a [`Submission`] whose content is [`Content::Say`] (text to
//! speak; [`Content::Text`] is spoken too) or [`Content::Audio`] (a file to
//! play). It leaves as `POST {base_url}/Calls`, form-encoded: `To`, `From`,
//! `Say` or `Play`, `StatusCallback` (Herald's callback URL) and `ClientRef`
//! (Herald's message id), with the configured auth header. The answer's
//! `sid` is the carrier reference. 429 throttles (honouring `Retry-After`),
//! 5xx and timeouts are temporary, other 4xx permanent; the provider's
//! `code` is kept.
//!
//! Status callbacks come back form-encoded (`CallSid`, `CallStatus`,
//! `ErrorCode`, `Timestamp`, `CallDuration`; JSON with the same keys is read
//! too) and signed with a hex HMAC-SHA256 of the raw body in
//! [`SIGNATURE_HEADER`]. [`verify_signature`] checks it in constant time and
//! [`parse_status_callback`] turns the body into a [`Receipt`]: `queued` and
//! `initiated` are `sent`, `ringing` and `in-progress` are non-final;
//! `completed`, `busy`, `no-answer`, `failed` and `canceled` (reported as
//! `failed` with error code `canceled`) are final.

pub mod sim;

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::connection::{
    CarrierConnection, CarrierError, Content, Health, Receipt, ReceiptState, Submission, Submitted,
};
use crate::http_util::{self, HealthTracker};
pub use crate::http_util::{AuthHeader, SignatureError};

/// The header a status callback's signature travels in.
pub const SIGNATURE_HEADER: &str = "X-Voice-Signature";

/// How Herald talks to one voice provider account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceConfig {
    /// API root; calls are created at `{base_url}/Calls`.
    pub base_url: String,
    /// Sent with every request (e.g. `Authorization: Bearer …`).
    #[serde(default)]
    pub auth: Option<AuthHeader>,
    /// Where the provider should POST call status (Herald's
    /// `/v1/callbacks/voice`).
    pub status_callback_url: String,
    /// The secret that signs status callbacks.
    pub callback_secret: String,
    /// Deadline for one call creation, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    15_000
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("cannot build HTTP client: {0}")]
    Client(String),
}

/// A status callback that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("callback body is not valid JSON: {0}")]
    Json(String),
    #[error("callback has no CallSid")]
    MissingCallSid,
    #[error("callback has no CallStatus")]
    MissingStatus,
    #[error("unknown call status {0:?}")]
    UnknownStatus(String),
    #[error("callback signature refused: {0}")]
    Signature(#[from] SignatureError),
}

/// Check the hex HMAC-SHA256 of the raw body in [`SIGNATURE_HEADER`]
/// (`sha256=` prefix optional), in constant time.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    http_util::verify_signature_header(secret, body, header)
}

/// The signature header value for `body` (for simulators and tests).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    http_util::hmac_sha256_hex(secret, body)
}

/// Map a provider call status to Herald's state, with the error code a
/// status implies (`canceled`). `None` for unknown words.
pub fn map_call_status(status: &str) -> Option<(ReceiptState, Option<&'static str>)> {
    let state = match status.to_ascii_lowercase().replace('_', "-").as_str() {
        "queued" | "initiated" => ReceiptState::Sent,
        "ringing" => ReceiptState::Ringing,
        "in-progress" | "answered" => ReceiptState::InProgress,
        "completed" => ReceiptState::Completed,
        "busy" => ReceiptState::Busy,
        "no-answer" => ReceiptState::NoAnswer,
        "failed" => ReceiptState::Failed,
        "canceled" | "cancelled" => return Some((ReceiptState::Failed, Some("canceled"))),
        _ => return None,
    };
    Some((state, None))
}

/// Read a status callback: form-encoded (as Twilio sends) or a JSON object
/// with the same keys.
pub fn parse_status_callback(body: &[u8]) -> Result<Receipt, CallbackError> {
    let fields = callback_fields(body)?;
    let sid = fields
        .get("CallSid")
        .filter(|s| !s.is_empty())
        .ok_or(CallbackError::MissingCallSid)?;
    let status = fields
        .get("CallStatus")
        .filter(|s| !s.is_empty())
        .ok_or(CallbackError::MissingStatus)?;
    let (state, implied_code) =
        map_call_status(status).ok_or_else(|| CallbackError::UnknownStatus(status.clone()))?;
    let error_code = fields
        .get("ErrorCode")
        .filter(|c| !c.is_empty())
        .cloned()
        .or_else(|| implied_code.map(str::to_owned));
    let done_at = fields.get("Timestamp").and_then(|t| {
        chrono::DateTime::parse_from_rfc2822(t)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
            .or_else(|| http_util::parse_timestamp(&Value::String(t.clone())))
    });
    Ok(Receipt {
        carrier_ref: sid.clone(),
        state,
        error_code,
        done_at,
        raw: String::from_utf8_lossy(body).into_owned(),
        is_final: state.is_final(),
    })
}

fn callback_fields(body: &[u8]) -> Result<HashMap<String, String>, CallbackError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        let doc: serde_json::Map<String, Value> =
            serde_json::from_slice(body).map_err(|e| CallbackError::Json(e.to_string()))?;
        return Ok(doc
            .into_iter()
            .filter_map(|(k, v)| Some((k, http_util::json_scalar(&v)?)))
            .collect());
    }
    Ok(url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

/// The form fields of a call creation (exposed for tests).
pub fn call_form(
    submission: &Submission,
    status_callback_url: &str,
) -> Result<Vec<(&'static str, String)>, CarrierError> {
    let (key, value) = match &submission.content {
        Content::Say { text } | Content::Text { body: text } => ("Say", text.clone()),
        Content::Audio { url } => ("Play", url.clone()),
        other => {
            return Err(CarrierError::Permanent {
                code: "unsupported_content".into(),
                text: format!("voice speaks text or plays audio, not {other:?}"),
            })
        }
    };
    Ok(vec![
        ("To", submission.to.clone()),
        ("From", submission.from.clone()),
        (key, value),
        ("StatusCallback", status_callback_url.to_owned()),
        ("ClientRef", submission.message_id.clone()),
    ])
}

/// A connection to one voice provider account.
#[derive(Debug)]
pub struct VoiceConnection {
    config: VoiceConfig,
    calls_url: String,
    client: reqwest::Client,
    health: HealthTracker,
}

impl VoiceConnection {
    /// Validate the configuration and build the client.
    pub fn new(config: VoiceConfig) -> Result<Self, ConfigError> {
        if config.base_url.trim().is_empty() {
            return Err(ConfigError::Empty("base_url"));
        }
        if config.status_callback_url.trim().is_empty() {
            return Err(ConfigError::Empty("status_callback_url"));
        }
        let client = http_util::build_client(Duration::from_millis(config.timeout_ms))
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        let calls_url = format!("{}/Calls", config.base_url.trim_end_matches('/'));
        Ok(VoiceConnection {
            config,
            calls_url,
            client,
            health: HealthTracker::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &VoiceConfig {
        &self.config
    }

    /// Verify a status callback with this account's secret, then read it.
    pub fn verify_and_parse_callback(
        &self,
        body: &[u8],
        signature_header: Option<&str>,
    ) -> Result<Receipt, CallbackError> {
        verify_signature(
            self.config.callback_secret.as_bytes(),
            body,
            signature_header,
        )?;
        parse_status_callback(body)
    }

    async fn create_call(&self, submission: &Submission) -> Result<Submitted, CarrierError> {
        let form = call_form(submission, &self.config.status_callback_url)?;
        let mut request = self.client.post(&self.calls_url).form(&form);
        if let Some(auth) = &self.config.auth {
            request = request.header(auth.name.as_str(), auth.value.as_str());
        }
        let answer = http_util::send(request).await?;
        let json = answer.json();
        if !answer.is_success() {
            let code = json
                .as_ref()
                .and_then(|v| v.get("code"))
                .and_then(http_util::json_scalar)
                .unwrap_or_else(|| answer.status.to_string());
            let text = json
                .as_ref()
                .and_then(|v| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| answer.excerpt());
            return Err(http_util::status_error(
                answer.status,
                answer.retry_after,
                code,
                text,
            ));
        }
        let sid = json
            .as_ref()
            .and_then(|v| v.get("sid"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| answer.missing_ref("sid"))?;
        Ok(Submitted {
            carrier_refs: vec![sid.to_owned()],
        })
    }
}

#[async_trait::async_trait]
impl CarrierConnection for VoiceConnection {
    async fn submit(&self, submission: Submission) -> Result<Submitted, CarrierError> {
        self.health.track(self.create_call(&submission)).await
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

    #[test]
    fn status_table() {
        let cases = [
            ("queued", ReceiptState::Sent, false),
            ("initiated", ReceiptState::Sent, false),
            ("ringing", ReceiptState::Ringing, false),
            ("in-progress", ReceiptState::InProgress, false),
            ("in_progress", ReceiptState::InProgress, false),
            ("completed", ReceiptState::Completed, true),
            ("busy", ReceiptState::Busy, true),
            ("no-answer", ReceiptState::NoAnswer, true),
            ("failed", ReceiptState::Failed, true),
            ("canceled", ReceiptState::Failed, true),
        ];
        for (word, state, is_final) in cases {
            let (got, _) = map_call_status(word).unwrap();
            assert_eq!(got, state, "{word}");
            assert_eq!(got.is_final(), is_final, "{word}");
        }
        assert_eq!(map_call_status("exploded"), None);
    }

    #[test]
    fn form_and_json_callbacks() {
        let r = parse_status_callback(
            b"CallSid=CA123&CallStatus=no-answer&Timestamp=Tue%2C+14+Nov+2023+22%3A13%3A20+%2B0000",
        )
        .unwrap();
        assert_eq!(r.carrier_ref, "CA123");
        assert_eq!(r.state, ReceiptState::NoAnswer);
        assert!(r.is_final);
        assert_eq!(r.done_at.unwrap().timestamp(), 1_700_000_000);

        let r = parse_status_callback(br#"{"CallSid":"CA9","CallStatus":"canceled"}"#).unwrap();
        assert_eq!(r.state, ReceiptState::Failed);
        assert_eq!(r.error_code.as_deref(), Some("canceled"));

        let r = parse_status_callback(b"CallSid=CA1&CallStatus=failed&ErrorCode=31005").unwrap();
        assert_eq!(r.error_code.as_deref(), Some("31005"));

        assert_eq!(
            parse_status_callback(b"CallStatus=busy"),
            Err(CallbackError::MissingCallSid)
        );
        assert_eq!(
            parse_status_callback(b"CallSid=CA1"),
            Err(CallbackError::MissingStatus)
        );
        assert!(matches!(
            parse_status_callback(b"CallSid=CA1&CallStatus=exploded"),
            Err(CallbackError::UnknownStatus(_))
        ));
        assert!(matches!(
            parse_status_callback(b"{broken"),
            Err(CallbackError::Json(_))
        ));
        // Arbitrary bytes never panic.
        let _ = parse_status_callback(b"\xff\xfe=\x00&&==%zz");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse_status_callback(&body);
        }

        #[test]
        fn parse_never_panics_on_formish(s in "[A-Za-z=&%0-9+_-]{0,80}") {
            let _ = parse_status_callback(s.as_bytes());
        }
    }

    #[test]
    fn signatures() {
        let body = b"CallSid=CA1&CallStatus=completed";
        let sig = sign(b"k", body);
        assert_eq!(verify_signature(b"k", body, Some(&sig)), Ok(()));
        assert_eq!(
            verify_signature(b"k", body, Some(&format!("sha256={sig}"))),
            Ok(())
        );
        assert_eq!(
            verify_signature(b"other", body, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"k", body, None),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn call_form_fields() {
        let mut s = Submission {
            message_id: "msg_v".into(),
            channel: Channel::Voice,
            to: "+15551234567".into(),
            from: "+15550000000".into(),
            content: Content::Say {
                text: "Your code is 1 2 3".into(),
            },
            validity: None,
            receipts: true,
        };
        let form = call_form(&s, "http://cb").unwrap();
        assert!(form.contains(&("Say", "Your code is 1 2 3".into())));
        assert!(form.contains(&("StatusCallback", "http://cb".into())));
        assert!(form.contains(&("ClientRef", "msg_v".into())));
        s.content = Content::Audio {
            url: "https://a/b.mp3".into(),
        };
        assert!(call_form(&s, "x")
            .unwrap()
            .contains(&("Play", "https://a/b.mp3".into())));
        s.content = Content::Template {
            name: "t".into(),
            language: "en".into(),
            params: vec![],
        };
        assert!(matches!(
            call_form(&s, "x"),
            Err(CarrierError::Permanent { .. })
        ));
    }
}
