//! The `tenants` table.

use herald_actors::TenantId;
use herald_carriers::Channel;
use tokio_postgres::Row;

use super::{Store, StoreError};
use crate::tenant::{parse_channels, Tenant};

const COLUMNS: &str = "id, name, rate_limit, channels, default_callback_url, created_at";

fn tenant_from_row(row: &Row) -> Result<Tenant, StoreError> {
    let channels: Vec<String> = row.get("channels");
    Ok(Tenant {
        id: TenantId::from_trusted(row.get("id")),
        name: row.get("name"),
        rate_limit: row.get("rate_limit"),
        channels: parse_channels(&channels.join(",")).map_err(StoreError::Corrupt)?,
        default_callback_url: row.get("default_callback_url"),
        created_at: row.get("created_at"),
    })
}

impl Store {
    /// Store a new tenant with the hash of its API key.
    pub async fn create_tenant(
        &self,
        name: &str,
        rate_limit: f64,
        channels: &[Channel],
        api_key_hash: &str,
    ) -> Result<Tenant, StoreError> {
        let id = TenantId::generate();
        let channels: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
        self.with(|c| async move {
            let row = c
                .query_one(
                    &format!(
                        "INSERT INTO tenants (id, name, rate_limit, channels, api_key_hash) \
                         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
                    ),
                    &[&id.as_str(), &name, &rate_limit, &channels, &api_key_hash],
                )
                .await?;
            tenant_from_row(&row)
        })
        .await
    }

    /// Every tenant, oldest first.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.with(|c| async move {
            let rows = c
                .query(
                    &format!("SELECT {COLUMNS} FROM tenants ORDER BY created_at, id"),
                    &[],
                )
                .await?;
            rows.iter().map(tenant_from_row).collect()
        })
        .await
    }

    /// The tenant whose API key hashes to `hash`.
    pub async fn tenant_by_key_hash(&self, hash: &str) -> Result<Option<Tenant>, StoreError> {
        self.with(|c| async move {
            let row = c
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM tenants WHERE api_key_hash = $1"),
                    &[&hash],
                )
                .await?;
            row.as_ref().map(tenant_from_row).transpose()
        })
        .await
    }
}
