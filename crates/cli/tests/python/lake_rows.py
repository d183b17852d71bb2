"""Writes to or reads one lake as one user, with whichever DuckDB runs this script.

usage: lake_rows.py USER PASSWORD PORT LAKE MODE [DATA_PATH]
  MODE: write (CREATE TABLE events if missing, 1,000 rows as Parquet and 3 inlined), read
env: DLC_EXTENSIONS (extension directory)
Prints one JSON object: the DuckDB version and the row count of events.
"""
import json
import os
import sys

import duckdb

user, password, port, lake, mode = sys.argv[1:6]
data_path = sys.argv[6] if len(sys.argv) > 6 else None
con = duckdb.connect(config={
    "extension_directory": os.environ["DLC_EXTENSIONS"],
    "autoinstall_known_extensions": "false",
})
con.execute("LOAD ducklake; LOAD postgres;")
options = f" (DATA_PATH '{data_path}')" if data_path else ""
con.execute(f"ATTACH 'ducklake:postgres:host=127.0.0.1 port={port} user={user} "
            f"password={password} dbname={lake}' AS lake{options}")


def commit(sql):
    """Runs `sql`, again when PostgreSQL broke a deadlock between the client's own pooled
    connections (seen with DuckDB 1.5.1): a DuckLake commit is atomic, so a retry is safe."""
    for attempt in range(3):
        try:
            return con.execute(sql)
        except duckdb.TransactionException as e:
            if "deadlock detected" not in str(e) or attempt == 2:
                raise


if mode == "write":
    commit("CREATE TABLE IF NOT EXISTS lake.events (id BIGINT, name VARCHAR)")
    commit("INSERT INTO lake.events SELECT i, 'e' || i::VARCHAR FROM range(1000) r(i)")
    commit("INSERT INTO lake.events VALUES (-1, 'a'), (-2, 'b'), (-3, 'c')")
rows = con.execute("SELECT count(*) FROM lake.events").fetchone()[0]
print(json.dumps({"duckdb": duckdb.__version__, "rows": rows}))
