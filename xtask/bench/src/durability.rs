//! `cargo xtask bench durability [--commits N] [--restore-gb G] [--skip-walg]`: the recovery
//! point and the cost of archiving, measured side by side in one run against moto S3 on
//! loopback.
//!
//! - RPO: for each of N commits (50 ms apart), the time from the commit's acknowledgement to
//!   the WAL segment holding it existing in the target (polled with HEAD every 10 ms through
//!   object_store, independently of the server's own bookkeeping); p50/p99/max. Once with the
//!   product's defaults (1 MB segments, `archive_timeout` 1 s), once with WAL-G-style defaults
//!   (16 MB segments, `archive_timeout` 60 s).
//! - Write overhead: commits/s of 4 connections doing single-row inserts for 10 s, with the
//!   archive on and off; the ratio.
//! - Restore: a catalog of G GB (default 1) is archived and base-backed-up, then a new server on
//!   an empty home restores it; the time from spawn to ready.

// Benchmark arithmetic on counts and seconds: f64 precision is far beyond what is measured.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{free_port, readyz, BenchArgs, Moto};
use anyhow::{bail, Context as _, Result};

pub const PASSWORD: &str = "bench-password-1";

struct Options {
    commits: usize,
    restore_gb: f64,
    walg: bool,
}

pub fn durability(args: &[String], venv: &Path, extensions: &Path, bin: &Path) -> Result<()> {
    let a = BenchArgs::parse(args, &["--commits", "--restore-gb"], &["--skip-walg"])?;
    let o = Options {
        commits: a.value("--commits", 200)?,
        restore_gb: a.value("--restore-gb", 1.0)?,
        walg: !a.flag("--skip-walg"),
    };
    let (rt, _moto, bench) = Bench::on_moto(venv, extensions, bin)?;
    println!("durability benchmark (release binary, moto S3 on loopback)");

    let ours = rt.block_on(bench.rpo("ours", 1, 1, o.commits))?;
    print_rpo(
        "RPO, product defaults (1 MB segments, archive_timeout 1 s)",
        &ours,
    );
    if o.walg {
        let walg = rt.block_on(bench.rpo("walg", 16, 60, o.commits))?;
        print_rpo(
            "RPO, WAL-G-style defaults (16 MB, archive_timeout 60 s)",
            &walg,
        );
        println!(
            "  p99 ratio WAL-G-style / ours: {:.0}x",
            percentile(&walg, 0.99) / percentile(&ours, 0.99)
        );
    }
    let with = rt.block_on(bench.throughput("tput-on", true))?;
    let without = rt.block_on(bench.throughput("tput-off", false))?;
    println!("write overhead (4 connections, single-row insert commits, 10 s each)");
    println!("  commits/s with archiving:    {with:.0}");
    println!("  commits/s without archiving: {without:.0}");
    println!("  with / without:              {:.2}", with / without);
    let r = rt.block_on(bench.restore(o.restore_gb))?;
    println!(
        "restore of a {:.2} GB catalog from the target to a new, empty home",
        r.db_gb
    );
    println!(
        "  archiving the load: {} WAL segments in {:.1} s ({:.0} segments/s)",
        r.segments,
        r.archive_secs,
        r.segments as f64 / r.archive_secs
    );
    println!(
        "  base backup: {:.1} s, {:.0} MB stored",
        r.backup_secs, r.stored_mb
    );
    println!("  spawn to ready on an empty home: {:.1} s", r.restore_secs);
    Ok(())
}

fn print_rpo(title: &str, v: &[f64]) {
    println!("{title}, {} commits", v.len());
    println!(
        "  p50 {:.2} s   p99 {:.2} s   max {:.2} s",
        percentile(v, 0.5),
        percentile(v, 0.99),
        v.iter().copied().fold(0.0, f64::max)
    );
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

/// The servers a durability or failover bench starts: the binary, extensions and moto.
#[derive(Debug)]
pub struct Bench {
    pub bin: PathBuf,
    pub extensions: PathBuf,
    pub moto_port: u16,
}

/// A `serve` a bench started; stopped (SIGTERM) and its home removed when dropped.
#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub pg_port: u16,
    pub home: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

struct RestoreFigures {
    db_gb: f64,
    segments: u64,
    archive_secs: f64,
    backup_secs: f64,
    stored_mb: f64,
    restore_secs: f64,
}

impl Bench {
    /// The benchmarks' runtime, moto on loopback with bucket `backups` (kept running while
    /// the returned `Moto` lives), and the servers' settings.
    pub fn on_moto(
        venv: &Path,
        extensions: &Path,
        bin: &Path,
    ) -> Result<(tokio::runtime::Runtime, Moto, Bench)> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let moto = Moto::start(venv, "127.0.0.1")?;
        moto.create_bucket("backups")?;
        let bench = Bench {
            bin: bin.to_path_buf(),
            extensions: extensions.to_path_buf(),
            moto_port: moto.port,
        };
        Ok((rt, moto, bench))
    }

    pub fn target(prefix: &str) -> String {
        format!("s3://backups/{prefix}/")
    }

    pub fn spawn(&self, name: &str, env: &[(&str, String)]) -> Result<(Server, u16)> {
        let home = std::env::temp_dir().join(format!("dlc-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home)?;
        let (pg, http) = (free_port()?, free_port()?);
        let log = std::fs::File::create(home.with_extension("log"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DUCKLAKE_CATALOG_HOME", &home)
            .env("DUCKLAKE_CATALOG_POSTGRES__PORT", pg.to_string())
            .env("DUCKLAKE_CATALOG_HTTP__LISTEN", format!("127.0.0.1:{http}"))
            .env(
                "DUCKLAKE_CATALOG_DUCKDB__EXTENSION_DIRECTORY",
                &self.extensions,
            )
            .env("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", PASSWORD)
            .env("DUCKLAKE_CATALOG_LOG__FORMAT", "json")
            .env(
                "DUCKLAKE_CATALOG_S3__ENDPOINT",
                format!("http://127.0.0.1:{}", self.moto_port),
            )
            .env("DUCKLAKE_CATALOG_S3__REGION", "us-east-1")
            .env("DUCKLAKE_CATALOG_S3__ALLOW_HTTP", "true")
            .env("DUCKLAKE_CATALOG_S3__FORCE_PATH_STYLE", "true")
            .env("DUCKLAKE_CATALOG_S3__ACCESS_KEY_ID", "testing")
            .env("DUCKLAKE_CATALOG_S3__SECRET_ACCESS_KEY", "testing")
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawn serve")?;
        Ok((
            Server {
                child,
                pg_port: pg,
                home,
            },
            http,
        ))
    }

    /// Spawns and waits for readiness (and, with backups, the first base backup).
    pub fn start(
        &self,
        name: &str,
        env: &[(&str, String)],
        want_backup: bool,
    ) -> Result<(Server, Duration)> {
        let began = Instant::now();
        let (mut s, http) = self.spawn(name, env)?;
        loop {
            if let Some(status) = s.child.try_wait()? {
                bail!(
                    "serve `{name}` exited: {status}; see {}.log",
                    s.home.display()
                );
            }
            if let Some(body) = readyz(http) {
                if !want_backup || body.contains("\"last_base_backup\":{") {
                    return Ok((s, began.elapsed()));
                }
            }
            if began.elapsed() > Duration::from_mins(10) {
                bail!("serve `{name}` not ready within 600 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn rpo(
        &self,
        name: &str,
        seg_mb: u32,
        timeout_s: u32,
        commits: usize,
    ) -> Result<Vec<f64>> {
        let target = Self::target(name);
        let (server, _) = self.start(
            name,
            &[
                ("DUCKLAKE_CATALOG_BACKUP__TARGET", target.clone()),
                (
                    "DUCKLAKE_CATALOG_BACKUP__ARCHIVE_TIMEOUT",
                    format!("{timeout_s}s"),
                ),
                (
                    "DUCKLAKE_CATALOG_POSTGRES__WAL_SEGMENT_SIZE_MB",
                    seg_mb.to_string(),
                ),
            ],
            true,
        )?;
        // The target's objects, asked of moto directly (path-style, as the server writes them).
        let store = MotoObjects {
            port: self.moto_port,
            prefix: target.trim_start_matches("s3://").to_owned(),
        };
        let client = connect(server.pg_port).await?;
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS rpo_probe (id bigint, at timestamptz)")
            .await?;
        // segment → (ack instants), filled by the committer, drained by the poller.
        let pending: Arc<Mutex<BTreeMap<String, Vec<Instant>>>> = Arc::default();
        let results: Arc<Mutex<Vec<f64>>> = Arc::default();
        let poller = {
            let (pending, results, store) = (pending.clone(), results.clone(), store.clone());
            tokio::spawn(async move {
                loop {
                    let first = pending.lock().unwrap().keys().next().cloned();
                    let Some(seg) = first else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    if seg == "done" {
                        return;
                    }
                    if store.exists(&format!("wal/{seg}")).await {
                        let now = Instant::now();
                        // Everything up to this segment is archived (PostgreSQL archives in order).
                        let mut p = pending.lock().unwrap();
                        let done: Vec<String> = p.keys().filter(|k| **k <= seg).cloned().collect();
                        for k in done {
                            for ack in p.remove(&k).unwrap_or_default() {
                                results.lock().unwrap().push((now - ack).as_secs_f64());
                            }
                        }
                    } else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        };
        for i in 0..commits {
            let row = client
                .query_one(
                    "WITH ins AS (INSERT INTO rpo_probe VALUES ($1, now()) RETURNING 1) SELECT count(*) FROM ins",
                    &[&(i as i64)],
                )
                .await?;
            let _: i64 = row.get(0);
            let ack = Instant::now();
            let seg: String = client
                .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
                .await?
                .get(0);
            pending.lock().unwrap().entry(seg).or_default().push(ack);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(u64::from(timeout_s) * 3 + 60);
        while results.lock().unwrap().len() < commits {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {commits} commits reached the target",
                    results.lock().unwrap().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pending.lock().unwrap().insert("done".into(), vec![]);
        poller.abort();
        drop(server);
        let r = results.lock().unwrap().clone();
        Ok(r)
    }

    async fn throughput(&self, name: &str, archive: bool) -> Result<f64> {
        let mut env = vec![];
        if archive {
            env.push(("DUCKLAKE_CATALOG_BACKUP__TARGET", Self::target(name)));
        }
        let (server, _) = self.start(name, &env, archive)?;
        let setup = connect(server.pg_port).await?;
        setup
            .batch_execute("CREATE TABLE tput (id bigint, payload text)")
            .await?;
        let stop = Instant::now() + Duration::from_secs(10);
        let mut tasks = vec![];
        for w in 0..4i64 {
            let port = server.pg_port;
            tasks.push(tokio::spawn(async move {
                let c = connect(port).await?;
                let mut n = 0u64;
                while Instant::now() < stop {
                    c.execute("INSERT INTO tput VALUES ($1, 'x')", &[&w])
                        .await?;
                    n += 1;
                }
                Ok::<u64, anyhow::Error>(n)
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        drop(server);
        Ok(total as f64 / 10.0)
    }

    async fn restore(&self, gb: f64) -> Result<RestoreFigures> {
        let target = Self::target("restore");
        // The lake's data path is where both servers look for it: the restored catalog is bound
        // to it.
        let env = [
            ("DUCKLAKE_CATALOG_BACKUP__TARGET", target.clone()),
            (
                "DUCKLAKE_CATALOG_DATA_PATH",
                "s3://backups/restore-lake/".into(),
            ),
        ];
        let (server, _) = self.start("restore-a", &env, true)?;
        let client = connect(server.pg_port).await?;
        // Rows shaped like a catalog's: ids, paths, small stats; ~300 bytes each.
        let rows = (gb * 1024.0 * 1024.0 * 1024.0 / 330.0) as i64;
        let load = Instant::now();
        client
            .batch_execute(&format!(
                "CREATE TABLE bulk AS SELECT i AS data_file_id, i % 50 AS table_id, \
                 'lakes/sales/main/t' || (i % 50) || '/ducklake-' || md5(i::text) || '.parquet' AS path, \
                 i * 7 AS record_count, md5((i * 3)::text) || md5((i * 5)::text) || md5((i * 11)::text) AS stats, \
                 repeat(chr(65 + (i % 26)), 120) AS pad \
                 FROM generate_series(1, {rows}) i"
            ))
            .await?;
        let db_bytes: i64 = client
            .query_one("SELECT pg_database_size('lakehouse')", &[])
            .await?
            .get(0);
        // Wait until every segment the load wrote is archived.
        let switched: String = client
            // The admin role may not switch WAL; archive_timeout closes the segment within 1 s.
            .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
            .await?
            .get(0);
        loop {
            let row = client
                .query_one(
                    "SELECT coalesce(last_archived_wal, ''), archived_count FROM pg_stat_archiver",
                    &[],
                )
                .await?;
            let last: String = row.get(0);
            if last.as_str() >= switched.as_str() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let archive_secs = load.elapsed().as_secs_f64();
        let segments: i64 = client
            .query_one("SELECT archived_count FROM pg_stat_archiver", &[])
            .await?
            .get(0);
        let b = Instant::now();
        let out = Command::new(&self.bin)
            .args(["backup", "now", "--format", "json"])
            .env("DUCKLAKE_CATALOG_HOME", &server.home)
            .output()?;
        if !out.status.success() {
            bail!(
                "backup now failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let backup_secs = b.elapsed().as_secs_f64();
        let manifest: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let stored_mb = manifest["stored_bytes"].as_f64().unwrap_or(0.0) / 1e6;
        drop(client);
        drop(server);
        let (restored, took) = self.start("restore-b", &env, false)?;
        let check = connect(restored.pg_port).await?;
        let n: i64 = check
            .query_one("SELECT count(*) FROM bulk", &[])
            .await?
            .get(0);
        if n != rows {
            bail!("restored {n} rows, expected {rows}");
        }
        Ok(RestoreFigures {
            db_gb: db_bytes as f64 / (1024.0 * 1024.0 * 1024.0),
            segments: segments as u64,
            archive_secs,
            backup_secs,
            stored_mb,
            restore_secs: took.as_secs_f64(),
        })
    }
}

pub async fn connect(port: u16) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("admin")
        .password(PASSWORD)
        .dbname("lakehouse")
        .connect(tokio_postgres::NoTls)
        .await
        .context("connect to the catalog")?;
    tokio::spawn(conn);
    Ok(client)
}

/// Objects in moto's S3, by a plain HTTP `HEAD` (moto answers unsigned requests): the bench
/// watches the archive land without an S3 client of its own.
#[derive(Clone)]
struct MotoObjects {
    port: u16,
    /// `bucket/prefix/`.
    prefix: String,
}

impl MotoObjects {
    async fn exists(&self, key: &str) -> bool {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let request = format!(
            "HEAD /{}{key} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.prefix, self.port
        );
        if conn.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).await.is_ok() && head.starts_with(b"HTTP/1.1 200")
    }
}
