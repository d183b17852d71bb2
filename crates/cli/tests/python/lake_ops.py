"""Runs each kind of DuckLake operation as one user and reports what happened to each.

usage: lake_ops.py USER PASSWORD PORT LAKE MODE TABLE
  MODE: read (ATTACH … READ_ONLY, reads only), write (every operation a writer does),
        write-attempts (every write, attached read-write, each expected to be refused)
env: DLC_EXTENSIONS (extension directory)
Prints one JSON object: operation -> "ok" or the error's most telling line.
"""
import json
import os
import sys

import duckdb

user, password, port, lake, mode, table = sys.argv[1:7]
con = duckdb.connect(config={
    "extension_directory": os.environ["DLC_EXTENSIONS"],
    "autoinstall_known_extensions": "false",
})
con.execute("LOAD ducklake; LOAD postgres;")
results = {}


def op(name, sql):
    try:
        con.execute(sql).fetchall()
        results[name] = "ok"
    except Exception as e:  # the error text is the result
        text = str(e)
        at = text.find("permission denied")
        if at >= 0:  # PostgreSQL's refusal, wherever DuckDB wrapped it
            results[name] = text[at:].splitlines()[0][:200]
        else:
            results[name] = (text.splitlines() or ["?"])[0][:300]


read_only = " (READ_ONLY)" if mode == "read" else ""
op("attach", f"ATTACH 'ducklake:postgres:host=127.0.0.1 port={port} user={user} "
             f"password={password} dbname={lake}' AS lake{read_only}")
if results["attach"] != "ok":
    print(json.dumps(results))
    sys.exit(0)
t = f"lake.{table}"
if mode == "read":
    op("select", f"SELECT count(*) FROM {t}")
    op("select_inlined", "SELECT count(*) FROM lake.small")
    # The oldest snapshot that holds the table.
    snapshots = [r[0] for r in con.execute(
        "SELECT snapshot_id FROM ducklake_snapshots('lake') ORDER BY 1").fetchall()]
    for version in snapshots:
        op("time_travel", f"SELECT count(*) FROM {t} AT (VERSION => {version})")
        if results["time_travel"] == "ok":
            break
    op("snapshots", "SELECT count(*) FROM ducklake_snapshots('lake')")
    op("table_info", "SELECT count(*) FROM ducklake_table_info('lake')")
elif mode == "write":
    op("create_table", f"CREATE TABLE {t} (id INTEGER, v VARCHAR)")
    op("insert_inlined", f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b')")
    op("insert_parquet", f"INSERT INTO {t} SELECT i + 10, 'p' FROM range(5000) r(i)")
    op("update", f"UPDATE {t} SET v = 'u' WHERE id = 1")
    op("delete", f"DELETE FROM {t} WHERE id = 2")
    op("alter_table", f"ALTER TABLE {t} ADD COLUMN w INTEGER")
    op("insert_after_alter", f"INSERT INTO {t} VALUES (3, 'c', 3)")
    op("select", f"SELECT count(*) FROM {t}")
    op("write_admin_table", "INSERT INTO lake.small VALUES (100)")
    op("time_travel", "SELECT count(*) FROM lake.shared AT (VERSION => 1)")
    op("flush_inlined_data", "SELECT count(*) FROM ducklake_flush_inlined_data('lake')")
    op("merge_adjacent_files", "SELECT count(*) FROM ducklake_merge_adjacent_files('lake')")
    op("expire_snapshots",
       "SELECT count(*) FROM ducklake_expire_snapshots('lake', older_than => now())")
    op("cleanup_old_files",
       "SELECT count(*) FROM ducklake_cleanup_old_files('lake', cleanup_all => true)")
    op("checkpoint", "CHECKPOINT lake")
    op("create_schema", "CREATE SCHEMA lake.scratch")
    op("drop_table", f"DROP TABLE {t}")
    op("recreate_table", f"CREATE TABLE {t} AS SELECT 1 AS id")
elif mode == "write-attempts":
    op("create_table", "CREATE TABLE lake.intruder (id INTEGER)")
    op("insert_inlined", f"INSERT INTO {t} VALUES (7)")
    op("insert_parquet", f"INSERT INTO {t} SELECT i FROM range(5000) r(i)")
    op("update", f"UPDATE {t} SET x = 0")
    op("delete", f"DELETE FROM {t}")
    op("alter_table", f"ALTER TABLE {t} ADD COLUMN w INTEGER")
    op("drop_table", f"DROP TABLE {t}")
    op("flush_inlined_data", "SELECT count(*) FROM ducklake_flush_inlined_data('lake')")
    op("expire_snapshots",
       "SELECT count(*) FROM ducklake_expire_snapshots('lake', older_than => now())")
print(json.dumps(results))
