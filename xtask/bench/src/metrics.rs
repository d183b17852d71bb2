//! `cargo xtask bench metrics [--lakes N] [--writers N] [--commits N] [--rounds N]
//! [--scrapes N]`: what `/metrics` costs, measured in one run.
//!
//! One `serve` (defaults, `metrics.refresh` 15 s) with `--lakes` lakes (default 50). Then:
//! - **Commit throughput with a 1 s scrape against none**: `--writers` DuckDB writer processes
//!   make `--commits` single-row commits each, through the pooler with the settings `connect`
//!   hands out, while a scraper GETs `/metrics` every second, and again without it; rounds
//!   alternate, the ratio of the medians is reported (goal ≥ 0.97×).
//! - **Scrape time at that many lakes**: `--scrapes` sequential GETs of `/metrics`, p50/p99.

// Benchmark arithmetic on counts and seconds: f64 precision is far beyond what is measured.
#![allow(clippy::cast_precision_loss)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::clients::{percentile, Bench, Options, Server};
use crate::support::{checked_output, http_get, BenchArgs};

struct MetricsOptions {
    lakes: usize,
    writers: usize,
    commits: usize,
    rounds: usize,
    scrapes: usize,
}

pub fn metrics(args: &[String], venv: &Path, extensions: &Path, bin: &Path) -> Result<()> {
    let a = BenchArgs::parse(
        args,
        &["--lakes", "--writers", "--commits", "--rounds", "--scrapes"],
        &[],
    )?;
    let o = MetricsOptions {
        lakes: a.value("--lakes", 50)?,
        writers: a.value("--writers", 4)?,
        // Runs of several seconds each, so a 1 s scraper hits every one of them many times.
        commits: a.value("--commits", 150)?,
        rounds: a.value("--rounds", 3)?,
        scrapes: a.value("--scrapes", 200)?,
    };
    let scratch = std::env::temp_dir().join(format!("dlc-bench-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let script = scratch.join("clients.py");
    std::fs::write(&script, crate::clients::SCRIPT)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server = Server::start(bin, extensions, &scratch.join("home"), 200)?;
    let bench = Bench {
        server,
        python: venv.join("bin/python"),
        script,
        extensions: extensions.to_path_buf(),
    };
    let result = run(&bench, &o, &scratch, &rt);
    drop(bench);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn run(
    bench: &Bench,
    o: &MetricsOptions,
    scratch: &Path,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    println!(
        "metrics benchmark: {} lakes, metrics.refresh 15 s (the default)",
        o.lakes
    );
    make_lakes(bench, o, scratch)?;
    throughput(bench, o, rt)?;
    scrape_times(bench.server.http_port, o)
}

/// The lakes (the default one and `o.lakes - 1` made by command), the writers' tables, and
/// facts that cover every lake.
fn make_lakes(bench: &Bench, o: &MetricsOptions, scratch: &Path) -> Result<()> {
    let s = &bench.server;
    let began = Instant::now();
    // The default lake is one; the others are made by command while the server runs.
    for i in 1..o.lakes {
        let path = scratch.join(format!("lakes/lake{i}"));
        std::fs::create_dir_all(&path)?;
        checked_output(
            s.command().args([
                "lake",
                "create",
                &format!("lake{i}"),
                "--data-path",
                path.to_str().context("a UTF-8 path")?,
            ]),
            "lake create",
        )?;
    }
    println!(
        "created {} lakes in {:.0} s",
        o.lakes - 1,
        began.elapsed().as_secs_f64()
    );
    bench.setup()?;
    // Wait until the facts cover every lake, so scrapes render all of them.
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        let (_, body) = get(s.http_port, "/metrics")?;
        let lakes = body
            .lines()
            .filter(|l| l.starts_with("ducklake_tables{"))
            .count();
        if lakes >= o.lakes {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "/metrics shows {lakes} of {} lakes after 2 minutes",
                o.lakes
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}

/// Commits/s with a scraper hitting `/metrics` every second and without, alternating.
fn throughput(bench: &Bench, o: &MetricsOptions, rt: &tokio::runtime::Runtime) -> Result<()> {
    let s = &bench.server;
    let settings = s.handed_out_settings()?;
    let writers = Options {
        connections: 0,
        duckdb: 0,
        writers: o.writers,
        commits: o.commits,
        attach_runs: 0,
        max_connections: 200,
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..o.rounds {
        for scraping in [round % 2 == 0, round % 2 != 0] {
            let stop = Arc::new(AtomicBool::new(false));
            let scraper = scraping.then(|| {
                let (stop, port) = (stop.clone(), s.http_port);
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        if get(port, "/metrics").is_ok() {
                            n += 1;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    n
                })
            });
            let f = bench.writers(&writers, s.pooler_port, &settings, 8, rt)?;
            stop.store(true, Ordering::SeqCst);
            let scrape_count = scraper.map(|t| t.join().unwrap_or(0));
            if f.failed > 0 {
                bail!(
                    "{} commits failed: {}",
                    f.failed,
                    f.first_error.unwrap_or_default()
                );
            }
            println!(
                "round {round}: {} {:.1} commits/s, p50 {:.0} ms, p99 {:.0} ms",
                match scrape_count {
                    Some(n) => format!("with a 1 s scrape ({n} scrapes):"),
                    None => "with no scrape:".to_owned(),
                },
                f.per_sec,
                f.p50_ms,
                f.p99_ms
            );
            if scraping {
                with.push(f.per_sec);
            } else {
                without.push(f.per_sec);
            }
        }
    }
    let ratio = percentile(&with, 50.0) / percentile(&without, 50.0);
    println!(
        "commit throughput, 1 s scrape / none: {ratio:.3}× (medians {:.1} / {:.1} commits/s; goal ≥ 0.97×)",
        percentile(&with, 50.0),
        percentile(&without, 50.0)
    );
    Ok(())
}

/// `o.scrapes` sequential scrapes: p50 and p99.
fn scrape_times(port: u16, o: &MetricsOptions) -> Result<()> {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..o.scrapes {
        let (took, body) = get(port, "/metrics")?;
        times.push(took.as_secs_f64() * 1000.0);
        size = body.len();
    }
    println!(
        "scrape of {} lakes ({} kB, {} samples): p50 {:.2} ms, p99 {:.2} ms over {} scrapes",
        o.lakes,
        size / 1000,
        get(port, "/metrics")?
            .1
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count(),
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        o.scrapes
    );
    Ok(())
}

/// `GET path` on the HTTP listener: the time to the whole answer, and its body.
fn get(port: u16, path: &str) -> Result<(Duration, String)> {
    let began = Instant::now();
    let text = http_get(port, path, Duration::from_secs(10))?;
    let took = began.elapsed();
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((took, body))
}
