//! Leases: a carrier bind is held by exactly one node at a time. Carriers
//! grant few binds, and two nodes binding the same account would exceed
//! what was granted (or kick each other off).
//!
//! A connection takes its lease before binding and renews it every third of
//! the lease's time to live; a node that dies stops renewing and its leases
//! lapse, so another node takes the bind over within one TTL. A connection
//! that cannot renew unbinds at once. The store behind the trait (Redis in
//! the service) lives outside this crate.

use std::time::Duration;

/// Where leases are kept.
#[async_trait::async_trait]
pub trait Leases: Send + Sync + 'static {
    /// Take `key` for `holder` if no one holds it. `Ok(true)` when taken.
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, String>;
    /// Extend `key` if `holder` still holds it. `Ok(false)` when it does not.
    async fn renew(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, String>;
    /// Let go of `key` if `holder` holds it.
    async fn release(&self, key: &str, holder: &str);
}

/// Leases for a single node (no store): always granted. For tools and tests
/// that run one node.
pub struct LocalLeases;

#[async_trait::async_trait]
impl Leases for LocalLeases {
    async fn acquire(&self, _: &str, _: &str, _: Duration) -> Result<bool, String> {
        Ok(true)
    }

    async fn renew(&self, _: &str, _: &str, _: Duration) -> Result<bool, String> {
        Ok(true)
    }

    async fn release(&self, _: &str, _: &str) {}
}

/// The lease key of one bind.
pub fn bind_key(carrier: &str, bind: u32) -> String {
    format!("lease:carrier:{carrier}:{bind}")
}
