-- The message statuses an endpoint receives (NULL: every status).
ALTER TABLE webhook_endpoints ADD COLUMN statuses TEXT[];
