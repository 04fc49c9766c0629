//! `GET /v1/stream`: the tenant's status events, live, over WebSocket.
//!
//! Authenticated before the upgrade (`Authorization: Bearer <key>` or
//! `?access_token=<key>`; 401 otherwise). `after=<cursor>` replays what came
//! after it first; `channels=sms,whatsapp` narrows from the start. Frames
//! and liveness: see `stream::session`.

use actix_web::{web, HttpRequest, HttpResponse};
use herald_actors::TenantId;

use crate::api::error::ApiError;
use crate::api::v1::events::parse_after;
use crate::api::AppState;
use crate::stream::session::{self, Filter, Limits};
use crate::stream::Hub;
use crate::tenant::hash_api_key;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/stream")
            .route(web::get().to(connect))
            .default_service(web::to(crate::api::method_not_allowed)),
    );
}

/// The parts of the OpenAPI document (`api::openapi`) for this module.
#[derive(utoipa::OpenApi)]
#[openapi(paths(connect))]
pub struct Api;

/// The query of a stream request.
#[derive(Debug, Default, PartialEq)]
struct Query {
    access_token: Option<String>,
    after: Option<i64>,
    channels: Option<Vec<String>>,
}

fn parse_query(query: &str) -> Result<Query, ApiError> {
    let mut q = Query::default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "access_token" => q.access_token = Some(value.into_owned()),
            "after" => q.after = Some(parse_after(&value)?),
            "channels" => {
                q.channels = Some(
                    value
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
            other => return Err(ApiError::unknown_parameter(other)),
        }
    }
    Ok(q)
}

fn api_key(req: &HttpRequest, q: &Query) -> Result<String, ApiError> {
    if let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let v = h
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        return match v.split_once(' ') {
            Some((scheme, key))
                if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() =>
            {
                Ok(key.trim().to_owned())
            }
            _ => Err(ApiError::unauthorized(
                "expected Authorization: Bearer <api key>",
            )),
        };
    }
    q.access_token
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("send Authorization: Bearer <api key> or ?access_token=")
        })
}

/// Status events, live, over WebSocket.
///
/// A WebSocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`). After
/// the 101 every text frame Herald sends is a `StreamEvent`. `after` replays
/// everything after that cursor first, then continues live, with no gap and
/// no duplicate. Narrow at any time by sending
/// `{"subscribe":{"message_ids":["msg_…"]}}` or
/// `{"subscribe":{"channels":["sms"]}}` (answered `{"subscribed":…}`).
/// Herald pings every `stream.ping_interval_ms`; a silent client is closed.
/// Close codes: 1008 (too far behind), 1001 (shutdown), 1013 (this node lost
/// events), each with `resume with after=<cursor>`.
#[utoipa::path(
    get,
    path = "/v1/stream",
    tag = "stream",
    operation_id = "stream_events",
    security(("tenant_key" = []), ("tenant_key_query" = [])),
    params(
        ("after" = Option<i64>, Query, minimum = 0, description = "Replay the events after this cursor, then go live"),
        ("channels" = Option<String>, Query, description = "Comma-separated channels to receive", example = "sms,whatsapp"),
        ("access_token" = Option<String>, Query, description = "The API key, when `Authorization` cannot be set"),
    ),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket is open; text frames are `StreamEvent`s"),
        (status = 400, description = "`websocket_required` (not an upgrade), `invalid_parameter`, `unknown_parameter`", body = crate::api::schemas::ErrorBody),
        (status = 401, description = "`unauthorized`: no or wrong key (before the upgrade)", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`service_unavailable`", body = crate::api::schemas::ErrorBody),
    )
)]
async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    hub: web::Data<Hub>,
) -> Result<HttpResponse, ApiError> {
    let q = parse_query(req.query_string())?;
    let key = api_key(&req, &q)?;
    let tenant = state
        .store
        .tenant_by_key_hash(&hash_api_key(&key))
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
    let (response, session, inbound) = crate::api::upgrade(&req, body)?;
    // Subscribe before the replay starts: nothing falls between the two.
    let live = hub.subscribe();
    let limits = Limits {
        ping_interval: std::time::Duration::from_millis(state.config.stream.ping_interval_ms),
        client_timeout: std::time::Duration::from_millis(state.config.stream.client_timeout_ms),
        send_timeout: std::time::Duration::from_millis(state.config.stream.send_timeout_ms),
    };
    let filter = Filter {
        message_ids: None,
        channels: q.channels.map(|c| c.into_iter().collect()),
    };
    let tenant_id: TenantId = tenant.id.clone();
    actix_web::rt::spawn(session::run(
        hub.get_ref().clone(),
        live,
        tenant_id,
        q.after,
        filter,
        limits,
        session,
        inbound,
    ));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse() {
        let q = parse_query("access_token=k&after=5&channels=sms,voice").unwrap();
        assert_eq!(q.access_token.as_deref(), Some("k"));
        assert_eq!(q.after, Some(5));
        assert_eq!(q.channels, Some(vec!["sms".into(), "voice".into()]));
        assert_eq!(parse_query("after=-1").unwrap_err().status, 400);
        assert_eq!(parse_query("nope=1").unwrap_err().status, 400);
    }
}
