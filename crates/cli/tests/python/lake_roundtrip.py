"""A DuckDB client against a lake served by ducklake-catalog, with its data on (moto) S3.

usage: lake_roundtrip.py write|read
env: DLC_ATTACH (ATTACH target without password), PGPASSWORD, DLC_EXTENSIONS,
     DLC_S3_ENDPOINT (host:port of the S3 endpoint).
Prints one JSON line with what it saw.
"""
import json
import os
import sys

import duckdb

con = duckdb.connect(config={
    "extension_directory": os.environ["DLC_EXTENSIONS"],
    "autoinstall_known_extensions": "false",
})
con.execute("LOAD ducklake; LOAD postgres; LOAD httpfs;")
con.execute(f"""
    CREATE SECRET (TYPE s3, KEY_ID 'testing', SECRET 'testing', REGION 'us-east-1',
                   ENDPOINT '{os.environ["DLC_S3_ENDPOINT"]}', URL_STYLE 'path', USE_SSL false)
""")
con.execute(f"ATTACH '{os.environ['DLC_ATTACH']}' AS lake")

if sys.argv[1] == "write":
    con.execute("CREATE TABLE lake.events (id BIGINT, name VARCHAR)")
    # Large enough to be written as Parquet, not inlined into the catalog.
    con.execute("INSERT INTO lake.events SELECT i, 'event-' || i FROM range(20000) t(i)")
    # A small insert, inlined into the catalog.
    con.execute("INSERT INTO lake.events VALUES (-1, 'inlined-a'), (-2, 'inlined-b')")

count, total = con.execute("SELECT count(*), sum(id) FROM lake.events").fetchone()
files = con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'events')").fetchone()[0]
print(json.dumps({"count": count, "sum": int(total), "files": files}))
