"""Leaves the catalog garbage DuckLake 1.5.5 leaves, with a real client, and reads it back.

usage: garbage.py USER PASSWORD PORT LAKE MODE [SNAPSHOT]
  MODE make: tables d0, d1, d2 with Parquet and inlined rows; d0 dropped; d1 altered, written,
             flushed and dropped; d2 flushed. Prints the snapshot before the drops.
  MODE read: d0 at SNAPSHOT (time travel to before its drop), and a fresh commit into d2.
env: DLC_EXTENSIONS (extension directory)
"""
import json
import os
import sys

import duckdb

user, password, port, lake, mode = sys.argv[1:6]
con = duckdb.connect(config={
    "extension_directory": os.environ["DLC_EXTENSIONS"],
    "autoinstall_known_extensions": "false",
})
con.execute("LOAD ducklake; LOAD postgres;")
con.execute(f"ATTACH 'ducklake:postgres:host=127.0.0.1 port={port} user={user} "
            f"password={password} dbname={lake}' AS lake")
if mode == "make":
    for i in range(3):
        con.execute(f"CREATE TABLE lake.d{i} (a INT, b VARCHAR)")
        con.execute(f"INSERT INTO lake.d{i} SELECT x, 'v' FROM range(100) r(x)")
        con.execute(f"INSERT INTO lake.d{i} VALUES (1, 'a'), (2, 'b')")
    before = con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()[0]
    con.execute("DROP TABLE lake.d0")
    con.execute("ALTER TABLE lake.d1 ADD COLUMN c INT")
    con.execute("INSERT INTO lake.d1 VALUES (5, 'x', 1)")
    con.execute("SELECT * FROM ducklake_flush_inlined_data('lake')").fetchall()
    con.execute("DROP TABLE lake.d1")
    print(json.dumps({"before_drops": before}))
else:
    snapshot = int(sys.argv[6])
    old = con.execute(f"SELECT count(*) FROM lake.d0 AT (VERSION => {snapshot})").fetchone()[0]
    con.execute("INSERT INTO lake.d2 VALUES (7, 'new')")
    now = con.execute("SELECT count(*) FROM lake.d2").fetchone()[0]
    print(json.dumps({"d0_before_drop": old, "d2": now}))
