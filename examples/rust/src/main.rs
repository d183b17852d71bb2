//! A DuckLake client in Rust: ATTACH a lake served by ducklake-catalog, write Parquet and
//! inlined rows, update, time travel, list snapshots. `ducklake-catalog connect --lang rust`
//! prints this program with your server's settings as the defaults below.
//!
//! Run: PGPASSWORD=… DUCKDB_LIB_DIR=<folder with libduckdb.so 1.5.5> cargo run --release

fn env(name: &str, fallback: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| fallback.to_owned())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
}

fn run() -> duckdb::Result<()> {
    let host = env("CATALOG_HOST", "127.0.0.1");
    let port = env("CATALOG_PORT", "6432");
    let user = env("CATALOG_USER", "admin");
    let lake = env("CATALOG_LAKE", "lakehouse");
    let sslmode = env("CATALOG_SSLMODE", "require");
    let storage = env("CATALOG_STORAGE", "s3"); // s3 | local: where the lake's data path is
    let s3_endpoint = env("CATALOG_S3_ENDPOINT", ""); // host:port of an S3-compatible store; empty for AWS
    let s3_region = env("CATALOG_S3_REGION", "us-east-1");
    let s3_use_ssl = env("CATALOG_S3_USE_SSL", "true");
    let pool_max = env("CATALOG_POOL_MAX", "16"); // catalog connections per attached lake
    let table = "lake.example_rust";

    // The catalog password comes from PGPASSWORD: libpq, inside DuckDB's postgres extension, reads it.
    let mut setup: Vec<String> = [
        "INSTALL ducklake",
        "LOAD ducklake",
        "INSTALL postgres",
        "LOAD postgres",
    ]
    .map(String::from)
    .to_vec();
    if storage == "s3" {
        let mut secret = "CREATE SECRET (TYPE s3, PROVIDER credential_chain".to_owned();
        if !s3_endpoint.is_empty() {
            secret += &format!(
                ", REGION '{s3_region}', ENDPOINT '{s3_endpoint}', URL_STYLE 'path', USE_SSL {s3_use_ssl}"
            );
        }
        setup.extend(["INSTALL httpfs".into(), "LOAD httpfs".into(), secret + ")"]);
    }
    // Behind the connection pooler: commits retry on conflicts, each attached lake keeps a
    // bounded pool that waits instead of growing, and no health-check query runs before each use
    // (docs/connections.md has the figures).
    setup.extend([
        "SET ducklake_max_retry_count = 100".into(),
        "SET pg_pool_acquire_mode = 'wait'".into(),
        format!("SET pg_pool_max_connections = {pool_max}"),
        "SET pg_pool_health_check_query = ''".into(),
    ]);
    setup.push(format!(
        "ATTACH 'ducklake:postgres:host={host} port={port} user={user} dbname={lake} sslmode={sslmode}' AS lake"
    ));

    let work = [
        format!("DROP TABLE IF EXISTS {table}"),
        format!("CREATE TABLE {table} (id BIGINT, name VARCHAR, amount BIGINT)"),
        // 1,000 rows: more than DuckLake inlines, so they are written as Parquet to the data path.
        format!("INSERT INTO {table} SELECT i, 'item ' || i, i FROM range(1000) t(i)"),
        // A few rows: small inserts are inlined into the catalog until a flush.
        format!("INSERT INTO {table} VALUES (1000, 'a', 1), (1001, 'b', 1), (1002, 'c', 1)"),
        "SET VARIABLE before_update = (SELECT max(snapshot_id) FROM ducklake_snapshots('lake'))"
            .into(),
        format!("UPDATE {table} SET amount = amount + 100 WHERE id < 10"),
    ];
    let summary = format!(
        "SELECT to_json({{
    'rows': (SELECT count(*) FROM {table}),
    'data_files': (SELECT count(*) FROM ducklake_list_files('lake', 'example_rust')),
    'sum_before_update': (SELECT sum(amount) FROM {table} AT (VERSION => getvariable('before_update'))),
    'sum_now': (SELECT sum(amount) FROM {table}),
    'snapshots': (SELECT count(*) FROM ducklake_snapshots('lake')),
    'latest_snapshots': (SELECT list({{'id': snapshot_id, 'changes': changes}} ORDER BY snapshot_id DESC)[1:3] FROM ducklake_snapshots('lake'))
}})::VARCHAR"
    );

    let con = duckdb::Connection::open_in_memory()?;
    for sql in setup.iter().chain(&work) {
        con.execute_batch(sql)?;
    }
    let result: String = con.query_row(&summary, [], |row| row.get(0))?;
    println!("{result}");
    Ok(())
}
