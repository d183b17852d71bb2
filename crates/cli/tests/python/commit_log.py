"""DuckDB writers for the durability tests.

usage:
  commit_log.py write <writer-id> <seconds> <log-file>
      Commits one small (inlined) insert at a time into lake.w<id> until <seconds> pass or the
      catalog goes away; after each acknowledged commit appends "<id> <seq> <unix time>" to
      <log-file> and flushes. Exits 0 either way: losing the server is the point.
  commit_log.py read
      Prints {"w<id>": [seqs...], ...} for every writer table, and the snapshot count.
  commit_log.py sql <statement>
      Runs one statement against the lake (create, drop, ...).
env: DLC_ATTACH (ATTACH target without password), DLC_ATTACH_OPTIONS (e.g. READ_ONLY),
     PGPASSWORD, DLC_EXTENSIONS, and
     DLC_S3_ENDPOINT (host:port) when the lake's data is on (moto) S3.
"""
import json
import os
import sys
import time

import duckdb


def connect():
    con = duckdb.connect(config={
        "extension_directory": os.environ["DLC_EXTENSIONS"],
        "autoinstall_known_extensions": "false",
    })
    con.execute("LOAD ducklake; LOAD postgres; LOAD httpfs;")
    endpoint = os.environ.get("DLC_S3_ENDPOINT")
    if endpoint:
        con.execute(f"""
            CREATE SECRET (TYPE s3, KEY_ID 'testing', SECRET 'testing', REGION 'us-east-1',
                           ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)
        """)
    options = os.environ.get("DLC_ATTACH_OPTIONS")
    suffix = f" ({options})" if options else ""
    con.execute(f"ATTACH '{os.environ['DLC_ATTACH']}' AS lake{suffix}")
    return con


def retry(con, sql, attempts=50):
    """Runs setup sql, retrying what concurrent writers' commits make fail (DuckLake conflicts,
    PostgreSQL serialization or unique-key races on the catalog)."""
    for i in range(attempts):
        try:
            return con.execute(sql)
        except Exception as e:
            if i == attempts - 1:
                raise
            print(f"retrying `{sql}` after: {str(e)[:200]}", file=sys.stderr)
            time.sleep(0.05)


cmd = sys.argv[1]
if cmd == "write":
    wid, seconds, log = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    con = connect()
    retry(con, f"CREATE TABLE IF NOT EXISTS lake.w{wid} (seq BIGINT, acked DOUBLE)")
    deadline = time.time() + seconds
    seq = 0
    with open(log, "a", buffering=1) as out:
        while time.time() < deadline:
            seq += 1
            try:
                con.execute(f"INSERT INTO lake.w{wid} VALUES ({seq}, {time.time()})")
            except Exception as e:  # the server went away, or a commit conflict gave up
                msg = str(e).lower()
                if "conflict" in msg:
                    seq -= 1
                    continue
                print(f"writer {wid} stopped after {seq - 1} commits: {str(e)[:200]}", file=sys.stderr)
                break
            out.write(f"{wid} {seq} {time.time()}\n")
            out.flush()
            os.fsync(out.fileno())
            time.sleep(0.02)
elif cmd == "read":
    con = connect()
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall()]
    result = {}
    for t in tables:
        if t.startswith("w"):
            result[t] = [r[0] for r in con.execute(f"SELECT seq FROM lake.{t} ORDER BY seq").fetchall()]
    snapshots = con.execute("SELECT count(*) FROM ducklake_snapshots('lake')").fetchone()[0]
    print(json.dumps({"tables": result, "snapshots": snapshots}))
elif cmd == "sql":
    con = connect()
    rows = con.execute(sys.argv[2]).fetchall()
    print(json.dumps([list(map(str, r)) for r in rows]))
