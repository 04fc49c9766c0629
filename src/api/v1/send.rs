//! The body of `POST /v1/messages` and its validation into a
//! [`MessageRecord`] ready to be written. Every refusal names its field.

use chrono::{DateTime, Duration, Utc};
use herald_actors::payload::Priority;
use herald_actors::MessageId;
use herald_carriers::encoding::analyze;
use herald_carriers::{Channel, Content};
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::config::LimitsConfig;
use crate::message::{MessageRecord, MessageStatus};
use crate::tenant::Tenant;

/// Longest WhatsApp text body (characters), as the Cloud API allows.
pub const WHATSAPP_MAX_BODY: usize = 4096;
/// Longest text to speak (characters).
pub const VOICE_MAX_SAY: usize = 4000;
/// Longest URL accepted.
pub const MAX_URL: usize = 2048;
/// Validity bounds (seconds): one minute to seven days.
pub const VALIDITY_RANGE: std::ops::RangeInclusive<u32> = 60..=604_800;
/// How far ahead a message may be scheduled.
pub const MAX_SCHEDULE_AHEAD_DAYS: i64 = 35;
/// Most template parameters, and their longest value.
pub const MAX_TEMPLATE_PARAMS: usize = 50;
pub const MAX_TEMPLATE_PARAM_CHARS: usize = 1024;

/// A send request as the tenant wrote it. Give `body` (SMS, WhatsApp),
/// `template` (WhatsApp) or one of `say` and `audio_url` (voice).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Allowed for the tenant, else 403 `channel_not_allowed`.
    #[schema(value_type = crate::api::schemas::Channel)]
    pub channel: Channel,
    /// E.164, valid in its country's numbering plan.
    #[schema(example = "+250788123456")]
    pub to: String,
    /// SMS: alphanumeric id (1-11 letters, digits, spaces), short code (3-8
    /// digits) or E.164; WhatsApp and voice: E.164.
    #[schema(example = "HERALD")]
    pub from: String,
    /// SMS: GSM 03.38 or UCS-2 (detected), at most `limits.max_segments`
    /// segments; WhatsApp: at most 4096 characters.
    pub body: Option<String>,
    /// WhatsApp: a template instead of `body`.
    pub template: Option<TemplateRequest>,
    /// Voice: text to speak (at most 4000 characters).
    pub say: Option<String>,
    /// Voice: an absolute http(s) URL of audio to play.
    pub audio_url: Option<String>,
    /// Where this message's status changes are POSTed instead of the
    /// tenant's webhook endpoints (absolute http(s) URL).
    pub callback_url: Option<String>,
    /// Give up when not sent within this many seconds.
    #[schema(minimum = 60, maximum = 604_800)]
    pub validity_seconds: Option<u32>,
    /// Send later: RFC 3339, in the future, within 35 days.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// `normal` (default) or `high`.
    #[schema(value_type = Option<crate::api::schemas::Priority>)]
    pub priority: Option<Priority>,
    /// At most 16 string values; keys up to 40, values up to 500 characters.
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A WhatsApp template reference.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Template)]
pub struct TemplateRequest {
    #[schema(example = "otp")]
    pub name: String,
    #[schema(example = "en")]
    pub language: String,
    #[serde(default)]
    pub params: Vec<String>,
}

fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(code, field, message)
}

/// `+` then 7 to 15 digits, and a number the numbering plan knows.
pub fn validate_e164(field: &str, value: &str) -> Result<String, ApiError> {
    let digits = value.strip_prefix('+').unwrap_or("");
    let shaped = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !shaped {
        return Err(invalid(
            "invalid_phone_number",
            field,
            format!("{field} must be an E.164 number such as +250788123456"),
        ));
    }
    let valid = phonenumber::parse(None, value)
        .map(|n| phonenumber::is_valid(&n))
        .unwrap_or(false);
    if !valid {
        return Err(invalid(
            "invalid_phone_number",
            field,
            format!("{field} is not a valid phone number in its country's numbering plan"),
        ));
    }
    Ok(value.to_owned())
}

/// A number of each of the platform's home countries (Rwanda, Uganda, DR
/// Congo, Kenya, Tanzania, Burundi).
const HOME_NUMBERS: [&str; 6] = [
    "+250788123456",
    "+256772123456",
    "+243812345678",
    "+254712345678",
    "+255712345678",
    "+25779123456",
];

/// Load the numbering plans ahead of the first request: the phone-number
/// metadata is read on first use (about 80 ms here), and each country's
/// patterns are compiled on the first number of that country (1-2 ms),
/// while the requests behind it wait. Called once at start, for the home
/// countries; others compile on their first number.
pub fn load_numbering_plans() {
    for n in HOME_NUMBERS {
        let _ = validate_e164("to", n);
    }
}

/// Sender: E.164 number, short code (3-8 digits) or alphanumeric id (1-11
/// characters, letters, digits and spaces, at least one letter).
fn validate_sender(channel: Channel, from: &str) -> Result<String, ApiError> {
    if from.starts_with('+') {
        return validate_e164("from", from);
    }
    if channel != Channel::Sms {
        return Err(invalid(
            "invalid_sender",
            "from",
            format!(
                "from must be an E.164 number for {} messages",
                channel.as_str()
            ),
        ));
    }
    let is_short_code = (3..=8).contains(&from.len()) && from.bytes().all(|b| b.is_ascii_digit());
    let is_alphanumeric = (1..=11).contains(&from.chars().count())
        && from.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
        && from.chars().any(|c| c.is_ascii_alphabetic())
        && from.trim() == from;
    if is_short_code || is_alphanumeric {
        Ok(from.to_owned())
    } else {
        Err(invalid(
            "invalid_sender",
            "from",
            "from must be an E.164 number, a short code of 3-8 digits, or an alphanumeric sender id of 1-11 characters",
        ))
    }
}

fn validate_url(field: &str, value: &str) -> Result<String, ApiError> {
    let ok = value.len() <= MAX_URL
        && url::Url::parse(value)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .unwrap_or(false);
    if ok {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            "invalid_url",
            field,
            format!("{field} must be an absolute http(s) URL of at most {MAX_URL} characters"),
        ))
    }
}

fn forbid(field: &str, present: bool, channel: Channel) -> Result<(), ApiError> {
    if present {
        Err(invalid(
            "field_not_allowed",
            field,
            format!("{field} is not allowed for {} messages", channel.as_str()),
        ))
    } else {
        Ok(())
    }
}

fn non_empty(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(invalid(
            "empty_field",
            field,
            format!("{field} must not be empty"),
        )),
        other => Ok(other),
    }
}

fn validate_template(t: TemplateRequest) -> Result<Content, ApiError> {
    let name_ok = (1..=512).contains(&t.name.len())
        && t.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !name_ok {
        return Err(invalid(
            "invalid_template",
            "template.name",
            "template.name must be 1-512 lowercase letters, digits or underscores",
        ));
    }
    let lang = t.language.as_bytes();
    let lang_ok = match lang.len() {
        2 | 3 => lang.iter().all(u8::is_ascii_lowercase),
        5 | 6 => {
            let (base, region) = t.language.split_at(t.language.len() - 3);
            base.bytes().all(|b| b.is_ascii_lowercase())
                && region.starts_with('_')
                && region[1..].bytes().all(|b| b.is_ascii_uppercase())
        }
        _ => false,
    };
    if !lang_ok {
        return Err(invalid(
            "invalid_template",
            "template.language",
            "template.language must be a language code such as en or en_US",
        ));
    }
    if t.params.len() > MAX_TEMPLATE_PARAMS {
        return Err(invalid(
            "invalid_template",
            "template.params",
            format!("at most {MAX_TEMPLATE_PARAMS} template parameters"),
        ));
    }
    for (i, p) in t.params.iter().enumerate() {
        if p.is_empty() || p.chars().count() > MAX_TEMPLATE_PARAM_CHARS {
            return Err(invalid(
                "invalid_template",
                &format!("template.params[{i}]"),
                format!("template parameters must be 1-{MAX_TEMPLATE_PARAM_CHARS} characters"),
            ));
        }
    }
    Ok(Content::Template {
        name: t.name,
        language: t.language,
        params: t.params,
    })
}

/// Validate a request for `tenant` into the record to write.
pub fn validate(
    req: SendRequest,
    tenant: &Tenant,
    limits: &LimitsConfig,
    now: DateTime<Utc>,
) -> Result<MessageRecord, ApiError> {
    let channel = req.channel;
    if !tenant.allows(channel) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "channel_not_allowed",
            format!("this account may not send {} messages", channel.as_str()),
        )
        .with_field("channel"));
    }
    let to = validate_e164("to", &req.to)?;
    let from = validate_sender(channel, &req.from)?;
    let body = non_empty("body", req.body)?;
    let say = non_empty("say", req.say)?;

    let (content, segments, encoding) = match channel {
        Channel::Sms => {
            forbid("template", req.template.is_some(), channel)?;
            forbid("say", say.is_some(), channel)?;
            forbid("audio_url", req.audio_url.is_some(), channel)?;
            let body = body.ok_or_else(|| {
                invalid("missing_field", "body", "body is required for sms messages")
            })?;
            let info = analyze(&body);
            if info.segments > limits.max_segments {
                return Err(invalid(
                    "too_many_segments",
                    "body",
                    format!(
                        "body needs {} segments ({}); at most {} are allowed",
                        info.segments,
                        info.encoding.as_str(),
                        limits.max_segments
                    ),
                ));
            }
            (
                Content::Text { body },
                info.segments as u32,
                Some(info.encoding.as_str().to_owned()),
            )
        }
        Channel::Whatsapp => {
            forbid("say", say.is_some(), channel)?;
            forbid("audio_url", req.audio_url.is_some(), channel)?;
            let content = match (body, req.template) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "conflicting_fields",
                        "template",
                        "give either body or template, not both",
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        "missing_field",
                        "body",
                        "whatsapp messages need a body or a template",
                    ))
                }
                (Some(body), None) => {
                    if body.chars().count() > WHATSAPP_MAX_BODY {
                        return Err(invalid(
                            "body_too_long",
                            "body",
                            format!("whatsapp text is at most {WHATSAPP_MAX_BODY} characters"),
                        ));
                    }
                    Content::Text { body }
                }
                (None, Some(t)) => validate_template(t)?,
            };
            (content, 1, None)
        }
        Channel::Voice => {
            forbid("body", body.is_some(), channel)?;
            forbid("template", req.template.is_some(), channel)?;
            let content = match (say, req.audio_url) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "conflicting_fields",
                        "audio_url",
                        "give either say or audio_url, not both",
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        "missing_field",
                        "say",
                        "voice messages need say or audio_url",
                    ))
                }
                (Some(text), None) => {
                    if text.chars().count() > VOICE_MAX_SAY {
                        return Err(invalid(
                            "say_too_long",
                            "say",
                            format!("say is at most {VOICE_MAX_SAY} characters"),
                        ));
                    }
                    Content::Say { text }
                }
                (None, Some(url)) => Content::Audio {
                    url: validate_url("audio_url", &url)?,
                },
            };
            (content, 1, None)
        }
    };

    let callback_url = req
        .callback_url
        .as_deref()
        .map(|u| validate_url("callback_url", u))
        .transpose()?;

    if let Some(v) = req.validity_seconds {
        if !VALIDITY_RANGE.contains(&v) {
            return Err(invalid(
                "invalid_validity",
                "validity_seconds",
                format!(
                    "validity_seconds must be between {} and {}",
                    VALIDITY_RANGE.start(),
                    VALIDITY_RANGE.end()
                ),
            ));
        }
    }
    if let Some(at) = req.scheduled_at {
        if at <= now {
            return Err(invalid(
                "invalid_schedule",
                "scheduled_at",
                "scheduled_at must be in the future",
            ));
        }
        if at > now + Duration::days(MAX_SCHEDULE_AHEAD_DAYS) {
            return Err(invalid(
                "invalid_schedule",
                "scheduled_at",
                format!("scheduled_at must be within {MAX_SCHEDULE_AHEAD_DAYS} days"),
            ));
        }
    }
    let metadata = req.metadata.unwrap_or_default();
    if metadata.len() > limits.max_metadata_keys {
        return Err(invalid(
            "invalid_metadata",
            "metadata",
            format!("at most {} metadata keys", limits.max_metadata_keys),
        ));
    }
    for (k, v) in &metadata {
        if k.is_empty() || k.chars().count() > limits.max_metadata_key_chars {
            return Err(invalid(
                "invalid_metadata",
                "metadata",
                format!(
                    "metadata keys must be 1-{} characters",
                    limits.max_metadata_key_chars
                ),
            ));
        }
        match v {
            serde_json::Value::String(s)
                if s.chars().count() <= limits.max_metadata_value_chars => {}
            serde_json::Value::String(_) => {
                return Err(invalid(
                    "invalid_metadata",
                    &format!("metadata.{k}"),
                    format!(
                        "metadata values are at most {} characters",
                        limits.max_metadata_value_chars
                    ),
                ))
            }
            _ => {
                return Err(invalid(
                    "invalid_metadata",
                    &format!("metadata.{k}"),
                    "metadata values must be strings",
                ))
            }
        }
    }

    let starts = req.scheduled_at.unwrap_or(now);
    let expires_at = req
        .validity_seconds
        .map(|v| starts + Duration::seconds(i64::from(v)));
    let status = if req.scheduled_at.is_some() {
        MessageStatus::Scheduled
    } else {
        MessageStatus::Queued
    };
    Ok(MessageRecord {
        id: MessageId::generate(),
        tenant_id: tenant.id.clone(),
        channel,
        to,
        from,
        content,
        segments,
        encoding,
        priority: req.priority.unwrap_or_default(),
        status: status.as_str().to_owned(),
        status_seq: 1,
        carrier: None,
        carrier_ref: None,
        callback_url,
        validity_seconds: req.validity_seconds.map(|v| v as i32),
        expires_at,
        scheduled_at: req.scheduled_at,
        metadata,
        idempotency_key: None,
        request_hash: None,
        created_at: now,
        updated_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn east_african_numbers_are_valid() {
        // The numbers loaded at start are real ones, so loading them
        // compiles each home country's patterns.
        for n in HOME_NUMBERS {
            assert!(validate_e164("to", n).is_ok(), "{n}");
        }
    }

    #[test]
    fn malformed_numbers_are_refused() {
        for n in [
            "250788123456",
            "+25078812345a",
            "+",
            "+0123456789",
            "+2507",
            "+250 788 123 456",
            "+2507881234567890",
        ] {
            assert!(validate_e164("to", n).is_err(), "{n}");
        }
    }

    #[test]
    fn senders() {
        assert!(validate_sender(Channel::Sms, "HERALD").is_ok());
        assert!(validate_sender(Channel::Sms, "MTN Info").is_ok());
        assert!(validate_sender(Channel::Sms, "12345").is_ok());
        assert!(validate_sender(Channel::Sms, "+250788123456").is_ok());
        assert!(validate_sender(Channel::Sms, "ABCDEFGHIJKL").is_err());
        assert!(validate_sender(Channel::Sms, "").is_err());
        assert!(validate_sender(Channel::Sms, "12").is_err());
        assert!(validate_sender(Channel::Sms, "HÉRALD").is_err());
        assert!(validate_sender(Channel::Voice, "HERALD").is_err());
    }
}
