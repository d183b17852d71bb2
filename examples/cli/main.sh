#!/bin/sh
# A DuckLake client with the DuckDB CLI: ATTACH a lake served by ducklake-catalog, write Parquet
# and inlined rows, update, time travel, list snapshots. `ducklake-catalog connect --lang cli`
# prints this script with your server's settings as the defaults below.
#
# Run: pip install duckdb-cli==1.5.5 && PGPASSWORD=… sh main.sh   (DUCKDB=/path/to/duckdb to pick a binary)
set -eu
: "${CATALOG_HOST:=127.0.0.1}"
: "${CATALOG_PORT:=6432}"
: "${CATALOG_USER:=admin}"
: "${CATALOG_LAKE:=lakehouse}"
: "${CATALOG_SSLMODE:=require}"
: "${CATALOG_STORAGE:=s3}"         # s3 | local: where the lake's data path is
: "${CATALOG_S3_ENDPOINT:=}"       # host:port of an S3-compatible store; empty for AWS
: "${CATALOG_S3_REGION:=us-east-1}"
: "${CATALOG_S3_USE_SSL:=true}"
: "${CATALOG_POOL_MAX:=16}"       # catalog connections per attached lake
TABLE=lake.example_cli

# The catalog password comes from PGPASSWORD: libpq, inside DuckDB's postgres extension, reads it.
STORAGE_SQL=""
if [ "$CATALOG_STORAGE" = s3 ]; then
  SECRET="CREATE SECRET (TYPE s3, PROVIDER credential_chain"
  if [ -n "$CATALOG_S3_ENDPOINT" ]; then
    SECRET="$SECRET, REGION '$CATALOG_S3_REGION', ENDPOINT '$CATALOG_S3_ENDPOINT', URL_STYLE 'path', USE_SSL $CATALOG_S3_USE_SSL"
  fi
  STORAGE_SQL="INSTALL httpfs; LOAD httpfs; $SECRET);"
fi

"${DUCKDB:-duckdb}" -bail -noheader -list <<SQL
.output /dev/null
INSTALL ducklake; LOAD ducklake; INSTALL postgres; LOAD postgres;
$STORAGE_SQL
-- Behind the connection pooler: commits retry on conflicts, each attached lake keeps a bounded
-- pool that waits instead of growing, and no health-check query runs before each use
-- (docs/connections.md has the figures).
SET ducklake_max_retry_count = 100;
SET pg_pool_acquire_mode = 'wait';
SET pg_pool_max_connections = $CATALOG_POOL_MAX;
SET pg_pool_health_check_query = '';
ATTACH 'ducklake:postgres:host=$CATALOG_HOST port=$CATALOG_PORT user=$CATALOG_USER dbname=$CATALOG_LAKE sslmode=$CATALOG_SSLMODE' AS lake;
DROP TABLE IF EXISTS $TABLE;
CREATE TABLE $TABLE (id BIGINT, name VARCHAR, amount BIGINT);
-- 1,000 rows: more than DuckLake inlines, so they are written as Parquet to the data path.
INSERT INTO $TABLE SELECT i, 'item ' || i, i FROM range(1000) t(i);
-- A few rows: small inserts are inlined into the catalog until a flush.
INSERT INTO $TABLE VALUES (1000, 'a', 1), (1001, 'b', 1), (1002, 'c', 1);
SET VARIABLE before_update = (SELECT max(snapshot_id) FROM ducklake_snapshots('lake'));
UPDATE $TABLE SET amount = amount + 100 WHERE id < 10;
.output
SELECT to_json({
    'rows': (SELECT count(*) FROM $TABLE),
    'data_files': (SELECT count(*) FROM ducklake_list_files('lake', 'example_cli')),
    'sum_before_update': (SELECT sum(amount) FROM $TABLE AT (VERSION => getvariable('before_update'))),
    'sum_now': (SELECT sum(amount) FROM $TABLE),
    'snapshots': (SELECT count(*) FROM ducklake_snapshots('lake')),
    'latest_snapshots': (SELECT list({'id': snapshot_id, 'changes': changes} ORDER BY snapshot_id DESC)[1:3] FROM ducklake_snapshots('lake'))
});
SQL
