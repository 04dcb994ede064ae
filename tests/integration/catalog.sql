-- What test_migrations.py compares between a migrated database and one built from schema.sql:
-- everything in the public schema but the migrations ledger, in a stable order.

-- name: tables
SELECT c.relname AS name, c.relkind::text AS kind
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relname <> 'schema_migrations'
ORDER BY 1;

-- name: columns
-- By name, not position: a column a migration adds lands last, wherever schema.sql writes it.
SELECT c.relname AS table_name,
       a.attname AS column_name,
       format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AS not_null,
       pg_get_expr(d.adbin, d.adrelid) AS default_value,
       a.attidentity::text AS identity,
       a.attgenerated::text AS generated,
       coalesce(co.collname, '') AS collation
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 0
  AND co.collname <> 'default'
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND c.relname <> 'schema_migrations' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY 1, 2;

-- name: indexes
SELECT tablename AS table_name, indexname AS name, indexdef AS definition
FROM pg_indexes
WHERE schemaname = 'public' AND tablename <> 'schema_migrations'
ORDER BY 1, 2;

-- name: constraints
SELECT c.relname AS table_name, k.conname AS name, k.contype::text AS kind,
       pg_get_constraintdef(k.oid) AS definition, k.condeferrable AS deferrable,
       k.condeferred AS deferred
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relname <> 'schema_migrations'
ORDER BY 1, 2;

-- name: enums
SELECT t.typname AS name, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels
FROM pg_type t
JOIN pg_enum e ON e.enumtypid = t.oid
JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = 'public'
GROUP BY t.typname
ORDER BY 1;

-- name: types
-- Every type of the schema's own (enums, composites, domains), but the row types of its tables.
SELECT t.typname AS name, t.typtype::text AS kind
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_class c ON c.oid = t.typrelid
WHERE n.nspname = 'public' AND t.typelem = 0 AND (c.oid IS NULL OR c.relkind = 'c')
ORDER BY 1;

-- name: sequences
SELECT s.sequencename AS name, s.data_type::text AS type, s.start_value, s.increment_by,
       s.min_value, s.max_value, s.cycle
FROM pg_sequences s
WHERE s.schemaname = 'public' AND s.sequencename NOT LIKE 'schema_migrations%'
ORDER BY 1;

-- name: sequence_owners
SELECT s.relname AS sequence_name, t.relname AS table_name, a.attname AS column_name
FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_class t ON t.oid = d.refobjid
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
JOIN pg_namespace n ON n.oid = s.relnamespace
WHERE n.nspname = 'public' AND d.deptype IN ('a', 'i')
ORDER BY 1;

-- name: functions
SELECT p.proname AS name, pg_get_function_identity_arguments(p.oid) AS arguments,
       pg_get_functiondef(p.oid) AS definition
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public'
ORDER BY 1, 2;

-- name: triggers
SELECT c.relname AS table_name, t.tgname AS name, pg_get_triggerdef(t.oid) AS definition
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND NOT t.tgisinternal
ORDER BY 1, 2;

-- name: views
SELECT c.relname AS name, pg_get_viewdef(c.oid, true) AS definition
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')
ORDER BY 1;

-- name: extensions
SELECT extname AS name FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1;

-- name: ledger
SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version;

-- name: tamper_checksum
UPDATE schema_migrations SET checksum = $2 WHERE version = $1;

-- name: record_unknown_migration
INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3);

-- name: drop_database_statement
-- DROP DATABASE takes no parameters: the server quotes the name into the statement.
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', $1::text);
