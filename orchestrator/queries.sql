-- Every statement of the orchestrator. Writers of a run's state hold that run's row lock (lock_runs
-- here, lock_run in the gateway) for the whole transaction; the step UPDATEs also guard on the
-- status they expect.

-- name: lock_runs
-- Locked in id order: two transactions locking overlapping sets of runs never deadlock.
SELECT id, tenant_id, status, model, labels, parameters, fail_fast, step_counts, test_counts,
       last_runseq, error, created_at, started_at, finished_at, cancel_requested_at
FROM runs
WHERE id = ANY($1::uuid[])
ORDER BY id
FOR UPDATE;

-- name: runs_steps
SELECT id, run_id, position, name, kind, params, depends_on, pool, status, attempt, max_attempts,
       timeout_seconds, allow_test_failures, worker_id, outputs, error, test_counts, results_stored,
       held_finish, held_finish_at, created_at, queued_at, started_at, finished_at, lease_expires_at,
       stop_requested_at, not_before, dispatch_count
FROM steps
WHERE run_id = ANY($1::uuid[])
ORDER BY run_id, position;

-- name: autovacuum
-- Whether the server vacuums by itself: the outbox, steps and runs are rewritten at every step.
SELECT current_setting('autovacuum')::boolean;

-- name: step_run
SELECT run_id FROM steps WHERE id = $1;

-- name: write_changes
-- Everything a batch decided, in one round trip: the guarded UPDATEs of its steps and runs, its
-- run events and its outbox rows. Each UPDATE row guards on the status this transaction read; the
-- counts of the rows they matched come back, and a shortfall (a race lost) rolls it all back.
-- Steps come in id order, as renew_leases locks them, to keep the two from deadlocking.
WITH changed_steps AS (
    UPDATE steps AS s
    SET status = u.status, attempt = u.attempt, worker_id = u.worker_id, outputs = u.outputs,
        error = u.error, test_counts = u.test_counts, results_stored = u.results_stored,
        held_finish = u.held_finish, held_finish_at = u.held_finish_at, queued_at = u.queued_at,
        started_at = u.started_at, finished_at = u.finished_at, lease_expires_at = u.lease_expires_at,
        stop_requested_at = u.stop_requested_at, not_before = u.not_before, dispatch_count = u.dispatch_count
    FROM unnest($1::uuid[], $2::step_status[], $3::step_status[], $4::integer[], $5::text[], $6::jsonb[],
                $7::jsonb[], $8::jsonb[], $9::integer[], $10::jsonb[], $11::timestamptz[], $12::timestamptz[],
                $13::timestamptz[], $14::timestamptz[], $15::timestamptz[], $16::timestamptz[],
                $17::timestamptz[], $18::integer[])
         AS u(id, expected, status, attempt, worker_id, outputs, error, test_counts, results_stored,
              held_finish, held_finish_at, queued_at, started_at, finished_at, lease_expires_at,
              stop_requested_at, not_before, dispatch_count)
    WHERE s.id = u.id AND s.status = u.expected
    RETURNING s.id
), changed_runs AS (
    UPDATE runs AS r
    SET status = u.status, step_counts = u.step_counts, test_counts = u.test_counts,
        last_runseq = u.last_runseq, error = u.error, started_at = u.started_at,
        finished_at = u.finished_at, updated_at = now()
    FROM unnest($19::uuid[], $20::run_status[], $21::run_status[], $22::jsonb[], $23::jsonb[], $24::bigint[],
                $25::jsonb[], $26::timestamptz[], $27::timestamptz[])
         AS u(id, expected, status, step_counts, test_counts, last_runseq, error, started_at, finished_at)
    WHERE r.id = u.id AND r.status = u.expected
    RETURNING r.id
), events AS (
    INSERT INTO run_events (run_id, runseq, event_id, type, body)
    SELECT * FROM unnest($28::uuid[], $29::bigint[], $30::uuid[], $31::text[], $32::jsonb[])
), messages AS (
    INSERT INTO outbox (exchange, routing_key, body, content_type, message_id, mandatory, available_at, headers)
    SELECT * FROM unnest($33::text[], $34::text[], $35::bytea[], $36::text[], $37::text[], $38::boolean[],
                         $39::timestamptz[], $40::jsonb[])
)
SELECT (SELECT count(*) FROM changed_steps) AS steps, (SELECT count(*) FROM changed_runs) AS runs;

-- name: insert_results
-- The results of many steps' reports at once. A redelivered report is stored once: only the rows
-- returned here are new.
INSERT INTO test_results (id, run_id, step_id, attempt, seq, name, status, duration_ms, message, metrics)
SELECT *
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::integer[], $5::integer[], $6::text[], $7::test_status[],
            $8::float8[], $9::text[], $10::jsonb[])
ON CONFLICT (step_id, attempt, seq) DO NOTHING
RETURNING id, run_id, step_id, attempt, seq, name, status, duration_ms, message, metrics, created_at;

-- name: heartbeat_targets
-- What each step named in a heartbeat is now, to renew its lease or tell its worker to stop.
SELECT r.step_id, r.attempt, s.run_id, s.status, s.attempt AS current_attempt, s.worker_id,
       s.stop_requested_at, runs.status AS run_status
FROM unnest($1::uuid[], $2::integer[]) AS r(step_id, attempt)
LEFT JOIN steps s ON s.id = r.step_id
LEFT JOIN runs ON runs.id = s.run_id;

-- name: renew_leases
-- Rows are locked in id order so that concurrent heartbeats never deadlock.
WITH target AS (
    SELECT s.id FROM steps s
    JOIN unnest($1::uuid[], $2::integer[]) AS r(step_id, attempt) ON s.id = r.step_id AND s.attempt = r.attempt
    WHERE s.status = 'running' AND s.worker_id = $3
    ORDER BY s.id
    FOR UPDATE OF s
)
UPDATE steps SET lease_expires_at = now() + make_interval(secs => $4)
FROM target WHERE steps.id = target.id;

-- name: stale_queued_runs
-- Runs whose trigger never took effect (its command was lost or its orchestrator died).
SELECT id FROM runs
WHERE status = 'queued' AND last_runseq = 1 AND updated_at < now() - make_interval(secs => $1)
ORDER BY updated_at
LIMIT $2;

-- name: cancelling_runs
SELECT id FROM runs
WHERE status = 'cancelling' AND updated_at < now() - make_interval(secs => $1)
ORDER BY updated_at
LIMIT $2;

-- name: expired_leases
SELECT run_id, id, attempt FROM steps
WHERE status = 'running' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT $1;

-- name: overdue_steps
-- Past their timeout by more than a grace: the worker's own timer did not end them.
SELECT run_id, id, attempt FROM steps
WHERE status = 'running'
  AND started_at + make_interval(secs => timeout_seconds + $1) < now()
LIMIT $2;

-- name: stale_held_finishes
SELECT run_id, id, attempt FROM steps
WHERE status = 'running' AND held_finish IS NOT NULL AND held_finish_at < now() - make_interval(secs => $1)
LIMIT $2;

-- name: overdue_stops
SELECT run_id, id, attempt FROM steps
WHERE status = 'running' AND stop_requested_at < now() - make_interval(secs => $1)
LIMIT $2;
