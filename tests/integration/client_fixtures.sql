-- Events as the orchestrator records them, for the client's stream tests.

-- name: append_cloud_event
-- A whole CloudEvent: the run's next runseq, the run moved to `status`, the run's id as its data.
WITH bumped AS (
    UPDATE runs SET last_runseq = last_runseq + 1, status = $3::run_status, updated_at = now()
    WHERE id = $1
    RETURNING id, last_runseq, gen_random_uuid() AS event_id
)
INSERT INTO run_events (run_id, runseq, event_id, type, body)
SELECT id, last_runseq, event_id, $2,
       jsonb_build_object(
           'specversion', '1.0', 'id', event_id::text, 'source', '/modelruns/orchestrator',
           'type', $2::text, 'subject', 'model-runs/' || id::text,
           'time', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'datacontenttype', 'application/json', 'runseq', last_runseq,
           'data', jsonb_build_object('id', id::text))
FROM bumped
RETURNING runseq;
