-- The W3C trace context of the transaction that wrote an outbox row, sent as the message's headers,
-- so the publish that follows (in whichever process) continues the same trace.

ALTER TABLE outbox ADD COLUMN headers jsonb NOT NULL DEFAULT '{}';
