-- Status projection: event dedupe, carrier-reference correlation (one row per
-- SMS part), and receipts that arrived before their reference was recorded.
-- Written only by the status projector (src/projector.rs, src/store/events.rs).

-- The id of the broker event an entry came from (NULL for entries the accept
-- path writes). Unique: a redelivered event is recognised and ignored.
ALTER TABLE message_events ADD COLUMN event_id TEXT;
CREATE UNIQUE INDEX message_events_event_id ON message_events (event_id)
    WHERE event_id IS NOT NULL;

-- One row per part of a sent message, keyed by the carrier connection and the
-- carrier's reference in canonical form (trimmed, lower-case, leading zeros
-- stripped), which is what receipts are matched on.
CREATE TABLE message_parts (
    carrier     TEXT NOT NULL,
    carrier_ref TEXT NOT NULL,
    message_id  TEXT NOT NULL REFERENCES messages (id),
    -- 1-based, in the order the carrier returned the references.
    part        INTEGER NOT NULL,
    -- Latest receipt state of this part (NULL until its first receipt).
    state       TEXT,
    error_code  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (carrier, carrier_ref)
);

CREATE INDEX message_parts_message ON message_parts (message_id, part);

-- Receipts whose (carrier, carrier_ref) matched no part yet: a fast carrier
-- answered before the `sent` event recorded the reference. Kept until the
-- reference lands (then moved into message_events and deleted here); never
-- dropped. Old rows are counted by the gauge herald_receipts_unmatched.
CREATE TABLE pending_receipts (
    event_id    TEXT PRIMARY KEY,
    carrier     TEXT NOT NULL,
    carrier_ref TEXT NOT NULL,
    -- The ReceiptEvent as received (JSON of herald_actors::payload::ReceiptEvent).
    payload     JSONB NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    parked_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX pending_receipts_ref ON pending_receipts (carrier, carrier_ref);
CREATE INDEX pending_receipts_parked ON pending_receipts (parked_at);
