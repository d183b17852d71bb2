//! `cargo xtask bench catalog [--tables N] [--columns N] [--scales 10000,30000,100000]
//! [--runs N] [--writers N] [--commits N]`: the product's tuned catalog against the same
//! PostgreSQL 15 binaries with stock settings and only DuckLake's own schema ("vanilla"),
//! side by side in one run.
//!
//! Both lakes are built the same way: DuckLake itself (the Python DuckDB client) creates the
//! tables and writes one real Parquet file per table; the other files of each scale are clones
//! of that file's catalog rows made with `generate_series` (disjoint `id` ranges, paths that do
//! not exist), so a filter on `id` lets the stats prune every clone and the client reads only
//! the real file. Per scale and catalog, a fresh DuckDB client ATTACHes and runs that query
//! `--runs` times, alternating catalogs; server-side catalog time is the sum of
//! `pg_stat_statements.total_exec_time` of the client's statements in the lake's database
//! (reset before each run), end-to-end time is measured in the client. Then `--writers`
//! writers make small commits (inlined and Parquet) at the largest scale.
//!
//! The vanilla server has `pg_stat_statements` preloaded (the measuring instrument, nothing
//! else); both are reached over TCP on loopback with `sslmode=disable` and SCRAM passwords, so
//! TLS and authentication cost the same on both sides.

// Benchmark arithmetic on counts and milliseconds.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::support::{checked_output, free_port, readyz, BenchArgs};

pub(crate) const PASSWORD: &str = "bench-password-1";
pub(crate) const LAKE: &str = "bench";
pub(crate) const DRIVER: &str = include_str!("catalog.py");
/// Rows of each table's one real Parquet file (ids 0..ROWS-1).
const ROWS: i64 = 1000;

struct Options {
    tables: usize,
    columns: usize,
    scales: Vec<i64>,
    runs: usize,
    writers: usize,
    commits: usize,
}

/// One catalog under test.
pub(crate) struct Catalog {
    pub(crate) name: &'static str,
    /// libpq string the DuckDB clients use.
    pub(crate) conninfo: String,
    pub(crate) data_path: PathBuf,
    /// Superuser session in the lake's database (build, stats reset and reads).
    pub(crate) lake_db: tokio_postgres::Client,
    /// Superuser session in `postgres`, where the `pg_stat_statements` view is.
    stats: tokio_postgres::Client,
    /// The role the client's statements run as in the lake's database (what
    /// `pg_stat_statements.userid` records): after its login's `IN DATABASE SET role`.
    client_role: String,
    pub(crate) server: Child,
    pub(crate) pg_port: u16,
}

pub fn catalog(args: &[String], venv: &Path, extensions: &Path, bin: &Path) -> Result<()> {
    let o = parse(args)?;
    let scratch = std::env::temp_dir().join(format!("dlc-bench-catalog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let driver = scratch.join("driver.py");
    std::fs::write(&driver, DRIVER)?;
    let python = venv.join("bin/python");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run(&o, &scratch, &python, &driver, extensions, bin));
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn parse(args: &[String]) -> Result<Options> {
    let a = BenchArgs::parse(
        args,
        &[
            "--tables",
            "--columns",
            "--scales",
            "--runs",
            "--writers",
            "--commits",
        ],
        &[],
    )?;
    let mut scales = match a.text("--scales") {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse::<i64>().context("--scales 10000,100000"))
            .collect::<Result<Vec<_>>>()?,
        None => vec![10_000, 30_000, 100_000],
    };
    scales.sort_unstable();
    let o = Options {
        tables: a.value("--tables", 20)?,
        columns: a.value("--columns", 50)?,
        scales,
        runs: a.value("--runs", 20)?,
        writers: a.value("--writers", 4)?,
        commits: a.value("--commits", 50)?,
    };
    if o.tables == 0 || o.columns < 2 || o.runs == 0 || o.scales.is_empty() {
        bail!("--tables ≥ 1, --columns ≥ 2, --runs ≥ 1 and at least one scale are needed");
    }
    if o.scales[0] < o.tables as i64 {
        bail!("the smallest scale must have at least one file per table");
    }
    Ok(o)
}

async fn run(
    o: &Options,
    scratch: &Path,
    python: &Path,
    driver: &Path,
    extensions: &Path,
    bin: &Path,
) -> Result<()> {
    let began = Instant::now();
    let mut tuned = start_tuned(scratch, bin, extensions, &[]).await?;
    let mut vanilla = start_vanilla(scratch).await?;
    let client = |c: &Catalog| DriverEnv {
        python: python.to_path_buf(),
        driver: driver.to_path_buf(),
        extensions: extensions.to_path_buf(),
        conninfo: c.conninfo.clone(),
        data_path: c.data_path.clone(),
    };
    for c in [&tuned, &vanilla] {
        let t = Instant::now();
        client(c).run_once(&[
            "setup",
            &o.tables.to_string(),
            &o.columns.to_string(),
            &ROWS.to_string(),
        ])?;
        eprintln!(
            "{}: {} tables of {} columns created by DuckLake in {:.1} s",
            c.name,
            o.tables,
            o.columns,
            t.elapsed().as_secs_f64()
        );
    }
    let mut results = Vec::new();
    for &scale in &o.scales {
        for c in [&tuned, &vanilla] {
            let t = Instant::now();
            grow(c, scale).await?;
            eprintln!(
                "{}: grown to {scale} files in {:.1} s",
                c.name,
                t.elapsed().as_secs_f64()
            );
        }
        results.push(measure_queries(o, scale, &tuned, &vanilla, &client).await?);
    }
    let top_tuned = top_statements(&tuned, &client(&tuned), o).await?;
    let top_vanilla = top_statements(&vanilla, &client(&vanilla), o).await?;
    // Alternating rounds, so neither side always runs first on a warming machine.
    let (mut wt, mut wv) = (Vec::new(), Vec::new());
    for round in 0..WRITE_ROUNDS {
        if round % 2 == 0 {
            wt.push(measure_writes(o, &client(&tuned), "tuned", round)?);
            wv.push(measure_writes(o, &client(&vanilla), "vanilla", round)?);
        } else {
            wv.push(measure_writes(o, &client(&vanilla), "vanilla", round)?);
            wt.push(measure_writes(o, &client(&tuned), "tuned", round)?);
        }
    }
    let writes_tuned = WriteResult::combine(&wt);
    let writes_vanilla = WriteResult::combine(&wv);
    report(
        o,
        &results,
        &writes_tuned,
        &writes_vanilla,
        &top_tuned,
        &top_vanilla,
    );
    println!(
        "  (whole benchmark: {:.1} min, building included)",
        began.elapsed().as_secs_f64() / 60.0
    );
    stop(&mut tuned.server);
    stop_vanilla(&mut vanilla, scratch);
    Ok(())
}

/// How the DuckDB client driver is run against one catalog.
#[derive(Clone)]
pub(crate) struct DriverEnv {
    pub(crate) python: PathBuf,
    pub(crate) driver: PathBuf,
    pub(crate) extensions: PathBuf,
    pub(crate) conninfo: String,
    pub(crate) data_path: PathBuf,
}

impl DriverEnv {
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.driver)
            .args(args)
            .env("CATALOG", &self.conninfo)
            .env("DATA_PATH", &self.data_path)
            .env("EXTENSIONS", &self.extensions);
        cmd
    }

    pub(crate) fn run_once(&self, args: &[&str]) -> Result<Value> {
        let out = checked_output(&mut self.command(args), "the DuckDB client driver")?;
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.lines().last().unwrap_or_default())
            .with_context(|| format!("read the driver's answer: {text}"))
    }

    fn query_loop(&self, table: &str, lo: i64, hi: i64) -> Result<QueryLoop> {
        let mut child = self
            .command(&["query", table, &lo.to_string(), &hi.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start the query driver")?;
        let stdin = child.stdin.take().context("driver stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("driver stdout")?);
        let mut q = QueryLoop {
            child,
            stdin,
            stdout,
        };
        q.read()?;
        Ok(q)
    }
}

struct QueryLoop {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl QueryLoop {
    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            let status = self.child.wait()?;
            bail!("the query driver exited ({status})");
        }
        Ok(serde_json::from_str(&line)?)
    }

    fn run(&mut self) -> Result<Value> {
        writeln!(self.stdin, "run")?;
        self.stdin.flush()?;
        self.read()
    }
}

impl Drop for QueryLoop {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "stop");
        let _ = self.child.wait();
    }
}

pub(crate) async fn start_tuned(
    scratch: &Path,
    bin: &Path,
    extensions: &Path,
    extra_env: &[(&str, &str)],
) -> Result<Catalog> {
    let home = scratch.join("tuned");
    let data_path = scratch.join("tuned-data");
    let (pg, http) = (free_port()?, free_port()?);
    let server = Command::new(bin)
        .arg("serve")
        .env("DUCKLAKE_CATALOG_HOME", &home)
        .env("DUCKLAKE_CATALOG_POSTGRES__PORT", pg.to_string())
        .env("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", PASSWORD)
        .env("DUCKLAKE_CATALOG_HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("DUCKLAKE_CATALOG_DUCKDB__EXTENSION_DIRECTORY", extensions)
        .env("DUCKLAKE_CATALOG_LAKE_NAME", LAKE)
        .env("DUCKLAKE_CATALOG_DATA_PATH", &data_path)
        .env("DUCKLAKE_CATALOG_LOG__LEVEL", "warn")
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .context("spawn serve")?;
    let mut server = server;
    let began = Instant::now();
    while readyz(http).is_none() {
        if let Some(status) = server.try_wait()? {
            bail!("serve exited during the benchmark: {status}");
        }
        if began.elapsed() > Duration::from_mins(3) {
            let _ = server.kill();
            bail!("serve was not ready within 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(home.join("run"))
        .port(pg)
        .user("ducklake_supervisor")
        .dbname(LAKE);
    let lake_db = connect(&cfg).await?;
    cfg.dbname("postgres");
    let stats = connect(&cfg).await?;
    let conninfo = format!(
        "host=127.0.0.1 port={pg} user=admin password={PASSWORD} dbname={LAKE} sslmode=disable"
    );
    Ok(Catalog {
        name: "tuned",
        client_role: acting_role(&conninfo).await?,
        conninfo,
        data_path,
        lake_db,
        stats,
        server,
        pg_port: pg,
    })
}

/// Stock PostgreSQL: initdb defaults, `pg_stat_statements` preloaded to measure, nothing else.
async fn start_vanilla(scratch: &Path) -> Result<Catalog> {
    let bin = PathBuf::from(format!(
        "/usr/lib/postgresql/{}/bin",
        base::versions::PG_MAJOR
    ));
    let dir = scratch.join("vanilla");
    let pgdata = dir.join("pgdata");
    std::fs::create_dir_all(&dir)?;
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, PASSWORD)?;
    let user = os_user()?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
    }
    let as_user = |cmd: &mut Command| {
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
    };
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&pgdata)
        .args([
            "-U",
            "bench",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .env("LC_ALL", "C");
    as_user(&mut initdb);
    checked_output(&mut initdb, "initdb (vanilla)")?;
    let port = free_port()?;
    let mut pg_ctl = Command::new(bin.join("pg_ctl"));
    pg_ctl
        .arg("-D")
        .arg(&pgdata)
        .arg("-l")
        .arg(dir.join("log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements",
            dir.display()
        ))
        .args(["-w", "start"]);
    as_user(&mut pg_ctl);
    checked_output(&mut pg_ctl, "pg_ctl start (vanilla)")?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user("bench")
        .password(PASSWORD)
        .dbname("postgres");
    let postgres = connect(&cfg).await?;
    // One statement per call: CREATE DATABASE cannot run in a transaction block.
    postgres
        .batch_execute(&format!("CREATE DATABASE {LAKE}"))
        .await?;
    postgres
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .await?;
    cfg.dbname(LAKE);
    let lake_db = connect(&cfg).await?;
    let stats = postgres;
    // A process that only waits, so Catalog has a child like the tuned one; pg_ctl stops PG.
    let server = Command::new("sleep").arg("infinity").spawn()?;
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=bench password={PASSWORD} dbname={LAKE} sslmode=disable"
    );
    Ok(Catalog {
        name: "vanilla",
        client_role: acting_role(&conninfo).await?,
        conninfo,
        data_path: scratch.join("vanilla-data"),
        lake_db,
        stats,
        server,
        pg_port: port,
    })
}

fn os_user() -> Result<Option<(u32, u32)>> {
    let me = String::from_utf8(checked_output(Command::new("id").arg("-u"), "id -u")?.stdout)?;
    if me.trim() != "0" {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32> {
        let out = checked_output(Command::new("id").args([flag, "postgres"]), "id postgres")?;
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

/// The role a session of the client's login acts as: the tuned server's users run as their
/// lake's group role (`ALTER ROLE … IN DATABASE … SET role`), so the login's own name would
/// select none of the client's statements.
async fn acting_role(conninfo: &str) -> Result<String> {
    let cfg: tokio_postgres::Config = conninfo.parse().context("the client's conninfo")?;
    let session = connect(&cfg).await?;
    Ok(session
        .query_one("SELECT current_user::text", &[])
        .await?
        .get(0))
}

async fn connect(cfg: &tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .context("connect to the benchmark catalog")?;
    tokio::spawn(conn);
    Ok(client)
}

pub(crate) fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

fn stop_vanilla(c: &mut Catalog, scratch: &Path) {
    let bin = PathBuf::from(format!(
        "/usr/lib/postgresql/{}/bin",
        base::versions::PG_MAJOR
    ));
    let mut pg_ctl = Command::new(bin.join("pg_ctl"));
    pg_ctl
        .arg("-D")
        .arg(scratch.join("vanilla/pgdata"))
        .args(["-m", "fast", "-w", "stop"]);
    if let Ok(Some((uid, gid))) = os_user() {
        pg_ctl.uid(uid).gid(gid);
    }
    let _ = pg_ctl.output();
    let _ = c.server.kill();
    let _ = c.server.wait();
}

/// Adds catalog rows until the lake has `scale` live data files, spread evenly over its tables:
/// clones of each table's real file with disjoint `id` ranges (see the module docs).
pub(crate) async fn grow(c: &Catalog, scale: i64) -> Result<()> {
    let db = &c.lake_db;
    let tables = db
        .query(
            "SELECT t.table_id, (SELECT c.column_id FROM ducklake_column c
                                  WHERE c.table_id = t.table_id AND c.column_name = 'id' AND c.end_snapshot IS NULL),
                    (SELECT min(data_file_id) FROM ducklake_data_file d
                      WHERE d.table_id = t.table_id AND d.path NOT LIKE 'synthetic/%'),
                    (SELECT count(*) FROM ducklake_data_file d WHERE d.table_id = t.table_id)
             FROM ducklake_table t WHERE t.end_snapshot IS NULL AND t.table_name LIKE 't%' ORDER BY 1",
            &[],
        )
        .await
        .context("list the benchmark tables")?;
    let per_table = scale / tables.len() as i64;
    for row in &tables {
        let (table_id, id_col, real, have): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let n = per_table - have;
        if n <= 0 {
            continue;
        }
        let base: i64 = db
            .query_one(
                "SELECT greatest((SELECT max(next_file_id) FROM ducklake_snapshot),
                                 (SELECT coalesce(max(data_file_id), 0) + 1 FROM ducklake_data_file))",
                &[],
            )
            .await?
            .get(0);
        // Clone k of the real file holds ids [k * ROWS, k * ROWS + ROWS - 1].
        db.batch_execute(&format!(
            "BEGIN;
             INSERT INTO ducklake_data_file (data_file_id, table_id, begin_snapshot, end_snapshot, file_order, path,
                 path_is_relative, file_format, record_count, file_size_bytes, footer_size, row_id_start,
                 partition_id, encryption_key, mapping_id, partial_max)
             SELECT {base} + g, table_id, begin_snapshot, NULL, file_order, 'synthetic/' || ({base} + g) || '.parquet',
                 path_is_relative, file_format, record_count, file_size_bytes, footer_size,
                 ({have} - 1 + g) * {ROWS}, partition_id, encryption_key, mapping_id, partial_max
             FROM ducklake_data_file, generate_series(1, {n}) g WHERE data_file_id = {real};
             INSERT INTO ducklake_file_column_stats (data_file_id, table_id, column_id, column_size_bytes, value_count,
                 null_count, min_value, max_value, contains_nan, extra_stats)
             SELECT {base} + g, table_id, column_id, column_size_bytes, value_count, null_count,
                 CASE WHEN column_id = {id_col} THEN (min_value::bigint + ({have} - 1 + g) * {ROWS})::text ELSE min_value END,
                 CASE WHEN column_id = {id_col} THEN (max_value::bigint + ({have} - 1 + g) * {ROWS})::text ELSE max_value END,
                 contains_nan, extra_stats
             FROM ducklake_file_column_stats, generate_series(1, {n}) g WHERE data_file_id = {real};
             UPDATE ducklake_table_stats SET record_count = {per_table} * {ROWS}, next_row_id = {per_table} * {ROWS},
                 file_size_bytes = {per_table} * (SELECT file_size_bytes FROM ducklake_data_file WHERE data_file_id = {real})
             WHERE table_id = {table_id};
             UPDATE ducklake_table_column_stats SET max_value = ({per_table} * {ROWS} - 1)::text
             WHERE table_id = {table_id} AND column_id = {id_col};
             UPDATE ducklake_snapshot SET next_file_id = {base} + {n} + 1
             WHERE snapshot_id = (SELECT max(snapshot_id) FROM ducklake_snapshot);
             COMMIT;"
        ))
        .await
        .with_context(|| format!("grow table {table_id} of the {} catalog", c.name))?;
    }
    // What autovacuum would have done by the time a real lake reached this size.
    db.batch_execute("VACUUM ANALYZE").await?;
    Ok(())
}

/// One scale's query figures for both catalogs (milliseconds, p50 over the runs).
struct ScaleResult {
    files: i64,
    stats_rows: i64,
    server: [f64; 2],
    e2e: [f64; 2],
    statements: [f64; 2],
}

async fn measure_queries(
    o: &Options,
    files: i64,
    tuned: &Catalog,
    vanilla: &Catalog,
    client: &dyn Fn(&Catalog) -> DriverEnv,
) -> Result<ScaleResult> {
    // The table in the middle, ids 100..=199 of its real file: every clone is pruned by stats.
    let table = format!("t{}", o.tables / 2);
    let (lo, hi) = (100, 199);
    let mut loops = [
        client(tuned).query_loop(&table, lo, hi)?,
        client(vanilla).query_loop(&table, lo, hi)?,
    ];
    let catalogs = [tuned, vanilla];
    let mut server = [Vec::new(), Vec::new()];
    let mut e2e = [Vec::new(), Vec::new()];
    let mut statements = [Vec::new(), Vec::new()];
    // One warm-up run each (PostgreSQL's caches, the driver's imports), not counted.
    for i in 0..=o.runs {
        for (k, c) in catalogs.iter().enumerate() {
            reset_stats(c).await?;
            let answer = loops[k].run()?;
            if answer["count"].as_i64() != Some(hi - lo + 1) {
                bail!(
                    "the {} catalog answered {answer} (expected {} rows)",
                    c.name,
                    hi - lo + 1
                );
            }
            let (ms, calls) = server_time(c).await?;
            if calls < 1.0 {
                bail!(
                    "the {} catalog recorded no statement of the client (role {}) in pg_stat_statements: nothing to compare",
                    c.name,
                    c.client_role
                );
            }
            if i > 0 {
                server[k].push(ms);
                e2e[k].push(answer["ms"].as_f64().unwrap_or_default());
                statements[k].push(calls);
            }
        }
    }
    let stats_rows: i64 = tuned
        .lake_db
        .query_one("SELECT count(*) FROM ducklake_file_column_stats", &[])
        .await?
        .get(0);
    let r = ScaleResult {
        files,
        stats_rows,
        server: [p50(&mut server[0]), p50(&mut server[1])],
        e2e: [p50(&mut e2e[0]), p50(&mut e2e[1])],
        statements: [p50(&mut statements[0]), p50(&mut statements[1])],
    };
    eprintln!(
        "{files} files: server-side p50 tuned {:.1} ms, vanilla {:.1} ms; end-to-end p50 tuned {:.1} ms, vanilla {:.1} ms",
        r.server[0], r.server[1], r.e2e[0], r.e2e[1]
    );
    Ok(r)
}

async fn reset_stats(c: &Catalog) -> Result<()> {
    c.stats
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .with_context(|| format!("reset pg_stat_statements on the {} catalog", c.name))
}

/// Milliseconds PostgreSQL spent in the client's statements in the lake's database, and how
/// many statements it ran.
async fn server_time(c: &Catalog) -> Result<(f64, f64)> {
    let row = c
        .stats
        .query_one(
            "SELECT coalesce(sum(total_exec_time), 0)::float8, coalesce(sum(calls), 0)::float8
             FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'bench')
               AND userid = (SELECT oid FROM pg_roles WHERE rolname = $1)",
            &[&c.client_role],
        )
        .await
        .with_context(|| format!("read pg_stat_statements on the {} catalog", c.name))?;
    Ok((row.get(0), row.get(1)))
}

/// The statements of one fresh client's ATTACH + query, by time, at the largest scale.
async fn top_statements(c: &Catalog, env: &DriverEnv, o: &Options) -> Result<Vec<String>> {
    let table = format!("t{}", o.tables / 2);
    let mut q = env.query_loop(&table, 100, 199)?;
    reset_stats(c).await?;
    q.run()?;
    let rows = c
        .stats
        .query(
            "SELECT total_exec_time::float8, calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 150)
             FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'bench')
               AND userid = (SELECT oid FROM pg_roles WHERE rolname = $1)
             ORDER BY total_exec_time DESC LIMIT 5",
            &[&c.client_role],
        )
        .await?;
    if rows.is_empty() {
        bail!(
            "the {} catalog recorded no statement of a fresh client (role {})",
            c.name,
            c.client_role
        );
    }
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "{:>8.1} ms {:>3}× {}",
                r.get::<_, f64>(0),
                r.get::<_, i64>(1),
                r.get::<_, String>(2)
            )
        })
        .collect())
}

/// Rounds of the write workload per catalog.
const WRITE_ROUNDS: usize = 4;

/// Commit figures of `--writers` concurrent writers.
struct WriteResult {
    commits_per_s: f64,
    p99_ms: f64,
    p50_ms: f64,
    latencies: Vec<f64>,
    commits: f64,
    wall_s: f64,
}

impl WriteResult {
    /// All rounds together: commits over summed wall time, percentiles over every commit.
    fn combine(rounds: &[WriteResult]) -> WriteResult {
        let mut latencies: Vec<f64> = rounds.iter().flat_map(|r| r.latencies.clone()).collect();
        latencies.sort_by(f64::total_cmp);
        let commits: f64 = rounds.iter().map(|r| r.commits).sum();
        let wall_s: f64 = rounds.iter().map(|r| r.wall_s).sum();
        let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
        WriteResult {
            commits_per_s: commits / wall_s.max(1e-9),
            p99_ms: pct(0.99),
            p50_ms: pct(0.5),
            commits,
            wall_s,
            latencies: latencies.clone(),
        }
    }
}

fn measure_writes(o: &Options, env: &DriverEnv, name: &str, round: usize) -> Result<WriteResult> {
    let began = Instant::now();
    let children: Vec<Child> = (0..o.writers)
        .map(|w| {
            env.command(&["write", &format!("w{w}_{round}"), &o.commits.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .context("start a writer")
        })
        .collect::<Result<_>>()?;
    let mut latencies = Vec::new();
    let mut slowest_wall: f64 = 0.0;
    for child in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("a {name} writer failed ({})", out.status);
        }
        let v: Value = serde_json::from_slice(&out.stdout).context("read a writer's answer")?;
        slowest_wall = slowest_wall.max(v["wall_s"].as_f64().unwrap_or_default());
        latencies.extend(
            v["latencies_ms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64),
        );
    }
    let total = latencies.len() as f64;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let r = WriteResult {
        commits_per_s: total / slowest_wall.max(1e-9),
        p99_ms: pct(0.99),
        p50_ms: pct(0.5),
        latencies: latencies.clone(),
        commits: total,
        wall_s: slowest_wall,
    };
    eprintln!(
        "{name}: {} writers, {total} commits in {:.1} s: {:.1} commits/s, p50 {:.0} ms, p99 {:.0} ms",
        o.writers,
        began.elapsed().as_secs_f64(),
        r.commits_per_s,
        r.p50_ms,
        r.p99_ms
    );
    Ok(r)
}

pub(crate) fn p50(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(
    o: &Options,
    results: &[ScaleResult],
    wt: &WriteResult,
    wv: &WriteResult,
    top_tuned: &[String],
    top_vanilla: &[String],
) {
    println!(
        "catalog benchmark: tuned vs vanilla PostgreSQL 15, {} tables × {} columns, p50 of {} fresh-client runs",
        o.tables, o.columns, o.runs
    );
    println!("  (a)/(c) ATTACH + a query whose filter lets the file stats prune all but one file:");
    println!(
        "  {:>8} {:>10} | {:>22} {:>7} | {:>22} {:>7} | {:>12}",
        "files",
        "stats rows",
        "server ms tuned/vanilla",
        "ratio",
        "e2e ms tuned/vanilla",
        "ratio",
        "statements"
    );
    for r in results {
        println!(
            "  {:>8} {:>10} | {:>10.1} / {:>9.1} {:>6.1}× | {:>10.1} / {:>9.1} {:>6.2}× | {:>5.0} / {:<5.0}",
            r.files,
            r.stats_rows,
            r.server[0],
            r.server[1],
            r.server[1] / r.server[0],
            r.e2e[0],
            r.e2e[1],
            r.e2e[1] / r.e2e[0],
            r.statements[0],
            r.statements[1]
        );
    }
    let (first, last) = (&results[0], &results[results.len() - 1]);
    let growth = |k: usize| last.server[k] / first.server[k];
    let files_growth = last.files as f64 / first.files as f64;
    println!(
        "  growth {}→{} files ({files_growth:.0}× the files): server-side tuned {:.2}×, vanilla {:.2}×; end-to-end tuned {:.2}×, vanilla {:.2}×",
        first.files,
        last.files,
        growth(0),
        growth(1),
        last.e2e[0] / first.e2e[0],
        last.e2e[1] / first.e2e[1]
    );
    println!(
        "  (b) {} writers × {} small commits (inlined and Parquet) at {} files, {WRITE_ROUNDS} alternating rounds:",
        o.writers, o.commits, last.files
    );
    println!(
        "      tuned {:.1} commits/s (p50 {:.0} ms, p99 {:.0} ms), vanilla {:.1} commits/s (p50 {:.0} ms, p99 {:.0} ms): throughput {:.2}×, p99 {:.2}×",
        wt.commits_per_s,
        wt.p50_ms,
        wt.p99_ms,
        wv.commits_per_s,
        wv.p50_ms,
        wv.p99_ms,
        wt.commits_per_s / wv.commits_per_s,
        wv.p99_ms / wt.p99_ms
    );
    let server_ratio = last.server[1] / last.server[0];
    let goal = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "  goals: (a) server-side ≥3× lower at {} files: {:.1}× {}; end-to-end better: {:.2}× {}; (b) commits ≥1.0×: {:.2}× {}; (c) tuned sub-linear: {:.2}× for {files_growth:.0}× the files {}",
        last.files,
        server_ratio,
        goal(server_ratio >= 3.0),
        last.e2e[1] / last.e2e[0],
        goal(last.e2e[1] > last.e2e[0]),
        wt.commits_per_s / wv.commits_per_s,
        goal(wt.commits_per_s >= wv.commits_per_s),
        growth(0),
        goal(growth(0) < files_growth)
    );
    println!(
        "  statements of one fresh client at {} files, by server time:",
        last.files
    );
    println!("    tuned:");
    for s in top_tuned {
        println!("      {s}");
    }
    println!("    vanilla:");
    for s in top_vanilla {
        println!("      {s}");
    }
}
