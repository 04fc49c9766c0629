//! `GET /docs`: an explorer (Swagger UI) over `GET /openapi.json`.
//!
//! Every file is vendored in `assets/docs/` (versions and licence in its
//! README) and compiled into the binary, so the page works offline and
//! loads nothing from a CDN. The page itself is `no-cache`; the assets are
//! cached for a day and revalidated by an `ETag` (their SHA-256), so an
//! upgrade of Herald is seen at the latest a day later, at once on reload.

use std::sync::LazyLock;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// The page.
const INDEX: &[u8] = include_bytes!("../../assets/docs/index.html");

/// A static file of the explorer.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// What `GET /docs/{asset}` serves.
const ASSETS: &[Asset] = &[
    Asset {
        name: "swagger-ui-bundle.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/docs/swagger-ui-bundle.js"),
    },
    Asset {
        name: "swagger-ui.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/docs/swagger-ui.css"),
    },
    Asset {
        name: "init.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/docs/init.js"),
    },
    Asset {
        name: "LICENSE",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../../assets/docs/LICENSE"),
    },
];

/// How long browsers keep an asset before revalidating it.
const ASSET_CACHE: &str = "public, max-age=86400";

/// Each asset's entity tag, computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.bytes))[..32]))
        .collect()
});

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/docs")
            .route(web::get().to(page))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/docs/{asset}")
            .route(web::get().to(asset))
            .default_service(web::to(super::method_not_allowed)),
    );
}

/// The parts of this module's own document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(page, asset))]
pub struct Api;

/// The API explorer (HTML).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    responses((status = 200, description = "Swagger UI over /openapi.json",
        content_type = "text/html", body = String))
)]
async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(INDEX)
}

/// A static file of the explorer.
#[utoipa::path(
    get,
    path = "/docs/{asset}",
    tag = "docs",
    params(("asset" = String, Path, description = "`swagger-ui-bundle.js`, `swagger-ui.css`, `init.js` or `LICENSE`")),
    responses(
        (status = 200, description = "The file, with its ETag and `Cache-Control`",
            content_type = "text/javascript", body = String),
        (status = 304, description = "Not modified (`If-None-Match` matched the ETag)"),
        (status = 404, description = "No such asset", body = super::schemas::ErrorBody),
    )
)]
async fn asset(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let index = ASSETS
        .iter()
        .position(|a| a.name == path.as_str())
        .ok_or_else(|| ApiError::not_found("asset"))?;
    let (asset, etag) = (&ASSETS[index], &ETAGS[index]);
    let fresh = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((ETAG, etag.as_str()))
        .insert_header((CACHE_CONTROL, ASSET_CACHE));
    if fresh {
        return Ok(response.finish());
    }
    Ok(response
        .insert_header((CONTENT_TYPE, asset.content_type))
        .body(asset.bytes))
}
