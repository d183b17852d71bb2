"""DuckDB client side of `cargo xtask bench clients` (run with the test venv's python).

The catalog's libpq connection string is in CATALOG (the password in PGPASSWORD), the extension
folder in EXTENSIONS, the settings to apply before ATTACH in SETTINGS (`;`-separated SQL).

  hold           ATTACH and read lake.bench; print one JSON line; then for each `read` on stdin
                 read again and print; exit at end of input
  write TABLES N print `ready`, wait for a line on stdin, then make N single-row commits, the
                 k-th into bench_<k mod TABLES>; print one JSON line with each commit's latency
                 and the failed commits' messages
  attach N       N times: a fresh DuckDB instance, LOAD, ATTACH; print the ATTACH times
"""

import json
import os
import sys
import time

import duckdb


def fresh():
    con = duckdb.connect(config={
        "extension_directory": os.environ["EXTENSIONS"],
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "true",
    })
    con.execute("LOAD ducklake; LOAD postgres;")
    return con


def attach(con):
    for sql in filter(None, (s.strip() for s in os.environ.get("SETTINGS", "").split(";"))):
        con.execute(sql)
    con.execute(f"ATTACH 'ducklake:postgres:{os.environ['CATALOG']}' AS lake")


def read(con):
    try:
        # fetchall: the result is consumed, so DuckDB's transaction (and the catalog's, which
        # would pin a pooled PostgreSQL connection while the client idles) ends.
        ((n, s),) = con.execute("SELECT count(*), sum(v) FROM lake.bench").fetchall()
        return {"rows": n, "sum": int(s or 0)}
    except Exception as e:  # reported, counted by the driver
        return {"error": " ".join(str(e).split())[:400]}


def hold():
    try:
        con = fresh()
        attach(con)
    except Exception as e:
        print(json.dumps({"error": " ".join(str(e).split())[:400]}), flush=True)
        return
    print(json.dumps(read(con)), flush=True)
    for line in sys.stdin:
        if line.strip() == "read":
            print(json.dumps(read(con)), flush=True)


def write(tables, commits):
    con = fresh()
    try:
        attach(con)
    except Exception as e:
        print(json.dumps({"error": " ".join(str(e).split())[:400]}), flush=True)
        return
    print("ready", flush=True)
    sys.stdin.readline()
    me = os.getpid()
    latencies, failed = [], []
    for k in range(commits):
        t0 = time.perf_counter()
        try:
            con.execute(f"INSERT INTO lake.bench_{k % tables} VALUES (?, ?)", [me, k])
            latencies.append(time.perf_counter() - t0)
        except Exception as e:
            failed.append(" ".join(str(e).split())[:400])
    print(json.dumps({"latencies": latencies, "failed": failed}), flush=True)


def attach_times(n):
    times = []
    for _ in range(n):
        con = fresh()
        t0 = time.perf_counter()
        attach(con)
        con.execute("SELECT count(*) FROM lake.bench").fetchall()
        times.append(time.perf_counter() - t0)
        con.close()
    print(json.dumps({"attach": times}), flush=True)


mode = sys.argv[1]
if mode == "hold":
    hold()
elif mode == "write":
    write(int(sys.argv[2]), int(sys.argv[3]))
elif mode == "attach":
    attach_times(int(sys.argv[2]))
else:
    sys.exit(f"unknown mode {mode}")
