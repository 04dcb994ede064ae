-- The whole schema as it should be. Migrations in shared/db/migrations/ must arrive at exactly this;
-- tests/integration/test_migrations.py builds a database each way and compares them.

CREATE TYPE run_status AS ENUM ('queued', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled');
CREATE TYPE step_status AS ENUM ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'skipped');
CREATE TYPE test_status AS ENUM ('passed', 'failed', 'skipped', 'error');

CREATE TABLE tenants (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    prefix        text PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants (id),
    key_hash      bytea NOT NULL,
    scopes        text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

-- Secrets every gateway must share (the page-token key when none is configured).
CREATE TABLE service_secrets (
    name        text PRIMARY KEY,
    value       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE runs (
    id                   uuid PRIMARY KEY,
    tenant_id            text NOT NULL REFERENCES tenants (id),
    status               run_status NOT NULL,
    model                jsonb NOT NULL,
    labels               jsonb NOT NULL,
    parameters           jsonb NOT NULL,
    fail_fast            boolean NOT NULL,
    -- Counters kept under the run's row lock by every writer, so reads never aggregate steps.
    step_counts          jsonb NOT NULL,
    test_counts          jsonb NOT NULL,
    last_runseq          bigint NOT NULL DEFAULT 0,
    error                jsonb,
    created_at           timestamptz NOT NULL,
    started_at           timestamptz,
    finished_at          timestamptz,
    cancel_requested_at  timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX runs_tenant_created ON runs (tenant_id, created_at DESC, id DESC);
CREATE INDEX runs_tenant_status_created ON runs (tenant_id, status, created_at DESC, id DESC);
-- The reconciler's scan: only runs still moving.
CREATE INDEX runs_active ON runs (updated_at) WHERE status IN ('queued', 'running', 'cancelling');

CREATE TABLE steps (
    id                   uuid PRIMARY KEY,
    run_id               uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position             integer NOT NULL,
    name                 text NOT NULL,
    kind                 text NOT NULL,
    params               jsonb NOT NULL,
    depends_on           text[] NOT NULL,
    pool                 text NOT NULL,
    status               step_status NOT NULL,
    attempt              integer NOT NULL DEFAULT 0,
    max_attempts         integer NOT NULL,
    timeout_seconds      integer NOT NULL,
    allow_test_failures  boolean NOT NULL,
    worker_id            text,
    outputs              jsonb,
    error                jsonb,
    test_counts          jsonb NOT NULL,
    -- How many results the accepted worker reported for the current attempt, and a finish that
    -- arrived before some of them (held until they are stored).
    results_stored       integer NOT NULL DEFAULT 0,
    held_finish          jsonb,
    held_finish_at       timestamptz,
    created_at           timestamptz NOT NULL,
    queued_at            timestamptz,
    started_at           timestamptz,
    finished_at          timestamptz,
    lease_expires_at     timestamptz,
    stop_requested_at    timestamptz,
    not_before           timestamptz,
    dispatch_count       integer NOT NULL DEFAULT 0,
    UNIQUE (run_id, name),
    UNIQUE (run_id, position)
);

-- The reconciler's scans: leases and deadlines of running steps.
CREATE INDEX steps_running_lease ON steps (lease_expires_at) WHERE status = 'running';

CREATE TABLE test_results (
    id           uuid PRIMARY KEY,
    run_id       uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id      uuid NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    seq          integer NOT NULL,
    name         text NOT NULL,
    status       test_status NOT NULL,
    duration_ms  double precision,
    message      text,
    metrics      jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- A result reported twice (redelivery) is stored once.
    UNIQUE (step_id, attempt, seq)
);

CREATE INDEX test_results_step_status ON test_results (step_id, status, attempt, seq);

-- The append-only log of each run's public facts, numbered by runseq.
CREATE TABLE run_events (
    run_id      uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    runseq      bigint NOT NULL,
    event_id    uuid NOT NULL UNIQUE,
    type        text NOT NULL,
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, runseq)
);

-- What must still be sent: written in the transaction that decided it, deleted once confirmed.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    exchange      text NOT NULL,
    routing_key   text NOT NULL,
    body          bytea NOT NULL,
    content_type  text NOT NULL,
    message_id    text NOT NULL,
    mandatory     boolean NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    available_at  timestamptz NOT NULL DEFAULT now(),
    -- The W3C trace context (traceparent, tracestate) of the transaction that wrote the row.
    headers       jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX outbox_available ON outbox (available_at, id);

CREATE TABLE idempotency_keys (
    tenant_id   text NOT NULL REFERENCES tenants (id),
    key         text NOT NULL,
    body_hash   bytea NOT NULL,
    run_id      uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
