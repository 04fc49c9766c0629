//! WhatsApp webhooks as Meta sends them: the signature on every POST, the
//! status updates inside, and the `GET` subscription handshake.
//!
//! Data enters as the raw body and headers (or query parameters) Herald's
//! callback endpoint received, and leaves as [`Receipt`]s, a signature
//! verdict, or the challenge to echo.
//!
//! ## Finality of `delivered`
//!
//! WhatsApp may report `read` after `delivered`, but only when the recipient
//! has read receipts switched on, so many messages never get one. Herald
//! therefore reports `delivered` as **final** (`is_final = true`, as
//! [`ReceiptState::is_final`] says): delivery is the outcome the message's
//! lifecycle waits for. A later `read` is a further final receipt that
//! refines it; Herald's status model lets `read` follow `delivered` (status
//! only moves forward), so nothing is lost. `sent` is not final; `read` and
//! `failed` are.

use serde_json::Value;

use crate::connection::{Receipt, ReceiptState};
use crate::http_util::{self, SignatureError};

/// The header Meta signs webhooks in: `sha256=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

/// A webhook that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook body is not JSON: {0}")]
    Json(String),
    #[error("webhook body has no entry array")]
    NoEntries,
    #[error("webhook signature refused: {0}")]
    Signature(#[from] SignatureError),
}

/// Why a subscription handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("hub.mode is not subscribe")]
    NotSubscribe,
    #[error("hub.verify_token does not match")]
    TokenMismatch,
    #[error("hub.challenge missing")]
    MissingChallenge,
}

/// Check `X-Hub-Signature-256: sha256=<hex>` against the HMAC-SHA256 of the
/// raw body under the app secret, in constant time.
pub fn verify_signature(
    app_secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    http_util::verify_hmac_sha256_hex(app_secret, body, hex)
}

/// The header value Meta would send for `body` (for simulators and tests).
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", http_util::hmac_sha256_hex(app_secret, body))
}

/// Answer `GET …?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`:
/// the challenge to echo (with 200) when the mode is `subscribe` and the
/// token matches `expected_token`; an error (answer 403) otherwise.
pub fn verify_subscription(
    mode: Option<&str>,
    verify_token: Option<&str>,
    challenge: Option<&str>,
    expected_token: &str,
) -> Result<String, HandshakeError> {
    if mode != Some("subscribe") {
        return Err(HandshakeError::NotSubscribe);
    }
    let token = verify_token.unwrap_or("");
    if expected_token.is_empty()
        || !http_util::constant_time_eq(token.as_bytes(), expected_token.as_bytes())
    {
        return Err(HandshakeError::TokenMismatch);
    }
    match challenge {
        Some(c) if !c.is_empty() => Ok(c.to_owned()),
        _ => Err(HandshakeError::MissingChallenge),
    }
}

/// [`verify_subscription`] from a raw query string.
pub fn verify_subscription_query(
    query: &str,
    expected_token: &str,
) -> Result<String, HandshakeError> {
    let mut mode = None;
    let mut token = None;
    let mut challenge = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "hub.mode" => mode = Some(v.into_owned()),
            "hub.verify_token" => token = Some(v.into_owned()),
            "hub.challenge" => challenge = Some(v.into_owned()),
            _ => {}
        }
    }
    verify_subscription(
        mode.as_deref(),
        token.as_deref(),
        challenge.as_deref(),
        expected_token,
    )
}

/// Map a WhatsApp status word; `None` for ones Herald does not track
/// (`deleted`, `warning`, …).
pub fn map_status(status: &str) -> Option<ReceiptState> {
    match status {
        "sent" => Some(ReceiptState::Sent),
        "delivered" => Some(ReceiptState::Delivered),
        "read" => Some(ReceiptState::Read),
        "failed" => Some(ReceiptState::Failed),
        _ => None,
    }
}

/// Read every `entry[].changes[].value.statuses[]` into receipts, in order.
/// Changes without statuses (incoming messages, template updates) yield
/// nothing; statuses without an id or with an untracked status word are
/// skipped. The wamid is the carrier reference; `failed` carries
/// `errors[0].code`.
pub fn parse_statuses(body: &[u8]) -> Result<Vec<Receipt>, WebhookError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| WebhookError::Json(e.to_string()))?;
    let entries = doc
        .get("entry")
        .and_then(Value::as_array)
        .ok_or(WebhookError::NoEntries)?;
    let statuses = entries
        .iter()
        .filter_map(|e| e.get("changes").and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.pointer("/value/statuses").and_then(Value::as_array))
        .flatten();
    let mut receipts = Vec::new();
    for status in statuses {
        let Some(id) = status.get("id").and_then(Value::as_str) else {
            continue;
        };
        let word = status.get("status").and_then(Value::as_str).unwrap_or("");
        let Some(state) = map_status(word) else {
            tracing::debug!(status = %word, "whatsapp webhook: untracked status skipped");
            continue;
        };
        let error_code = status
            .pointer("/errors/0/code")
            .and_then(http_util::json_scalar);
        let done_at = status.get("timestamp").and_then(http_util::parse_timestamp);
        receipts.push(Receipt {
            carrier_ref: id.to_owned(),
            state,
            error_code,
            done_at,
            raw: status.to_string(),
            is_final: state.is_final(),
        });
    }
    Ok(receipts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEBHOOK: &str = r#"{
      "object": "whatsapp_business_account",
      "entry": [{
        "id": "102290129340398",
        "changes": [{
          "field": "messages",
          "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "statuses": [
              {"id": "wamid.A", "status": "sent", "timestamp": "1700000000", "recipient_id": "15551234567"},
              {"id": "wamid.A", "status": "delivered", "timestamp": "1700000005", "recipient_id": "15551234567"},
              {"id": "wamid.A", "status": "read", "timestamp": "1700000009", "recipient_id": "15551234567"},
              {"id": "wamid.B", "status": "failed", "timestamp": "1700000001", "recipient_id": "15551234568",
               "errors": [{"code": 131047, "title": "Re-engagement message"}]},
              {"id": "wamid.C", "status": "deleted", "timestamp": "1700000001"},
              {"status": "sent"}
            ]
          }
        }, {
          "field": "messages",
          "value": {"messages": [{"from": "15551234567", "id": "wamid.IN", "type": "text"}]}
        }]
      }]
    }"#;

    #[test]
    fn statuses_become_receipts() {
        let receipts = parse_statuses(WEBHOOK.as_bytes()).unwrap();
        let got: Vec<(&str, ReceiptState, bool)> = receipts
            .iter()
            .map(|r| (r.carrier_ref.as_str(), r.state, r.is_final))
            .collect();
        assert_eq!(
            got,
            vec![
                ("wamid.A", ReceiptState::Sent, false),
                ("wamid.A", ReceiptState::Delivered, true),
                ("wamid.A", ReceiptState::Read, true),
                ("wamid.B", ReceiptState::Failed, true),
            ]
        );
        assert_eq!(receipts[3].error_code.as_deref(), Some("131047"));
        assert_eq!(receipts[0].done_at.unwrap().timestamp(), 1_700_000_000);
        assert!(receipts[1].raw.contains("delivered"));
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        assert!(matches!(
            parse_statuses(b"\x00\xff"),
            Err(WebhookError::Json(_))
        ));
        assert_eq!(parse_statuses(b"{}"), Err(WebhookError::NoEntries));
        assert_eq!(parse_statuses(br#"{"entry":[{"changes":7}]}"#), Ok(vec![]));
        assert_eq!(
            parse_statuses(br#"{"entry":[{"changes":[{"value":{"statuses":[1,"x",null]}}]}]}"#),
            Ok(vec![])
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse_statuses(&body);
        }

        #[test]
        fn parse_never_panics_on_jsonish(s in "[\\[\\]{}\":,a-z0-9 ]{0,60}") {
            let body = format!(r#"{{"entry":[{{"changes":[{{"value":{{"statuses":[{s}]}}}}]}}]}}"#);
            let _ = parse_statuses(body.as_bytes());
        }

        #[test]
        fn verify_never_panics(header in ".{0,80}", body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            proptest::prop_assert!(verify_signature(b"k", &body, Some(&header)).is_err());
        }
    }

    #[test]
    fn signature_checks() {
        let body = WEBHOOK.as_bytes();
        let good = sign(b"app-secret", body);
        assert_eq!(verify_signature(b"app-secret", body, Some(&good)), Ok(()));
        assert_eq!(
            verify_signature(b"other", body, Some(&good)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"app-secret", b"{}", Some(&good)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"app-secret", body, None),
            Err(SignatureError::Missing)
        );
        let bare = good.trim_start_matches("sha256=");
        assert_eq!(
            verify_signature(b"app-secret", body, Some(bare)),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(b"app-secret", body, Some("sha256=nothex")),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn subscription_handshake() {
        assert_eq!(
            verify_subscription(Some("subscribe"), Some("tok"), Some("1158201444"), "tok"),
            Ok("1158201444".to_string())
        );
        assert_eq!(
            verify_subscription(Some("subscribe"), Some("bad"), Some("1"), "tok"),
            Err(HandshakeError::TokenMismatch)
        );
        assert_eq!(
            verify_subscription(Some("subscribe"), None, Some("1"), "tok"),
            Err(HandshakeError::TokenMismatch)
        );
        assert_eq!(
            verify_subscription(Some("unsubscribe"), Some("tok"), Some("1"), "tok"),
            Err(HandshakeError::NotSubscribe)
        );
        assert_eq!(
            verify_subscription(Some("subscribe"), Some("tok"), None, "tok"),
            Err(HandshakeError::MissingChallenge)
        );
        // An empty configured token never matches.
        assert_eq!(
            verify_subscription(Some("subscribe"), Some(""), Some("1"), ""),
            Err(HandshakeError::TokenMismatch)
        );
        assert_eq!(
            verify_subscription_query(
                "hub.mode=subscribe&hub.challenge=abc%20d&hub.verify_token=t%26k",
                "t&k"
            ),
            Ok("abc d".to_string())
        );
    }
}
