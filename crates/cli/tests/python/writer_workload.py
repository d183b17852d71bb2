"""Every DuckLake feature area, as a *writer* user: the yardstick that the lake guard's least
privilege still lets DuckLake's clients do their work (docs/security.md).

usage: writer_workload.py PORT LAKE DATA_PATH WRITER:PW WRITER2:PW OWNER:PW
env: DLC_EXTENSIONS (extension directory)
Prints one JSON object: {"steps": N, "areas": {area: steps}, "failed": [...], "unexpected": [...]}
where "failed" lists steps that should work and did not, "unexpected" steps that should have
been refused (owner-only options, another writer's conflicting commit) and were not.
"""
import json
import os
import sys
import threading

import duckdb

port, lake, data_path, writer, writer2, owner = sys.argv[1:7]
results = {"steps": 0, "areas": {}, "failed": [], "unexpected": []}


def connect(user_pw):
    user, pw = user_pw.split(":", 1)
    c = duckdb.connect(config={
        "extension_directory": os.environ["DLC_EXTENSIONS"],
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "true",
    })
    c.execute("LOAD ducklake; LOAD postgres;")
    c.execute(f"ATTACH 'ducklake:postgres:host=127.0.0.1 port={port} user={user} "
              f"password={pw} dbname={lake}' AS lake")
    c.execute("SET preserve_insertion_order = false")
    c.execute("USE lake")
    return c


def step(area, c, sql, refused=False):
    results["steps"] += 1
    results["areas"][area] = results["areas"].get(area, 0) + 1
    try:
        c.execute(sql).fetchall()
        if refused:
            results["unexpected"].append(f"{area}: {sql}")
    except Exception as e:  # the error is the result
        if not refused:
            results["failed"].append(f"{area}: {sql}: {' | '.join(str(e).splitlines()[:2])[:300]}")


w = connect(writer)
for area, statements in [
    ("schemas and tables", [
        "CREATE SCHEMA s1",
        "CREATE TABLE s1.t (id INTEGER, name VARCHAR, v DOUBLE)",
        "CREATE TABLE s1.ctas AS SELECT * FROM range(50) r(i)",
        "CREATE TABLE s1.nested (a STRUCT(x INT, y VARCHAR), l INT[], m MAP(VARCHAR, INT))",
        "CREATE SCHEMA s2", "CREATE TABLE s2.x (i INT)", "INSERT INTO s2.x SELECT * FROM range(20)",
        "DROP SCHEMA s2 CASCADE", "CREATE SCHEMA s3", "DROP SCHEMA s3",
        "CREATE TABLE s1.todrop (i INT)", "INSERT INTO s1.todrop VALUES (1)", "DROP TABLE s1.todrop",
    ]),
    ("inserts: inlined and Parquet", [
        "INSERT INTO s1.t SELECT i, 'n' || i, i / 2 FROM range(5) r(i)",
        "INSERT INTO s1.t SELECT i, 'n' || i, i / 2 FROM range(100, 20100) r(i)",
        "INSERT INTO s1.nested VALUES ({'x': 1, 'y': 'a'}, [1,2], MAP {'k': 1})",
        "SELECT count(*) FROM s1.t",
    ]),
    ("updates, deletes, merge", [
        "UPDATE s1.t SET name = 'upd' WHERE id < 3",
        "UPDATE s1.t SET v = -1 WHERE id = 5000",
        "DELETE FROM s1.t WHERE id % 10 = 1",
        "DELETE FROM s1.t WHERE id = 4",
        "MERGE INTO s1.t USING (SELECT * FROM (VALUES (0, 'm0', 0.0), (7777777, 'mnew', 1.0)) v(id, name, v)) src "
        "ON t.id = src.id WHEN MATCHED THEN UPDATE SET name = src.name "
        "WHEN NOT MATCHED THEN INSERT (id, name, v) VALUES (src.id, src.name, src.v)",
        "DELETE FROM s1.ctas",
        "CREATE TABLE s1.up (i INT, s VARCHAR)", "INSERT INTO s1.up SELECT i, 'a' FROM range(3) r(i)",
        "UPDATE s1.up SET s = 'b'", "INSERT INTO s1.up SELECT i, 'x' FROM range(3000) r(i)",
        "UPDATE s1.up SET s = 'c' WHERE i < 2000", "TRUNCATE s1.up",
    ]),
    ("schema evolution", [
        "ALTER TABLE s1.t ADD COLUMN extra INTEGER DEFAULT 7",
        "ALTER TABLE s1.t RENAME COLUMN extra TO extra2",
        "ALTER TABLE s1.t ALTER COLUMN id SET DATA TYPE BIGINT",
        "ALTER TABLE s1.t ALTER COLUMN extra2 SET DEFAULT 8",
        "ALTER TABLE s1.t ALTER COLUMN name SET NOT NULL",
        "ALTER TABLE s1.t ALTER COLUMN name DROP NOT NULL",
        "ALTER TABLE s1.t DROP COLUMN v",
        "ALTER TABLE s1.t RENAME TO t2",
        "INSERT INTO s1.t2 VALUES (9999999, 'after-alter', 1)",
        "ALTER TABLE s1.nested ADD COLUMN a.z DOUBLE",
        "ALTER TABLE s1.nested DROP COLUMN a.y",
        "ALTER TABLE s1.nested ALTER l TYPE BIGINT[]",
    ]),
    ("views, macros, comments, types", [
        "CREATE VIEW s1.v AS SELECT id, name FROM s1.t2 WHERE id < 100",
        "CREATE OR REPLACE VIEW s1.v AS SELECT id FROM s1.t2",
        "SELECT count(*) FROM s1.v",
        "COMMENT ON TABLE s1.t2 IS 'a table'",
        "COMMENT ON COLUMN s1.t2.name IS 'a column'",
        "COMMENT ON VIEW s1.v IS 'a view'",
        "DROP VIEW s1.v",
        "CREATE MACRO s1.m(x) AS x + 1", "SELECT s1.m(1)",
        "CREATE MACRO s1.tm(n) AS TABLE SELECT * FROM range(n)", "DROP MACRO s1.m",
        "CREATE TABLE s1.var (v VARIANT)",
        "INSERT INTO s1.var SELECT i::VARIANT FROM range(3000) r(i)",
    ]),
    ("partitioning and sorting", [
        "CREATE TABLE s1.p (k INTEGER, ts TIMESTAMP, x VARCHAR)",
        "ALTER TABLE s1.p SET PARTITIONED BY (k, year(ts))",
        "INSERT INTO s1.p SELECT i % 3, TIMESTAMP '2024-01-01' + INTERVAL (i) DAY, 'x' FROM range(2000) r(i)",
        "INSERT INTO s1.p VALUES (1, TIMESTAMP '2025-05-05', 'small')",
        "ALTER TABLE s1.p RESET PARTITIONED BY",
        "ALTER TABLE s1.p SET SORTED BY (x)",
        "INSERT INTO s1.p SELECT i % 3, TIMESTAMP '2024-01-01', 'y' || i FROM range(500) r(i)",
        "ALTER TABLE s1.p RESET SORTED BY",
        "DELETE FROM s1.p",
    ]),
    ("time travel, snapshots, changes", [
        "SELECT count(*) FROM s1.t2 AT (VERSION => CURRENT)",
        "SELECT count(*) FROM s1.ctas AT (VERSION => 3)",
        "SELECT count(*) FROM lake.snapshots()",
        "SELECT count(*) FROM ducklake_table_changes('lake', 's1', 't2', 0, CURRENT)",
        "SELECT count(*) FROM ducklake_table_insertions('lake', 's1', 't2', 0, CURRENT)",
        "SELECT count(*) FROM ducklake_table_deletions('lake', 's1', 't2', 0, CURRENT)",
        "SELECT count(*) FROM ducklake_list_files('lake', 't2', schema => 's1')",
        "SELECT count(*) FROM ducklake_table_info('lake')",
        "SELECT count(*) FROM ducklake_options('lake')",
        "SELECT * FROM ducklake_current_snapshot('lake')",
    ]),
    ("transactions and commit messages", [
        "BEGIN", "INSERT INTO s1.ctas VALUES (1000)",
        "CALL ducklake_set_commit_message('lake', 'me', 'msg', extra_info => '{}')", "COMMIT",
    ]),
    ("registering files", [
        f"COPY (SELECT i::BIGINT AS id, 'ext' AS name FROM range(100) r(i)) TO '{data_path}registered-f1.parquet'",
        "CREATE TABLE s1.addf (id BIGINT, name VARCHAR)",
        f"CALL ducklake_add_data_files('lake', 'addf', '{data_path}registered-f1.parquet', schema => 's1')",
        "SELECT count(*) FROM s1.addf",
    ]),
]:
    for sql in statements:
        if "CURRENT" in sql:
            current = w.execute("SELECT id FROM ducklake_current_snapshot('lake')").fetchone()[0]
            sql = sql.replace("CURRENT", str(current))
        step(area, w, sql)

# Options: a writer sets those shaping its own writes; retention and policy are the owner's.
writer_options = [("parquet_compression", "'zstd'"), ("parquet_version", "2"),
                  ("parquet_compression_level", "3"), ("parquet_row_group_size", "100000"),
                  ("target_file_size", "'1KB'"), ("data_inlining_row_limit", "20"),
                  ("hive_file_pattern", "true"), ("per_thread_output", "false"),
                  ("sort_on_insert", "true")]
owner_options = [("require_commit_message", "false"), ("rewrite_delete_threshold", "0.5"),
                 ("delete_older_than", "'1 week'"), ("expire_older_than", "'1 month'"),
                 ("auto_compact", "true"), ("write_deletion_vectors", "false"),
                 ("parquet_row_group_size_bytes", "'10MB'")]
o = connect(owner)
for k, v in writer_options:
    for scope in ["", ", schema => 's1'", ", table_name => 't2', schema => 's1'"]:
        step("options a writer sets", w, f"CALL lake.set_option('{k}', {v}{scope})")
        step("options a writer sets", w, f"CALL lake.set_option('{k}', {v}{scope})")
for k, v in owner_options:
    step("options only the owner sets", w, f"CALL lake.set_option('{k}', {v})", refused=True)
    step("options only the owner sets", o, f"CALL lake.set_option('{k}', {v})")
for k in ("data_path", "version", "encrypted", "created_by"):
    step("options nobody sets", w, f"CALL lake.set_option('{k}', 'x')", refused=True)
step("options a writer sets", w, "CALL lake.set_option('target_file_size', '512MB')")
step("options a writer sets", w, "CALL lake.set_option('data_inlining_row_limit', 10)")
step("options a writer sets", w, "INSERT INTO s1.t2 SELECT i, 'after-opts', 0 FROM range(30000) r(i)")

# Two writers at once: appends resolve, conflicting commits are refused by DuckLake itself.
w2 = connect(writer2)
step("concurrent writers", w, "CREATE TABLE s1.cf (i INT)")
step("concurrent writers", w, "INSERT INTO s1.cf SELECT * FROM range(5000)")
for a in (w, w2):
    a.execute("BEGIN")
step("concurrent writers", w, "INSERT INTO s1.cf VALUES (1)")
step("concurrent writers", w2, "INSERT INTO s1.cf VALUES (2)")
step("concurrent writers", w, "COMMIT")
step("concurrent writers", w2, "COMMIT")
for a in (w, w2):
    a.execute("BEGIN")
step("concurrent writers", w, "DELETE FROM s1.cf WHERE i < 10")
step("concurrent writers", w2, "DELETE FROM s1.cf WHERE i < 20")
step("concurrent writers", w, "COMMIT")
step("concurrent writers", w2, "COMMIT", refused=True)


def inserts(conn, n):
    for j in range(5):
        conn.execute(f"INSERT INTO lake.s1.cf (i) VALUES ({n * 100 + j})")


threads = [threading.Thread(target=inserts, args=(c.cursor(), n)) for n, c in ((1, w), (2, w2))]
for t in threads:
    t.start()
for t in threads:
    t.join()
step("concurrent writers", w, "SELECT count(*) FROM s1.cf")

# Maintenance is the owner's (and the server's): it deletes catalog rows.
for sql in ["SELECT * FROM ducklake_flush_inlined_data('lake')",
            "SELECT * FROM ducklake_merge_adjacent_files('lake')",
            "SELECT * FROM ducklake_rewrite_data_files('lake', delete_threshold => 0)",
            "SELECT count(*) FROM ducklake_expire_snapshots('lake', older_than => now())",
            "SELECT count(*) FROM ducklake_cleanup_old_files('lake', cleanup_all => true)",
            "CHECKPOINT lake"]:
    step("maintenance by the owner", o, sql)
# Writing again after the owner's maintenance, with a fresh connection.
w = connect(writer)
step("writes after maintenance", w, "INSERT INTO s1.t2 SELECT i, 'post', 0 FROM range(3) r(i)")
step("writes after maintenance", w, "INSERT INTO s1.t2 SELECT i, 'post', 0 FROM range(3000) r(i)")
step("writes after maintenance", w, "DELETE FROM s1.t2 WHERE id < 10")
step("writes after maintenance", w, "SELECT count(*) FROM s1.t2")
print(json.dumps(results))
