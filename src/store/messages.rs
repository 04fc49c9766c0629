//! The `messages` table (which is also the outbox) and its event log
//! `message_events`.
//!
//! New messages are written in batches with one `unnest` statement (group
//! commit, see `ingest`); the queued event and the batch's `outbox` row
//! (its message ids, until RabbitMQ has them) are written by the same
//! statement. Outbox rows left behind are claimed with
//! `FOR UPDATE SKIP LOCKED` by the outbox relay's sweep, so two nodes never
//! publish the same batch in the same sweep.

use chrono::{DateTime, Utc};
use herald_actors::payload::Priority;
use herald_actors::{MessageId, TenantId};
use herald_carriers::{Channel, Content};
use tokio_postgres::Row;

use super::{Store, StoreError};
use crate::message::{EventRecord, MessageRecord};

const COLUMNS: &str = "id, tenant_id, channel, to_number, from_addr, content, segments, encoding, \
     priority, status, status_seq, carrier, carrier_ref, callback_url, validity_seconds, \
     expires_at, scheduled_at, metadata, idempotency_key, request_hash, created_at, updated_at";

/// What became of one message handed to [`Store::insert_messages`].
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// Written now.
    New,
    /// Not written: the tenant already has a message with this idempotency
    /// key, returned here.
    Existing(Box<MessageRecord>),
}

/// Filters of the message listing; every field optional.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub status: Option<String>,
    pub channel: Option<Channel>,
    pub to: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    /// Keyset cursor: only messages with an id below this one.
    pub before_id: Option<MessageId>,
    pub limit: i64,
}

fn channel_from_str(s: &str) -> Result<Channel, StoreError> {
    Channel::parse(s).ok_or_else(|| StoreError::Corrupt(format!("channel {s}")))
}

fn message_from_row(row: &Row) -> Result<MessageRecord, StoreError> {
    let content: serde_json::Value = row.get("content");
    let metadata: serde_json::Value = row.get("metadata");
    let priority: String = row.get("priority");
    let segments: i32 = row.get("segments");
    Ok(MessageRecord {
        id: MessageId::from_trusted(row.get("id")),
        tenant_id: TenantId::from_trusted(row.get("tenant_id")),
        channel: channel_from_str(row.get("channel"))?,
        to: row.get("to_number"),
        from: row.get("from_addr"),
        content: serde_json::from_value::<Content>(content)
            .map_err(|e| StoreError::Corrupt(format!("content: {e}")))?,
        segments: segments.max(0) as u32,
        encoding: row.get("encoding"),
        priority: if priority == "high" {
            Priority::High
        } else {
            Priority::Normal
        },
        status: row.get("status"),
        status_seq: row.get("status_seq"),
        carrier: row.get("carrier"),
        carrier_ref: row.get("carrier_ref"),
        callback_url: row.get("callback_url"),
        validity_seconds: row.get("validity_seconds"),
        expires_at: row.get("expires_at"),
        scheduled_at: row.get("scheduled_at"),
        metadata: match metadata {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
        idempotency_key: row.get("idempotency_key"),
        request_hash: row.get("request_hash"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

const INSERT_BATCH: &str = "
WITH input AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int4[],
        $8::text[], $9::text[], $10::text[], $11::int4[], $12::timestamptz[], $13::timestamptz[],
        $14::jsonb[], $15::text[], $16::text[], $17::timestamptz[], $18::text[]
    ) AS t(id, tenant_id, channel, to_number, from_addr, content, segments, encoding, priority,
           callback_url, validity_seconds, expires_at, scheduled_at, metadata, idempotency_key,
           request_hash, created_at, status)
), ins AS (
    INSERT INTO messages (id, tenant_id, channel, to_number, from_addr, content, segments,
        encoding, priority, status, callback_url, validity_seconds, expires_at, scheduled_at,
        metadata, idempotency_key, request_hash, created_at, updated_at)
    SELECT id, tenant_id, channel, to_number, from_addr, content, segments, encoding, priority,
        status, callback_url, validity_seconds, expires_at, scheduled_at, metadata,
        idempotency_key, request_hash, created_at, created_at
    FROM input
    ON CONFLICT DO NOTHING
    RETURNING id, tenant_id, status, created_at
), events AS (
    INSERT INTO message_events (message_id, tenant_id, seq, status, final, at)
    SELECT id, tenant_id, 1, status, false, created_at FROM ins
), batch AS (
    INSERT INTO outbox (message_ids) SELECT array_agg(id) FROM ins HAVING count(*) > 0
    RETURNING batch
)
SELECT id, (SELECT batch FROM batch) FROM ins";

impl Store {
    /// Write a batch of new messages in one statement, each with its first
    /// event, and the outbox row of those written. Returns, in input order,
    /// whether each was written or already existed under its idempotency
    /// key, and the outbox batch (`None`: nothing new). Committed when this
    /// returns `Ok`.
    pub async fn insert_messages(
        &self,
        batch: &[MessageRecord],
    ) -> Result<(Vec<Inserted>, Option<i64>), StoreError> {
        let n = batch.len();
        let mut id = Vec::with_capacity(n);
        let mut tenant = Vec::with_capacity(n);
        let mut channel = Vec::with_capacity(n);
        let mut to = Vec::with_capacity(n);
        let mut from = Vec::with_capacity(n);
        let mut content = Vec::with_capacity(n);
        let mut segments = Vec::with_capacity(n);
        let mut encoding = Vec::with_capacity(n);
        let mut priority = Vec::with_capacity(n);
        let mut callback = Vec::with_capacity(n);
        let mut validity = Vec::with_capacity(n);
        let mut expires = Vec::with_capacity(n);
        let mut scheduled = Vec::with_capacity(n);
        let mut metadata = Vec::with_capacity(n);
        let mut idem = Vec::with_capacity(n);
        let mut hash = Vec::with_capacity(n);
        let mut created = Vec::with_capacity(n);
        let mut status = Vec::with_capacity(n);
        for m in batch {
            id.push(m.id.as_str());
            tenant.push(m.tenant_id.as_str());
            channel.push(m.channel.as_str());
            to.push(m.to.as_str());
            from.push(m.from.as_str());
            content.push(
                serde_json::to_value(&m.content).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
            segments.push(m.segments as i32);
            encoding.push(m.encoding.as_deref());
            priority.push(m.priority.as_str());
            callback.push(m.callback_url.as_deref());
            validity.push(m.validity_seconds);
            expires.push(m.expires_at);
            scheduled.push(m.scheduled_at);
            metadata.push(serde_json::Value::Object(m.metadata.clone()));
            idem.push(m.idempotency_key.as_deref());
            hash.push(m.request_hash.as_deref());
            created.push(m.created_at);
            status.push(m.status.as_str());
        }
        let (written, outbox): (std::collections::HashSet<String>, Option<i64>) = self
            .with(|c| async move {
                let stmt = c.prepare_cached(INSERT_BATCH).await?;
                let rows = c
                    .query(
                        &stmt,
                        &[
                            &id, &tenant, &channel, &to, &from, &content, &segments, &encoding,
                            &priority, &callback, &validity, &expires, &scheduled, &metadata,
                            &idem, &hash, &created, &status,
                        ],
                    )
                    .await?;
                let outbox = rows.first().map(|r| r.get::<_, i64>(1));
                Ok((rows.iter().map(|r| r.get::<_, String>(0)).collect(), outbox))
            })
            .await?;
        let mut out = Vec::with_capacity(n);
        for m in batch {
            if written.contains(m.id.as_str()) {
                out.push(Inserted::New);
                continue;
            }
            let existing = match &m.idempotency_key {
                Some(key) => self.message_by_idempotency_key(&m.tenant_id, key).await?,
                None => None,
            };
            match existing {
                Some(e) => out.push(Inserted::Existing(Box::new(e))),
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "message {} was neither written nor found",
                        m.id
                    )))
                }
            }
        }
        Ok((out, outbox))
    }

    /// The tenant's message carrying this idempotency key.
    pub async fn message_by_idempotency_key(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<MessageRecord>, StoreError> {
        self.with(|c| async move {
            let row = c
                .query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM messages WHERE tenant_id = $1 AND idempotency_key = $2"
                    ),
                    &[&tenant.as_str(), &key],
                )
                .await?;
            row.as_ref().map(message_from_row).transpose()
        })
        .await
    }

    /// The tenant's message with this id (another tenant's is `None`).
    pub async fn message(
        &self,
        tenant: &TenantId,
        id: &MessageId,
    ) -> Result<Option<MessageRecord>, StoreError> {
        self.with(|c| async move {
            let row = c
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM messages WHERE id = $1 AND tenant_id = $2"),
                    &[&id.as_str(), &tenant.as_str()],
                )
                .await?;
            row.as_ref().map(message_from_row).transpose()
        })
        .await
    }

    /// The messages among `ids`, in no order; the caller checks tenants.
    pub async fn messages_by_ids(&self, ids: &[String]) -> Result<Vec<MessageRecord>, StoreError> {
        self.with(|c| async move {
            let rows = c
                .query(
                    &format!("SELECT {COLUMNS} FROM messages WHERE id = ANY($1)"),
                    &[&ids],
                )
                .await?;
            rows.iter().map(message_from_row).collect()
        })
        .await
    }

    /// A message's event log, in order.
    pub async fn message_events(&self, id: &MessageId) -> Result<Vec<EventRecord>, StoreError> {
        self.with(|c| async move {
            let rows = c
                .query(
                    "SELECT cursor, seq, status, previous_status, final, carrier, detail, at \
                     FROM message_events WHERE message_id = $1 ORDER BY seq, cursor",
                    &[&id.as_str()],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| EventRecord {
                    cursor: r.get("cursor"),
                    seq: r.get("seq"),
                    status: r.get("status"),
                    previous_status: r.get("previous_status"),
                    is_final: r.get("final"),
                    carrier: r.get("carrier"),
                    detail: r.get("detail"),
                    at: r.get("at"),
                })
                .collect())
        })
        .await
    }

    /// The tenant's messages, newest first, filtered, one page.
    pub async fn list_messages(
        &self,
        tenant: &TenantId,
        filter: &MessageFilter,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let channel = filter.channel.map(Channel::as_str);
        let before = filter.before_id.as_ref().map(MessageId::as_str);
        self.with(|c| async move {
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM messages WHERE tenant_id = $1 \
                         AND ($2::text IS NULL OR status = $2) \
                         AND ($3::text IS NULL OR channel = $3) \
                         AND ($4::text IS NULL OR to_number = $4) \
                         AND ($5::timestamptz IS NULL OR created_at > $5) \
                         AND ($6::text IS NULL OR id < $6) \
                         ORDER BY id DESC LIMIT $7"
                    ),
                    &[
                        &tenant.as_str(),
                        &filter.status,
                        &channel,
                        &filter.to,
                        &filter.created_after,
                        &before,
                        &filter.limit,
                    ],
                )
                .await?;
            rows.iter().map(message_from_row).collect()
        })
        .await
    }

    /// Record that RabbitMQ confirmed these outbox batches.
    pub async fn mark_published(&self, batches: &[i64]) -> Result<(), StoreError> {
        if batches.is_empty() {
            return Ok(());
        }
        self.with(|c| async move {
            c.execute("DELETE FROM outbox WHERE batch = ANY($1)", &[&batches])
                .await?;
            Ok(())
        })
        .await
    }

    /// Claim outbox batches committed more than `grace` ago, about `limit`
    /// messages, hand their messages to `publish`, and delete the batches
    /// when it returns `true`. Rows stay locked (`SKIP LOCKED` for other
    /// nodes) while `publish` runs. Returns how many messages were published.
    pub async fn sweep_unpublished<F>(
        &self,
        grace: std::time::Duration,
        limit: i64,
        publish: F,
    ) -> Result<usize, StoreError>
    where
        F: AsyncFnOnce(&[MessageRecord]) -> bool,
    {
        let grace_ms = grace.as_millis() as f64;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "SELECT batch, message_ids FROM outbox \
                 WHERE created_at < now() - make_interval(secs => $1::float8 / 1000.0) \
                 ORDER BY batch LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&grace_ms, &limit.max(1)],
            )
            .await?;
        // Whole batches, until about `limit` messages; the rest stay for
        // the next round.
        let mut batches: Vec<i64> = Vec::new();
        let mut ids: Vec<String> = Vec::new();
        for row in &rows {
            if !batches.is_empty() && ids.len() as i64 >= limit {
                break;
            }
            batches.push(row.get(0));
            ids.extend(row.get::<_, Vec<String>>(1));
        }
        if batches.is_empty() {
            return Ok(0);
        }
        let records: Vec<MessageRecord> = tx
            .query(
                &format!("SELECT {COLUMNS} FROM messages WHERE id = ANY($1) ORDER BY created_at"),
                &[&ids],
            )
            .await?
            .iter()
            .map(message_from_row)
            .collect::<Result<_, _>>()?;
        if !records.is_empty() && !publish(&records).await {
            tx.rollback().await?;
            return Ok(0);
        }
        tx.execute("DELETE FROM outbox WHERE batch = ANY($1)", &[&batches])
            .await?;
        tx.commit().await?;
        Ok(records.len())
    }
}
