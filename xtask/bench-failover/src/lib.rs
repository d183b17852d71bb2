//! `cargo xtask bench failover [--writers N] [--seconds S] [--commits N] [--catalog-mb N]`: a primary and a hot
//! standby on one backup target (moto S3 on loopback, `ha.lease_period` 8 s, the default),
//! measured side by side in one run, asynchronous and zero-loss:
//!
//! - **Commit latency**: `--commits` sequential single-row commits on the primary, p50/p99
//!   (one PostgreSQL commit: what every DuckLake commit pays once more in zero-loss mode).
//! - **Replay lag seen by a reader on the standby** during those commits: the time from a
//!   commit's acknowledgement on the primary to the row being visible to a query on the standby.
//! - **RTO**: `--writers` DuckDB writers commit through the primary; it is killed with SIGKILL
//!   (supervisor and PostgreSQL); the time until the standby accepts a write transaction.
//! - **RPO**: commits the writers saw acknowledged that the new primary does not have.
//! - **Restore on replace** (today's single-server path) in the same run: a fresh server on an
//!   empty home restores the same catalog (`--catalog-mb`, default 256, loaded after the base
//!   backup) from the same target; the time to ready.

// Benchmark arithmetic on counts and seconds: f64 precision is far beyond what is measured.
#![allow(clippy::cast_precision_loss)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use xtask_bench::clients::percentile;
use xtask_bench::durability::{connect, Bench, Server, PASSWORD};
use xtask_bench::support::{free_port, http_get, BenchArgs};

/// The DuckDB writer and reader the failover tests use.
const COMMIT_LOG: &str = include_str!("../../../crates/cli/tests/python/commit_log.py");

struct Options {
    writers: usize,
    seconds: f64,
    commits: usize,
    catalog_mb: u64,
}

struct Figures {
    rto: f64,
    acked: usize,
    lost: usize,
    commit_ms: Vec<f64>,
    lag_ms: Vec<f64>,
}

pub fn failover(args: &[String], venv: &Path, extensions: &Path, bin: &Path) -> Result<()> {
    let a = BenchArgs::parse(
        args,
        &["--writers", "--seconds", "--commits", "--catalog-mb"],
        &[],
    )?;
    let o = Options {
        writers: a.value("--writers", 4)?,
        seconds: a.value("--seconds", 25.0)?,
        commits: a.value("--commits", 300)?,
        catalog_mb: a.value("--catalog-mb", 256)?,
    };
    let (rt, _moto, bench) = Bench::on_moto(venv, extensions, bin)?;
    let scratch = std::env::temp_dir().join(format!("dlc-bench-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let script = scratch.join("commit_log.py");
    std::fs::write(&script, COMMIT_LOG)?;
    let py = Python {
        interpreter: venv.join("bin/python"),
        script,
        extensions: extensions.to_path_buf(),
    };
    println!(
        "failover benchmark: a primary and a hot standby, ha.lease_period 8 s, {} DuckDB writers, moto S3 on loopback",
        o.writers
    );
    let mut rows = Vec::new();
    let mut restore = None;
    for (name, zero_loss) in [("asynchronous", false), ("zero-loss", true)] {
        let (f, r) = rt.block_on(scenario(&bench, &py, &o, &scratch, name, zero_loss))?;
        rows.push((name, f));
        restore = restore.or(r);
    }
    println!(
        "\n{:<13} {:>7} {:>7} {:>5} {:>13} {:>13} {:>16} {:>16}",
        "mode",
        "RTO s",
        "acked",
        "lost",
        "commit p50 ms",
        "commit p99 ms",
        "replay lag p50",
        "replay lag p99"
    );
    for (name, f) in &rows {
        println!(
            "{name:<13} {:>7.1} {:>7} {:>5} {:>13.2} {:>13.2} {:>13.2} ms {:>13.2} ms",
            f.rto,
            f.acked,
            f.lost,
            percentile(&f.commit_ms, 0.5),
            percentile(&f.commit_ms, 0.99),
            percentile(&f.lag_ms, 0.5),
            percentile(&f.lag_ms, 0.99),
        );
    }
    if let Some(restore) = restore {
        let rto = rows.iter().map(|(_, f)| f.rto).fold(0.0, f64::max);
        println!(
            "\nrestore on replace (one server, the same {} MB catalog, empty home): {restore:.1} s to ready; failover RTO {rto:.1} s ({:.2}× of it; goal ≤ 15 s)",
            o.catalog_mb,
            rto / restore
        );
    }
    let (a, z) = (&rows[0].1, &rows[1].1);
    println!(
        "zero-loss commit latency: p50 {:.2}× and p99 {:.2}× of asynchronous; acknowledged commits lost: {} asynchronous, {} zero-loss (goal 0)",
        percentile(&z.commit_ms, 0.5) / percentile(&a.commit_ms, 0.5),
        percentile(&z.commit_ms, 0.99) / percentile(&a.commit_ms, 0.99),
        a.lost,
        z.lost
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// The DuckDB writers and reader.
struct Python {
    interpreter: PathBuf,
    script: PathBuf,
    extensions: PathBuf,
}

impl Python {
    fn command(&self, pg_port: u16) -> Command {
        let mut cmd = Command::new(&self.interpreter);
        cmd.arg(&self.script)
            .env(
                "DLC_ATTACH",
                format!(
                    "ducklake:postgres:host=127.0.0.1 port={pg_port} user=admin dbname=lakehouse"
                ),
            )
            .env("PGPASSWORD", PASSWORD)
            .env("DLC_EXTENSIONS", &self.extensions);
        cmd
    }
}

fn ha_env(name: &str, scratch: &Path, zero_loss: bool) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("DUCKLAKE_CATALOG_BACKUP__TARGET", Bench::target(name)),
        (
            "DUCKLAKE_CATALOG_DATA_PATH",
            scratch.join(format!("{name}-lake")).display().to_string(),
        ),
        ("DUCKLAKE_CATALOG_HA__MODE", "auto".into()),
        ("DUCKLAKE_CATALOG_HA__ADVERTISE_HOST", "127.0.0.1".into()),
        (
            "DUCKLAKE_CATALOG_HA__REPLICATION_PASSWORD",
            "bench-replication-pw-1".into(),
        ),
        ("DUCKLAKE_CATALOG_HA__SYNCHRONOUS", zero_loss.to_string()),
        ("DUCKLAKE_CATALOG_HA__SYNCHRONOUS_TIMEOUT", "10s".into()),
        ("DUCKLAKE_CATALOG_POOLER__PORT", free_port()?.to_string()),
    ])
}

/// Starts a primary and its standby, measures, kills the primary, measures the takeover. In
/// the asynchronous run, also the single-server restore of the same catalog.
async fn scenario(
    bench: &Bench,
    py: &Python,
    o: &Options,
    scratch: &Path,
    name: &'static str,
    zero_loss: bool,
) -> Result<(Figures, Option<f64>)> {
    let a_name: &'static str = if zero_loss { "zl-a" } else { "as-a" };
    let b_name: &'static str = if zero_loss { "zl-b" } else { "as-b" };
    let env_a = ha_env(name, scratch, zero_loss)?;
    let (mut a, _) = bench.start(a_name, &env_a, true)?;
    let mut env_b = env_a.clone();
    env_b.retain(|(k, _)| *k != "DUCKLAKE_CATALOG_POOLER__PORT");
    env_b.push(("DUCKLAKE_CATALOG_POOLER__PORT", free_port()?.to_string()));
    let (b, b_http) = bench.spawn(b_name, &env_b)?;
    wait_http(
        b_http,
        "/readyz",
        "\"streaming\":true",
        Duration::from_mins(3),
    )?;
    if !zero_loss {
        // A catalog of some size, so the restore below is not a toy: rows shaped like a
        // catalog's, ~330 bytes each, written after the base backup (the standby streams them,
        // a restore replays them).
        let rows = o.catalog_mb * 1024 * 1024 / 330;
        connect(a.pg_port)
            .await?
            .batch_execute(&format!(
                "CREATE TABLE bulk AS SELECT i AS data_file_id, 'lakes/sales/main/t' || (i % 50) || '/ducklake-' || md5(i::text) || '.parquet' AS path, md5((i * 3)::text) || md5((i * 5)::text) AS stats, repeat(chr(65 + (i % 26)), 160) AS pad FROM generate_series(1, {rows}) i"
            ))
            .await?;
    }
    let (commit_ms, lag_ms) = latency_and_lag(a.pg_port, b.pg_port, o.commits).await?;
    // Writers on the primary; then its task dies.
    let log = scratch.join(format!("{name}.acks"));
    let mut writers = (0..o.writers)
        .map(|i| {
            py.command(a.pg_port)
                .args(["write", &i.to_string(), &o.seconds.to_string()])
                .arg(&log)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("spawn a DuckDB writer")
        })
        .collect::<Result<Vec<_>>>()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    kill_task(&mut a);
    let killed = Instant::now();
    let standby = connect(b.pg_port).await?;
    loop {
        if standby
            .query_one("SELECT txid_current()", &[])
            .await
            .is_ok()
        {
            break;
        }
        if killed.elapsed() > Duration::from_mins(2) {
            bail!(
                "the standby did not take over within 120 s; see {}.log",
                b.home.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rto = killed.elapsed().as_secs_f64();
    for w in &mut writers {
        w.wait()?;
    }
    let acked = acknowledged(&log);
    let have = committed(py, b.pg_port)?;
    let lost = acked.iter().filter(|k| !have.contains(*k)).count();
    let mut restore = None;
    if !zero_loss {
        // Today's path in the same run: no standby, a fresh task restores the catalog.
        drop(standby);
        kill_task(&mut { b });
        let mut single = ha_env(name, scratch, false)?;
        single.retain(|(k, _)| !k.starts_with("DUCKLAKE_CATALOG_HA__"));
        let (_c, took) = bench.start("as-c", &single, false)?;
        restore = Some(took.as_secs_f64());
    }
    Ok((
        Figures {
            rto,
            acked: acked.len(),
            lost,
            commit_ms,
            lag_ms,
        },
        restore,
    ))
}

/// `n` sequential commits on the primary (their latency), while a reader on the standby polls
/// for each row (the replay lag it sees).
async fn latency_and_lag(primary: u16, standby: u16, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let p = connect(primary).await?;
    p.batch_execute("CREATE TABLE bench_lag (id bigint PRIMARY KEY)")
        .await?;
    let acked: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; n + 1]));
    let seen = acked.clone();
    let reader = tokio::spawn(async move {
        let s = connect(standby).await?;
        let mut lags = Vec::new();
        let mut next = 1i64;
        let deadline = Instant::now() + Duration::from_mins(5);
        while usize::try_from(next).unwrap_or(usize::MAX) <= n && Instant::now() < deadline {
            let max: Option<i64> = match s.query_one("SELECT max(id) FROM bench_lag", &[]).await {
                Ok(r) => r.get(0),
                Err(_) => None,
            };
            let now = Instant::now();
            while max.is_some_and(|m| m >= next) {
                let at = seen.lock().expect("lock")[usize::try_from(next)?];
                if let Some(at) = at {
                    lags.push(now.saturating_duration_since(at).as_secs_f64() * 1000.0);
                }
                next += 1;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok::<Vec<f64>, anyhow::Error>(lags)
    });
    let mut commit_ms = Vec::with_capacity(n);
    for i in 1..=n {
        let t = Instant::now();
        p.execute("INSERT INTO bench_lag VALUES ($1)", &[&i64::try_from(i)?])
            .await?;
        let done = Instant::now();
        acked.lock().expect("lock")[i] = Some(done);
        commit_ms.push(done.duration_since(t).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lag_ms = reader.await??;
    Ok((commit_ms, lag_ms))
}

/// SIGKILL to the supervisor, PostgreSQL's process group and the pooler: a task that died.
fn kill_task(s: &mut Server) {
    let pid_of = |file: &str| {
        std::fs::read_to_string(s.home.join(file))
            .ok()
            .and_then(|t| t.lines().next().map(str::to_owned))
    };
    let pg = pid_of("pgdata/postmaster.pid");
    let pooler = pid_of("pooler.pid");
    let _ = s.child.kill();
    for target in [pg.map(|p| format!("-{p}")), pooler].into_iter().flatten() {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &target])
            .stderr(std::process::Stdio::null())
            .status();
    }
    let _ = s.child.wait();
}

fn wait_http(port: u16, path: &str, needle: &str, within: Duration) -> Result<()> {
    let began = Instant::now();
    loop {
        if http_get(port, path, Duration::from_secs(2)).is_ok_and(|b| b.contains(needle)) {
            return Ok(());
        }
        if began.elapsed() > within {
            bail!("{path} on port {port} never showed {needle}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (writer, seq) the writers logged as acknowledged.
fn acknowledged(log: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((format!("w{}", w.next()?), w.next()?.parse().ok()?))
        })
        .collect()
}

/// Every (writer table, seq) the lake holds, read through DuckDB.
fn committed(py: &Python, pg_port: u16) -> Result<BTreeSet<(String, u64)>> {
    let out = py.command(pg_port).arg("read").output()?;
    if !out.status.success() {
        bail!(
            "reading the commits failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut have = BTreeSet::new();
    for (t, seqs) in v["tables"].as_object().context("tables")? {
        for s in seqs.as_array().context("seqs")? {
            have.insert((t.clone(), s.as_u64().context("seq")?));
        }
    }
    Ok(have)
}
