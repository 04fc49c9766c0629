-- The outbox, one row per group-commit batch instead of a column per
-- message: the accept statement adds the batch's message ids here, the
-- relay deletes the row once RabbitMQ confirmed them. Marking each message
-- published was an UPDATE of every messages row (a new row version and an
-- entry in each of its indexes); this is one insert and one delete a batch.
-- messages.published_at is no longer written.
CREATE TABLE outbox (
    batch        BIGSERIAL PRIMARY KEY,
    message_ids  TEXT[] NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Messages committed but not yet published when this runs wait here, 500
-- to a batch (the sweep publishes whole batches).
INSERT INTO outbox (message_ids, created_at)
SELECT array_agg(id ORDER BY created_at), min(created_at)
FROM (SELECT id, created_at, (row_number() OVER (ORDER BY created_at, id) - 1) / 500 AS n
      FROM messages WHERE published_at IS NULL) waiting
GROUP BY n
ORDER BY n;

DROP INDEX messages_unpublished;
