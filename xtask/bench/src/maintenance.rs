//! `cargo xtask bench maintenance [--objects N] [--orphans N] [--runs N] [--dropped N]
//! [--commits N]`: side by side in one run, on a lake of the product's server with its data on
//! a local folder (object_store's local backend):
//!
//! - the orphan scan: our `ducklake-catalog orphans` (the whole command: process start,
//!   listing, catalog read) against DuckDB's own
//!   `ducklake_delete_orphaned_files(dry_run => true, cleanup_all => true)` (only the call,
//!   after ATTACH), on a lake with `--objects` referenced Parquet objects (one real file written
//!   by DuckLake, the rest its catalog rows cloned, each object a hard link to the real file)
//!   and `--orphans` planted orphans; medians of `--runs`;
//! - commit latency of small inserts (p50 of `--commits`) on the clean lake, after
//!   `--dropped` wide tables were created, written and dropped by DuckLake (their stats rows
//!   then cloned to the garbage volume one production catalog reported), and after
//!   `ducklake-catalog maintain` removed the garbage.

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::catalog::{grow, p50, start_tuned, stop, Catalog, DriverEnv, DRIVER, LAKE, PASSWORD};
use crate::support::{checked_output, BenchArgs};

struct Options {
    objects: i64,
    orphans: usize,
    runs: usize,
    dropped: usize,
    garbage_rows: i64,
    commits: usize,
}

pub fn maintenance(args: &[String], venv: &Path, extensions: &Path, bin: &Path) -> Result<()> {
    let a = BenchArgs::parse(
        args,
        &[
            "--objects",
            "--orphans",
            "--runs",
            "--dropped",
            "--garbage-rows",
            "--commits",
        ],
        &[],
    )?;
    let o = Options {
        objects: a.value("--objects", 100_000)?,
        orphans: a.value("--orphans", 1_000)?,
        runs: a.value("--runs", 3)?,
        dropped: a.value("--dropped", 40)?,
        garbage_rows: a.value("--garbage-rows", 1_000_000)?,
        commits: a.value("--commits", 30)?,
    };
    if o.runs == 0 || o.commits == 0 || o.objects < 1 {
        bail!("--runs, --commits and --objects must be at least 1");
    }
    let scratch = std::env::temp_dir().join(format!("dlc-bench-maint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let driver = scratch.join("driver.py");
    std::fs::write(&driver, DRIVER)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run(&o, &scratch, venv, &driver, extensions, bin));
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// The product's CLI beside the benchmark server (merging off: the clones are not real files).
fn cli(c: &Catalog, scratch: &Path, bin: &Path, extensions: &Path, args: &[&str]) -> Result<Value> {
    let out = checked_output(
        Command::new(bin)
            .args(args)
            .args(["--format", "json"])
            .env("DUCKLAKE_CATALOG_HOME", scratch.join("tuned"))
            .env("DUCKLAKE_CATALOG_POSTGRES__PORT", c.pg_port.to_string())
            .env("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", PASSWORD)
            .env("DUCKLAKE_CATALOG_DUCKDB__EXTENSION_DIRECTORY", extensions)
            .env("DUCKLAKE_CATALOG_LAKE_NAME", LAKE)
            .env("DUCKLAKE_CATALOG_DATA_PATH", &c.data_path)
            .env(
                "DUCKLAKE_CATALOG_MAINTENANCE__MERGE_ADJACENT_FILES",
                "false",
            )
            .env("DUCKLAKE_CATALOG_LOG__LEVEL", "warn"),
        &format!("ducklake-catalog {}", args.join(" ")),
    )?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn run(
    o: &Options,
    scratch: &Path,
    venv: &Path,
    driver: &Path,
    extensions: &Path,
    bin: &Path,
) -> Result<()> {
    let began = Instant::now();
    let mut c = start_tuned(
        scratch,
        bin,
        extensions,
        &[("DUCKLAKE_CATALOG_MAINTENANCE__ENABLED", "false")],
    )
    .await?;
    let env = DriverEnv {
        python: venv.join("bin/python"),
        driver: driver.to_path_buf(),
        extensions: extensions.to_path_buf(),
        conninfo: c.conninfo.clone(),
        data_path: c.data_path.clone(),
    };
    env.run_once(&["setup", "1", "10", "1000"])?;
    let t = Instant::now();
    grow(&c, o.objects).await?;
    let linked = link_objects(&c).await?;
    plant_orphans(&c, o.orphans)?;
    eprintln!(
        "lake of {linked} referenced objects and {} orphans built in {:.1} s",
        o.orphans,
        t.elapsed().as_secs_f64()
    );

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_count, mut their_count) = (0, 0);
    for _ in 0..o.runs {
        let t = Instant::now();
        let report = cli(&c, scratch, bin, extensions, &["orphans", "--lake", LAKE])?;
        ours.push(t.elapsed().as_secs_f64() * 1000.0);
        our_count = report["orphans"].as_array().map_or(0, Vec::len);
        let duck = env.run_once(&["orphans"])?;
        theirs.push(duck["ms"].as_f64().unwrap_or_default());
        their_count = duck["count"].as_i64().unwrap_or_default();
    }
    let (ours, theirs) = (p50(&mut ours), p50(&mut theirs));
    eprintln!("orphan scan: ours {ours:.0} ms ({our_count} found), DuckDB's {theirs:.0} ms ({their_count} found)");

    let clean = commit_p50(&env, "w_clean", o.commits)?;
    env.run_once(&["pollute", &o.dropped.to_string(), "50"])?;
    multiply_garbage(&c, o.garbage_rows).await?;
    let garbage_rows = garbage_count(&c).await?;
    let polluted = commit_p50(&env, "w_polluted", o.commits)?;
    let t = Instant::now();
    let job = cli(&c, scratch, bin, extensions, &["maintain", "--lake", LAKE])?;
    let cleanup_s = t.elapsed().as_secs_f64();
    let after = commit_p50(&env, "w_after", o.commits)?;

    println!(
        "maintenance benchmark ({} runs, medians; data on a local folder through object_store)",
        o.runs
    );
    println!(
        "  orphan scan over {} objects ({linked} referenced, {} planted orphans):",
        linked + o.orphans,
        o.orphans
    );
    println!(
        "    ours (whole `orphans` command) {ours:.0} ms, found {our_count}; DuckDB's ducklake_delete_orphaned_files(dry_run) {theirs:.0} ms, found {their_count}: ours is {:.1}× faster",
        theirs / ours
    );
    println!(
        "  commit latency p50 of small inserts ({} commits each): clean {clean:.1} ms; with {garbage_rows} garbage stats rows of {} dropped tables {polluted:.1} ms ({:.1}× clean); after `maintain` ({:.1} s, removed {} rows/tables) {after:.1} ms ({:.2}× clean)",
        o.commits,
        o.dropped,
        polluted / clean,
        cleanup_s,
        job["garbage"]["table_column_stats_rows"].as_u64().unwrap_or_default()
            + job["garbage"]["table_stats_rows"].as_u64().unwrap_or_default()
            + job["garbage"]["inlined_tables"].as_u64().unwrap_or_default(),
        after / clean
    );
    let goal = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "  goals: orphan scan ≥2× faster: {:.1}× {}; commit latency back to the clean figure after cleanup (within 1.25×): {:.2}× {}",
        theirs / ours,
        goal(theirs / ours >= 2.0),
        after / clean,
        goal(after / clean <= 1.25)
    );
    println!(
        "  (whole benchmark: {:.1} min, building included)",
        began.elapsed().as_secs_f64() / 60.0
    );
    stop(&mut c.server);
    Ok(())
}

/// Makes every cloned data file an object: a hard link to the table's real file.
async fn link_objects(c: &Catalog) -> Result<usize> {
    let rows = c
        .lake_db
        .query(
            "SELECT d.path, d.path_is_relative, t.path, s.path,
                    (SELECT r.path FROM ducklake_data_file r WHERE r.table_id = d.table_id AND r.path NOT LIKE 'synthetic/%' ORDER BY r.data_file_id LIMIT 1)
             FROM ducklake_data_file d JOIN ducklake_table t USING (table_id) JOIN ducklake_schema s ON s.schema_id = t.schema_id
             WHERE t.end_snapshot IS NULL",
            &[],
        )
        .await?;
    let mut n = 0;
    // A file system caps the links to one file (ext4: 65,000); then copy once and link to that.
    let mut source: Option<std::path::PathBuf> = None;
    for r in &rows {
        let (file, table, schema, real): (String, String, String, String) =
            (r.get(0), r.get(2), r.get(3), r.get(4));
        let dir = c.data_path.join(&schema).join(&table);
        let target = dir.join(&file);
        if file != real {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let from = source.clone().unwrap_or_else(|| dir.join(&real));
            match std::fs::hard_link(&from, &target) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(31) => {
                    std::fs::copy(&from, &target)
                        .with_context(|| format!("copy {}", target.display()))?;
                    source = Some(target.clone());
                }
                Err(e) => return Err(e).with_context(|| format!("link {}", target.display())),
            }
        }
        n += 1;
    }
    Ok(n)
}

/// Leftovers of crashed writers: unreferenced Parquet-named objects, two days old.
fn plant_orphans(c: &Catalog, n: usize) -> Result<()> {
    let dir = c.data_path.join("main/t0");
    let real = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .context("the real file")?;
    for i in 0..n {
        let p = dir.join(format!("ducklake-orphan-{i:06}.parquet"));
        std::fs::copy(&real, &p)?;
        std::fs::File::options()
            .write(true)
            .open(&p)?
            .set_modified(SystemTime::now() - Duration::from_hours(48))?;
    }
    Ok(())
}

fn commit_p50(env: &DriverEnv, table: &str, commits: usize) -> Result<f64> {
    let v = env.run_once(&["write", table, &commits.to_string()])?;
    let mut l: Vec<f64> = v["latencies_ms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    if l.is_empty() {
        bail!("the writer reported no commits");
    }
    Ok(p50(&mut l))
}

/// Clones the dropped tables' stats rows under table ids no live table has, until the garbage
/// reaches `rows`: the scale reported from DuckLake users' catalogs. Only the stats are cloned,
/// not the tables' history rows (`ducklake_table`, `ducklake_column`), which are not garbage:
/// only snapshot expiry may remove those.
async fn multiply_garbage(c: &Catalog, rows: i64) -> Result<()> {
    let db = &c.lake_db;
    let have = garbage_count(c).await?;
    if have == 0 || have >= rows {
        return Ok(());
    }
    let copies = (rows - have) / have;
    db.batch_execute(&format!(
        "BEGIN;
         CREATE TEMP TABLE dropped AS
             SELECT DISTINCT s.table_id FROM ducklake_table_column_stats s
             WHERE NOT EXISTS (SELECT 1 FROM ducklake_table t WHERE t.table_id = s.table_id AND t.end_snapshot IS NULL);
         CREATE TEMP TABLE ids AS SELECT (SELECT max(table_id) FROM ducklake_table) AS base;
         INSERT INTO ducklake_table_stats
             SELECT ids.base + g * 100000 + s.table_id, s.record_count, s.next_row_id, s.file_size_bytes
             FROM ducklake_table_stats s JOIN dropped USING (table_id), ids, generate_series(1, {copies}) g;
         INSERT INTO ducklake_table_column_stats
             SELECT ids.base + g * 100000 + s.table_id, s.column_id, s.contains_null, s.contains_nan, s.min_value, s.max_value, s.extra_stats
             FROM ducklake_table_column_stats s JOIN dropped USING (table_id), ids, generate_series(1, {copies}) g;
         COMMIT;
         ANALYZE;"
    ))
    .await
    .context("multiply the dropped tables' stats")?;
    Ok(())
}

async fn garbage_count(c: &Catalog) -> Result<i64> {
    Ok(c.lake_db
        .query_one(
            "SELECT count(*) FROM ducklake_table_column_stats s
             WHERE NOT EXISTS (SELECT 1 FROM ducklake_table t WHERE t.table_id = s.table_id AND t.end_snapshot IS NULL)",
            &[],
        )
        .await?
        .get(0))
}
