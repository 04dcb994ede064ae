-- API keys: created, listed and revoked by `modelruns api-keys`; only a sha256 of the key is kept.

-- name: ensure_tenant
INSERT INTO tenants (id) VALUES ($1) ON CONFLICT (id) DO NOTHING;

-- name: insert_key
INSERT INTO api_keys (prefix, tenant_id, key_hash, scopes)
VALUES ($1, $2, $3, $4::text[]);

-- name: list_keys
SELECT prefix, tenant_id, scopes, created_at, last_used_at, revoked_at
FROM api_keys
WHERE $1::text IS NULL OR tenant_id = $1
ORDER BY tenant_id, created_at, prefix;

-- name: revoke_key
-- A key revoked twice keeps its first revocation time.
UPDATE api_keys
SET revoked_at = coalesce(revoked_at, now())
WHERE prefix = $1
RETURNING prefix, tenant_id, scopes, created_at, last_used_at, revoked_at;

-- name: find_key
SELECT prefix, tenant_id, key_hash, scopes, revoked_at
FROM api_keys
WHERE prefix = $1;

-- name: touch_keys
-- Last-used times arrive in batches from every gateway; a late batch never moves a time back.
UPDATE api_keys AS k
SET last_used_at = greatest(coalesce(k.last_used_at, u.used_at), u.used_at)
FROM unnest($1::text[], $2::timestamptz[]) AS u (prefix, used_at)
WHERE k.prefix = u.prefix;
