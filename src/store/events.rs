//! The event log as the status projector writes it (`message_events` rows with
//! an `event_id`), the carrier-reference table `message_parts`, the parking
//! lot `pending_receipts`, and the tenant's catch-up feed.
//!
//! Data enters through [`Store::project`]: one PostgreSQL transaction per
//! projector batch. It takes the projection lock, loads everything the batch
//! touches with a handful of set-based `SELECT`s ([`Loaded`]), hands that to
//! the caller's pure fold, and writes the fold's [`Writes`] with one `unnest`
//! statement per table. Data leaves through [`Store::tenant_events`] (the
//! `GET /v1/events` feed) and as the [`Projected`] rows returned to the
//! projector for its in-process broadcast.
//!
//! ## Why catch-up by cursor has no gaps
//!
//! `cursor` is a `BIGSERIAL`: values are handed out at insert time but become
//! visible at commit, so a reader could see cursor 7 before cursor 6 commits,
//! move its `after` to 7 and never see 6. Two measures close that window:
//!
//! 1. Projector batches take `pg_advisory_xact_lock(PROJECTION_LOCK)`, so
//!    only one batch in the whole cluster assigns cursors at a time and its
//!    cursors are in commit order (this also serialises per-message `seq`).
//! 2. The accept path writes each message's first event (`queued`) in its own
//!    group-commit transactions, concurrently. So the feed reads only up to a
//!    *settled horizon*: it reads the sequence's last value `H`, then waits
//!    until every transaction that held a write lock on `message_events` at
//!    that moment has ended (an insert takes that lock before it draws a
//!    cursor, and keeps it until commit or rollback). Then every cursor
//!    `<= H` is either committed or never will be, and the page is read
//!    from `(after, H]`. Writers are never blocked by readers; a reader waits
//!    at most for the transactions in flight when it asked (milliseconds).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use herald_actors::{MessageId, TenantId};

use super::{Store, StoreError};
use crate::message::EventRecord;

/// Advisory lock key held by each projector transaction (`herald:proj`).
pub const PROJECTION_LOCK: i64 = 0x6865_7261_6c64_7072;

/// How long a feed read waits for in-flight writers before answering an
/// empty page (the client simply asks again).
const HORIZON_WAIT: Duration = Duration::from_millis(1500);

/// What a projector batch needs to know before it can decide anything.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// Every event id in the batch (to find those already projected).
    pub event_ids: Vec<String>,
    /// Messages named by status events.
    pub message_ids: Vec<String>,
    /// `(carrier, carrier_ref)` of every receipt in the batch.
    pub receipt_refs: Vec<(String, String)>,
    /// `(carrier, carrier_ref)` recorded by `sent` events in the batch, to find
    /// receipts parked earlier.
    pub sent_refs: Vec<(String, String)>,
}

/// A message's projection state, locked for the batch; written back (status,
/// `status_seq`, carrier, reference) when the batch moved or logged it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageHead {
    pub id: String,
    pub tenant_id: String,
    pub channel: String,
    pub status: String,
    /// Seq of the latest entry in the message's log.
    pub status_seq: i32,
    pub carrier: Option<String>,
    pub carrier_ref: Option<String>,
}

/// One part of a sent message, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PartRow {
    pub carrier: String,
    pub carrier_ref: String,
    pub message_id: String,
    pub part: i32,
    pub state: Option<String>,
    pub error_code: Option<String>,
}

/// A receipt parked in `pending_receipts`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedReceipt {
    pub event_id: String,
    pub carrier: String,
    pub carrier_ref: String,
    /// The `ReceiptEvent` as JSON.
    pub payload: serde_json::Value,
    pub received_at: DateTime<Utc>,
}

/// Everything loaded for one batch, under the projection lock.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Event ids of the batch that were projected (or parked) before.
    pub seen: Vec<String>,
    /// Messages named by status events or matched by receipt references.
    pub messages: Vec<MessageHead>,
    /// Every part of every loaded message, oldest first within a part
    /// number: after a re-send (failover) the newest attempt's reference
    /// is the one a part number stands for.
    pub parts: Vec<PartRow>,
    /// Parked receipts whose reference a `sent` event in the batch records,
    /// oldest first.
    pub parked: Vec<ParkedReceipt>,
}

/// A new entry of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: String,
    pub message_id: String,
    pub tenant_id: String,
    pub seq: i32,
    pub status: String,
    pub previous_status: Option<String>,
    pub is_final: bool,
    pub carrier: Option<String>,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
    /// The message's channel: not stored with the entry, but carried to the
    /// projector's broadcast so live subscribers need not read it back.
    pub channel: String,
}

/// What one batch writes. Built by the projector's fold.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    /// In the order they happened; cursors are assigned in this order.
    pub events: Vec<NewEvent>,
    /// The new heads of the messages the batch logged entries for.
    pub messages: Vec<MessageHead>,
    /// Upserted by `(carrier, carrier_ref)`; at most one row per key.
    pub parts: Vec<PartRow>,
    pub park: Vec<ParkedReceipt>,
    /// Event ids of parked receipts now matched (moved into the log).
    pub unpark: Vec<String>,
}

/// An entry written by a batch, with the cursor it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct Projected {
    pub cursor: i64,
    pub event: NewEvent,
}

/// One entry of a tenant's feed, serialised as `GET /v1/events` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FeedEvent {
    pub message_id: MessageId,
    #[serde(flatten)]
    pub event: EventRecord,
    /// The message's channel (for the live stream; not in the feed).
    #[serde(skip)]
    pub channel: String,
}

fn pairs(refs: &[(String, String)]) -> (Vec<&str>, Vec<&str>) {
    refs.iter().map(|(c, r)| (c.as_str(), r.as_str())).unzip()
}

/// Whether the database refused the data itself (SQLSTATE class 22, data
/// exception, or 23, integrity constraint): retrying the same events cannot
/// help. Any other error may pass (a lock timeout, a migration not yet
/// applied), so the events are kept and retried.
pub fn refuses_data(e: &StoreError) -> bool {
    match e {
        StoreError::Query(e) => e
            .code()
            .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23")),
        StoreError::Corrupt(_) => true,
        StoreError::Unavailable(_) => false,
    }
}

/// PostgreSQL refuses NUL in `text` and `jsonb`; carriers do send it.
pub fn strip_nul(s: &str) -> String {
    s.replace('\0', "")
}

/// Longest age handed to `make_interval` (about a century): past a few
/// hundred thousand years PostgreSQL's interval and timestamp arithmetic
/// fails (an error, not a clamp), whatever the caller's `Duration` says.
const MAX_AGE_SECS: f64 = 100.0 * 366.0 * 24.0 * 3600.0;

/// `d` as the seconds of a `make_interval(secs => …)`, bounded.
pub(super) fn interval_secs(d: Duration) -> f64 {
    d.as_secs_f64().min(MAX_AGE_SECS)
}

/// `event_id, carrier, carrier_ref, payload, received_at` of `pending_receipts`.
fn parked_from_row(r: &tokio_postgres::Row) -> ParkedReceipt {
    ParkedReceipt {
        event_id: r.get(0),
        carrier: r.get(1),
        carrier_ref: r.get(2),
        payload: r.get(3),
        received_at: r.get(4),
    }
}

impl Store {
    /// Run one projector batch in one transaction: lock, load what `lookup`
    /// names, let `fold` decide, write its result, commit. Returns the new
    /// log entries with their cursors, in cursor order, and the fold's own
    /// output. Nothing is written when this returns `Err`.
    pub async fn project<T>(
        &self,
        lookup: &Lookup,
        fold: impl FnOnce(Loaded) -> (Writes, T),
    ) -> Result<(Vec<Projected>, T), StoreError> {
        let work = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            // A batch names its rows by key (up to `projector.batch_max`
            // events' worth), in tables that keep growing: an index probe per key is the plan
            // at any size. Without fresh statistics (a young table, or
            // autovacuum behind or off) the planner takes a hash join over
            // a scan of the whole table instead, whose cost grows with the
            // table; these settings last until the commit.
            tx.batch_execute(&format!(
                "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
                 SET LOCAL enable_mergejoin = off; \
                 SELECT pg_advisory_xact_lock({PROJECTION_LOCK})"
            ))
            .await?;

            let mut loaded = Loaded::default();
            if !lookup.event_ids.is_empty() {
                let rows = tx
                    .query(
                        "SELECT event_id FROM message_events WHERE event_id = ANY($1) \
                         UNION SELECT event_id FROM pending_receipts WHERE event_id = ANY($1)",
                        &[&lookup.event_ids],
                    )
                    .await?;
                loaded.seen = rows.iter().map(|r| r.get(0)).collect();
            }

            let mut message_ids = lookup.message_ids.clone();
            if !lookup.receipt_refs.is_empty() {
                let (carriers, refs) = pairs(&lookup.receipt_refs);
                let rows = tx
                    .query(
                        "SELECT p.message_id FROM message_parts p \
                         JOIN unnest($1::text[], $2::text[]) AS k(carrier, carrier_ref) \
                           ON p.carrier = k.carrier AND p.carrier_ref = k.carrier_ref",
                        &[&carriers, &refs],
                    )
                    .await?;
                message_ids.extend(rows.iter().map(|r| r.get::<_, String>(0)));
            }
            if !lookup.sent_refs.is_empty() {
                let (carriers, refs) = pairs(&lookup.sent_refs);
                let rows = tx
                    .query(
                        "SELECT p.event_id, p.carrier, p.carrier_ref, p.payload, p.received_at \
                         FROM pending_receipts p \
                         JOIN unnest($1::text[], $2::text[]) AS k(carrier, carrier_ref) \
                           ON p.carrier = k.carrier AND p.carrier_ref = k.carrier_ref \
                         ORDER BY p.received_at, p.event_id",
                        &[&carriers, &refs],
                    )
                    .await?;
                loaded.parked = rows.iter().map(parked_from_row).collect();
            }
            message_ids.sort();
            message_ids.dedup();
            if !message_ids.is_empty() {
                let rows = tx
                    .query(
                        "SELECT id, tenant_id, channel, status, status_seq, carrier, carrier_ref \
                         FROM messages WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                        &[&message_ids],
                    )
                    .await?;
                loaded.messages = rows
                    .iter()
                    .map(|r| MessageHead {
                        id: r.get(0),
                        tenant_id: r.get(1),
                        channel: r.get(2),
                        status: r.get(3),
                        status_seq: r.get(4),
                        carrier: r.get(5),
                        carrier_ref: r.get(6),
                    })
                    .collect();
                let rows = tx
                    .query(
                        // One index lookup per id (the `OFFSET 0` keeps the
                        // planner from turning it into a join): without
                        // statistics yet (a young table) it takes `= ANY` or a
                        // join for thousands of rows and scans the whole table.
                        "SELECT p.carrier, p.carrier_ref, p.message_id, p.part, p.state, \
                                p.error_code \
                         FROM unnest($1::text[]) AS k(id) \
                         CROSS JOIN LATERAL (SELECT * FROM message_parts \
                                             WHERE message_id = k.id OFFSET 0) p \
                         ORDER BY p.message_id, p.part, p.created_at",
                        &[&message_ids],
                    )
                    .await?;
                loaded.parts = rows
                    .iter()
                    .map(|r| PartRow {
                        carrier: r.get(0),
                        carrier_ref: r.get(1),
                        message_id: r.get(2),
                        part: r.get(3),
                        state: r.get(4),
                        error_code: r.get(5),
                    })
                    .collect();
            }

            let (writes, out) = fold(loaded);
            let projected = write(&tx, writes).await?;
            tx.commit().await?;
            Ok((projected, out))
        };
        // A batch does more than one statement; give it room, but bound it.
        match tokio::time::timeout(self.timeout * 4, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable("projector batch timed out".into())),
        }
    }

    /// Receipts parked longer than `older_than`.
    pub async fn unmatched_receipts(&self, older_than: Duration) -> Result<i64, StoreError> {
        let secs = interval_secs(older_than);
        self.with(|c| async move {
            let row = c
                .query_one(
                    "SELECT count(*) FROM pending_receipts \
                     WHERE parked_at < now() - make_interval(secs => $1::float8)",
                    &[&secs],
                )
                .await?;
            Ok(row.get(0))
        })
        .await
    }

    /// Receipts parked longer than `older_than`, oldest first, at most
    /// `limit` (for an operator's listing; they stay parked).
    pub async fn unmatched_receipt_list(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<ParkedReceipt>, StoreError> {
        let secs = interval_secs(older_than);
        self.with(|c| async move {
            let rows = c
                .query(
                    "SELECT event_id, carrier, carrier_ref, payload, received_at \
                     FROM pending_receipts \
                     WHERE parked_at < now() - make_interval(secs => $1::float8) \
                     ORDER BY parked_at, event_id LIMIT $2",
                    &[&secs, &limit],
                )
                .await?;
            Ok(rows.iter().map(parked_from_row).collect())
        })
        .await
    }

    /// The tenant's log entries with a cursor above `after`, in cursor order,
    /// at most `limit`, never past the settled horizon (see the module docs).
    pub async fn tenant_events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        self.with(|c| async move {
            let horizon: Option<i64> = c
                .query_one(
                    "SELECT pg_sequence_last_value(\
                       pg_get_serial_sequence('message_events', 'cursor')::regclass)",
                    &[],
                )
                .await?
                .get(0);
            let Some(horizon) = horizon else {
                return Ok(Vec::new());
            };
            if horizon <= after {
                return Ok(Vec::new());
            }
            let writers: Vec<String> = c
                .query_one(
                    "SELECT coalesce(array_agg(virtualtransaction), '{}') FROM pg_locks \
                     WHERE locktype = 'relation' AND relation = 'message_events'::regclass \
                       AND database = (SELECT oid FROM pg_database \
                                       WHERE datname = current_database()) \
                       AND mode = 'RowExclusiveLock' AND pid <> pg_backend_pid()",
                    &[],
                )
                .await?
                .get(0);
            if !writers.is_empty() {
                let deadline = Instant::now() + HORIZON_WAIT;
                loop {
                    let busy: i64 = c
                        .query_one(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' \
                             AND relation = 'message_events'::regclass \
                             AND virtualtransaction = ANY($1)",
                            &[&writers],
                        )
                        .await?
                        .get(0);
                    if busy == 0 {
                        break;
                    }
                    if Instant::now() >= deadline {
                        tracing::warn!(
                            writers = busy,
                            "event feed: writers still in flight; answering an empty page"
                        );
                        return Ok(Vec::new());
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            let rows = c
                .query(
                    "SELECT e.cursor, e.message_id, e.seq, e.status, e.previous_status, e.final, \
                            e.carrier, e.detail, e.at, m.channel \
                     FROM message_events e JOIN messages m ON m.id = e.message_id \
                     WHERE e.tenant_id = $1 AND e.cursor > $2 AND e.cursor <= $3 \
                     ORDER BY e.cursor LIMIT $4",
                    &[&tenant.as_str(), &after, &horizon, &limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| FeedEvent {
                    message_id: MessageId::from_trusted(r.get("message_id")),
                    channel: r.get("channel"),
                    event: EventRecord {
                        cursor: r.get("cursor"),
                        seq: r.get("seq"),
                        status: r.get("status"),
                        previous_status: r.get("previous_status"),
                        is_final: r.get("final"),
                        carrier: r.get("carrier"),
                        detail: r.get("detail"),
                        at: r.get("at"),
                    },
                })
                .collect())
        })
        .await
    }
}

/// Write a batch's decisions: one statement per table.
async fn write(
    tx: &deadpool_postgres::Transaction<'_>,
    writes: Writes,
) -> Result<Vec<Projected>, StoreError> {
    let Writes {
        events,
        messages,
        parts,
        park,
        unpark,
    } = writes;

    if !unpark.is_empty() {
        tx.execute(
            "DELETE FROM pending_receipts WHERE event_id = ANY($1)",
            &[&unpark],
        )
        .await?;
    }
    if !park.is_empty() {
        let ids: Vec<&str> = park.iter().map(|p| p.event_id.as_str()).collect();
        let carriers: Vec<&str> = park.iter().map(|p| p.carrier.as_str()).collect();
        let refs: Vec<&str> = park.iter().map(|p| p.carrier_ref.as_str()).collect();
        let payloads: Vec<&serde_json::Value> = park.iter().map(|p| &p.payload).collect();
        let received: Vec<DateTime<Utc>> = park.iter().map(|p| p.received_at).collect();
        tx.execute(
            "INSERT INTO pending_receipts (event_id, carrier, carrier_ref, payload, received_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], \
                                  $5::timestamptz[]) \
             ON CONFLICT (event_id) DO NOTHING",
            &[&ids, &carriers, &refs, &payloads, &received],
        )
        .await?;
    }
    if !parts.is_empty() {
        let carriers: Vec<&str> = parts.iter().map(|p| p.carrier.as_str()).collect();
        let refs: Vec<&str> = parts.iter().map(|p| p.carrier_ref.as_str()).collect();
        let ids: Vec<&str> = parts.iter().map(|p| p.message_id.as_str()).collect();
        let numbers: Vec<i32> = parts.iter().map(|p| p.part).collect();
        let states: Vec<Option<&str>> = parts.iter().map(|p| p.state.as_deref()).collect();
        let codes: Vec<Option<&str>> = parts.iter().map(|p| p.error_code.as_deref()).collect();
        tx.execute(
            "INSERT INTO message_parts (carrier, carrier_ref, message_id, part, state, error_code) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[], \
                                  $6::text[]) \
             ON CONFLICT (carrier, carrier_ref) DO UPDATE SET \
                message_id = EXCLUDED.message_id, part = EXCLUDED.part, \
                state = EXCLUDED.state, error_code = EXCLUDED.error_code, updated_at = now()",
            &[&carriers, &refs, &ids, &numbers, &states, &codes],
        )
        .await?;
    }
    if !messages.is_empty() {
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        let statuses: Vec<&str> = messages.iter().map(|m| m.status.as_str()).collect();
        let seqs: Vec<i32> = messages.iter().map(|m| m.status_seq).collect();
        let carriers: Vec<Option<&str>> = messages.iter().map(|m| m.carrier.as_deref()).collect();
        let refs: Vec<Option<&str>> = messages.iter().map(|m| m.carrier_ref.as_deref()).collect();
        tx.execute(
            "UPDATE messages m SET status = u.status, status_seq = u.seq, carrier = u.carrier, \
                    carrier_ref = u.carrier_ref, updated_at = now() \
             FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[]) \
                  AS u(id, status, seq, carrier, carrier_ref) \
             WHERE m.id = u.id",
            &[&ids, &statuses, &seqs, &carriers, &refs],
        )
        .await?;
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let messages: Vec<&str> = events.iter().map(|e| e.message_id.as_str()).collect();
    let tenants: Vec<&str> = events.iter().map(|e| e.tenant_id.as_str()).collect();
    let seqs: Vec<i32> = events.iter().map(|e| e.seq).collect();
    let statuses: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
    let previous: Vec<Option<&str>> = events
        .iter()
        .map(|e| e.previous_status.as_deref())
        .collect();
    let finals: Vec<bool> = events.iter().map(|e| e.is_final).collect();
    let carriers: Vec<Option<&str>> = events.iter().map(|e| e.carrier.as_deref()).collect();
    let details: Vec<&serde_json::Value> = events.iter().map(|e| &e.detail).collect();
    let ats: Vec<DateTime<Utc>> = events.iter().map(|e| e.at).collect();
    // Rows are inserted (and draw their cursors) in input order.
    let rows = tx
        .query(
            "INSERT INTO message_events (event_id, message_id, tenant_id, seq, status, \
                 previous_status, final, carrier, detail, at) \
             SELECT event_id, message_id, tenant_id, seq, status, previous_status, final, \
                    carrier, detail, at \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[], \
                         $6::text[], $7::bool[], $8::text[], $9::jsonb[], $10::timestamptz[]) \
                  WITH ORDINALITY AS e(event_id, message_id, tenant_id, seq, status, \
                      previous_status, final, carrier, detail, at, n) \
             ORDER BY n \
             RETURNING event_id, cursor",
            &[
                &ids, &messages, &tenants, &seqs, &statuses, &previous, &finals, &carriers,
                &details, &ats,
            ],
        )
        .await?;
    let mut cursors: HashMap<String, i64> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let mut projected: Vec<Projected> = events
        .into_iter()
        .filter_map(|event| {
            cursors
                .remove(&event.event_id)
                .map(|cursor| Projected { cursor, event })
        })
        .collect();
    projected.sort_by_key(|p| p.cursor);
    Ok(projected)
}
