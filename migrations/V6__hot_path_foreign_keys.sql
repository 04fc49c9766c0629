-- The foreign keys of the tables written for every message go: each one ran
-- a per-row trigger query on every insert, and messages -> tenants took a
-- KEY SHARE lock on the tenant's row for every message, so concurrent group
-- commits of one tenant turned that row into a MultiXact. What they
-- guarded, the writers guarantee: a message is written only for the
-- authenticated tenant (tenants are never deleted); its first event by the
-- statement that writes it; later events and parts only by the projector,
-- for a message it has just loaded and locked (an event for an unknown
-- message is counted and ignored, never written). Messages are never
-- deleted.
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_tenant_id_fkey;
ALTER TABLE message_events DROP CONSTRAINT IF EXISTS message_events_message_id_fkey;
ALTER TABLE message_parts DROP CONSTRAINT IF EXISTS message_parts_message_id_fkey;
