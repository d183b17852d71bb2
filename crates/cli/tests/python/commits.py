"""Makes an exact number of DuckLake commits, for the metrics test.

usage: commits.py USER PASSWORD PORT LAKE create|insert N
env: DLC_EXTENSIONS (extension directory)
create: CREATE TABLE lake.m (one commit); insert N: N single-row INSERTs (N commits).
Prints one JSON object: {"commits": <commits made>}.
"""
import json
import os
import sys

import duckdb

user, password, port, lake, mode, n = sys.argv[1:7]
con = duckdb.connect(config={
    "extension_directory": os.environ["DLC_EXTENSIONS"],
    "autoinstall_known_extensions": "false",
})
con.execute("LOAD ducklake; LOAD postgres;")
con.execute(f"ATTACH 'ducklake:postgres:host=127.0.0.1 port={port} user={user} "
            f"password={password} dbname={lake}' AS lake")
if mode == "create":
    con.execute("CREATE TABLE lake.m (v INTEGER)")
    print(json.dumps({"commits": 1}))
else:
    for i in range(int(n)):
        con.execute("INSERT INTO lake.m VALUES (?)", [i])
    print(json.dumps({"commits": int(n)}))
