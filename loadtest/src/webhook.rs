//! The built-in webhook receiver: an HTTP server Herald posts status changes
//! to, one path per tenant (`/t/<index>`), each verified against that
//! tenant's `whsec_` secret (Standard Webhooks: `v1,<base64 HMAC-SHA256 over
//! "<webhook-id>.<webhook-timestamp>.<body>">`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::tracker::Tracker;

/// Signing keys by tenant index, filled as endpoints are registered, and the
/// tracker of the current phase.
pub struct Receiver {
    pub keys: RwLock<Vec<Option<Vec<u8>>>>,
    pub tracker: RwLock<Arc<Tracker>>,
}

/// Decode a `whsec_…` secret into its key bytes.
pub fn secret_key(secret: &str) -> anyhow::Result<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
}

/// Whether `signature` (space-separated `v1,<base64>` entries) signs
/// `id.timestamp.body` with `key`.
pub fn verify(key: &[u8], id: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    signature
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        // `verify_slice` compares in constant time.
        .any(|got| mac.clone().verify_slice(&got).is_ok())
}

/// Start the receiver on `addr`; returns its bound address.
pub async fn start(addr: SocketAddr, receiver: Arc<Receiver>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, most likely: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let rx = receiver.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(rx.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

fn answer(status: StatusCode) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = status;
    Ok(res)
}

async fn handle(
    rx: Arc<Receiver>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let tenant: Option<usize> = req
        .uri()
        .path()
        .strip_prefix("/t/")
        .and_then(|t| t.parse().ok());
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, ts, sig) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return answer(StatusCode::BAD_REQUEST),
    };
    let tracker = rx.tracker.read().unwrap_or_else(|p| p.into_inner()).clone();
    let key = tenant.and_then(|t| {
        rx.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(t)
            .cloned()
            .flatten()
    });
    let Some(key) = key else {
        return answer(StatusCode::NOT_FOUND);
    };
    if !verify(&key, &id, &ts, &body, &sig) {
        tracker.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return answer(StatusCode::UNAUTHORIZED);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let data = &v["data"];
    if let (Some(msg), Some(seq), Some(status)) = (
        data["id"].as_str(),
        data["seq"].as_u64(),
        data["status"].as_str(),
    ) {
        let fin = data["final"].as_bool().unwrap_or(false);
        tracker.webhook(&id, msg, seq, status, fin);
    }
    answer(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_standard_webhooks_signatures() {
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(b"evt_1.1700000000.{\"a\":1}");
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let header = format!("v1,bogus v1,{sig}");
        assert!(verify(&key, "evt_1", "1700000000", b"{\"a\":1}", &header));
        assert!(!verify(&key, "evt_2", "1700000000", b"{\"a\":1}", &header));
        assert!(!verify(&key, "evt_1", "1700000000", b"{\"a\":2}", &header));
        assert!(!verify(
            &key,
            "evt_1",
            "1700000000",
            b"{\"a\":1}",
            "v1,AAAA"
        ));
    }

    #[test]
    fn decodes_whsec_secrets() {
        let s = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(b"key")
        );
        assert_eq!(secret_key(&s).unwrap(), b"key");
    }
}
