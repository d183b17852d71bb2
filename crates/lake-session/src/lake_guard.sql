-- The guard of one lake database (PostgreSQL 15): least privilege for the lake's roles, found by
-- running every DuckLake operation as each role and recording what the client sends (see
-- docs/security.md), and triggers that keep writers to what DuckLake's own writes do.
-- Run by the server as the superuser, in the lake's database, on every bring-up (before and
-- after DuckLake creates its tables) and after a migration; idempotent. lake_session.rs fills in
-- the quoted names of the lake, its roles and the admin, and the literals of the lake's name and
-- registered data path.
SET search_path = pg_catalog, pg_temp;
-- The guard's functions name DuckLake's tables, which may not exist yet on the first run.
SET check_function_bodies = off;

-- 0. Database / schema level ------------------------------------------------------------------
GRANT CONNECT ON DATABASE :"lake" TO :"reader";
GRANT CONNECT, TEMPORARY ON DATABASE :"lake" TO :"writer";     -- TEMPORARY: set_option's UPDATE path
GRANT CONNECT, TEMPORARY ON DATABASE :"lake" TO :"owner";
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT USAGE, CREATE ON SCHEMA public TO :"writer";              -- CREATE: inlined-data tables only (event trigger below)

-- 1. Guard functions: in a schema nobody else can create in; SET search_path pins name resolution
CREATE SCHEMA IF NOT EXISTS ducklake_guard;
REVOKE ALL ON SCHEMA ducklake_guard FROM PUBLIC;

-- Versioned rows (begin_snapshot/end_snapshot): a non-owner may only insert rows that begin in the
-- snapshot being committed (and are open), and may only close an open row in that snapshot.
CREATE OR REPLACE FUNCTION ducklake_guard.versioned() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE cur bigint; n jsonb; o jsonb;
BEGIN
  IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
  END IF;
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'ducklake_guard: % may not delete from %', current_user, TG_TABLE_NAME USING ERRCODE = '42501';
  END IF;
  SELECT max(snapshot_id) INTO cur FROM public.ducklake_snapshot;
  n := to_jsonb(NEW);
  IF TG_OP = 'INSERT' THEN
    IF (n ? 'begin_snapshot' AND (n->>'begin_snapshot')::bigint IS DISTINCT FROM cur)
       OR (n ? 'end_snapshot' AND n->>'end_snapshot' IS NOT NULL)
       OR (n ? 'snapshot_id' AND (n->>'snapshot_id')::bigint IS DISTINCT FROM cur) THEN
      RAISE EXCEPTION 'ducklake_guard: % may only add open rows of the current snapshot % to %', current_user, cur, TG_TABLE_NAME USING ERRCODE = '42501';
    END IF;
  ELSE
    o := to_jsonb(OLD);
    IF o->>'end_snapshot' IS NOT NULL OR (n->>'end_snapshot')::bigint IS DISTINCT FROM cur
       OR (o - 'end_snapshot') IS DISTINCT FROM (n - 'end_snapshot') THEN
      RAISE EXCEPTION 'ducklake_guard: % may only close open rows of % at the current snapshot %', current_user, TG_TABLE_NAME, cur USING ERRCODE = '42501';
    END IF;
  END IF;
  RETURN NEW;
END $fn$;

-- Snapshots: a non-owner may only append the next snapshot, with counters that never go back.
CREATE OR REPLACE FUNCTION ducklake_guard.snapshot() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE prev public.ducklake_snapshot;
BEGIN
  IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    RAISE EXCEPTION 'ducklake_guard: % may not % ducklake_snapshot', current_user, TG_OP USING ERRCODE = '42501';
  END IF;
  SELECT * INTO prev FROM public.ducklake_snapshot ORDER BY snapshot_id DESC LIMIT 1;
  IF NEW.snapshot_id IS DISTINCT FROM prev.snapshot_id + 1
     OR NEW.schema_version < prev.schema_version
     OR NEW.next_catalog_id < prev.next_catalog_id
     OR NEW.next_file_id < prev.next_file_id
     OR NEW.snapshot_time > now() + interval '1 minute' THEN
    RAISE EXCEPTION 'ducklake_guard: snapshot % does not follow snapshot %', NEW.snapshot_id, prev.snapshot_id USING ERRCODE = '42501';
  END IF;
  RETURN NEW;
END $fn$;

-- Table stats: next_row_id never goes back (row ids stay unique).
CREATE OR REPLACE FUNCTION ducklake_guard.table_stats() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  IF NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')
     AND (NEW.next_row_id < OLD.next_row_id OR NEW.table_id IS DISTINCT FROM OLD.table_id) THEN
    RAISE EXCEPTION 'ducklake_guard: next_row_id of table % may not decrease', OLD.table_id USING ERRCODE = '42501';
  END IF;
  RETURN NEW;
END $fn$;

-- ducklake_metadata: non-owners may only insert/update the options that shape their own writes,
-- in a scope DuckLake can load, with a value DuckLake's set_option would produce.
CREATE OR REPLACE FUNCTION ducklake_guard.metadata() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE ok boolean;
BEGIN
  IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
  END IF;
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'ducklake_guard: % may not delete DuckLake options', current_user USING ERRCODE = '42501';
  END IF;
  IF TG_OP = 'UPDATE' AND (NEW.key, NEW.scope, NEW.scope_id) IS DISTINCT FROM (OLD.key, OLD.scope, OLD.scope_id) THEN
    RAISE EXCEPTION 'ducklake_guard: an option''s key and scope may not change' USING ERRCODE = '42501';
  END IF;
  IF NOT ((NEW.scope IS NULL AND NEW.scope_id IS NULL)
          OR (NEW.scope IN ('schema', 'table') AND NEW.scope_id IS NOT NULL)) THEN
    RAISE EXCEPTION 'ducklake_guard: invalid option scope %', NEW.scope USING ERRCODE = '42501';
  END IF;
  ok := CASE NEW.key
    WHEN 'parquet_compression'          THEN NEW.value IN ('uncompressed','snappy','gzip','zstd','brotli','lz4','lz4_raw')
    WHEN 'parquet_version'              THEN NEW.value IN ('V1','V2')
    WHEN 'parquet_compression_level'    THEN NEW.value ~ '^[0-9]{1,2}$'
    WHEN 'parquet_row_group_size'       THEN NEW.value ~ '^[1-9][0-9]{0,9}$'
    WHEN 'target_file_size'             THEN NEW.value ~ '^[0-9]{1,13}$'
    WHEN 'data_inlining_row_limit'      THEN NEW.value ~ '^[0-9]{1,6}$' AND NEW.value::int <= 100000
    WHEN 'per_thread_output'            THEN NEW.value IN ('true','false')
    WHEN 'hive_file_pattern'            THEN NEW.value IN ('true','false')
    WHEN 'sort_on_insert'               THEN NEW.value IN ('true','false')
    ELSE false END;
  IF NOT ok THEN
    RAISE EXCEPTION 'ducklake_guard: only the lake owner may set DuckLake option % (to %)', NEW.key, NEW.value USING ERRCODE = '42501';
  END IF;
  RETURN NEW;
END $fn$;

-- Files scheduled for deletion: whoever inserts or changes a row (the owner's expire/flush/merge),
-- never schedule a path outside the data path the lake was registered with (a writer can register
-- any absolute path with add_data_files; an owner can rewrite ducklake_metadata). The server's
-- maintenance cannot touch files outside the data path either (its DuckDB is confined there).
CREATE OR REPLACE FUNCTION ducklake_guard.scheduled_deletion() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE dp text := :'data_path';
BEGIN
  IF NEW.path IS NULL OR NEW.path ~ '(^|/)\.\.(/|$)'
     OR (coalesce(NEW.path_is_relative, false) IS NOT TRUE AND left(NEW.path, length(dp)) <> dp) THEN
    RAISE WARNING 'ducklake_guard: not scheduling % for deletion: outside the data path', NEW.path;
    RETURN NULL;   -- skip the row, keep the rest of the maintenance commit
  END IF;
  RETURN NEW;
END $fn$;

-- BEGIN SUPERUSER: event triggers need a superuser; without one (an external PostgreSQL's admin)
-- this part is left out and the server warns (docs/external-postgres.md).
-- Writers' DDL: only CREATE TABLE of DuckLake's inlined-data tables (and temporary tables).
-- "Plain writer": has the lake writer role's privileges but not the owner's (covers RESET ROLE too).
CREATE OR REPLACE FUNCTION ducklake_guard.is_plain_writer(r name) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
  SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_database() || '_writer')
     AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_database() || '_owner')
     AND pg_has_role(r, current_database() || '_writer', 'USAGE')
     AND NOT pg_has_role(r, current_database() || '_owner', 'USAGE')
$fn$;
REVOKE ALL ON FUNCTION ducklake_guard.is_plain_writer(name) FROM PUBLIC;

-- ddl_command_start runs as the invoker (so current_user is the acting role, also after RESET
-- ROLE). A plain writer may only CREATE TABLE (DuckLake's inlined-data tables, checked at the
-- end); every other non-superuser (owners, the admin, the server role) only the DDL DuckLake
-- and the server send: no functions, procedures, views, triggers, rules, policies, types,
-- operators, extensions or schemas, which could run code as whoever reads or writes the lake.
CREATE OR REPLACE FUNCTION ducklake_guard.writer_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE w text := current_database() || '_writer'; o text := current_database() || '_owner';
BEGIN
  -- The superuser: the server's bring-up, and the guard's own SECURITY DEFINER code below.
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname IN (session_user, current_user) AND rolsuper) THEN
    RETURN;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = w)
     AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = o)
     AND pg_has_role(current_user, w, 'USAGE') AND NOT pg_has_role(current_user, o, 'USAGE') THEN
    IF tg_tag <> 'CREATE TABLE' THEN
      RAISE EXCEPTION 'ducklake_guard: % may not run %', current_user, tg_tag USING ERRCODE = '42501',
        HINT = 'lake writers may create only DuckLake''s inlined-data tables (docs/security.md)';
    END IF;
    RETURN;
  END IF;
  IF tg_tag IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE INDEX', 'ALTER INDEX', 'REINDEX',
                'CREATE SEQUENCE', 'ALTER SEQUENCE', 'COMMENT', 'GRANT', 'REVOKE',
                'ALTER DEFAULT PRIVILEGES', 'CREATE TABLE AS', 'SELECT INTO', 'REFRESH MATERIALIZED VIEW')
     OR tg_tag LIKE 'DROP %' THEN
    RETURN;
  END IF;
  RAISE EXCEPTION 'ducklake_guard: % may not run % in a lake database', current_user, tg_tag USING ERRCODE = '42501',
    HINT = 'functions, views, triggers, rules, policies and types could run code as whoever reads the lake (docs/security.md)';
END $fn$;

-- ... and every table a writer creates in public is handed to the owner role at once, so writers
-- own nothing (no triggers/rules/policies of theirs can run in an owner's or reader's session).
-- A plain writer's table must be exactly what DuckLake creates: its name, an ordinary table, no
-- defaults, generated columns, constraints or indexes (expressions there would run in the
-- sessions that write it: the owner's, the server's). Every new table with snapshot columns,
-- whoever made it, gets the versioned() guard at once (not only at the next bring-up).
CREATE OR REPLACE FUNCTION ducklake_guard.writer_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE r record; c record; rel text; db text := current_database(); plain boolean; versioned boolean;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands()
           WHERE object_type = 'table' AND schema_name = 'public'
             AND command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') LOOP
    SELECT cl.relname, cl.relkind, cl.relowner::regrole::name AS owner INTO c FROM pg_class cl WHERE cl.oid = r.objid;
    IF c.relname IS NULL OR EXISTS (SELECT 1 FROM pg_roles WHERE rolname = c.owner AND rolsuper) THEN
      CONTINUE;
    END IF;
    plain := ducklake_guard.is_plain_writer(c.owner);
    versioned := EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = r.objid AND attname = 'begin_snapshot' AND NOT attisdropped);
    rel := format('public.%I', c.relname);
    IF plain THEN
      IF c.relname !~ '^ducklake_inlined_(data|delete)_[0-9]+(_[0-9]+)?$' OR c.relkind <> 'r' THEN
        RAISE EXCEPTION 'ducklake_guard: % may not create table %', c.owner, r.object_identity USING ERRCODE = '42501';
      END IF;
      IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = r.objid AND attnum > 0 AND (atthasdef OR attgenerated <> ''))
         OR EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = r.objid)
         OR EXISTS (SELECT 1 FROM pg_index WHERE indrelid = r.objid) THEN
        RAISE EXCEPTION 'ducklake_guard: % may not give table % defaults, constraints or indexes', c.owner, r.object_identity USING ERRCODE = '42501';
      END IF;
      EXECUTE format('ALTER TABLE %s OWNER TO %I', rel, db || '_owner');
      EXECUTE format('REVOKE ALL ON %s FROM %I, %I', rel, db || '_writer', c.owner);
      EXECUTE format('GRANT SELECT, INSERT ON %s TO %I', rel, db || '_writer');
      EXECUTE format('GRANT SELECT ON %s TO %I', rel, db || '_reader');
    END IF;
    IF plain OR versioned OR c.relname ~ '^ducklake_inlined_(data|delete)_[0-9]+(_[0-9]+)?$' THEN
      IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = r.objid AND attname = 'end_snapshot' AND NOT attisdropped) THEN
        EXECUTE format('GRANT UPDATE (end_snapshot) ON %s TO %I', rel, db || '_writer');
      END IF;
      EXECUTE format('DROP TRIGGER IF EXISTS ducklake_guard ON %s', rel);
      EXECUTE format('CREATE TRIGGER ducklake_guard BEFORE INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION ducklake_guard.versioned()', rel);
    END IF;
  END LOOP;
END $fn$;
REVOKE ALL ON FUNCTION ducklake_guard.writer_ddl_start(), ducklake_guard.writer_ddl_end() FROM PUBLIC;

DROP EVENT TRIGGER IF EXISTS ducklake_guard_ddl_start;
DROP EVENT TRIGGER IF EXISTS ducklake_guard_ddl_end;
CREATE EVENT TRIGGER ducklake_guard_ddl_start ON ddl_command_start EXECUTE FUNCTION ducklake_guard.writer_ddl_start();
CREATE EVENT TRIGGER ducklake_guard_ddl_end ON ddl_command_end EXECUTE FUNCTION ducklake_guard.writer_ddl_end();
-- Also with session_replication_role = replica.
ALTER EVENT TRIGGER ducklake_guard_ddl_start ENABLE ALWAYS;
ALTER EVENT TRIGGER ducklake_guard_ddl_end ENABLE ALWAYS;
-- END SUPERUSER

-- 2. Table privileges and row triggers ----------------------------------------------------------
SELECT pg_catalog.set_config('ducklake_guard.lake', :'lake', false);
DO $do$
DECLARE
  lake text := current_setting('ducklake_guard.lake');
  t record; reader text := lake || '_reader'; writer text := lake || '_writer'; owner text := lake || '_owner';
  has_end boolean; has_begin boolean; fn text; events text; kind int; intact boolean;
BEGIN
  -- tables a writer created before this hardening (inlined data): hand them to the owner
  FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relowner = writer::regrole LOOP
    EXECUTE format('ALTER TABLE public.%I OWNER TO %I', t.relname, owner);
  END LOOP;
  FOR t IN SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relowner = owner::regrole LOOP
    SELECT bool_or(attname = 'end_snapshot'), bool_or(attname = 'begin_snapshot') INTO has_end, has_begin
      FROM pg_attribute WHERE attrelid = t.oid AND attnum > 0 AND NOT attisdropped;
    EXECUTE format('REVOKE ALL ON public.%I FROM %I', t.relname, writer);
    EXECUTE format('GRANT SELECT ON public.%I TO %I, %I', t.relname, reader, writer);
    IF t.relname <> 'ducklake_files_scheduled_for_deletion' THEN
      EXECUTE format('GRANT INSERT ON public.%I TO %I', t.relname, writer);
    END IF;
    IF has_end THEN
      EXECUTE format('GRANT UPDATE (end_snapshot) ON public.%I TO %I', t.relname, writer);
    END IF;
    -- The row trigger this table needs (function, BEFORE ROW events as pg_trigger.tgtype bits:
    -- ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16), or none.
    fn := CASE
      WHEN t.relname = 'ducklake_snapshot' THEN 'ducklake_guard.snapshot()'
      WHEN t.relname = 'ducklake_metadata' THEN 'ducklake_guard.metadata()'
      WHEN t.relname = 'ducklake_table_stats' THEN 'ducklake_guard.table_stats()'
      WHEN t.relname = 'ducklake_files_scheduled_for_deletion' THEN 'ducklake_guard.scheduled_deletion()'
      WHEN has_begin OR t.relname = 'ducklake_snapshot_changes' THEN 'ducklake_guard.versioned()'
    END;
    events := CASE
      WHEN t.relname = 'ducklake_table_stats' THEN 'UPDATE'
      WHEN t.relname = 'ducklake_files_scheduled_for_deletion' THEN 'INSERT OR UPDATE'
      ELSE 'INSERT OR UPDATE OR DELETE'
    END;
    kind := 1 + 2 + CASE events WHEN 'UPDATE' THEN 16 WHEN 'INSERT OR UPDATE' THEN 20 ELSE 28 END;
    -- Dropping and creating a trigger takes an ACCESS EXCLUSIVE lock, which a client's open
    -- transaction holds off (and, table after table, deadlocks with): only a trigger that is
    -- missing or not exactly the guard's is replaced, so a bring-up of a guarded lake takes no
    -- such lock.
    IF fn IS NULL THEN
      intact := NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = t.oid AND g.tgname = 'ducklake_guard');
    ELSE
      intact := EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                        WHERE g.tgrelid = t.oid AND g.tgname = 'ducklake_guard'
                          AND g.tgfoid = fn::pg_catalog.regprocedure AND g.tgtype = kind
                          AND g.tgenabled = 'O' AND g.tgqual IS NULL AND g.tgnargs = 0
                          AND g.tgattr::text = '' AND NOT g.tgdeferrable AND g.tgconstraint = 0);
    END IF;
    IF NOT intact THEN
      EXECUTE format('DROP TRIGGER IF EXISTS ducklake_guard ON public.%I', t.relname);
      IF fn IS NOT NULL THEN
        EXECUTE format('CREATE TRIGGER ducklake_guard BEFORE %s ON public.%I FOR EACH ROW EXECUTE FUNCTION %s',
                       events, t.relname, fn);
      END IF;
    END IF;
  END LOOP;
END $do$;
-- The column updates DuckLake's writes send (where this spec version has the columns).
DO $do$
DECLARE writer text := current_setting('ducklake_guard.lake') || '_writer';
BEGIN
  BEGIN
    EXECUTE format('GRANT UPDATE (value) ON public.ducklake_metadata TO %I', writer);
  EXCEPTION WHEN undefined_table OR undefined_column THEN NULL;
  END;
  BEGIN
    EXECUTE format('GRANT UPDATE (record_count, next_row_id, file_size_bytes) ON public.ducklake_table_stats TO %I', writer);
  EXCEPTION WHEN undefined_table OR undefined_column THEN NULL;
  END;
  BEGIN
    EXECUTE format('GRANT UPDATE (contains_null, contains_nan, min_value, max_value, extra_stats) ON public.ducklake_table_column_stats TO %I', writer);
  EXCEPTION WHEN undefined_table OR undefined_column THEN NULL;
  END;
END $do$;

ALTER DEFAULT PRIVILEGES FOR ROLE :"admin" IN SCHEMA public REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLES FROM :"writer";
ALTER DEFAULT PRIVILEGES FOR ROLE :"admin" IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO :"writer";

-- 3. Tables created later by the owner/admin (a DuckLake migration): readers SELECT, writers
--    SELECT + INSERT only (re-running this script adds the column UPDATEs and triggers).
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLES FROM :"writer";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO :"writer";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
