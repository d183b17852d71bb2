"""DuckDB client side of `cargo xtask bench catalog` (run with the test venv's python).

Modes (the catalog's libpq connection string in CATALOG, the lake's data path in DATA_PATH,
the extension folder in EXTENSIONS):

  setup TABLES COLUMNS ROWS   create TABLES tables of COLUMNS columns through DuckLake itself, each
                              with one real Parquet file of ROWS rows (ids 0..ROWS-1)
  query TABLE LO HI           for each line `run` on stdin: a fresh DuckDB instance ATTACHes and
                              runs a query whose filter on `id` lets the file stats prune every
                              file but the real one; prints one JSON line per run
  write TABLE COMMITS         COMMITS small commits into TABLE, alternating 3 rows (inlined into
                              the catalog) and 50 rows (a Parquet file); prints per-commit latency
  pollute TABLES COLUMNS      create TABLES tables of COLUMNS columns, write to each, drop them all:
                              the garbage DuckLake leaves (`cargo xtask bench maintenance`)
  orphans                     DuckDB's own orphan scan, timed:
                              ducklake_delete_orphaned_files(dry_run => true, cleanup_all => true)
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
    con.execute("LOAD ducklake; LOAD postgres; LOAD parquet;")
    return con


def attach(con):
    con.execute(
        f"ATTACH 'ducklake:postgres:{os.environ['CATALOG']}' AS lake "
        f"(DATA_PATH '{os.environ['DATA_PATH']}')"
    )


def column_type(i):
    return ["BIGINT", "DOUBLE", "VARCHAR", "INTEGER", "DATE"][i % 5]


def column_value(i):
    return [
        "i * 7",
        "i * 0.5",
        "'v' || (i % 97)::VARCHAR",
        "(i % 1000)::INTEGER",
        "DATE '2026-01-01' + (i % 365)::INTEGER",
    ][i % 5]


def setup(tables, columns, rows):
    con = fresh()
    attach(con)
    for t in range(tables):
        cols = ", ".join(f"c{i} {column_type(i)}" for i in range(1, columns))
        con.execute(f"CREATE TABLE IF NOT EXISTS lake.t{t} (id BIGINT, {cols})")
        values = ", ".join(column_value(i) for i in range(1, columns))
        con.execute(f"INSERT INTO lake.t{t} SELECT i AS id, {values} FROM range({rows}) r(i)")
    print(json.dumps({"tables": tables}))


def query(table, lo, hi):
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        con = fresh()
        began = time.perf_counter()
        attach(con)
        count, total = con.execute(
            f"SELECT count(*), sum(id) FROM lake.{table} WHERE id BETWEEN {lo} AND {hi}"
        ).fetchone()
        ms = (time.perf_counter() - began) * 1000
        con.close()
        print(json.dumps({"ms": ms, "count": count, "sum": int(total or 0)}), flush=True)


def write(table, commits):
    con = fresh()
    attach(con)
    con.execute(f"CREATE TABLE IF NOT EXISTS lake.{table} (id BIGINT, name VARCHAR, x DOUBLE)")
    latencies = []
    began = time.perf_counter()
    for k in range(commits):
        rows = 3 if k % 2 == 0 else 50
        t0 = time.perf_counter()
        con.execute(
            f"INSERT INTO lake.{table} SELECT {k} * 1000 + i, 'n' || i::VARCHAR, i * 0.1 "
            f"FROM range({rows}) r(i)"
        )
        latencies.append((time.perf_counter() - t0) * 1000)
    wall = time.perf_counter() - began
    print(json.dumps({"latencies_ms": latencies, "wall_s": wall}))


def pollute(tables, columns):
    con = fresh()
    attach(con)
    for t in range(tables):
        cols = ", ".join(f"c{i} {column_type(i)}" for i in range(1, columns))
        values = ", ".join(column_value(i) for i in range(1, columns))
        con.execute(f"CREATE TABLE lake.dropped{t} (id BIGINT, {cols})")
        con.execute(f"INSERT INTO lake.dropped{t} SELECT i, {values} FROM range(20) r(i)")
        con.execute(f"DROP TABLE lake.dropped{t}")
    print(json.dumps({"dropped": tables}))


def orphans():
    con = fresh()
    attach(con)
    began = time.perf_counter()
    count = con.execute(
        "SELECT count(*) FROM ducklake_delete_orphaned_files('lake', dry_run => true, cleanup_all => true)"
    ).fetchone()[0]
    print(json.dumps({"ms": (time.perf_counter() - began) * 1000, "count": count}))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "setup":
        setup(int(args[0]), int(args[1]), int(args[2]))
    elif mode == "query":
        query(args[0], int(args[1]), int(args[2]))
    elif mode == "write":
        write(args[0], int(args[1]))
    elif mode == "pollute":
        pollute(int(args[0]), int(args[1]))
    elif mode == "orphans":
        orphans()
    else:
        sys.exit(f"unknown mode {mode}")
