//! Endpoint secrets: made (`whsec_` + base64 of 32 random bytes), sealed
//! at rest with the server key (`webhooks.secret_key`, ChaCha20-Poly1305,
//! random nonce stored in front of the ciphertext) and opened to sign.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::config::WebhooksConfig;

/// Prefix of every signing secret shown to a tenant.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("webhooks.secret_key must be the base64 encoding of 32 bytes")]
    BadKey,
    #[error("a sealed secret could not be opened (wrong server key or corrupt data)")]
    Open,
}

/// Seals and opens endpoint secrets with the server key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    key: [u8; 32],
}

impl Sealer {
    pub fn from_config(config: &WebhooksConfig) -> Result<Sealer, SealError> {
        let raw = STANDARD
            .decode(config.secret_key.expose().trim())
            .map_err(|_| SealError::BadKey)?;
        let key: [u8; 32] = raw.try_into().map_err(|_| SealError::BadKey)?;
        Ok(Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            key,
        })
    }

    /// Nonce (12 bytes) followed by the ciphertext of `secret`.
    pub fn seal(&self, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt(Nonce::from_slice(&nonce), secret)
                .expect("ChaCha20-Poly1305 encryption does not fail"),
        );
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 12 {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SealError::Open)
    }

    /// The secret that signs deliveries to a message's `callback_url`:
    /// derived from the server key and the tenant id, so it needs no storage
    /// (`GET /v1/webhooks/callback-secret` shows it).
    pub fn callback_secret(&self, tenant_id: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(b"herald callback secret:");
        mac.update(tenant_id.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// 32 fresh random bytes.
pub fn new_secret() -> Vec<u8> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.to_vec()
}

/// The form shown to a tenant: `whsec_<base64>`.
pub fn display_secret(bytes: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        let config: WebhooksConfig = toml::from_str(
            r#"secret_key = "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdCE="
            allow_private = true
            retry_delays_ms = [1]
            jitter = 0.2
            timeout_ms = 1
            endpoint_concurrency = 1
            busy_delay_ms = 1
            prefetch = 1
            disable_after_seconds = 1
            poll_interval_ms = 1
            batch = 1"#,
        )
        .unwrap();
        Sealer::from_config(&config).unwrap()
    }

    #[test]
    fn sealed_secrets_open_and_tampering_is_caught() {
        let s = sealer();
        let secret = new_secret();
        let mut sealed = s.seal(&secret);
        assert_eq!(s.open(&sealed).unwrap(), secret);
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(s.open(&sealed).is_err());
        assert!(display_secret(&secret).starts_with("whsec_"));
        assert_eq!(s.callback_secret("tnt_a"), s.callback_secret("tnt_a"));
        assert_ne!(s.callback_secret("tnt_a"), s.callback_secret("tnt_b"));
    }
}
