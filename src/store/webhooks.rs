//! Webhook tables: `webhook_endpoints` (a tenant's receivers, each with its
//! sealed signing secret), `webhook_attempts` (every delivery attempt and
//! every `endpoint.disabled` notice) and `webhook_cursor` (how far the
//! dispatcher has turned the event log into delivery tasks).
//!
//! Data enters from the API (endpoints), the dispatcher ([`Store::dispatch`]
//! reads status events past the cursor and advances it only after its
//! caller's publish succeeded, in one transaction holding the cursor row
//! `FOR UPDATE SKIP LOCKED`, so one node dispatches at a time and a crash
//! re-dispatches rather than loses) and the deliverer (attempts, endpoint
//! health). Data leaves as the endpoint listing, the attempts shown on
//! `GET /v1/messages/{id}` and the events of a replay.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_actors::{MessageId, TenantId};
use tokio_postgres::Row;

use super::{Store, StoreError};
use crate::webhooks::EndpointId;

/// A tenant's webhook endpoint as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRow {
    pub id: EndpointId,
    pub tenant_id: String,
    pub url: String,
    pub description: Option<String>,
    /// Nonce and ciphertext of the signing secret (see `webhooks::seal`).
    pub secret_sealed: Vec<u8>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The message statuses it receives; `None`: every status.
    pub statuses: Option<Vec<String>>,
}

/// A status event to be delivered, with the message's callback URL.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchEvent {
    pub cursor: i64,
    pub message_id: String,
    pub tenant_id: String,
    pub seq: i32,
    pub status: String,
    pub previous_status: Option<String>,
    pub is_final: bool,
    pub carrier: Option<String>,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
    pub callback_url: Option<String>,
}

/// An enabled endpoint a dispatched event may go to.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointTarget {
    pub id: EndpointId,
    pub tenant_id: String,
    pub url: String,
    /// The message statuses it receives; `None`: every status.
    pub statuses: Option<Vec<String>>,
}

impl EndpointTarget {
    /// Whether an event with this status goes to this endpoint.
    pub fn wants(&self, status: &str) -> bool {
        self.statuses
            .as_ref()
            .is_none_or(|s| s.iter().any(|x| x == status))
    }
}

/// One row of `webhook_attempts`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttemptRow {
    pub tenant_id: String,
    pub event_type: String,
    pub webhook_id: String,
    pub event_cursor: Option<i64>,
    pub message_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub url: String,
    pub attempt: i32,
    pub outcome: String,
    pub status_code: Option<i32>,
    pub latency_ms: Option<i32>,
    pub error: Option<String>,
    pub next_try_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Since {
    Cursor(i64),
    Time(DateTime<Utc>),
}

/// Most events one replay re-sends.
pub const REPLAY_MAX: i64 = 10_000;

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, secret_sealed, enabled, \
     disabled_reason, disabled_at, failing_since, created_at, statuses";

const EVENT_COLUMNS: &str = "e.cursor, e.message_id, e.tenant_id, e.seq, e.status, \
     e.previous_status, e.final, e.carrier, e.detail, e.at, m.callback_url";

fn endpoint_from_row(r: &Row) -> EndpointRow {
    EndpointRow {
        id: EndpointId::from_trusted(r.get("id")),
        tenant_id: r.get("tenant_id"),
        url: r.get("url"),
        description: r.get("description"),
        secret_sealed: r.get("secret_sealed"),
        enabled: r.get("enabled"),
        disabled_reason: r.get("disabled_reason"),
        disabled_at: r.get("disabled_at"),
        failing_since: r.get("failing_since"),
        created_at: r.get("created_at"),
        statuses: r.get("statuses"),
    }
}

fn event_from_row(r: &Row) -> DispatchEvent {
    DispatchEvent {
        cursor: r.get(0),
        message_id: r.get(1),
        tenant_id: r.get(2),
        seq: r.get(3),
        status: r.get(4),
        previous_status: r.get(5),
        is_final: r.get(6),
        carrier: r.get(7),
        detail: r.get(8),
        at: r.get(9),
        callback_url: r.get(10),
    }
}

impl Store {
    /// Store a new endpoint.
    pub async fn create_endpoint(
        &self,
        tenant: &TenantId,
        id: &EndpointId,
        url: &str,
        description: Option<&str>,
        secret_sealed: &[u8],
        statuses: Option<&[String]>,
    ) -> Result<EndpointRow, StoreError> {
        self.with(|c| async move {
            let row = c
                .query_one(
                    &format!(
                        "INSERT INTO webhook_endpoints (id, tenant_id, url, description, \
                         secret_sealed, statuses) VALUES ($1, $2, $3, $4, $5, $6) \
                         RETURNING {ENDPOINT_COLUMNS}"
                    ),
                    &[
                        &id.as_str(),
                        &tenant.as_str(),
                        &url,
                        &description,
                        &secret_sealed,
                        &statuses,
                    ],
                )
                .await?;
            Ok(endpoint_from_row(&row))
        })
        .await
    }

    /// The tenant's endpoints (not deleted), oldest first.
    pub async fn list_endpoints(&self, tenant: &TenantId) -> Result<Vec<EndpointRow>, StoreError> {
        self.with(|c| async move {
            let rows = c
                .query(
                    &format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
                         WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at, id"
                    ),
                    &[&tenant.as_str()],
                )
                .await?;
            Ok(rows.iter().map(endpoint_from_row).collect())
        })
        .await
    }

    /// One endpoint of the tenant (`None`: unknown, deleted or another's).
    pub async fn endpoint(
        &self,
        tenant: &TenantId,
        id: &EndpointId,
    ) -> Result<Option<EndpointRow>, StoreError> {
        self.with(|c| async move {
            let row = c
                .query_opt(
                    &format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
                         WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL"
                    ),
                    &[&id.as_str(), &tenant.as_str()],
                )
                .await?;
            Ok(row.as_ref().map(endpoint_from_row))
        })
        .await
    }

    /// The live (not deleted) endpoints among `ids`, in no order.
    pub async fn endpoints_by_ids(&self, ids: &[String]) -> Result<Vec<EndpointRow>, StoreError> {
        self.with(|c| async move {
            let rows = c
                .query(
                    &format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
                         WHERE id = ANY($1) AND deleted_at IS NULL"
                    ),
                    &[&ids],
                )
                .await?;
            Ok(rows.iter().map(endpoint_from_row).collect())
        })
        .await
    }

    /// Delete (soft: attempts keep naming it). Whether it existed.
    pub async fn delete_endpoint(
        &self,
        tenant: &TenantId,
        id: &EndpointId,
    ) -> Result<bool, StoreError> {
        self.with(|c| async move {
            let n = c
                .execute(
                    "UPDATE webhook_endpoints SET deleted_at = now(), enabled = false \
                     WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL",
                    &[&id.as_str(), &tenant.as_str()],
                )
                .await?;
            Ok(n == 1)
        })
        .await
    }

    /// Disable an endpoint for `reason`. True when this call disabled it.
    pub async fn disable_endpoint(
        &self,
        id: &EndpointId,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.with(|c| async move {
            let n = c
                .execute(
                    "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, \
                     disabled_at = now() WHERE id = $1 AND enabled",
                    &[&id.as_str(), &reason],
                )
                .await?;
            Ok(n == 1)
        })
        .await
    }

    /// A delivery to the endpoint succeeded: its run of failures ends.
    pub async fn endpoint_succeeded(&self, id: &EndpointId) -> Result<(), StoreError> {
        self.with(|c| async move {
            c.execute(
                "UPDATE webhook_endpoints SET failing_since = NULL \
                 WHERE id = $1 AND failing_since IS NOT NULL",
                &[&id.as_str()],
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// A delivery to the endpoint failed. When it has been failing for
    /// longer than `disable_after` it is disabled (reason `failing`); true
    /// when this call disabled it.
    pub async fn endpoint_failed(
        &self,
        id: &EndpointId,
        disable_after: Duration,
    ) -> Result<bool, StoreError> {
        let secs = super::events::interval_secs(disable_after);
        self.with(|c| async move {
            let row = c
                .query_opt(
                    "UPDATE webhook_endpoints SET \
                       failing_since = coalesce(failing_since, now()), \
                       enabled = NOT (failing_since IS NOT NULL AND \
                         failing_since < now() - make_interval(secs => $2::float8)), \
                       disabled_reason = CASE WHEN failing_since IS NOT NULL AND \
                         failing_since < now() - make_interval(secs => $2::float8) \
                         THEN 'failing' ELSE disabled_reason END, \
                       disabled_at = CASE WHEN failing_since IS NOT NULL AND \
                         failing_since < now() - make_interval(secs => $2::float8) \
                         THEN now() ELSE disabled_at END \
                     WHERE id = $1 AND enabled RETURNING enabled",
                    &[&id.as_str(), &secs],
                )
                .await?;
            Ok(row.is_some_and(|r| !r.get::<_, bool>(0)))
        })
        .await
    }

    /// Record several attempts (or notices) with one statement (all or
    /// none), in order.
    pub async fn record_attempts(&self, rows: Vec<AttemptRow>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        // One array per column, named after its field, the fields moved
        // out of the rows.
        macro_rules! columns {
            ($($f:ident),*) => {
                $(let mut $f = Vec::with_capacity(rows.len());)*
                for a in rows {
                    $($f.push(a.$f);)*
                }
            };
        }
        columns!(
            tenant_id,
            event_type,
            webhook_id,
            event_cursor,
            message_id,
            endpoint_id,
            url,
            attempt,
            outcome,
            status_code,
            latency_ms,
            error,
            next_try_at
        );
        self.with(|c| async move {
            c.execute(
                "INSERT INTO webhook_attempts (tenant_id, event_type, webhook_id, event_cursor, \
                   message_id, endpoint_id, url, attempt, outcome, status_code, latency_ms, \
                   error, next_try_at) \
                 SELECT t, ty, w, ec, m, e, u, a, o, sc, l, er, n \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
                             $6::text[], $7::text[], $8::int[], $9::text[], $10::int[], \
                             $11::int[], $12::text[], $13::timestamptz[]) \
                      WITH ORDINALITY AS x(t, ty, w, ec, m, e, u, a, o, sc, l, er, n, k) \
                 ORDER BY k",
                &[
                    &tenant_id,
                    &event_type,
                    &webhook_id,
                    &event_cursor,
                    &message_id,
                    &endpoint_id,
                    &url,
                    &attempt,
                    &outcome,
                    &status_code,
                    &latency_ms,
                    &error,
                    &next_try_at,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// Attempts of the tenant's rows matching `message` or `endpoint`, oldest first.
    async fn attempts_where(
        &self,
        column: &'static str,
        tenant: &TenantId,
        value: &str,
        limit: i64,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        self.with(|c| async move {
            let rows = c
                .query(
                    &format!(
                        "SELECT tenant_id, event_type, webhook_id, event_cursor, message_id, \
                           endpoint_id, url, attempt, outcome, status_code, latency_ms, error, \
                           next_try_at, created_at \
                         FROM webhook_attempts WHERE {column} = $1 AND tenant_id = $2 \
                         ORDER BY id LIMIT $3"
                    ),
                    &[&value, &tenant.as_str(), &limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| AttemptRow {
                    tenant_id: r.get(0),
                    event_type: r.get(1),
                    webhook_id: r.get(2),
                    event_cursor: r.get(3),
                    message_id: r.get(4),
                    endpoint_id: r.get(5),
                    url: r.get(6),
                    attempt: r.get(7),
                    outcome: r.get(8),
                    status_code: r.get(9),
                    latency_ms: r.get(10),
                    error: r.get(11),
                    next_try_at: r.get(12),
                    created_at: r.get(13),
                })
                .collect())
        })
        .await
    }

    /// Webhook attempts for one of the tenant's messages, oldest first.
    pub async fn message_attempts(
        &self,
        tenant: &TenantId,
        id: &MessageId,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        self.attempts_where("message_id", tenant, id.as_str(), 1000)
            .await
    }

    /// Attempts and notices of one endpoint, oldest first (at most `limit`).
    pub async fn endpoint_attempts(
        &self,
        tenant: &TenantId,
        endpoint: &EndpointId,
        limit: i64,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        self.attempts_where("endpoint_id", tenant, endpoint.as_str(), limit)
            .await
    }

    /// Take the dispatcher cursor (unless another node holds it), read up to
    /// `limit` status events past it with the enabled endpoints of their
    /// tenants, let `publish` turn them into delivery tasks, and advance the
    /// cursor only when it succeeded. Returns how many events were handled
    /// (0: nothing new, or another node is dispatching).
    pub async fn dispatch<F, Fut>(&self, limit: i64, publish: F) -> Result<usize, StoreError>
    where
        F: FnOnce(Vec<DispatchEvent>, Vec<EndpointTarget>) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let work = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    "SELECT cursor FROM webhook_cursor WHERE name = 'dispatcher' \
                     FOR UPDATE SKIP LOCKED",
                    &[],
                )
                .await?
            else {
                return Ok(0);
            };
            let after: i64 = row.get(0);
            // Only the projector's entries (event_id set): their cursors are
            // committed in order (one projector transaction at a time), so
            // reading past `after` never skips one still to commit.
            let rows = tx
                .query(
                    &format!(
                        "SELECT {EVENT_COLUMNS} FROM message_events e \
                         JOIN messages m ON m.id = e.message_id \
                         WHERE e.cursor > $1 AND e.event_id IS NOT NULL \
                         ORDER BY e.cursor LIMIT $2"
                    ),
                    &[&after, &limit],
                )
                .await?;
            if rows.is_empty() {
                return Ok(0);
            }
            let events: Vec<DispatchEvent> = rows.iter().map(event_from_row).collect();
            let last = events.last().map_or(after, |e| e.cursor);
            let mut tenants: Vec<&str> = events
                .iter()
                .filter(|e| e.callback_url.is_none())
                .map(|e| e.tenant_id.as_str())
                .collect();
            tenants.sort_unstable();
            tenants.dedup();
            let endpoints = if tenants.is_empty() {
                Vec::new()
            } else {
                tx.query(
                    "SELECT id, tenant_id, url, statuses FROM webhook_endpoints \
                     WHERE tenant_id = ANY($1) AND enabled AND deleted_at IS NULL \
                     ORDER BY created_at, id",
                    &[&tenants],
                )
                .await?
                .iter()
                .map(|r| EndpointTarget {
                    id: EndpointId::from_trusted(r.get(0)),
                    tenant_id: r.get(1),
                    url: r.get(2),
                    statuses: r.get(3),
                })
                .collect()
            };
            let n = events.len();
            publish(events, endpoints)
                .await
                .map_err(|e| StoreError::Unavailable(format!("publishing webhook tasks: {e}")))?;
            tx.execute(
                "UPDATE webhook_cursor SET cursor = $1 WHERE name = 'dispatcher'",
                &[&last],
            )
            .await?;
            tx.commit().await?;
            Ok(n)
        };
        match tokio::time::timeout(self.timeout * 4, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable("webhook dispatch timed out".into())),
        }
    }

    /// The tenant's status events since `since`, oldest first, at most
    /// [`REPLAY_MAX`] (a replay re-sends them).
    pub async fn replay_events(
        &self,
        tenant: &TenantId,
        since: Since,
    ) -> Result<Vec<DispatchEvent>, StoreError> {
        self.with(|c| async move {
            let base = format!(
                "SELECT {EVENT_COLUMNS} FROM message_events e \
                 JOIN messages m ON m.id = e.message_id \
                 WHERE e.tenant_id = $1 AND e.event_id IS NOT NULL"
            );
            let rows = match since {
                Since::Cursor(after) => {
                    c.query(
                        &format!("{base} AND e.cursor > $2 ORDER BY e.cursor LIMIT $3"),
                        &[&tenant.as_str(), &after, &REPLAY_MAX],
                    )
                    .await?
                }
                Since::Time(at) => {
                    c.query(
                        &format!("{base} AND e.at >= $2 ORDER BY e.cursor LIMIT $3"),
                        &[&tenant.as_str(), &at, &REPLAY_MAX],
                    )
                    .await?
                }
            };
            Ok(rows.iter().map(event_from_row).collect())
        })
        .await
    }

    /// Every tenant's endpoints (not deleted) with their attempts over the
    /// last day, most failing first, at most `limit`.
    pub async fn endpoint_health(&self, limit: i64) -> Result<Vec<EndpointHealth>, StoreError> {
        self.with(|c| async move {
            let rows = c
                .query(
                    "SELECT e.id, e.tenant_id, e.url, e.enabled, e.failing_since, \
                            count(a.id) FILTER (WHERE a.outcome IN ('retrying', 'failed')) AS failures, \
                            count(a.id) FILTER (WHERE a.outcome = 'succeeded') AS successes \
                     FROM webhook_endpoints e \
                     LEFT JOIN webhook_attempts a \
                       ON a.endpoint_id = e.id AND a.created_at > now() - interval '1 day' \
                     WHERE e.deleted_at IS NULL \
                     GROUP BY e.id \
                     ORDER BY failures DESC, e.created_at, e.id LIMIT $1",
                    &[&limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| EndpointHealth {
                    id: r.get(0),
                    tenant_id: r.get(1),
                    url: r.get(2),
                    enabled: r.get(3),
                    failing_since: r.get(4),
                    failures_24h: r.get(5),
                    successes_24h: r.get(6),
                })
                .collect())
        })
        .await
    }
}

/// An endpoint's recent record (the dashboard; `GET /v1/admin/webhooks`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct EndpointHealth {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    pub enabled: bool,
    pub failing_since: Option<DateTime<Utc>>,
    /// Attempts that failed (retrying or given up) in the last 24 hours.
    pub failures_24h: i64,
    pub successes_24h: i64,
}
