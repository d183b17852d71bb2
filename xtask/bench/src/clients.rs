//! `cargo xtask bench clients [--connections N] [--duckdb N] [--writers N] [--commits N]
//! [--attach-runs N] [--max-connections N]`: many clients against one server, through the
//! supervised pooler and directly, side by side in one run.
//!
//! One `serve` (PostgreSQL's `max_connections` set to `--max-connections`, default 100; the
//! pooler on), one lake, one writer user. Then:
//! - **Connections**: `--duckdb` DuckDB client processes ATTACH and read (their pools stay
//!   open), then plain connections are opened until the clients hold `--connections` in all
//!   (counted from the kernel's socket table); every DuckDB client reads again. Connection
//!   errors, wrong reads and PostgreSQL backends, pooled against direct.
//! - **Writers**: `--writers` processes each make `--commits` single-row commits, (a) over 8
//!   tables of the lake and (b) into one table: failed commits, commits/s, p50 and p99 latency
//!   and PostgreSQL statements per commit (`pg_stat_statements`). Rows: direct and pooled with
//!   DuckDB's defaults, pooled with the settings `ducklake-catalog connect` hands out, and that
//!   set with each setting put back to DuckDB's default — the figure behind each setting.
//! - **Connect**: a fresh DuckDB instance's ATTACH (TLS, SCRAM) and first read, pooled against
//!   direct.

// Benchmark arithmetic on counts and seconds: f64 precision is far beyond what is measured.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::support::{checked_output, free_port, readyz, BenchArgs};

const ADMIN_PASSWORD: &str = "bench-admin-password-1";
const USER: &str = "bench";
const USER_PASSWORD: &str = "bench-writer-password-1";
const LAKE: &str = "lakehouse";
pub(crate) const SCRIPT: &str = include_str!("clients.py");
/// Rows of `lake.bench`, the table every reader checks.
const ROWS: i64 = 1000;
/// Tables of the spread-out writer workload.
const TABLES: usize = 8;

pub(crate) struct Options {
    pub(crate) connections: usize,
    pub(crate) duckdb: usize,
    pub(crate) writers: usize,
    pub(crate) commits: usize,
    pub(crate) attach_runs: usize,
    pub(crate) max_connections: u32,
}

pub fn clients(args: &[String], venv: &Path, extensions: &Path, bin: &Path) -> Result<()> {
    let o = parse(args)?;
    let scratch = std::env::temp_dir().join(format!("dlc-bench-clients-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let script = scratch.join("clients.py");
    std::fs::write(&script, SCRIPT)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server = Server::start(bin, extensions, &scratch.join("home"), o.max_connections)?;
    let bench = Bench {
        server,
        python: venv.join("bin/python"),
        script,
        extensions: extensions.to_path_buf(),
    };
    let result = run(&bench, &o, &rt);
    drop(bench);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn parse(args: &[String]) -> Result<Options> {
    let a = BenchArgs::parse(
        args,
        &[
            "--connections",
            "--duckdb",
            "--writers",
            "--commits",
            "--attach-runs",
            "--max-connections",
        ],
        &[],
    )?;
    let o = Options {
        connections: a.value("--connections", 1000)?,
        duckdb: a.value("--duckdb", 40)?,
        writers: a.value("--writers", 32)?,
        commits: a.value("--commits", 20)?,
        attach_runs: a.value("--attach-runs", 10)?,
        max_connections: a.value("--max-connections", 100)?,
    };
    Ok(o)
}

fn run(bench: &Bench, o: &Options, rt: &tokio::runtime::Runtime) -> Result<()> {
    let s = &bench.server;
    println!(
        "clients benchmark: PostgreSQL max_connections {}, pooler pool_size {} per lake and user; direct port {}, pooled port {}",
        o.max_connections, s.pool_size, s.pg_port, s.pooler_port
    );
    bench.setup()?;
    let handed_out = bench.server.handed_out_settings()?;
    println!("settings `connect` hands out: {}", handed_out.join("; "));

    println!(
        "\n1. {} client connections ({} DuckDB clients holding their pools, the rest plain connections)",
        o.connections, o.duckdb
    );
    println!(
        "{:<8} {:>6} {:>10} {:>12} {:>12} {:>11}",
        "path", "held", "conn errs", "reads ok", "reads wrong", "PG sessions"
    );
    for (name, port) in [("pooled", s.pooler_port), ("direct", s.pg_port)] {
        let f = rt.block_on(bench.connections(o, port, &handed_out))?;
        println!(
            "{name:<8} {:>6} {:>10} {:>12} {:>12} {:>11}",
            f.held, f.errors, f.reads_ok, f.reads_wrong, f.backends
        );
        if let Some(e) = f.first_error {
            println!("         first error: {e}");
        }
    }

    println!(
        "\n2. {} writer processes × {} single-row commits",
        o.writers, o.commits
    );
    println!(
        "{:<44} {:>7} {:>7} {:>9} {:>8} {:>8} {:>10}",
        "path, settings", "tables", "failed", "commits/s", "p50 ms", "p99 ms", "stmts/cmt"
    );
    let defaults: Vec<String> = Vec::new();
    let mut rows: Vec<(String, u16, Vec<String>, Vec<usize>)> = vec![
        (
            "direct, DuckDB defaults".into(),
            s.pg_port,
            defaults.clone(),
            vec![TABLES, 1],
        ),
        (
            "pooled, DuckDB defaults".into(),
            s.pooler_port,
            defaults,
            vec![TABLES, 1],
        ),
        (
            "pooled, `connect`'s settings".into(),
            s.pooler_port,
            handed_out.clone(),
            vec![TABLES, 1],
        ),
    ];
    // Each setting put back to DuckDB's default, on the workload that stresses it most.
    for (i, setting) in handed_out.iter().enumerate() {
        let name = setting
            .trim_start_matches("SET ")
            .split(['=', ' '])
            .next()
            .unwrap_or(setting);
        let mut without = handed_out.clone();
        without.remove(i);
        rows.push((
            format!("pooled, … but DuckDB's {name}"),
            s.pooler_port,
            without,
            vec![1],
        ));
    }
    for (label, port, settings, workloads) in rows {
        for tables in workloads {
            let f = bench.writers(o, port, &settings, tables, rt)?;
            println!(
                "{label:<44} {tables:>7} {:>7} {:>9.1} {:>8.0} {:>8.0} {:>10.1}",
                f.failed, f.per_sec, f.p50_ms, f.p99_ms, f.statements_per_commit
            );
            if let Some(e) = f.first_error {
                println!("{:<44} first failure: {e}", "");
            }
        }
    }

    println!(
        "\n3. a fresh client's ATTACH and first read (TLS, SCRAM), {} runs",
        o.attach_runs
    );
    let mut p50s = Vec::new();
    for (name, port) in [("pooled", s.pooler_port), ("direct", s.pg_port)] {
        let times = bench.attach_times(port, &handed_out, o.attach_runs)?;
        let p50 = percentile(&times, 50.0) * 1000.0;
        p50s.push(p50);
        println!(
            "{name:<8} p50 {p50:.0} ms, p99 {:.0} ms",
            percentile(&times, 99.0) * 1000.0
        );
    }
    println!("pooled/direct ATTACH time: {:.2}×", p50s[0] / p50s[1]);
    Ok(())
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) home: PathBuf,
    pub(crate) bin: PathBuf,
    pub(crate) extensions: PathBuf,
    pub(crate) pg_port: u16,
    pub(crate) pooler_port: u16,
    pub(crate) http_port: u16,
    pub(crate) pool_size: u32,
    pub(crate) max_connections: u32,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Server {
    pub(crate) fn start(
        bin: &Path,
        extensions: &Path,
        home: &Path,
        max_connections: u32,
    ) -> Result<Server> {
        std::fs::create_dir_all(home)?;
        let mut s = Server {
            child: Command::new("true").spawn()?,
            home: home.to_path_buf(),
            bin: bin.to_path_buf(),
            extensions: extensions.to_path_buf(),
            pg_port: free_port()?,
            pooler_port: free_port()?,
            http_port: free_port()?,
            pool_size: 20,
            max_connections,
        };
        let log = std::fs::File::create(home.with_extension("log"))?;
        s.child = s
            .command()
            .arg("serve")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn serve")?;
        let began = Instant::now();
        while readyz(s.http_port).is_none() {
            if let Some(status) = s.child.try_wait()? {
                bail!("serve exited: {status}; see {}.log", home.display());
            }
            if began.elapsed() > Duration::from_mins(5) {
                bail!("serve not ready within 300 s; see {}.log", home.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut create = s.command();
        create
            .args(["user", "create", USER, "--lake", LAKE, "--role", "writer"])
            .args(["--max-connections", "10000", "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = create.spawn().context("run user create")?;
        writeln!(child.stdin.take().context("stdin")?, "{USER_PASSWORD}")?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "user create failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(s)
    }

    /// The binary with this server's environment.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DUCKLAKE_CATALOG_HOME", &self.home)
            .env("DUCKLAKE_CATALOG_POSTGRES__PORT", self.pg_port.to_string())
            .env(
                "DUCKLAKE_CATALOG_POSTGRES__MAX_CONNECTIONS",
                self.max_connections.to_string(),
            )
            .env(
                "DUCKLAKE_CATALOG_POOLER__PORT",
                self.pooler_port.to_string(),
            )
            .env(
                "DUCKLAKE_CATALOG_POOLER__POOL_SIZE",
                self.pool_size.to_string(),
            )
            .env(
                "DUCKLAKE_CATALOG_HTTP__LISTEN",
                format!("127.0.0.1:{}", self.http_port),
            )
            .env(
                "DUCKLAKE_CATALOG_DUCKDB__EXTENSION_DIRECTORY",
                &self.extensions,
            )
            .env("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("DUCKLAKE_CATALOG_LOG__FORMAT", "json");
        cmd
    }

    /// What `connect --format json` tells clients to SET before ATTACH.
    pub(crate) fn handed_out_settings(&self) -> Result<Vec<String>> {
        let out = checked_output(
            self.command()
                .args(["connect", "--lake", LAKE, "--format", "json"]),
            "ducklake-catalog connect",
        )?;
        let v: Value = serde_json::from_slice(&out.stdout).context("connect's JSON")?;
        let settings = v["settings"]
            .as_array()
            .context("connect's JSON has no `settings`")?
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        Ok(settings)
    }
}

pub(crate) struct Bench {
    pub(crate) server: Server,
    pub(crate) python: PathBuf,
    pub(crate) script: PathBuf,
    pub(crate) extensions: PathBuf,
}

struct ConnectionFigures {
    held: usize,
    errors: usize,
    first_error: Option<String>,
    reads_ok: usize,
    reads_wrong: usize,
    backends: i64,
}

impl ConnectionFigures {
    fn note(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    /// Counts a client's report; true when it read the right rows.
    fn check(&mut self, line: &str) -> Result<bool> {
        let v: Value = serde_json::from_str(line).context("a client's line")?;
        if let Some(e) = v["error"].as_str() {
            self.note(e.to_owned());
            return Ok(false);
        }
        let right = v["rows"] == ROWS && v["sum"] == ROWS * (ROWS - 1) / 2;
        if right {
            self.reads_ok += 1;
        } else {
            self.reads_wrong += 1;
        }
        Ok(right)
    }
}

pub(crate) struct WriteFigures {
    pub(crate) failed: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) statements_per_commit: f64,
}

/// A DuckDB client process of `clients.py`, talking over its stdin and stdout.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            bail!("a client exited early")
        }
        Ok(line.trim().to_owned())
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bench {
    fn conninfo(port: u16, user: &str) -> String {
        format!("host=127.0.0.1 port={port} user={user} dbname={LAKE} sslmode=require")
    }

    fn client(&self, port: u16, user: &str, settings: &[String], args: &[&str]) -> Result<Client> {
        let password = if user == USER {
            USER_PASSWORD
        } else {
            ADMIN_PASSWORD
        };
        let mut child = Command::new(&self.python)
            .arg(&self.script)
            .args(args)
            .env("CATALOG", Self::conninfo(port, user))
            .env("PGPASSWORD", password)
            .env("EXTENSIONS", &self.extensions)
            .env("SETTINGS", settings.join(";"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start a DuckDB client")?;
        Ok(Client {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().context("stdout")?),
            child,
        })
    }

    /// `lake.bench` with [`ROWS`] rows, and the writers' tables, as the admin.
    pub(crate) fn setup(&self) -> Result<()> {
        let mut sql = vec![format!(
            "CREATE TABLE lake.bench AS SELECT i AS v FROM range({ROWS}) t(i)"
        )];
        sql.extend(
            (0..TABLES).map(|t| format!("CREATE TABLE lake.bench_{t} (pid BIGINT, k BIGINT)")),
        );
        let code = format!(
            "import duckdb, os\ncon = duckdb.connect(config={{'extension_directory': os.environ['EXTENSIONS'], 'autoinstall_known_extensions': 'false'}})\ncon.execute('LOAD ducklake; LOAD postgres; LOAD parquet')\ncon.execute(\"ATTACH 'ducklake:postgres:{}' AS lake\")\nfor s in {sql:?}:\n    con.execute(s)\n",
            Self::conninfo(self.server.pg_port, "admin")
        );
        checked_output(
            Command::new(&self.python)
                .args(["-c", &code])
                .env("PGPASSWORD", ADMIN_PASSWORD)
                .env("EXTENSIONS", &self.extensions),
            "the benchmark's setup",
        )?;
        Ok(())
    }

    async fn admin(&self, db: &str) -> Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.server.pg_port)
            .user("admin")
            .password(ADMIN_PASSWORD)
            .dbname(db)
            .connect(tokio_postgres::NoTls)
            .await
            .context("connect as the admin")?;
        tokio::spawn(conn);
        Ok(client)
    }

    async fn connections(
        &self,
        o: &Options,
        port: u16,
        settings: &[String],
    ) -> Result<ConnectionFigures> {
        let admin = self.admin("postgres").await?;
        let mut f = ConnectionFigures {
            held: 0,
            errors: 0,
            first_error: None,
            reads_ok: 0,
            reads_wrong: 0,
            backends: 0,
        };
        let mut clients = Vec::new();
        for _ in 0..o.duckdb {
            clients.push(self.client(port, USER, settings, &["hold"])?);
        }
        let mut alive = Vec::new();
        for mut c in clients {
            let line = c.line()?;
            if f.check(&line)? {
                alive.push(c);
            }
        }
        // Plain connections until the clients hold `connections` in all.
        let held_by_duckdb = established_to(port);
        let want = o.connections.saturating_sub(held_by_duckdb);
        let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let plain = Arc::new(std::sync::Mutex::new(Vec::new()));
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let (errors, plain, next) = (errors.clone(), plain.clone(), next.clone());
            tasks.spawn(async move {
                while next.fetch_add(1, Ordering::SeqCst) < want {
                    let r = async {
                        let (client, conn) = tokio_postgres::Config::new()
                            .host("127.0.0.1")
                            .port(port)
                            .user(USER)
                            .password(USER_PASSWORD)
                            .dbname(LAKE)
                            .connect_timeout(Duration::from_secs(30))
                            .connect(tokio_postgres::NoTls)
                            .await?;
                        tokio::spawn(conn);
                        client.simple_query("SELECT 1").await?;
                        Ok::<_, tokio_postgres::Error>(client)
                    }
                    .await;
                    match r {
                        Ok(c) => plain.lock().unwrap().push(c),
                        Err(e) => errors.lock().unwrap().push(pg_message(&e)),
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        for e in errors.lock().unwrap().drain(..) {
            f.note(e);
        }
        f.held = established_to(port);
        f.backends = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&LAKE],
            )
            .await?
            .get(0);
        // Every DuckDB client reads again while all of it is held.
        for c in &mut alive {
            c.send("read")?;
        }
        for c in &mut alive {
            let line = c.line()?;
            f.check(&line)?;
        }
        drop(alive);
        drop(plain);
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(f)
    }

    pub(crate) fn writers(
        &self,
        o: &Options,
        port: u16,
        settings: &[String],
        tables: usize,
        rt: &tokio::runtime::Runtime,
    ) -> Result<WriteFigures> {
        let calls = || -> Result<i64> {
            rt.block_on(async {
                let admin = self.admin("postgres").await?;
                let n: i64 = admin
                    .query_one(
                        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
                        &[&LAKE],
                    )
                    .await?
                    .get(0);
                Ok(n)
            })
        };
        let mut clients = Vec::new();
        for _ in 0..o.writers {
            clients.push(self.client(
                port,
                USER,
                settings,
                &["write", &tables.to_string(), &o.commits.to_string()],
            )?);
        }
        let mut first_error = None;
        let mut ready = Vec::new();
        let mut failed = 0;
        for mut c in clients {
            let line = c.line()?;
            if line == "ready" {
                ready.push(c);
            } else {
                failed += o.commits;
                first_error.get_or_insert(line);
            }
        }
        let before = calls()?;
        let began = Instant::now();
        for c in &mut ready {
            c.send("go")?;
        }
        let mut latencies = Vec::new();
        for c in &mut ready {
            let v: Value = serde_json::from_str(&c.line()?).context("a writer's report")?;
            latencies.extend(
                v["latencies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_f64),
            );
            for e in v["failed"].as_array().into_iter().flatten() {
                failed += 1;
                if first_error.is_none() {
                    first_error = e.as_str().map(str::to_owned);
                }
            }
        }
        let took = began.elapsed().as_secs_f64();
        let statements = calls()? - before;
        drop(ready);
        Ok(WriteFigures {
            failed,
            first_error,
            per_sec: latencies.len() as f64 / took,
            p50_ms: percentile(&latencies, 50.0) * 1000.0,
            p99_ms: percentile(&latencies, 99.0) * 1000.0,
            statements_per_commit: statements as f64 / latencies.len().max(1) as f64,
        })
    }

    fn attach_times(&self, port: u16, settings: &[String], runs: usize) -> Result<Vec<f64>> {
        let mut c = self.client(port, USER, settings, &["attach", &runs.to_string()])?;
        let v: Value = serde_json::from_str(&c.line()?).context("the attach report")?;
        if let Some(e) = v["error"].as_str() {
            bail!("a fresh client could not ATTACH: {e}");
        }
        Ok(v["attach"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect())
    }
}

/// Established TCP connections from a loopback client to `port` (the client's side of each),
/// from the kernel's socket tables.
fn established_to(port: u16) -> usize {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address rem_address st: the remote side is the server's port.
            let remote_port = cols
                .get(2)
                .and_then(|r| r.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) && cols.get(3) == Some(&"01") {
                n += 1;
            }
        }
    }
    n
}

/// PostgreSQL's (or the pooler's) own message, not tokio-postgres's bare `db error`.
fn pg_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(
        || e.to_string(),
        |d| format!("{}: {}", d.code().code(), d.message()),
    )
}

pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p / 100.0).round() as usize]
}
