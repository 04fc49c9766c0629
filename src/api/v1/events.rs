//! `GET /v1/events?after=<cursor>&limit=<1..1000>`: the tenant's event log in
//! cursor order, for a tenant that was away to catch up (and for the live
//! stream to resume from).
//!
//! Pass the `next_after` of one page as the `after` of the next; a page never
//! skips an event that commits later with a lower cursor (see
//! `store::events`), so paging by `after` sees every event once. An empty
//! page answers `next_after` = the `after` given.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::api::auth::Authenticated;
use crate::api::error::ApiError;
use crate::api::{bounded, AppState};

/// Page size bounds.
pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/events")
            .route(web::get().to(list))
            .default_service(web::to(crate::api::method_not_allowed)),
    );
}

/// The parts of the OpenAPI document (`api::openapi`) for this module.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct Api;

/// The query of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    after: i64,
    limit: i64,
}

fn parse_page(query: &str) -> Result<Page, ApiError> {
    let mut page = Page {
        after: 0,
        limit: DEFAULT_PAGE,
    };
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "after" => page.after = parse_after(&value)?,
            "limit" => page.limit = bounded("limit", &value, 1..=MAX_PAGE)?,
            other => return Err(ApiError::unknown_parameter(other)),
        }
    }
    Ok(page)
}

/// An `after` cursor (also of `GET /v1/stream`): any integer `>= 0`; a
/// cursor past the end simply answers nothing yet.
pub fn parse_after(value: &str) -> Result<i64, ApiError> {
    bounded("after", value, 0..=i64::MAX)
}

/// The tenant's status events in cursor order, to catch up.
///
/// Pass `next_after` as the next `after`: paging sees every event once.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    operation_id = "list_events",
    security(("tenant_key" = [])),
    params(
        ("after" = Option<i64>, Query, minimum = 0, description = "Events after this cursor (default 0: from the start)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
    ),
    responses(
        (status = 200, description = "One page", body = crate::api::schemas::EventPage),
        (status = 400, description = "`invalid_parameter`, `unknown_parameter`", body = crate::api::schemas::ErrorBody),
        (status = 401, description = "`unauthorized`", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`service_unavailable`", body = crate::api::schemas::ErrorBody),
    )
)]
async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let page = parse_page(req.query_string())?;
    let events = state
        .store
        .tenant_events(&tenant.id, page.after, page.limit)
        .await?;
    let next_after = events.last().map_or(page.after, |e| e.event.cursor);
    Ok(HttpResponse::Ok().json(json!({
        "data": events,
        "next_after": next_after,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_parse_and_bad_ones_name_the_field() {
        assert_eq!(
            parse_page("").unwrap(),
            Page {
                after: 0,
                limit: 100
            }
        );
        assert_eq!(
            parse_page("after=42&limit=1000").unwrap(),
            Page {
                after: 42,
                limit: 1000
            }
        );
        for (q, field) in [
            ("after=-1", "after"),
            ("after=abc", "after"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("after=99999999999999999999", "after"),
            ("cursor=1", "cursor"),
        ] {
            let e = parse_page(q).unwrap_err();
            assert_eq!(e.status, 400, "{q}");
            assert_eq!(e.field.as_deref(), Some(field), "{q}");
        }
    }
}
