-- Webhooks: tenants' endpoints (each with its own signing secret, sealed
-- with the server key), every delivery attempt, and the dispatcher's
-- position in the event log. Written only through src/store/webhooks.rs.

CREATE TABLE webhook_endpoints (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    url             TEXT NOT NULL,
    description     TEXT,
    -- ChaCha20-Poly1305 nonce (12 bytes) || ciphertext of the secret's bytes.
    secret_sealed   BYTEA NOT NULL,
    enabled         BOOLEAN NOT NULL DEFAULT true,
    -- Why it was disabled: gone (410) or failing (continuously failing).
    disabled_reason TEXT,
    disabled_at     TIMESTAMPTZ,
    -- First failure of the current run of failures (NULL after a success).
    failing_since   TIMESTAMPTZ,
    deleted_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at)
    WHERE deleted_at IS NULL;

-- One row per delivery attempt (and one per endpoint.disabled notice).
CREATE TABLE webhook_attempts (
    id           BIGSERIAL PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    -- message.status or endpoint.disabled
    event_type   TEXT NOT NULL,
    -- The webhook-id header: stable across retries of one event.
    webhook_id   TEXT NOT NULL,
    event_cursor BIGINT,
    message_id   TEXT,
    -- NULL when the target was the message's callback_url.
    endpoint_id  TEXT,
    url          TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    -- succeeded | retrying | failed | skipped | notice
    outcome      TEXT NOT NULL,
    status_code  INTEGER,
    latency_ms   INTEGER,
    error        TEXT,
    next_try_at  TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX webhook_attempts_message ON webhook_attempts (message_id, id)
    WHERE message_id IS NOT NULL;
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id)
    WHERE endpoint_id IS NOT NULL;

-- The dispatcher's position in message_events (one row, node-agnostic):
-- advanced in the same transaction that saw the delivery tasks confirmed
-- by RabbitMQ, under FOR UPDATE so one node dispatches at a time.
CREATE TABLE webhook_cursor (
    name   TEXT PRIMARY KEY,
    cursor BIGINT NOT NULL
);

INSERT INTO webhook_cursor (name, cursor)
SELECT 'dispatcher', coalesce(max(cursor), 0) FROM message_events;
