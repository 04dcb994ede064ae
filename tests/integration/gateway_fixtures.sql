-- Rows the gateway tests need that only the orchestrator would write in production.

-- name: insert_result
INSERT INTO test_results (id, run_id, step_id, attempt, seq, name, status, duration_ms, message, metrics)
VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6::test_status, $7, $8, $9);

-- name: step_ids
SELECT id, name FROM steps WHERE run_id = $1 ORDER BY position;

-- name: append_run_event
-- An event as the orchestrator would record it: the run's next runseq, the run moved to `status`.
WITH bumped AS (
    UPDATE runs SET last_runseq = last_runseq + 1, status = $3::run_status, updated_at = now()
    WHERE id = $1
    RETURNING id, last_runseq
)
INSERT INTO run_events (run_id, runseq, event_id, type, body)
SELECT id, last_runseq, gen_random_uuid(), $2,
       jsonb_build_object('type', $2::text, 'runseq', last_runseq, 'subject', 'model-runs/' || id::text)
FROM bumped
RETURNING runseq;

-- name: run_events
SELECT runseq, type, body FROM run_events WHERE run_id = $1 ORDER BY runseq;

-- name: outbox_rows
SELECT exchange, routing_key, body, content_type, message_id, mandatory FROM outbox ORDER BY id;

-- name: count_runs
SELECT count(*) FROM runs WHERE tenant_id = $1;

-- name: steps_of
SELECT * FROM steps WHERE run_id = $1 ORDER BY position;

-- name: age_idempotency_keys
UPDATE idempotency_keys SET created_at = now() - interval '25 hours';

-- name: key_last_used
SELECT last_used_at FROM api_keys WHERE prefix = $1;

-- name: set_run_status
UPDATE runs SET status = $2::run_status WHERE id = $1;

-- name: clear_outbox
DELETE FROM outbox;

-- name: stored_key_hash
SELECT key_hash FROM api_keys WHERE prefix = $1;

-- name: disable_seqscan
SET enable_seqscan = off;
