"""Keeps committing small inserts to one table for a while, as a pipeline would.

usage: writer.py USER PASSWORD PORT LAKE SECONDS
env: DLC_EXTENSIONS (extension directory)
Each commit alternates 3 rows (inlined into the catalog) and 50 rows (a small Parquet file).
Prints one JSON object: commits, rows written, the table's final count, and any errors the
client saw (DuckLake retries conflicting commits itself; whatever still fails is listed).
"""
import json
import os
import sys
import time

import duckdb

user, password, port, lake, seconds = sys.argv[1:6]
con = duckdb.connect(config={
    "extension_directory": os.environ["DLC_EXTENSIONS"],
    "autoinstall_known_extensions": "false",
})
con.execute("LOAD ducklake; LOAD postgres;")
con.execute(f"ATTACH 'ducklake:postgres:host=127.0.0.1 port={port} user={user} "
            f"password={password} dbname={lake}' AS lake")
con.execute("CREATE TABLE IF NOT EXISTS lake.stream (id BIGINT, v VARCHAR)")
commits, rows, errors = 0, 0, []
deadline = time.monotonic() + float(seconds)
while time.monotonic() < deadline:
    n = 3 if commits % 2 == 0 else 50
    try:
        con.execute(f"INSERT INTO lake.stream SELECT {commits} * 1000 + i, 'x' FROM range({n}) r(i)")
        commits += 1
        rows += n
    except Exception as e:  # what the client would surface
        errors.append(str(e).splitlines()[0][:300])
        if len(errors) > 20:
            break
    time.sleep(0.05)
count = con.execute("SELECT count(*) FROM lake.stream").fetchone()[0]
print(json.dumps({"commits": commits, "rows": rows, "count": count, "errors": errors}))
