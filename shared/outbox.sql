-- name: claim
-- Rows another publisher holds are skipped, so any number of publishers share the outbox.
-- $2 limits the claim to some exchanges (a publisher whose broker user may write only there);
-- NULL claims every row.
SELECT id, exchange, routing_key, body, content_type, message_id, mandatory, attempts, headers
FROM outbox
WHERE available_at <= now() AND ($2::text[] IS NULL OR exchange = ANY($2::text[]))
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: delete
DELETE FROM outbox WHERE id = ANY($1::bigint[]);

-- name: defer
UPDATE outbox
SET attempts = attempts + 1,
    available_at = now() + make_interval(secs => least(0.1 * power(2, attempts), 5.0))
WHERE id = ANY($1::bigint[]);

-- name: insert
INSERT INTO outbox (exchange, routing_key, body, content_type, message_id, mandatory, available_at, headers)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::boolean[], $7::timestamptz[], $8::jsonb[]);

-- name: depth
SELECT count(*) AS depth, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_seconds
FROM outbox;
