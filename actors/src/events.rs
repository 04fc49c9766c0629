//! Building the payloads actors publish: status events on `herald.events`,
//! carrier tasks on `herald.carrier` and `herald.retry`, poison messages on
//! `herald.dead`; and [`hand_over`], the one way an actor moves a delivery
//! on (publish, then acknowledge).
//!
//! A status event's id is derived from the message, the status and the
//! delivery attempt, so a redelivered message that announces the same step
//! again (after a crash, a lost acknowledgement, a re-publish) produces the
//! same event, which the projector applies once.

use chrono::Utc;
use herald_carriers::CarrierError;

use crate::broker::{Broker, Incoming, Outgoing, Topology};
use crate::payload::{
    new_event_id, CarrierTask, Delivery, EventError, EventTask, MessageEnvelope, Priority,
    ReceiptEvent, StatusEvent,
};
use crate::telemetry;

/// Hand a delivery over (publish `out`, then acknowledge; on failure give it
/// back), apart from the actor so a restart does not cut it short.
pub fn hand_over(broker: &Broker, incoming: Incoming, out: Vec<Outgoing>, what: &'static str) {
    let broker = broker.clone();
    actix::spawn(async move {
        if let Err(e) = incoming.hand_over(&broker, &out).await {
            telemetry::publish_failed(what, &e);
        }
    });
}

/// Most events packed into one AMQP message by [`pack`].
pub const PACK_MAX: usize = 256;

/// Pack the `herald.events` messages among `out` into AMQP messages of up
/// to [`PACK_MAX`] events each, whose body is a JSON array of the events
/// (the projector takes either form; one AMQP message costs RabbitMQ about
/// as much as one event, whatever its size). Their order is kept; the other
/// messages are left as they are, after them.
pub fn pack(topology: &Topology, out: Vec<Outgoing>) -> Vec<Outgoing> {
    let exchange = topology.events_exchange();
    let (events, mut rest): (Vec<Outgoing>, Vec<Outgoing>) = out
        .into_iter()
        .partition(|o| o.exchange == exchange && o.routing_key == "status");
    if events.len() <= 1 {
        return events.into_iter().chain(rest).collect();
    }
    let mut packed: Vec<Outgoing> = events
        .chunks(PACK_MAX)
        .map(|chunk| joined(chunk, chunk.iter().map(|o| o.priority).max().unwrap_or(0)))
        .collect();
    packed.append(&mut rest);
    packed
}

/// One AMQP message whose body is the JSON array of `chunk`'s bodies, to
/// the first one's destination.
fn joined(chunk: &[Outgoing], priority: u8) -> Outgoing {
    let mut body = Vec::with_capacity(chunk.iter().map(|o| o.body.len() + 1).sum::<usize>() + 1);
    body.push(b'[');
    for (i, o) in chunk.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&o.body);
    }
    body.push(b']');
    Outgoing {
        exchange: chunk[0].exchange.clone(),
        routing_key: chunk[0].routing_key.clone(),
        body,
        priority,
    }
}

/// Pack `out` into AMQP messages of up to `max` messages each, one pack per
/// destination (exchange, routing key) and priority, in the order of
/// their first message; the order within a destination is kept. A pack's
/// body is the JSON array of its messages' bodies; a destination with one
/// message keeps it as it is. Consumers of such queues read them with
/// `Broker::subscribe`, which settles each element on its own.
pub fn pack_all(out: Vec<Outgoing>, max: usize) -> Vec<Outgoing> {
    if out.len() <= 1 {
        return out;
    }
    let mut groups: Vec<Vec<Outgoing>> = Vec::new();
    for o in out {
        let same = |g: &&mut Vec<Outgoing>| {
            let first = &g[0];
            first.exchange == o.exchange
                && first.routing_key == o.routing_key
                && first.priority == o.priority
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(group) => group.push(o),
            None => groups.push(vec![o]),
        }
    }
    let mut packed = Vec::with_capacity(groups.len());
    for mut group in groups {
        if group.len() == 1 {
            packed.append(&mut group);
            continue;
        }
        packed.extend(group.chunks(max.max(1)).map(|chunk| match chunk {
            [one] => one.clone(),
            _ => joined(chunk, chunk[0].priority),
        }));
    }
    packed
}

/// The id of a message's status event at one delivery attempt.
pub fn status_event_id(envelope: &MessageEnvelope, status: &str, attempt: u32) -> String {
    format!("evt_{}.{status}.{attempt}", envelope.id)
}

fn priority(envelope: &MessageEnvelope) -> u8 {
    match envelope.priority {
        Priority::High => 5,
        Priority::Normal => 0,
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("payloads always serialise")
}

/// A status event for a message at delivery attempt `attempt`.
pub fn status(
    topology: &Topology,
    envelope: &MessageEnvelope,
    attempt: u32,
    status: &str,
    carrier: Option<&str>,
    carrier_refs: Vec<String>,
    error: Option<EventError>,
) -> Outgoing {
    let event = EventTask::StatusV1(StatusEvent {
        event_id: status_event_id(envelope, status, attempt),
        message_id: envelope.id.clone(),
        tenant_id: envelope.tenant_id.clone(),
        status: status.to_owned(),
        carrier: carrier.map(str::to_owned),
        carrier_refs,
        error,
        at: Utc::now(),
    });
    Outgoing {
        exchange: topology.events_exchange(),
        routing_key: "status".into(),
        body: json(&event),
        priority: priority(envelope),
    }
}

/// A receipt from a carrier connection, to be correlated by the projector.
pub fn receipt(topology: &Topology, carrier: &str, receipt: herald_carriers::Receipt) -> Outgoing {
    receipt_with_id(topology, carrier, receipt, new_event_id())
}

/// A receipt with an id of the caller's (one derived from the receipt, so a
/// carrier re-posting it is applied once).
pub fn receipt_with_id(
    topology: &Topology,
    carrier: &str,
    receipt: herald_carriers::Receipt,
    event_id: String,
) -> Outgoing {
    let event = EventTask::ReceiptV1(ReceiptEvent {
        event_id,
        carrier: carrier.to_owned(),
        receipt,
        received_at: Utc::now(),
    });
    Outgoing {
        exchange: topology.events_exchange(),
        routing_key: "status".into(),
        body: json(&event),
        priority: 0,
    }
}

/// A delivery for a carrier's queue.
pub fn to_carrier(topology: &Topology, carrier: &str, delivery: Delivery) -> Outgoing {
    Outgoing {
        exchange: topology.carrier_exchange(),
        routing_key: carrier.to_owned(),
        priority: priority(&delivery.envelope),
        body: json(&CarrierTask::DeliverV1(delivery)),
    }
}

/// A delivery for a carrier's delay queue of `tier`.
pub fn to_retry(topology: &Topology, carrier: &str, tier: usize, delivery: Delivery) -> Outgoing {
    Outgoing {
        exchange: topology.retry_exchange(),
        routing_key: Topology::retry_key(carrier, tier),
        priority: priority(&delivery.envelope),
        body: json(&CarrierTask::DeliverV1(delivery)),
    }
}

/// A message back to ingress, to the given exchange and key (the shard's
/// overflow queue, a delay tier).
pub fn to_ingress(exchange: String, routing_key: String, envelope: MessageEnvelope) -> Outgoing {
    Outgoing {
        exchange,
        routing_key,
        priority: priority(&envelope),
        body: json(&crate::payload::IngressTask::SubmitV1(envelope)),
    }
}

/// A payload no one could read, with the reason, for the operator.
pub fn dead(topology: &Topology, body: &[u8], reason: &str) -> Outgoing {
    let wrapped = serde_json::json!({
        "reason": reason,
        "body": String::from_utf8_lossy(body),
        "at": Utc::now(),
    });
    Outgoing {
        exchange: topology.dead_exchange(),
        routing_key: String::new(),
        body: json(&wrapped),
        priority: 0,
    }
}

/// A carrier error as an event error.
pub fn carrier_error(e: &CarrierError) -> EventError {
    let (code, carrier_code, text) = match e {
        CarrierError::Throttled { code, text, .. } => ("throttled", Some(code.clone()), text),
        CarrierError::Temporary { code, text } => ("temporary", Some(code.clone()), text),
        CarrierError::Permanent { code, text } => ("permanent", Some(code.clone()), text),
        CarrierError::ConnectionLost { text } => ("connection_lost", None, text),
    };
    EventError {
        code: code.into(),
        carrier_code,
        text: text.clone(),
    }
}

/// An event error of Herald's own.
pub fn herald_error(code: &str, text: impl Into<String>) -> EventError {
    EventError {
        code: code.into(),
        carrier_code: None,
        text: text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(exchange: &str, body: &str, priority: u8) -> Outgoing {
        Outgoing {
            exchange: exchange.into(),
            routing_key: if exchange == "p.events" {
                "status"
            } else {
                "x"
            }
            .into(),
            body: body.as_bytes().to_vec(),
            priority,
        }
    }

    #[test]
    fn events_are_packed_in_order_and_the_rest_left_alone() {
        let t = Topology::new("p", 1);
        let packed = pack(
            &t,
            vec![
                out("p.events", r#"{"n":1}"#, 0),
                out("p.retry", "retry", 0),
                out("p.events", r#"{"n":2}"#, 5),
                out("p.events", r#"{"n":3}"#, 0),
            ],
        );
        assert_eq!(packed.len(), 2);
        assert_eq!(packed[0].exchange, "p.events");
        assert_eq!(packed[0].priority, 5);
        let v: serde_json::Value = serde_json::from_slice(&packed[0].body).unwrap();
        assert_eq!(v, serde_json::json!([{"n":1},{"n":2},{"n":3}]));
        assert_eq!(packed[1].body, b"retry");
        // One event stays as it is; many go PACK_MAX to a message.
        let one = pack(&t, vec![out("p.events", r#"{"n":1}"#, 0)]);
        assert_eq!(one[0].body, br#"{"n":1}"#);
        let many: Vec<Outgoing> = (0..PACK_MAX + 1)
            .map(|i| out("p.events", &format!(r#"{{"n":{i}}}"#), 0))
            .collect();
        assert_eq!(pack(&t, many).len(), 2);
    }

    #[test]
    fn pack_all_packs_per_destination_and_priority_in_order() {
        let packed = pack_all(
            vec![
                out("p.carrier", r#"{"n":1}"#, 0),
                out("p.other", r#"{"n":2}"#, 0),
                out("p.carrier", r#"{"n":3}"#, 5),
                out("p.carrier", r#"{"n":4}"#, 0),
                out("p.carrier", r#"{"n":5}"#, 0),
            ],
            2,
        );
        let bodies: Vec<(&str, u8, serde_json::Value)> = packed
            .iter()
            .map(|o| {
                (
                    o.exchange.as_str(),
                    o.priority,
                    serde_json::from_slice(&o.body).unwrap(),
                )
            })
            .collect();
        use serde_json::json;
        assert_eq!(
            bodies,
            vec![
                ("p.carrier", 0, json!([{"n":1},{"n":4}])),
                ("p.carrier", 0, json!({"n":5})),
                ("p.other", 0, json!({"n":2})),
                ("p.carrier", 5, json!({"n":3})),
            ]
        );
        assert_eq!(pack_all(vec![], 4).len(), 0);
    }
}
