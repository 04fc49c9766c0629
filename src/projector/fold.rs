//! The projector's decision step, pure: a batch of decoded events plus what
//! the store loaded for them ([`Loaded`]) in, the rows to write ([`Writes`])
//! out. Events are applied in arrival order, so a `sent` and the receipt
//! that follows it may share a batch.
//!
//! Every event that is neither a duplicate nor parked becomes one log entry
//! with the message's next `seq`. `status` is what the event reports (for a
//! part of a multipart SMS whose outcome is not settled yet: the part's own
//! state); `detail.applied` says whether it moved the message, and `final`
//! is true only on the entry that moved the message into a final status.

use std::collections::{BTreeMap, HashMap, HashSet};

use herald_actors::payload::{EventTask, ReceiptEvent, StatusEvent};
use serde_json::{json, Value};

use super::rules::{advances, is_final, multipart_outcome};
use crate::store::events::{
    strip_nul, Loaded, Lookup, MessageHead, NewEvent, ParkedReceipt, PartRow, Writes,
};

/// `(carrier connection, canonical carrier reference)`.
type RefKey = (String, String);

/// What became of the events of one batch, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldReport {
    /// Logged and moved their message.
    pub applied: usize,
    /// Logged, but did not move their message (late or out of order).
    pub logged: usize,
    /// Seen before (redelivery); ignored.
    pub duplicate: usize,
    /// Receipts with no known reference yet; parked.
    pub parked: usize,
    /// Parked receipts matched now that their reference landed.
    pub matched_late: usize,
    /// Status events for a message this database does not have.
    pub unknown_message: usize,
}

/// Canonical form of a carrier reference (see `herald_carriers::smpp::normalize_ref`);
/// applied to both the `sent` references and the receipts', so an actor or
/// callback that forgot to normalise still matches.
pub fn canonical_ref(r: &str) -> String {
    strip_nul(&herald_carriers::smpp::normalize_ref(r))
}

fn receipt_key(r: &ReceiptEvent) -> RefKey {
    (strip_nul(&r.carrier), canonical_ref(&r.receipt.carrier_ref))
}

fn sent_keys(s: &StatusEvent) -> Vec<RefKey> {
    if s.status != "sent" {
        return Vec::new();
    }
    let carrier = strip_nul(s.carrier.as_deref().unwrap_or(""));
    s.carrier_refs
        .iter()
        .map(|r| (carrier.clone(), canonical_ref(r)))
        .collect()
}

fn event_id(e: &EventTask) -> &str {
    match e {
        EventTask::StatusV1(s) => &s.event_id,
        EventTask::ReceiptV1(r) => &r.event_id,
    }
}

/// What the store must load for `events`.
pub fn lookup(events: &[EventTask]) -> Lookup {
    let mut l = Lookup::default();
    for e in events {
        l.event_ids.push(event_id(e).to_owned());
        match e {
            EventTask::StatusV1(s) => {
                l.message_ids.push(s.message_id.as_str().to_owned());
                l.sent_refs.extend(sent_keys(s));
            }
            EventTask::ReceiptV1(r) => l.receipt_refs.push(receipt_key(r)),
        }
    }
    l.event_ids.sort();
    l.event_ids.dedup();
    l
}

/// A receipt waiting for its reference.
struct Waiting {
    receipt: ReceiptEvent,
    /// Parked by an earlier batch (so delete it), or by this one (so do not
    /// insert it).
    stored: bool,
}

struct Fold {
    seen: HashSet<String>,
    heads: HashMap<String, MessageHead>,
    dirty_heads: Vec<String>,
    parts: HashMap<RefKey, PartRow>,
    /// Message id -> part number -> key.
    message_parts: HashMap<String, BTreeMap<i32, RefKey>>,
    dirty_parts: Vec<RefKey>,
    waiting: HashMap<RefKey, Vec<Waiting>>,
    writes: Writes,
    report: FoldReport,
}

/// Decide a batch. `events` in arrival order.
pub fn fold(events: &[EventTask], loaded: Loaded) -> (Writes, FoldReport) {
    let mut f = Fold {
        seen: loaded.seen.into_iter().collect(),
        heads: loaded
            .messages
            .into_iter()
            .map(|m| (m.id.clone(), m))
            .collect(),
        dirty_heads: Vec::new(),
        parts: HashMap::new(),
        message_parts: HashMap::new(),
        dirty_parts: Vec::new(),
        waiting: HashMap::new(),
        writes: Writes::default(),
        report: FoldReport::default(),
    };
    for p in loaded.parts {
        f.add_part(p, false);
    }
    for p in loaded.parked {
        match serde_json::from_value::<ReceiptEvent>(p.payload) {
            Ok(receipt) => f
                .waiting
                .entry((p.carrier, p.carrier_ref))
                .or_default()
                .push(Waiting {
                    receipt,
                    stored: true,
                }),
            Err(e) => tracing::warn!(event_id = %p.event_id, error = %e,
                "parked receipt no longer decodes; left parked"),
        }
    }
    for e in events {
        if !f.seen.insert(event_id(e).to_owned()) {
            f.report.duplicate += 1;
            continue;
        }
        match e {
            EventTask::StatusV1(s) => f.status(s),
            EventTask::ReceiptV1(r) => f.receipt(r.clone(), false),
        }
    }
    f.finish()
}

impl Fold {
    fn add_part(&mut self, p: PartRow, dirty: bool) {
        let key = (p.carrier.clone(), p.carrier_ref.clone());
        if let Some(old) = self.parts.get(&key) {
            // A reference reused by the carrier: the latest message owns it.
            if let Some(m) = self.message_parts.get_mut(&old.message_id) {
                m.retain(|_, k| *k != key);
            }
        }
        self.message_parts
            .entry(p.message_id.clone())
            .or_default()
            .insert(p.part, key.clone());
        self.parts.insert(key.clone(), p);
        if dirty {
            self.dirty_parts.push(key);
        }
    }

    fn touch(&mut self, id: &str) {
        self.dirty_heads.push(id.to_owned());
    }

    /// Append one log entry for `message`, moving it when `applied`.
    #[allow(clippy::too_many_arguments)]
    fn log(
        &mut self,
        message: &str,
        event_id: &str,
        status: &str,
        applied: bool,
        carrier: Option<String>,
        mut detail: Value,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        let head = self.heads.get_mut(message).expect("caller checked");
        let previous = head.status.clone();
        head.status_seq += 1;
        if applied {
            head.status = status.to_owned();
            if carrier.is_some() {
                head.carrier = carrier.clone();
            }
        }
        detail["applied"] = json!(applied);
        let event = NewEvent {
            event_id: strip_nul(event_id),
            message_id: head.id.clone(),
            tenant_id: head.tenant_id.clone(),
            seq: head.status_seq,
            status: strip_nul(status),
            previous_status: Some(previous),
            is_final: applied && is_final(&head.channel, status),
            carrier,
            detail,
            at,
            channel: head.channel.clone(),
        };
        self.writes.events.push(event);
        if applied {
            self.report.applied += 1;
        } else {
            self.report.logged += 1;
        }
        self.touch(message);
    }

    fn status(&mut self, s: &StatusEvent) {
        let id = s.message_id.as_str();
        let Some(head) = self.heads.get(id) else {
            self.report.unknown_message += 1;
            tracing::warn!(message_id = id, event_id = %s.event_id,
                "status event for an unknown message; ignored");
            return;
        };
        let applied = advances(&head.channel, &head.status, &s.status);
        let mut detail = json!({});
        if let Some(e) = &s.error {
            detail["error"] = json!({
                "code": strip_nul(&e.code),
                "carrier_code": e.carrier_code.as_deref().map(strip_nul),
                "text": strip_nul(&e.text),
            });
        }
        if !s.carrier_refs.is_empty() {
            detail["carrier_refs"] = json!(s
                .carrier_refs
                .iter()
                .map(|r| strip_nul(r))
                .collect::<Vec<_>>());
        }
        let carrier = s.carrier.as_deref().map(strip_nul);
        self.log(id, &s.event_id, &s.status, applied, carrier, detail, s.at);

        let keys = sent_keys(s);
        if keys.is_empty() {
            return;
        }
        let head = self.heads.get_mut(id).expect("present");
        if head.carrier_ref.is_none() || applied {
            head.carrier = Some(keys[0].0.clone()).filter(|c| !c.is_empty());
            head.carrier_ref = Some(keys[0].1.clone());
        }
        for (n, key) in keys.iter().enumerate() {
            self.add_part(
                PartRow {
                    carrier: key.0.clone(),
                    carrier_ref: key.1.clone(),
                    message_id: id.to_owned(),
                    part: n as i32 + 1,
                    state: None,
                    error_code: None,
                },
                true,
            );
        }
        // Receipts that came first are matched now, oldest first.
        let mut early: Vec<Waiting> = keys
            .iter()
            .filter_map(|k| self.waiting.remove(k))
            .flatten()
            .collect();
        early.sort_by(|a, b| {
            (a.receipt.received_at, &a.receipt.event_id)
                .cmp(&(b.receipt.received_at, &b.receipt.event_id))
        });
        for w in early {
            self.report.matched_late += 1;
            if w.stored {
                self.writes.unpark.push(w.receipt.event_id.clone());
            } else {
                let eid = w.receipt.event_id.clone();
                self.writes.park.retain(|p| p.event_id != eid);
                self.report.parked -= 1;
            }
            self.receipt(w.receipt, true);
        }
    }

    fn receipt(&mut self, r: ReceiptEvent, late: bool) {
        let key = receipt_key(&r);
        let Some(part) = self.parts.get(&key).cloned() else {
            self.park(key, r);
            return;
        };
        let Some(head) = self.heads.get(&part.message_id) else {
            // The part's message was not loaded: cannot happen (parts are
            // loaded with their messages); park rather than lose it.
            self.park(key, r);
            return;
        };
        let channel = head.channel.clone();
        let state = receipt_state(&r);
        let part_moves = match &part.state {
            None => true,
            Some(old) => advances(&channel, old, &state),
        };
        if part_moves {
            let p = self.parts.get_mut(&key).expect("present");
            p.state = Some(state.clone());
            p.error_code = r.receipt.error_code.as_deref().map(strip_nul);
            self.dirty_parts.push(key.clone());
        }
        let numbers = self
            .message_parts
            .get(&part.message_id)
            .cloned()
            .unwrap_or_default();
        let (status, applied) = if numbers.len() <= 1 {
            let applied = advances(&channel, &head.status, &state);
            (state.clone(), applied)
        } else {
            let states: Vec<Option<String>> = numbers
                .values()
                .map(|k| self.parts.get(k).and_then(|p| p.state.clone()))
                .collect();
            let borrowed: Vec<Option<&str>> = states.iter().map(|s| s.as_deref()).collect();
            match multipart_outcome(&channel, &borrowed) {
                Some(outcome) => {
                    let applied = advances(&channel, &head.status, &outcome);
                    (outcome, applied)
                }
                None => (state.clone(), false),
            }
        };
        let mut detail = json!({
            "carrier_ref": key.1,
            "part": part.part,
            "parts": numbers.len().max(1),
            "part_status": state,
            "error_code": r.receipt.error_code.as_deref().map(strip_nul),
            "raw": strip_nul(&r.receipt.raw),
            "done_at": r.receipt.done_at,
        });
        if late {
            detail["matched_late"] = json!(true);
        }
        let message = part.message_id.clone();
        self.log(
            &message,
            &r.event_id,
            &status,
            applied,
            Some(key.0.clone()),
            detail,
            r.received_at,
        );
    }

    fn park(&mut self, key: RefKey, r: ReceiptEvent) {
        self.report.parked += 1;
        self.writes.park.push(ParkedReceipt {
            event_id: strip_nul(&r.event_id),
            carrier: key.0.clone(),
            carrier_ref: key.1.clone(),
            payload: serde_json::to_value(&r).expect("receipts serialise"),
            received_at: r.received_at,
        });
        self.waiting.entry(key).or_default().push(Waiting {
            receipt: r,
            stored: false,
        });
    }

    fn finish(mut self) -> (Writes, FoldReport) {
        for id in std::mem::take(&mut self.dirty_heads) {
            // Taken out on its first mention: later ones are duplicates.
            if let Some(head) = self.heads.remove(&id) {
                self.writes.messages.push(head);
            }
        }
        let mut done = HashSet::new();
        for key in std::mem::take(&mut self.dirty_parts) {
            if done.insert(key.clone()) {
                if let Some(p) = self.parts.get(&key) {
                    self.writes.parts.push(p.clone());
                }
            }
        }
        (self.writes, self.report)
    }
}

/// The receipt's state in Herald's vocabulary (`delivered`, `no_answer` …).
fn receipt_state(r: &ReceiptEvent) -> String {
    match serde_json::to_value(r.receipt.state) {
        Ok(Value::String(s)) => s,
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use herald_actors::payload::new_event_id;
    use herald_actors::{MessageId, TenantId};
    use herald_carriers::{Receipt, ReceiptState};

    fn head(id: &str, channel: &str) -> MessageHead {
        MessageHead {
            id: id.into(),
            tenant_id: "tnt_x".into(),
            channel: channel.into(),
            status: "queued".into(),
            status_seq: 1,
            carrier: None,
            carrier_ref: None,
        }
    }

    fn status(id: &str, status: &str, refs: &[&str]) -> EventTask {
        EventTask::StatusV1(StatusEvent {
            event_id: new_event_id(),
            message_id: MessageId::from_trusted(id.into()),
            tenant_id: TenantId::from_trusted("tnt_x".into()),
            status: status.into(),
            carrier: Some("smsc1".into()),
            carrier_refs: refs.iter().map(|r| r.to_string()).collect(),
            error: None,
            at: Utc::now(),
        })
    }

    fn receipt(r: &str, state: ReceiptState) -> EventTask {
        EventTask::ReceiptV1(ReceiptEvent {
            event_id: new_event_id(),
            carrier: "smsc1".into(),
            receipt: Receipt {
                carrier_ref: r.into(),
                state,
                error_code: None,
                done_at: None,
                raw: "id:1 stat:DELIVRD\0".into(),
                is_final: true,
            },
            received_at: Utc::now(),
        })
    }

    fn loaded(heads: Vec<MessageHead>) -> Loaded {
        Loaded {
            messages: heads,
            ..Default::default()
        }
    }

    #[test]
    fn sent_then_receipt_in_one_batch() {
        let events = vec![
            status("m1", "sending", &[]),
            status("m1", "sent", &["00AB"]),
            receipt("ab", ReceiptState::Delivered),
        ];
        let (w, report) = fold(&events, loaded(vec![head("m1", "sms")]));
        assert_eq!(report.applied, 3);
        let seqs: Vec<i32> = w.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        assert_eq!(w.events[2].status, "delivered");
        assert!(w.events[2].is_final);
        assert_eq!(w.events[2].previous_status.as_deref(), Some("sent"));
        assert_eq!(
            w.events[2].detail["raw"], "id:1 stat:DELIVRD",
            "NUL stripped"
        );
        assert_eq!(w.messages.len(), 1);
        assert_eq!(w.messages[0].status, "delivered");
        assert_eq!(w.messages[0].status_seq, 4);
        assert_eq!(w.messages[0].carrier_ref.as_deref(), Some("ab"));
        assert_eq!(w.parts.len(), 1);
        assert_eq!(w.parts[0].state.as_deref(), Some("delivered"));
        assert!(w.park.is_empty());
    }

    #[test]
    fn early_receipt_in_the_same_batch_is_matched_not_parked() {
        let events = vec![
            receipt("ab", ReceiptState::Delivered),
            status("m1", "sent", &["ab"]),
        ];
        let (w, report) = fold(&events, loaded(vec![head("m1", "sms")]));
        assert_eq!(report.matched_late, 1);
        assert_eq!(report.parked, 0);
        assert!(w.park.is_empty());
        assert_eq!(w.events.len(), 2);
        assert_eq!(w.events[1].status, "delivered");
        assert_eq!(w.events[1].detail["matched_late"], true);
    }

    #[test]
    fn unmatched_receipt_is_parked_and_duplicates_ignored() {
        let r = receipt("zz", ReceiptState::Delivered);
        let events = vec![r.clone(), r];
        let (w, report) = fold(&events, Loaded::default());
        assert_eq!(report.parked, 1);
        assert_eq!(report.duplicate, 1);
        assert_eq!(w.park.len(), 1);
        assert_eq!(w.park[0].carrier_ref, "zz");
        assert!(w.events.is_empty());
    }

    #[test]
    fn late_sent_is_logged_not_applied() {
        let mut h = head("m1", "sms");
        h.status = "delivered".into();
        h.status_seq = 4;
        let (w, report) = fold(&[status("m1", "sent", &[])], loaded(vec![h]));
        assert_eq!(report.logged, 1);
        assert_eq!(w.events[0].seq, 5);
        assert_eq!(w.events[0].status, "sent");
        assert_eq!(w.events[0].detail["applied"], false);
        assert!(!w.events[0].is_final);
        assert_eq!(w.messages[0].status, "delivered");
        assert_eq!(w.messages[0].status_seq, 5);
    }

    #[test]
    fn multipart_outcome_follows_parts() {
        let events = vec![
            status("m1", "sent", &["1", "2", "3"]),
            receipt("1", ReceiptState::Delivered),
            receipt("3", ReceiptState::Undelivered),
            receipt("2", ReceiptState::Delivered),
        ];
        let (w, _) = fold(&events, loaded(vec![head("m1", "sms")]));
        let st: Vec<(&str, bool)> = w
            .events
            .iter()
            .map(|e| (e.status.as_str(), e.detail["applied"].as_bool().unwrap()))
            .collect();
        assert_eq!(
            st,
            [
                ("sent", true),
                ("delivered", false),
                ("undelivered", false),
                ("undelivered", true)
            ]
        );
        assert!(w.events[3].is_final);
        assert_eq!(w.messages[0].status, "undelivered");
        assert_eq!(w.parts.len(), 3);
    }

    #[test]
    fn status_for_unknown_message_is_counted() {
        let (w, report) = fold(&[status("nope", "sent", &["1"])], Loaded::default());
        assert_eq!(report.unknown_message, 1);
        assert!(w.events.is_empty() && w.parts.is_empty());
    }
}
