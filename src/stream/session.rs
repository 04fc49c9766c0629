//! One WebSocket client of the live stream.
//!
//! Order of work: subscribe to the hub first, then (with `after`) replay the
//! tenant's log from PostgreSQL page by page, then pass on live events. An
//! event both replayed and live is sent once: live events at or below the
//! last replayed cursor are dropped, and cursors already sent are
//! remembered (bounded), so events relayed from another node a little out
//! of order are neither lost nor doubled.
//!
//! Liveness: a ping every `ping_interval`; a client silent for
//! `client_timeout` is closed. Memory is bounded: a client more than
//! `client_buffer` events behind, or whose socket does not take a frame
//! within `send_timeout`, is closed with 1008 and the cursor to resume from.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use futures::StreamExt;
use herald_actors::TenantId;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use super::{Hub, HubItem, StreamEvent};
use crate::store::StoreError;
use crate::telemetry;

/// Cursors remembered per client to drop duplicates.
const REMEMBERED: usize = 4096;
/// Page size of the replay.
const REPLAY_PAGE: i64 = 500;

/// Per-client settings, from `[stream]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub ping_interval: Duration,
    pub client_timeout: Duration,
    pub send_timeout: Duration,
}

/// What a client asked to see; empty sets mean everything.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub message_ids: Option<HashSet<String>>,
    #[serde(default)]
    pub channels: Option<HashSet<String>>,
}

impl Filter {
    pub fn wants(&self, e: &StreamEvent) -> bool {
        self.message_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&e.message_id))
            && self
                .channels
                .as_ref()
                .is_none_or(|c| c.contains(&e.channel))
    }
}

/// A client's message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    subscribe: Filter,
}

/// Why a session ended.
enum End {
    Client,
    Close(CloseReason, &'static str),
}

struct Sent {
    /// Cursors sent, oldest first, and the same as a set.
    order: VecDeque<i64>,
    set: HashSet<i64>,
    /// Highest cursor replayed or sent: where a client resumes.
    last: i64,
    /// Highest cursor replayed: live events at or below it were sent already.
    replayed: i64,
}

impl Sent {
    fn fresh(&self, cursor: i64) -> bool {
        cursor > self.replayed && !self.set.contains(&cursor)
    }

    fn note(&mut self, cursor: i64) {
        self.last = self.last.max(cursor);
        if self.set.insert(cursor) {
            self.order.push_back(cursor);
            if self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

fn policy(reason: String) -> CloseReason {
    CloseReason {
        code: CloseCode::Policy,
        description: Some(reason),
    }
}

/// Run one client until it leaves or is closed.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    hub: Hub,
    mut live: broadcast::Receiver<Arc<HubItem>>,
    tenant: TenantId,
    after: Option<i64>,
    filter: Filter,
    limits: Limits,
    mut session: Session,
    mut inbound: MessageStream,
) {
    telemetry::stream_clients(1.0);
    let mut sent = Sent {
        order: VecDeque::new(),
        set: HashSet::new(),
        last: after.unwrap_or(0),
        replayed: after.unwrap_or(0),
    };
    let mut filter = filter;
    let replayed = match after {
        Some(_) => replay(&hub, &tenant, &filter, limits, &mut session, &mut sent).await,
        None => Ok(()), // live only
    };
    let end = match replayed {
        Err(end) => end,
        Ok(()) => {
            serve(
                &hub,
                &mut live,
                &tenant,
                &mut filter,
                limits,
                &mut session,
                &mut inbound,
                &mut sent,
            )
            .await
        }
    };
    if let End::Close(reason, why) = end {
        telemetry::stream_disconnected(why);
        let _ = session.close(Some(reason)).await;
    }
    telemetry::stream_clients(-1.0);
}

async fn send(
    session: &mut Session,
    e: &StreamEvent,
    limits: Limits,
    sent: &Sent,
) -> Result<(), End> {
    let text = serde_json::to_string(e).expect("serializes");
    match tokio::time::timeout(limits.send_timeout, session.text(text)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Client),
        Err(_) => Err(End::Close(
            policy(format!("client too slow; resume with after={}", sent.last)),
            "slow",
        )),
    }
}

async fn replay(
    hub: &Hub,
    tenant: &TenantId,
    filter: &Filter,
    limits: Limits,
    session: &mut Session,
    sent: &mut Sent,
) -> Result<(), End> {
    loop {
        let page = hub
            .store
            .tenant_events(tenant, sent.replayed, REPLAY_PAGE)
            .await
            .map_err(unavailable)?;
        if page.is_empty() {
            return Ok(());
        }
        for f in page {
            let e = StreamEvent::from_feed(tenant, f);
            if filter.wants(&e) {
                send(session, &e, limits, sent).await?;
            }
            sent.replayed = sent.replayed.max(e.cursor);
            sent.last = sent.last.max(e.cursor);
        }
    }
}

fn unavailable(e: StoreError) -> End {
    tracing::warn!(target: "herald::stream", error = %e, "stream replay failed");
    End::Close(
        CloseReason {
            code: CloseCode::Again,
            description: Some("the database is unavailable; resume later".into()),
        },
        "unavailable",
    )
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    hub: &Hub,
    live: &mut broadcast::Receiver<Arc<HubItem>>,
    tenant: &TenantId,
    filter: &mut Filter,
    limits: Limits,
    session: &mut Session,
    inbound: &mut MessageStream,
    sent: &mut Sent,
) -> End {
    let mut stopping = hub.stopping();
    let mut ping = tokio::time::interval(limits.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            _ = stopping.changed() => {
                return End::Close(CloseReason {
                    code: CloseCode::Away,
                    description: Some(format!("server shutting down; resume with after={}", sent.last)),
                }, "shutdown");
            }
            _ = ping.tick() => {
                if heard.elapsed() > limits.client_timeout {
                    return End::Close(policy("no pong within the timeout".into()), "timeout");
                }
                if session.ping(b"herald").await.is_err() {
                    return End::Client;
                }
            }
            m = inbound.next() => {
                heard = Instant::now();
                match m {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return End::Client,
                    Some(Ok(Message::Ping(p))) => {
                        if session.pong(&p).await.is_err() {
                            return End::Client;
                        }
                    }
                    Some(Ok(Message::Text(t))) => {
                        match serde_json::from_str::<ClientMessage>(&t) {
                            Ok(m) => {
                                *filter = m.subscribe;
                                let ack = json!({"subscribed": {
                                    "message_ids": filter.message_ids,
                                    "channels": filter.channels,
                                }});
                                if session.text(ack.to_string()).await.is_err() {
                                    return End::Client;
                                }
                            }
                            Err(e) => {
                                let err = json!({"error": {"code": "invalid_message",
                                    "message": format!("expected {{\"subscribe\":{{\"message_ids\":[…]}}}} or {{\"subscribe\":{{\"channels\":[…]}}}}: {e}")}});
                                if session.text(err.to_string()).await.is_err() {
                                    return End::Client;
                                }
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                }
            }
            e = live.recv() => match e.as_deref() {
                Ok(HubItem::Resync) => {
                    return End::Close(CloseReason {
                        code: CloseCode::Again,
                        description: Some(format!("events were dropped; resume with after={}", sent.last)),
                    }, "resync");
                }
                Ok(HubItem::Event(e)) => {
                    if e.tenant_id != tenant.as_str() || !sent.fresh(e.cursor) {
                        continue;
                    }
                    if filter.wants(e) {
                        if let Err(end) = send(session, e, limits, sent).await {
                            return end;
                        }
                    }
                    sent.note(e.cursor);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return End::Close(
                        policy(format!("client too slow; resume with after={}", sent.last)),
                        "slow",
                    );
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return End::Close(CloseReason {
                        code: CloseCode::Away,
                        description: Some(format!("stream stopped; resume with after={}", sent.last)),
                    }, "shutdown");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_dropped_and_late_ones_kept() {
        let mut s = Sent {
            order: VecDeque::new(),
            set: HashSet::new(),
            last: 10,
            replayed: 10,
        };
        assert!(!s.fresh(9));
        assert!(s.fresh(12));
        s.note(12);
        assert!(!s.fresh(12));
        assert!(s.fresh(11), "a late event from another node is still sent");
        assert_eq!(s.last, 12);
    }
}
