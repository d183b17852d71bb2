"""A DuckDB client that stays attached while the admin password is rotated.

usage: stay_attached.py
env: DLC_ATTACH (ATTACH target without password), PGPASSWORD, DLC_EXTENSIONS.
Attaches, commits, prints `attached`, then for every line on stdin commits one more row and
prints the row count (one JSON line), until stdin closes.
"""
import json
import os
import sys

import duckdb

con = duckdb.connect(config={
    "extension_directory": os.environ["DLC_EXTENSIONS"],
    "autoinstall_known_extensions": "false",
})
con.execute("LOAD ducklake; LOAD postgres;")
con.execute(f"ATTACH '{os.environ['DLC_ATTACH']}' AS lake")
con.execute("CREATE OR REPLACE TABLE lake.rotation (step INTEGER)")
con.execute("INSERT INTO lake.rotation VALUES (0)")
print("attached", flush=True)
for step, _ in enumerate(sys.stdin, start=1):
    con.execute("INSERT INTO lake.rotation VALUES (?)", [step])
    count = con.execute("SELECT count(*) FROM lake.rotation").fetchone()[0]
    print(json.dumps({"step": step, "rows": count}), flush=True)
