"""A DuckLake client in Python: ATTACH a lake served by ducklake-catalog, write Parquet and
inlined rows, update, time travel, list snapshots. `ducklake-catalog connect --lang python`
prints this program with your server's settings as the defaults below.

Run: pip install duckdb==1.5.5 && PGPASSWORD=… python main.py
"""
import os

import duckdb


def env(name, default):
    return os.environ.get(name) or default


HOST = env("CATALOG_HOST", "127.0.0.1")
PORT = env("CATALOG_PORT", "6432")
USER = env("CATALOG_USER", "admin")
LAKE = env("CATALOG_LAKE", "lakehouse")
SSLMODE = env("CATALOG_SSLMODE", "require")
STORAGE = env("CATALOG_STORAGE", "s3")  # s3 | local: where the lake's data path is
S3_ENDPOINT = env("CATALOG_S3_ENDPOINT", "")  # host:port of an S3-compatible store; empty for AWS
S3_REGION = env("CATALOG_S3_REGION", "us-east-1")
S3_USE_SSL = env("CATALOG_S3_USE_SSL", "true")
POOL_MAX = env("CATALOG_POOL_MAX", "16")  # catalog connections per attached lake
TABLE = "lake.example_python"

# The catalog password comes from PGPASSWORD: libpq, inside DuckDB's postgres extension, reads it.
setup = ["INSTALL ducklake", "LOAD ducklake", "INSTALL postgres", "LOAD postgres"]
if STORAGE == "s3":
    secret = "CREATE SECRET (TYPE s3, PROVIDER credential_chain"
    if S3_ENDPOINT:
        secret += f", REGION '{S3_REGION}', ENDPOINT '{S3_ENDPOINT}', URL_STYLE 'path', USE_SSL {S3_USE_SSL}"
    setup += ["INSTALL httpfs", "LOAD httpfs", secret + ")"]
# Behind the connection pooler: commits retry on conflicts, each attached lake keeps a bounded
# pool that waits instead of growing, and no health-check query runs before each use
# (docs/connections.md has the figures).
setup += [
    "SET ducklake_max_retry_count = 100",
    "SET pg_pool_acquire_mode = 'wait'",
    f"SET pg_pool_max_connections = {POOL_MAX}",
    "SET pg_pool_health_check_query = ''",
]
setup.append(
    f"ATTACH 'ducklake:postgres:host={HOST} port={PORT} user={USER} dbname={LAKE} sslmode={SSLMODE}' AS lake"
)

work = [
    f"DROP TABLE IF EXISTS {TABLE}",
    f"CREATE TABLE {TABLE} (id BIGINT, name VARCHAR, amount BIGINT)",
    # 1,000 rows: more than DuckLake inlines, so they are written as Parquet to the data path.
    f"INSERT INTO {TABLE} SELECT i, 'item ' || i, i FROM range(1000) t(i)",
    # A few rows: small inserts are inlined into the catalog until a flush.
    f"INSERT INTO {TABLE} VALUES (1000, 'a', 1), (1001, 'b', 1), (1002, 'c', 1)",
    "SET VARIABLE before_update = (SELECT max(snapshot_id) FROM ducklake_snapshots('lake'))",
    f"UPDATE {TABLE} SET amount = amount + 100 WHERE id < 10",
]
summary = f"""SELECT to_json({{
    'rows': (SELECT count(*) FROM {TABLE}),
    'data_files': (SELECT count(*) FROM ducklake_list_files('lake', 'example_python')),
    'sum_before_update': (SELECT sum(amount) FROM {TABLE} AT (VERSION => getvariable('before_update'))),
    'sum_now': (SELECT sum(amount) FROM {TABLE}),
    'snapshots': (SELECT count(*) FROM ducklake_snapshots('lake')),
    'latest_snapshots': (SELECT list({{'id': snapshot_id, 'changes': changes}} ORDER BY snapshot_id DESC)[1:3] FROM ducklake_snapshots('lake'))
}})"""

con = duckdb.connect()
for sql in setup + work:
    con.execute(sql)
print(con.execute(summary).fetchone()[0])
