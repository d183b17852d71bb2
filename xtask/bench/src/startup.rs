//! `cargo xtask bench startup [--runs N] [--debug]`: how long `serve` takes to become ready on a
//! fresh home (initdb + lake creation) and on a warm restart, and how much memory the idle
//! supervisor holds. Runs are measured side by side in one invocation and reported as medians
//! and the warm/cold ratio; absolute seconds depend on the machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::support::{free_port, readyz, BenchArgs};

pub fn startup(
    args: &[String],
    extensions: &Path,
    build: impl FnOnce(bool) -> Result<PathBuf>,
) -> Result<()> {
    let a = BenchArgs::parse(args, &["--runs"], &["--debug"])?;
    let runs: usize = a.value("--runs", 3)?;
    let release = !a.flag("--debug");
    let bin = build(release)?;
    let (mut cold, mut warm, mut rss_sup, mut rss_pg) = (vec![], vec![], vec![], vec![]);
    let mut rss_sup_warm = vec![];
    for i in 0..runs {
        let home = scratch_home(i)?;
        let (ready, mut child, http) = start(&bin, &home, extensions)?;
        cold.push(ready);
        std::thread::sleep(Duration::from_secs(3));
        rss_sup.push(rss_kib(child.id()));
        rss_pg.push(postgres_rss_kib(&home));
        stop(&mut child)?;
        let (ready, mut child, _) = start(&bin, &home, extensions)?;
        warm.push(ready);
        std::thread::sleep(Duration::from_secs(3));
        rss_sup_warm.push(rss_kib(child.id()));
        stop(&mut child)?;
        let _ = http;
        let _ = std::fs::remove_dir_all(&home);
        eprintln!(
            "run {}: cold {:.2} s, warm {:.2} s",
            i + 1,
            cold[i].as_secs_f64(),
            warm[i].as_secs_f64()
        );
    }
    let (c, w) = (median(&mut cold), median(&mut warm));
    println!(
        "startup benchmark ({} binary, {runs} runs, medians)",
        if release { "release" } else { "debug" }
    );
    println!(
        "  cold start to ready (initdb + lake): {:.2} s",
        c.as_secs_f64()
    );
    println!(
        "  warm restart to ready:               {:.2} s",
        w.as_secs_f64()
    );
    println!(
        "  warm / cold:                         {:.2}",
        w.as_secs_f64() / c.as_secs_f64()
    );
    println!(
        "  supervisor RSS, idle after a cold start (DuckDB loaded to create the lake): {} MiB",
        mib(median_u64(&mut rss_sup))
    );
    println!(
        "  supervisor RSS, idle after a warm restart: {} MiB",
        mib(median_u64(&mut rss_sup_warm))
    );
    println!(
        "  postgres RSS (all processes), idle:  {} MiB",
        mib(median_u64(&mut rss_pg))
    );
    Ok(())
}

fn scratch_home(i: usize) -> Result<PathBuf> {
    let home = std::env::temp_dir().join(format!("dlc-bench-{}-{i}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).with_context(|| format!("create {}", home.display()))?;
    Ok(home)
}

/// Spawns `serve` and returns the time until `/readyz` answered 200.
fn start(bin: &Path, home: &Path, extensions: &Path) -> Result<(Duration, Child, u16)> {
    let (pg, http) = (free_port()?, free_port()?);
    let began = Instant::now();
    let mut child = Command::new(bin)
        .arg("serve")
        .env("DUCKLAKE_CATALOG_HOME", home)
        .env("DUCKLAKE_CATALOG_POSTGRES__PORT", pg.to_string())
        .env("DUCKLAKE_CATALOG_HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("DUCKLAKE_CATALOG_DUCKDB__EXTENSION_DIRECTORY", extensions)
        .env("DUCKLAKE_CATALOG_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("spawn serve")?;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("serve exited during the benchmark: {status}");
        }
        if readyz(http).is_some() {
            return Ok((began.elapsed(), child, http));
        }
        if began.elapsed() > Duration::from_mins(3) {
            let _ = child.kill();
            bail!("serve was not ready within 180 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(child: &mut Child) -> Result<()> {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()?;
    let status = child.wait()?;
    if !status.success() {
        bail!("serve exited with {status} on SIGTERM");
    }
    Ok(())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn postgres_rss_kib(home: &Path) -> u64 {
    let needle = home.to_string_lossy().into_owned();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        // Every PostgreSQL process runs with PGDATA (inside the home) as its working directory.
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|p| p.starts_with(&needle))
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(rss_kib)
        .sum()
}

/// KiB as MiB with one decimal.
fn mib(kib: u64) -> String {
    format!("{}.{}", kib / 1024, kib % 1024 * 10 / 1024)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn median_u64(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}
