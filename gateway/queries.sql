-- The gateway's statements. Every read is scoped to the caller's tenant; the gateway writes only
-- the intent (a trigger, a cancel) and API keys' last-used times.

-- name: ping
SELECT 1;

-- name: ensure_secret
INSERT INTO service_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING;

-- name: get_secret
SELECT value FROM service_secrets WHERE name = $1;

-- name: get_run
SELECT * FROM runs WHERE id = $1 AND tenant_id = $2;

-- name: lock_run
SELECT * FROM runs WHERE id = $1 AND tenant_id = $2 FOR UPDATE;

-- name: run_exists
SELECT EXISTS (SELECT 1 FROM runs WHERE id = $1 AND tenant_id = $2);

-- Keyset pages, newest first; each shape has its own statement so that every page is an index
-- range scan on runs_tenant_created / runs_tenant_status_created, whatever its depth.

-- name: list_runs_first
SELECT * FROM runs
WHERE tenant_id = $1
ORDER BY created_at DESC, id DESC
LIMIT $2;

-- name: list_runs_after
SELECT * FROM runs
WHERE tenant_id = $1 AND (created_at, id) < ($3, $4)
ORDER BY created_at DESC, id DESC
LIMIT $2;

-- name: list_runs_status_first
SELECT * FROM runs
WHERE tenant_id = $1 AND status = $3::run_status
ORDER BY created_at DESC, id DESC
LIMIT $2;

-- name: list_runs_status_after
SELECT * FROM runs
WHERE tenant_id = $1 AND status = $3::run_status AND (created_at, id) < ($4, $5)
ORDER BY created_at DESC, id DESC
LIMIT $2;

-- name: list_steps
SELECT * FROM steps WHERE run_id = $1 ORDER BY position;

-- name: step_in_run
SELECT EXISTS (
    SELECT 1 FROM steps s JOIN runs r ON r.id = s.run_id
    WHERE s.id = $1 AND s.run_id = $2 AND r.tenant_id = $3
);

-- name: list_results_first
SELECT * FROM test_results
WHERE step_id = $1
ORDER BY attempt, seq
LIMIT $2;

-- name: list_results_after
SELECT * FROM test_results
WHERE step_id = $1 AND (attempt, seq) > ($3, $4)
ORDER BY attempt, seq
LIMIT $2;

-- name: list_results_status_first
SELECT * FROM test_results
WHERE step_id = $1 AND status = $3::test_status
ORDER BY attempt, seq
LIMIT $2;

-- name: list_results_status_after
SELECT * FROM test_results
WHERE step_id = $1 AND status = $3::test_status AND (attempt, seq) > ($4, $5)
ORDER BY attempt, seq
LIMIT $2;

-- name: insert_run
-- clock_timestamp(), not now(): runs of one long transaction would otherwise share a time.
INSERT INTO runs (id, tenant_id, status, model, labels, parameters, fail_fast, step_counts, test_counts,
                  last_runseq, created_at)
VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, 1, clock_timestamp())
RETURNING *;

-- name: insert_step
INSERT INTO steps (id, run_id, position, name, kind, params, depends_on, pool, status, attempt,
                   max_attempts, timeout_seconds, allow_test_failures, test_counts, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7::text[], $8, 'pending', 0, $9, $10, $11, $12, $13);

-- name: find_idempotency_key
SELECT body_hash, run_id FROM idempotency_keys
WHERE tenant_id = $1 AND key = $2 AND created_at > now() - interval '24 hours';

-- name: claim_idempotency_key
-- A key older than 24 h is free again; a live one is left alone and nothing is returned.
INSERT INTO idempotency_keys (tenant_id, key, body_hash, run_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, key) DO UPDATE
    SET body_hash = EXCLUDED.body_hash, run_id = EXCLUDED.run_id, created_at = now()
    WHERE idempotency_keys.created_at <= now() - interval '24 hours'
RETURNING run_id;

-- name: insert_run_event
INSERT INTO run_events (run_id, runseq, event_id, type, body) VALUES ($1, $2, $3, $4, $5);

-- name: request_cancel
-- Guarded by the state machine's sources for the cancel event; the row is locked already.
UPDATE runs
SET status = $2::run_status,
    cancel_requested_at = coalesce(cancel_requested_at, now()),
    last_runseq = last_runseq + 1,
    updated_at = now()
WHERE id = $1 AND status = ANY($3::run_status[])
RETURNING *;

-- name: events_after
SELECT runseq, type, body FROM run_events
WHERE run_id = $1 AND runseq > $2
ORDER BY runseq
LIMIT $3;

-- name: run_progress
SELECT status, last_runseq FROM runs WHERE id = $1;
