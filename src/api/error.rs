//! The one place errors become HTTP. Bad input is a 4xx with a code, a
//! message and the field; an internal failure is an opaque 500 logged with
//! its context; an unavailable dependency is 503 with `Retry-After`.
//!
//! Body: `{"error":{"code":"…","message":"…","field":"…"}}`.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::kv::RateDecision;
use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub headers: Vec<(HeaderName, String)>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            headers: Vec::new(),
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422: well-formed, but a field's value is not acceptable.
    pub fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_field(field)
    }

    /// 400: a query parameter's value is not acceptable.
    pub fn invalid_parameter(name: &str, message: impl Into<String>) -> Self {
        Self::bad_request("invalid_parameter", message).with_field(name)
    }

    /// 400: a query parameter this resource does not take.
    pub fn unknown_parameter(name: &str) -> Self {
        Self::bad_request(
            "unknown_parameter",
            format!("unknown query parameter `{name}`"),
        )
        .with_field(name)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_header(
            actix_web::http::header::WWW_AUTHENTICATE,
            "Bearer realm=\"herald\"",
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this resource",
        )
    }

    /// 429 with `Retry-After` and the `RateLimit-*` headers.
    pub fn rate_limited(decision: &RateDecision) -> Self {
        let retry = decision.retry_after_ms.div_ceil(1000).max(1);
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "rate limit of {} messages per second exceeded; retry after {retry} s",
                decision.limit
            ),
        )
        .with_header(actix_web::http::header::RETRY_AFTER, retry.to_string());
        e.headers.extend(rate_limit_headers(decision));
        e
    }

    /// 503 with `Retry-After`: a dependency is down; nothing was done.
    pub fn unavailable(what: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("{what} is unavailable; nothing was stored, retry later"),
        )
        .with_header(actix_web::http::header::RETRY_AFTER, "2")
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; it has been logged",
        )
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds).
pub fn rate_limit_headers(d: &RateDecision) -> Vec<(HeaderName, String)> {
    vec![
        (
            HeaderName::from_static("ratelimit-limit"),
            d.limit.to_string(),
        ),
        (
            HeaderName::from_static("ratelimit-remaining"),
            d.remaining.to_string(),
        ),
        (
            HeaderName::from_static("ratelimit-reset"),
            d.reset_ms.div_ceil(1000).to_string(),
        ),
    ]
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                response.insert_header((name.clone(), v));
            }
        }
        response.json(Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable");
                ApiError::unavailable("the database")
            }
            other => {
                tracing::error!(error = %other, "database error");
                ApiError::internal()
            }
        }
    }
}
