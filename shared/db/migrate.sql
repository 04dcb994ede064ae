-- name: lock
SELECT pg_advisory_lock(7366510237);

-- name: unlock
SELECT pg_advisory_unlock(7366510237);

-- name: create_ledger
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: applied
SELECT version, name, checksum FROM schema_migrations ORDER BY version;

-- name: record
INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3);

-- name: database_exists
SELECT 1 FROM pg_database WHERE datname = $1;

-- name: is_superuser
SELECT rolsuper FROM pg_roles WHERE rolname = $1;
