"""Creates a table and inlines a few rows into the catalog, as one user, for the security suite.

usage: security_rows.py USER PASSWORD PORT LAKE TABLE [ROWS]
  CREATE TABLE IF NOT EXISTS lake.TABLE (id BIGINT, name VARCHAR), then INSERT ROWS rows (default
  3: few enough that DuckLake inlines them into a `ducklake_inlined_data_<table>_<version>`
  table the user's role owns).
env: DLC_EXTENSIONS (extension directory)
Prints one JSON object: {"rows": count of TABLE} or {"error": the first line of the error}.
Exits 0 either way, so the caller decides what a refusal means.
"""
import json
import os
import sys

import duckdb

user, password, port, lake, table = sys.argv[1:6]
rows = int(sys.argv[6]) if len(sys.argv) > 6 else 3
try:
    con = duckdb.connect(config={
        "extension_directory": os.environ["DLC_EXTENSIONS"],
        "autoinstall_known_extensions": "false",
    })
    con.execute("LOAD ducklake; LOAD postgres;")
    con.execute(f"ATTACH 'ducklake:postgres:host=127.0.0.1 port={port} user={user} "
                f"password={password} dbname={lake}' AS lake")
    con.execute(f"CREATE TABLE IF NOT EXISTS lake.{table} (id BIGINT, name VARCHAR)")
    values = ", ".join(f"({i}, 'r{i}')" for i in range(rows))
    con.execute(f"INSERT INTO lake.{table} VALUES {values}")
    count = con.execute(f"SELECT count(*) FROM lake.{table}").fetchone()[0]
    print(json.dumps({"rows": count}))
except Exception as e:  # the caller reports it
    print(json.dumps({"error": (str(e).splitlines() or ["?"])[0][:400]}))
