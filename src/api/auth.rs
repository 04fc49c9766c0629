//! Tenant authentication: `Authorization: Bearer <api key>`.
//!
//! The key is hashed (SHA-256) and looked up; verified tenants are cached in
//! memory for `auth.cache_seconds` so a busy tenant costs no database round
//! trip per request. The cached hash is compared in constant time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::tenant::{hash_api_key, Tenant};

/// Most entries kept; past it the cache is cleared (keys are cheap to re-verify).
const CACHE_CAPACITY: usize = 10_000;

/// A verified tenant and when it was verified.
type Entry = (Arc<Tenant>, Instant);

/// Verified API keys, by hash.
#[derive(Clone)]
pub struct AuthCache {
    ttl: Duration,
    entries: Arc<RwLock<HashMap<String, Entry>>>,
}

impl AuthCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Default::default(),
        }
    }

    fn get(&self, hash: &str) -> Option<Arc<Tenant>> {
        let entries = self.entries.read().ok()?;
        let (stored_hash, (tenant, at)) = entries.get_key_value(hash)?;
        let same: bool = stored_hash.as_bytes().ct_eq(hash.as_bytes()).into();
        (same && at.elapsed() < self.ttl).then(|| tenant.clone())
    }

    fn put(&self, hash: String, tenant: Arc<Tenant>) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
            entries.insert(hash, (tenant, Instant::now()));
        }
    }
}

/// The tenant making the request.
pub struct Authenticated(pub Arc<Tenant>);

fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <api key>"))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let (scheme, key) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <api key>"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(ApiError::unauthorized(
            "expected Authorization: Bearer <api key>",
        ));
    }
    Ok(key.trim().to_owned())
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let key = bearer(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let key = key?;
            let state = state.ok_or_else(ApiError::internal)?;
            let hash = hash_api_key(&key);
            if let Some(tenant) = state.auth.get(&hash) {
                return Ok(Authenticated(tenant));
            }
            match state.store.tenant_by_key_hash(&hash).await? {
                Some(tenant) => {
                    let tenant = Arc::new(tenant);
                    state.auth.put(hash, tenant.clone());
                    Ok(Authenticated(tenant))
                }
                None => Err(ApiError::unauthorized("invalid API key")),
            }
        })
    }
}
