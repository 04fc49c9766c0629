//! The live stream hub: every status change this node's projector commits,
//! and every one other nodes' hubs announce, fanned out to this node's
//! WebSocket clients (`GET /v1/stream`, see `api/v1/stream.rs` and
//! [`session`]).
//!
//! Data enters from the projector's in-process broadcast ([`StatusChange`],
//! after commit, each a whole log entry with its message's channel). The
//! hub sends them to local clients and publishes them, a burst at a time, to
//! Redis `<prefix>:events` with this node's id. Every hub subscribes to that channel and passes on what
//! other nodes published, so a client on node B sees events projected on
//! node A. Data leaves on a bounded broadcast ([`Hub::subscribe`]): a client
//! that falls further behind than `stream.client_buffer` is closed and
//! resumes with `after=<cursor>` (replayed from PostgreSQL).
//!
//! Redis unavailable: local clients still get local events; clients on other
//! nodes miss them live and find them on their next resume.

pub mod session;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use herald_actors::TenantId;

use crate::kv::Kv;
use crate::projector::StatusChange;
use crate::store::events::FeedEvent;
use crate::store::Store;

/// Redis channel (under the Redis prefix) the hubs share.
pub const CHANNEL: &str = "events";

/// One event as clients receive it: a `GET /v1/events` item plus the
/// message's channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEvent {
    #[serde(skip_serializing)]
    #[serde(default)]
    pub tenant_id: String,
    pub cursor: i64,
    pub message_id: String,
    pub seq: i32,
    pub status: String,
    pub previous_status: Option<String>,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub carrier: Option<String>,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
    pub channel: String,
}

impl From<&StatusChange> for StreamEvent {
    fn from(c: &StatusChange) -> StreamEvent {
        StreamEvent {
            tenant_id: c.tenant_id.as_str().to_owned(),
            cursor: c.cursor,
            message_id: c.message_id.as_str().to_owned(),
            seq: c.seq,
            status: c.status.clone(),
            previous_status: c.previous_status.clone(),
            is_final: c.is_final,
            carrier: c.carrier.clone(),
            detail: c.detail.clone(),
            at: c.at,
            channel: c.channel.clone(),
        }
    }
}

impl StreamEvent {
    /// An entry of `tenant`'s feed (a replay).
    pub fn from_feed(tenant: &TenantId, f: FeedEvent) -> StreamEvent {
        StreamEvent {
            tenant_id: tenant.as_str().to_owned(),
            cursor: f.event.cursor,
            message_id: f.message_id.as_str().to_owned(),
            seq: f.event.seq,
            status: f.event.status,
            previous_status: f.event.previous_status,
            is_final: f.event.is_final,
            carrier: f.event.carrier,
            detail: f.event.detail,
            at: f.event.at,
            channel: f.channel,
        }
    }
}

/// What the hub passes to sessions (always behind an `Arc`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum HubItem {
    /// An event some node's projector committed.
    Event(StreamEvent),
    /// The hub lost events (it lagged, or could not read them back): every
    /// session must resume from PostgreSQL.
    Resync,
}

/// What hubs publish to each other on Redis: `[tenant id, event]` pairs
/// (an event's own tenant id is never serialised: clients do not see it).
#[derive(Debug, Serialize, Deserialize)]
struct Announcement<N, T, E> {
    node: N,
    events: Vec<(T, E)>,
}

/// An announcement as received.
type Received = Announcement<String, String, StreamEvent>;

/// The hub of this node. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    events: broadcast::Sender<Arc<HubItem>>,
    stop: watch::Sender<bool>,
    pub(crate) store: Store,
}

impl Hub {
    /// Start relaying `changes` (local) and Redis (other nodes).
    pub fn start(
        store: Store,
        kv: Kv,
        changes: broadcast::Receiver<Arc<StatusChange>>,
        capacity: usize,
    ) -> Hub {
        let (events, _) = broadcast::channel(capacity.max(1));
        let (stop, _) = watch::channel(false);
        let node = uuid::Uuid::new_v4().simple().to_string();
        let hub = Hub {
            events,
            stop,
            store,
        };
        tokio::spawn(hub.clone().relay_local(kv.clone(), node.clone(), changes));
        tokio::spawn(hub.clone().relay_remote(kv, node));
        hub
    }

    /// Events from now on; lagging past the capacity is an error to the receiver.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<HubItem>> {
        self.events.subscribe()
    }

    /// Resolves when the hub is told to stop (sessions close then).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Close every session (shutdown).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    async fn relay_local(
        self,
        kv: Kv,
        node: String,
        mut changes: broadcast::Receiver<Arc<StatusChange>>,
    ) {
        let mut stop = self.stop.subscribe();
        loop {
            let first = tokio::select! {
                _ = stop.changed() => return,
                r = changes.recv() => r,
            };
            let mut events = Vec::new();
            match first {
                Ok(c) => events.push(StreamEvent::from(&*c)),
                Err(broadcast::error::RecvError::Closed) => return,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(target: "herald::stream", missed = n,
                        "stream hub lagged; clients resume by cursor");
                    let _ = self.events.send(Arc::new(HubItem::Resync));
                    continue;
                }
            }
            while let Ok(c) = changes.try_recv() {
                events.push(StreamEvent::from(&*c));
            }
            let announcement = Announcement {
                node: node.as_str(),
                events: events.iter().map(|e| (e.tenant_id.as_str(), e)).collect(),
            };
            let payload = serde_json::to_string(&announcement).expect("serializes");
            for e in events {
                let _ = self.events.send(Arc::new(HubItem::Event(e)));
            }
            if let Err(e) = kv.publish(CHANNEL, &payload).await {
                tracing::debug!(target: "herald::stream", error = %e,
                    "could not announce events to other nodes");
            }
        }
    }

    async fn relay_remote(self, kv: Kv, node: String) {
        let mut stop = self.stop.subscribe();
        let mut inbox = kv.subscribe(CHANNEL);
        loop {
            let payload = tokio::select! {
                _ = stop.changed() => return,
                p = inbox.recv() => match p { Some(p) => p, None => return },
            };
            let Ok(a) = serde_json::from_str::<Received>(&payload) else {
                continue;
            };
            if a.node == node {
                continue;
            }
            for (tenant, mut e) in a.events {
                e.tenant_id = tenant;
                let _ = self.events.send(Arc::new(HubItem::Event(e)));
            }
        }
    }
}
