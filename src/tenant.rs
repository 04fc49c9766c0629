//! Tenants (API customers) and their API keys.
//!
//! An API key is `hk_` followed by 43 URL-safe base64 characters (32 random
//! bytes). Only its SHA-256 is stored; the key is printed once at creation.
//! A high-entropy key needs no slow hash: finding a preimage of SHA-256 for a
//! 256-bit secret is out of reach, and lookups stay one index probe.

use base64::Engine;
use chrono::{DateTime, Utc};
use herald_actors::TenantId;
use herald_carriers::Channel;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// API keys start with this, so they are recognisable in a leaked-secret scan.
pub const API_KEY_PREFIX: &str = "hk_";

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// Messages per second, cluster-wide.
    pub rate_limit: f64,
    pub channels: Vec<Channel>,
    pub default_callback_url: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Tenant {
    pub fn allows(&self, channel: Channel) -> bool {
        self.channels.contains(&channel)
    }
}

/// A new random API key.
pub fn generate_api_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{API_KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of an API key: lowercase hex SHA-256.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Parse `sms,whatsapp,voice`.
pub fn parse_channels(list: &str) -> Result<Vec<Channel>, String> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let channel = Channel::parse(part)
            .ok_or_else(|| format!("unknown channel `{part}` (sms, whatsapp, voice)"))?;
        if !out.contains(&channel) {
            out.push(channel);
        }
    }
    if out.is_empty() {
        return Err("at least one channel is needed".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_hash_stably() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_ne!(a, b);
        assert!(a.starts_with(API_KEY_PREFIX));
        assert_eq!(a.len(), 3 + 43);
        assert_eq!(hash_api_key(&a), hash_api_key(&a));
        assert_ne!(hash_api_key(&a), hash_api_key(&b));
        assert_eq!(hash_api_key(&a).len(), 64);
    }

    #[test]
    fn channels_parse() {
        assert_eq!(
            parse_channels("sms, voice,sms").unwrap(),
            vec![Channel::Sms, Channel::Voice]
        );
        assert!(parse_channels("fax").is_err());
        assert!(parse_channels("").is_err());
    }
}
