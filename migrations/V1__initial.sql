-- Herald's initial schema: tenants, messages (the outbox too) and the
-- append-only event log that messages are a projection of.

CREATE TABLE tenants (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    -- SHA-256 (hex) of the API key; the key itself is shown once and never stored.
    api_key_hash         TEXT NOT NULL UNIQUE,
    -- Messages per second, enforced cluster-wide (GCRA in Redis).
    rate_limit           DOUBLE PRECISION NOT NULL,
    channels             TEXT[] NOT NULL,
    default_callback_url TEXT,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    channel          TEXT NOT NULL,
    to_number        TEXT NOT NULL,
    from_addr        TEXT NOT NULL,
    -- The content as sent: {"kind":"text","body":…} | template | say | audio.
    content          JSONB NOT NULL,
    segments         INTEGER NOT NULL,
    encoding         TEXT,
    priority         TEXT NOT NULL,
    status           TEXT NOT NULL,
    status_seq       INTEGER NOT NULL DEFAULT 1,
    carrier          TEXT,
    carrier_ref      TEXT,
    callback_url     TEXT,
    validity_seconds INTEGER,
    expires_at       TIMESTAMPTZ,
    scheduled_at     TIMESTAMPTZ,
    metadata         JSONB NOT NULL DEFAULT '{}',
    idempotency_key  TEXT,
    -- SHA-256 of the canonical request body, to tell a replay from a conflict.
    request_hash     TEXT,
    -- NULL until RabbitMQ confirmed the message: the outbox.
    published_at     TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE UNIQUE INDEX messages_idempotency ON messages (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_tenant_id ON messages (tenant_id, id DESC);
CREATE INDEX messages_unpublished ON messages (created_at) WHERE published_at IS NULL;

CREATE TABLE message_events (
    cursor          BIGSERIAL PRIMARY KEY,
    message_id      TEXT NOT NULL REFERENCES messages (id),
    tenant_id       TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    status          TEXT NOT NULL,
    previous_status TEXT,
    final           BOOLEAN NOT NULL DEFAULT false,
    carrier         TEXT,
    detail          JSONB NOT NULL DEFAULT '{}',
    at              TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX message_events_message ON message_events (message_id, seq);
CREATE INDEX message_events_tenant ON message_events (tenant_id, cursor);
