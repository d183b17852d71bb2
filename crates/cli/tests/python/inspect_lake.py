"""Builds a small history in a lake, then prints what DuckDB's own table functions say about it.

usage: inspect_lake.py PORT PASSWORD
env: DLC_EXTENSIONS
Prints one JSON object: snapshots (id, schema_version, number of changes, author, message),
tables (name, data files, bytes, delete files) and the files of `events` (path, bytes, delete file).
"""
import json
import os
import sys

import duckdb

port, password = sys.argv[1:3]
con = duckdb.connect(config={
    "extension_directory": os.environ["DLC_EXTENSIONS"],
    "autoinstall_known_extensions": "false",
})
con.execute("LOAD ducklake; LOAD postgres;")
con.execute(f"ATTACH 'ducklake:postgres:host=127.0.0.1 port={port} user=admin "
            f"password={password} dbname=lakehouse' AS lake")
con.execute("CREATE TABLE lake.events (id INTEGER, kind VARCHAR)")
con.execute("INSERT INTO lake.events SELECT i, 'bulk' FROM range(4000) r(i)")
con.execute("INSERT INTO lake.events SELECT i, 'more' FROM range(4000, 7000) r(i)")
con.execute("DELETE FROM lake.events WHERE id % 10 = 0")
con.execute("BEGIN")
con.execute("INSERT INTO lake.events VALUES (-1, 'tiny'), (-2, 'tiny'), (-3, 'tiny')")
con.execute("CALL lake.set_commit_message('ingest-bot', 'three small rows')")
con.execute("COMMIT")
con.execute("CREATE SCHEMA lake.ops")
con.execute("CREATE TABLE lake.ops.runs AS SELECT 1 AS run")

snapshots = [
    {"id": r[0], "schema_version": r[1], "changes": r[2], "author": r[3], "message": r[4]}
    for r in con.execute("""
        SELECT snapshot_id, schema_version,
               (SELECT coalesce(sum(len(v)), 0) FROM (SELECT unnest(map_values(changes)) AS v)),
               author, commit_message
        FROM ducklake_snapshots('lake') ORDER BY snapshot_id""").fetchall()
]
tables = [
    {"name": r[0], "files": r[1], "bytes": r[2], "deletes": r[3]}
    for r in con.execute("""
        SELECT table_name, file_count, file_size_bytes, delete_file_count
        FROM ducklake_table_info('lake') ORDER BY table_name""").fetchall()
]
files = [
    {"path": r[0], "bytes": r[1], "delete": r[2]}
    for r in con.execute("""
        SELECT data_file, data_file_size_bytes, delete_file
        FROM ducklake_list_files('lake', 'events') ORDER BY data_file""").fetchall()
]
print(json.dumps({"snapshots": snapshots, "tables": tables, "files": files}))
