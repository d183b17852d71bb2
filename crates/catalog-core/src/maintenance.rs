//! Scheduled DuckLake maintenance: one job per lake at a time, run with the embedded DuckDB and
//! the ducklake extension's own functions, so the catalog stays exactly as DuckLake expects.
//!
//! A job runs, in DuckLake `CHECKPOINT`'s order: `ducklake_flush_inlined_data` →
//! `ducklake_expire_snapshots` (older than `expire_snapshots_older_than`) →
//! `ducklake_merge_adjacent_files` → `ducklake_cleanup_old_files` (files scheduled for deletion
//! longer than `cleanup_old_files_older_than`, and never less than the backup's recovery window,
//! so a point-in-time restore finds every file its catalog names) → the catalog garbage
//! ([`crate::garbage`]). A step that meets a client's concurrent commit (DuckLake's transaction
//! conflict) is retried with backoff. The job holds a PostgreSQL advisory lock in the lake's
//! database, so the server's schedule and `ducklake-catalog maintain` never overlap; it is
//! interrupted (DuckDB's interrupt) on shutdown and after `max_runtime`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LakeConfig, MaintenanceConfig};
use crate::garbage::GarbageReport;
use crate::postgres::{quote_literal, PgError, Socket};
use crate::secret::Secret;

/// The advisory lock (in the lake's database) a maintenance job holds.
const LOCK_KEY: i64 = 0x0044_4c43_4d41_494e; // "DLCMAIN"
/// Attempts of one step that meets a conflicting commit.
const CONFLICT_ATTEMPTS: u32 = 6;

/// How a job ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Ok,
    /// Another job held the lake's maintenance lock; nothing was done.
    Busy,
    /// Stopped by a shutdown.
    Cancelled,
    /// Stopped after `max_runtime`.
    TimedOut,
    Failed,
}

/// What one job did (or, on a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobReport {
    pub lake: String,
    pub dry_run: bool,
    /// UTC, RFC 3339.
    pub started_at: String,
    pub duration_ms: u64,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub rows_flushed: i64,
    /// Rows still inlined in the catalog (counted on a dry run instead of flushing).
    pub inlined_rows_pending: i64,
    pub snapshots_expired: i64,
    pub files_merged: i64,
    pub files_created: i64,
    pub files_deleted: i64,
    pub bytes_deleted: u64,
    pub garbage: GarbageReport,
    /// Steps retried after a conflict with a client's commit.
    pub conflicts_retried: u32,
}

impl JobReport {
    /// The log line's summary.
    pub fn summary(&self) -> String {
        format!(
            "{} rows flushed, {} snapshots expired, {} files merged into {}, {} files deleted ({} bytes), {} catalog garbage rows/tables removed",
            self.rows_flushed,
            self.snapshots_expired,
            self.files_merged,
            self.files_created,
            self.files_deleted,
            self.bytes_deleted,
            self.garbage.total()
        )
    }
}

/// Everything a job needs besides the lake.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub socket: Socket,
    pub config: Config,
    pub admin_password: Secret,
    pub extension_dir: PathBuf,
}

/// The settings that apply to `lake`: its own `[lakes.maintenance]`, else `[maintenance]`.
pub fn settings_for<'a>(config: &'a Config, lake: &'a LakeConfig) -> &'a MaintenanceConfig {
    lake.maintenance.as_ref().unwrap_or(&config.maintenance)
}

/// How long a file must have been scheduled for deletion before cleanup removes it: the
/// setting, and never less than the backups' recovery window.
pub fn cleanup_threshold(config: &Config, settings: &MaintenanceConfig) -> Duration {
    settings
        .cleanup_old_files_older_than
        .0
        .max(config.backup.recovery_window().unwrap_or_default())
}

/// Runs one job on `lake` now.
#[tracing::instrument(skip_all, fields(lake = %lake.name))]
pub async fn run(
    ctx: &JobContext,
    lake: &LakeConfig,
    dry_run: bool,
    cancel: &CancellationToken,
) -> JobReport {
    let began = Instant::now();
    let mut report = JobReport {
        lake: lake.name.clone(),
        dry_run,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ..JobReport::default()
    };
    if let Err(e) = run_steps(ctx, lake, dry_run, cancel, &mut report).await {
        if report.outcome == Outcome::Ok {
            report.outcome = Outcome::Failed;
        }
        report.error = Some(crate::lake::redact(&e, &ctx.admin_password));
    }
    report.duration_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

async fn run_steps(
    ctx: &JobContext,
    lake: &LakeConfig,
    dry_run: bool,
    cancel: &CancellationToken,
    report: &mut JobReport,
) -> Result<(), String> {
    let settings = settings_for(&ctx.config, lake).clone();
    let mut client = ctx
        .socket
        .connect_superuser(&lake.name, "ducklake-catalog maintenance")
        .await
        .map_err(|e| PgError::sql("connect to the lake")(e).to_string())?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| PgError::sql("take the maintenance lock")(e).to_string())?
        .get(0);
    if !locked {
        report.outcome = Outcome::Busy;
        return Ok(());
    }
    if dry_run {
        report.inlined_rows_pending = inlined_rows(&client).await?;
    }
    let plan = Plan {
        conninfo: format!(
            "ducklake:postgres:{}",
            ctx.socket.conninfo(
                &ctx.config.postgres.admin_user,
                Some(ctx.admin_password.expose()),
                &lake.name
            )
        ),
        dry_run,
        flush: settings.flush_inlined_data,
        expire_secs: settings.expire_snapshots_older_than.map(|d| d.0.as_secs()),
        merge: settings.merge_adjacent_files,
        cleanup_secs: cleanup_threshold(&ctx.config, &settings).as_secs(),
    };
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let stopped = Arc::new(AtomicBool::new(false));
    let ext = ctx.extension_dir.clone();
    let stop_flag = stopped.clone();
    let runtime = tokio::runtime::Handle::current();
    let data_path = lake.data_path.clone();
    let s3 = ctx.config.s3_settings();
    let mut job = tokio::task::spawn_blocking(move || {
        plan.execute(&ext, &handle_tx, &stop_flag, |paths| {
            runtime.block_on(storage::object_sizes(&data_path, &s3, paths))
        })
    });
    let deadline = tokio::time::sleep(settings.max_runtime.0);
    tokio::pin!(deadline);
    let joined = tokio::select! {
        r = &mut job => r,
        () = cancel.cancelled() => {
            report.outcome = Outcome::Cancelled;
            interrupt(&handle_rx, &stopped);
            job.await
        }
        () = &mut deadline => {
            report.outcome = Outcome::TimedOut;
            interrupt(&handle_rx, &stopped);
            job.await
        }
    };
    let done = joined.map_err(|e| format!("the maintenance task failed: {e}"))?;
    done.apply(report);
    if let Some(e) = done.error {
        return Err(e);
    }
    if report.outcome != Outcome::Ok {
        return Err(match report.outcome {
            Outcome::Cancelled => "stopped by the shutdown".into(),
            _ => format!(
                "stopped after max_runtime {}",
                humantime::format_duration(settings.max_runtime.0)
            ),
        });
    }
    if settings.catalog_garbage {
        report.garbage = crate::garbage::collect(&mut client, dry_run)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The server's schedule: every lake's job runs `interval` after the previous one ended (the
/// first `interval` after start), one job at a time, while `stop` is not cancelled. Each job's
/// result is logged and published in the status (`/readyz` → `maintenance`).
pub async fn schedule(
    ctx: JobContext,
    password: tokio::sync::watch::Receiver<Secret>,
    status: crate::status::StatusSender,
    stop: CancellationToken,
) {
    let mut due: std::collections::HashMap<String, Instant> = std::collections::HashMap::new();
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
        if client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            client = ctx
                .socket
                .connect_superuser("postgres", "ducklake-catalog maintenance")
                .await
                .ok();
        }
        let Some(c) = &client else { continue };
        let Ok(lakes) = crate::lakes::serving_now(c, &ctx.config).await else {
            continue;
        };
        for lake in lakes {
            let settings = settings_for(&ctx.config, &lake).clone();
            if !settings.enabled {
                due.remove(&lake.name);
                continue;
            }
            let next = *due
                .entry(lake.name.clone())
                .or_insert_with(|| Instant::now() + settings.interval.0);
            let ready = status
                .borrow()
                .lakes
                .get(&lake.name)
                .is_some_and(|l| l.state == crate::status::LakeState::Ready);
            publish(&status, &lake.name, |m| m.next_run = Some(at(next)));
            if !ready || Instant::now() < next {
                continue;
            }
            publish(&status, &lake.name, |m| m.running = true);
            let job = JobContext {
                admin_password: password.borrow().clone(),
                ..ctx.clone()
            };
            let report = run(&job, &lake, false, &stop).await;
            log(&report);
            let next = Instant::now() + settings.interval.0;
            due.insert(lake.name.clone(), next);
            publish(&status, &lake.name, |m| {
                m.running = false;
                m.next_run = Some(at(next));
                m.last = Some(report);
            });
            if stop.is_cancelled() {
                return;
            }
        }
    }
}

/// One log line per job: what it did, or why it did not.
pub fn log(report: &JobReport) {
    match report.outcome {
        Outcome::Ok => tracing::info!(
            lake = %report.lake,
            duration_ms = report.duration_ms,
            rows_flushed = report.rows_flushed,
            snapshots_expired = report.snapshots_expired,
            files_merged = report.files_merged,
            files_deleted = report.files_deleted,
            bytes_deleted = report.bytes_deleted,
            garbage = report.garbage.total(),
            conflicts_retried = report.conflicts_retried,
            "maintenance: {}",
            report.summary()
        ),
        Outcome::Busy => {
            tracing::info!(lake = %report.lake, "maintenance skipped: another job runs on this lake");
        }
        _ => tracing::warn!(
            lake = %report.lake,
            outcome = ?report.outcome,
            error = report.error.as_deref().unwrap_or_default(),
            "maintenance did not finish: {}",
            report.summary()
        ),
    }
}

fn at(instant: Instant) -> String {
    let ahead = instant.saturating_duration_since(Instant::now());
    (chrono::Utc::now() + chrono::Duration::from_std(ahead).unwrap_or_default())
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn publish(
    status: &crate::status::StatusSender,
    lake: &str,
    change: impl FnOnce(&mut crate::status::MaintenanceStatus),
) {
    status.send_modify(|s| change(s.maintenance.entry(lake.to_owned()).or_default()));
}

fn interrupt(
    handles: &std::sync::mpsc::Receiver<Arc<duckdb::InterruptHandle>>,
    stopped: &AtomicBool,
) {
    stopped.store(true, Ordering::SeqCst);
    if let Ok(h) = handles.recv_timeout(Duration::from_secs(5)) {
        h.interrupt();
    }
}

async fn inlined_rows(client: &tokio_postgres::Client) -> Result<i64, String> {
    let names: Vec<String> = client
        .query(
            "SELECT table_name::text FROM public.ducklake_inlined_data_tables
             WHERE to_regclass('public.' || quote_ident(table_name)) IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| PgError::sql("list the inlined-data tables")(e).to_string())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut total = 0;
    for name in names {
        let n: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM public.{} WHERE end_snapshot IS NULL",
                    crate::postgres::quote_ident(&name)
                ),
                &[],
            )
            .await
            .map_err(|e| PgError::sql(format!("count {name}"))(e).to_string())?
            .get(0);
        total += n;
    }
    Ok(total)
}

/// The DuckDB side of a job, run on a blocking thread.
struct Plan {
    conninfo: String,
    dry_run: bool,
    flush: bool,
    expire_secs: Option<u64>,
    merge: bool,
    cleanup_secs: u64,
}

/// What the DuckDB side did.
#[derive(Default)]
struct Done {
    rows_flushed: i64,
    snapshots_expired: i64,
    files_merged: i64,
    files_created: i64,
    files_deleted: i64,
    bytes_deleted: u64,
    retries: u32,
    error: Option<String>,
}

impl Done {
    fn apply(&self, r: &mut JobReport) {
        r.rows_flushed = self.rows_flushed;
        r.snapshots_expired = self.snapshots_expired;
        r.files_merged = self.files_merged;
        r.files_created = self.files_created;
        r.files_deleted = self.files_deleted;
        r.bytes_deleted = self.bytes_deleted;
        r.conflicts_retried = self.retries;
    }
}

impl Plan {
    fn execute(
        &self,
        extension_dir: &std::path::Path,
        handle: &std::sync::mpsc::Sender<Arc<duckdb::InterruptHandle>>,
        stopped: &AtomicBool,
        sizes: impl Fn(&[String]) -> Result<u64, storage::StorageError>,
    ) -> Done {
        let mut done = Done::default();
        if let Err(e) = self.steps(extension_dir, handle, stopped, &sizes, &mut done) {
            done.error = Some(e);
        }
        done
    }

    fn steps(
        &self,
        extension_dir: &std::path::Path,
        handle: &std::sync::mpsc::Sender<Arc<duckdb::InterruptHandle>>,
        stopped: &AtomicBool,
        sizes: &dyn Fn(&[String]) -> Result<u64, storage::StorageError>,
        done: &mut Done,
    ) -> Result<(), String> {
        let conn = crate::lake::embedded_duckdb(extension_dir).map_err(|e| e.to_string())?;
        let _ = handle.send(conn.interrupt_handle());
        conn.execute_batch(&format!("ATTACH {} AS lake", quote_literal(&self.conninfo)))
            .map_err(|e| format!("attach the lake: {e}"))?;
        let dry = self.dry_run;
        if self.flush && !dry {
            done.rows_flushed = retrying(
                &conn,
                stopped,
                &mut done.retries,
                "flush inlined data",
                |c| {
                    c.query_row(
                    "SELECT coalesce(sum(rows_flushed), 0)::BIGINT FROM ducklake_flush_inlined_data('lake')",
                    [],
                    |r| r.get(0),
                )
                },
            )?;
        }
        if let Some(secs) = self.expire_secs {
            done.snapshots_expired = retrying(
                &conn,
                stopped,
                &mut done.retries,
                "expire snapshots",
                |c| {
                    c.query_row(
                    &format!("SELECT count(*)::BIGINT FROM ducklake_expire_snapshots('lake', older_than => {}, dry_run => {dry})", cutoff(secs)),
                    [],
                    |r| r.get(0),
                )
                },
            )?;
        }
        if self.merge && !dry {
            let (processed, created): (i64, i64) = retrying(
                &conn,
                stopped,
                &mut done.retries,
                "merge adjacent files",
                |c| {
                    c.query_row(
                    "SELECT coalesce(sum(files_processed), 0)::BIGINT, coalesce(sum(files_created), 0)::BIGINT FROM ducklake_merge_adjacent_files('lake')",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                },
            )?;
            done.files_merged = processed;
            done.files_created = created;
        }
        let secs = self.cleanup_secs;
        let doomed: Vec<String> = retrying(
            &conn,
            stopped,
            &mut done.retries,
            "list old files",
            |c| {
                let mut stmt = c.prepare(&format!(
                "SELECT path FROM ducklake_cleanup_old_files('lake', older_than => {}, dry_run => true)",
                cutoff(secs)
            ))?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                rows.collect()
            },
        )?;
        done.bytes_deleted = sizes(&doomed).map_err(|e| e.to_string())?;
        done.files_deleted = i64::try_from(doomed.len()).unwrap_or(i64::MAX);
        if !dry && !doomed.is_empty() {
            done.files_deleted = retrying(
                &conn,
                stopped,
                &mut done.retries,
                "clean up old files",
                |c| {
                    c.query_row(
                    &format!("SELECT count(*)::BIGINT FROM ducklake_cleanup_old_files('lake', older_than => {})", cutoff(secs)),
                    [],
                    |r| r.get(0),
                )
                },
            )?;
        }
        Ok(())
    }
}

/// `older_than` for `secs` ago, as a TIMESTAMPTZ literal (computed here: the embedded DuckDB
/// has no ICU, so it cannot subtract an interval from `now()`).
fn cutoff(secs: u64) -> String {
    let at = chrono::Utc::now()
        - chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000));
    format!("TIMESTAMPTZ '{}'", at.format("%Y-%m-%d %H:%M:%S%.6f+00"))
}

/// Runs `step`, retrying with backoff (0.5 s doubling) while it fails on a conflicting commit.
fn retrying<T>(
    conn: &duckdb::Connection,
    stopped: &AtomicBool,
    retries: &mut u32,
    what: &str,
    step: impl Fn(&duckdb::Connection) -> Result<T, duckdb::Error>,
) -> Result<T, String> {
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=CONFLICT_ATTEMPTS {
        if stopped.load(Ordering::SeqCst) {
            return Err(format!("{what}: interrupted"));
        }
        match step(conn) {
            Ok(v) => return Ok(v),
            Err(e) if is_conflict(&e.to_string()) && attempt < CONFLICT_ATTEMPTS => {
                tracing::info!(step = what, attempt, error = %crate::one_line(&e.to_string()), "a client committed at the same time; retrying");
                *retries += 1;
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(e) => return Err(format!("{what}: {}", crate::one_line(&e.to_string()))),
        }
    }
    unreachable!("the last attempt returns")
}

/// DuckLake's words for a commit that lost against a concurrent one.
fn is_conflict(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("conflict") || m.contains("could not serialize") || m.contains("deadlock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_recognised_and_other_errors_are_not() {
        assert!(is_conflict(
            "TransactionContext Error: Failed to commit DuckLake transaction: Transaction conflict - attempting to insert into table with index \"1\""
        ));
        assert!(is_conflict(
            "ERROR: could not serialize access due to concurrent update"
        ));
        assert!(!is_conflict(
            "IO Error: Cannot open file \"x.parquet\": No such file"
        ));
    }

    #[test]
    fn cleanup_never_undercuts_the_recovery_window() {
        let mut config = Config::default();
        let settings = MaintenanceConfig {
            cleanup_old_files_older_than: crate::config::HumanDuration(Duration::from_hours(1)),
            ..MaintenanceConfig::default()
        };
        assert_eq!(
            cleanup_threshold(&config, &settings),
            Duration::from_hours(1)
        );
        config.backup.target =
            Some(storage::DataPath::parse("s3://acme-backups/catalog/").unwrap());
        assert_eq!(
            cleanup_threshold(&config, &settings),
            config.backup.recovery_window().unwrap()
        );
    }
}
