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
//! database, so the server's schedule and `ducklake-catalog maintain` never overlap. DuckDB's
//! steps run in a worker process ([`crate::duckdb_worker`]) as the lake's server role, so a
//! crash fails the job, not the server; the worker is killed on shutdown and after
//! `max_runtime`. The job refuses to start while `ducklake_inlined_data_tables` names anything
//! DuckLake would not have created ([`crate::lake_session::foreign_inlined_tables`]): DuckDB
//! reads every table registered there.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::duckdb_worker::{DuckDbRunner, Job, MaintainPlan, Reply, WorkerError};
use crate::garbage::GarbageReport;
use crate::settings::{AdminSettings, LakeConfig, MaintenanceConfig};

/// The advisory lock (in the lake's database) a maintenance job holds.
const LOCK_KEY: i64 = 0x0044_4c43_4d41_494e; // "DLCMAIN"

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
    pub admin: crate::Admin,
    /// How the lakes' data paths are reached (the process's AWS identity included).
    pub s3: storage::S3Settings,
    pub runner: DuckDbRunner,
}

/// How long a file must have been scheduled for deletion before cleanup removes it: the
/// setting, and never less than the backups' recovery window.
pub fn cleanup_threshold(admin: &AdminSettings, settings: &MaintenanceConfig) -> Duration {
    settings
        .cleanup_old_files_older_than
        .0
        .max(admin.recovery_window)
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
        report.error = Some(e.to_string());
    }
    report.duration_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error(transparent)]
    Postgres(#[from] crate::postgres::PgError),
    #[error(transparent)]
    DuckDb(#[from] WorkerError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("ducklake_inlined_data_tables names {0}, which DuckLake did not create (not an ordinary table of the lake's writers): the catalog was tampered with; as the lake's owner, delete those rows, then run maintenance again")]
    Tampered(String),
    #[error("the catalog records data path {recorded} but the lake is registered with {registered}; someone changed ducklake_metadata: restore its data_path row (as the lake's owner), then run maintenance again")]
    DataPathChanged {
        recorded: String,
        registered: String,
    },
    #[error("stopped by the shutdown")]
    Cancelled,
    #[error("stopped after max_runtime {0}")]
    TimedOut(String),
}

async fn run_steps(
    ctx: &JobContext,
    lake: &LakeConfig,
    dry_run: bool,
    cancel: &CancellationToken,
    report: &mut JobReport,
) -> Result<(), JobError> {
    let settings = ctx.admin.settings.maintenance_of(lake).clone();
    let mut client = ctx
        .admin
        .pg
        .lake(&lake.name, "ducklake-catalog maintenance")
        .await?;
    let locked: bool = client
        .query_one("SELECT pg_catalog.pg_try_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(crate::postgres::PgError::sql("take the maintenance lock"))?
        .get(0);
    if !locked {
        report.outcome = Outcome::Busy;
        return Ok(());
    }
    // The catalog must record the data path the lake was registered with (a lake user can
    // rewrite ducklake_metadata); DuckDB is then confined to it.
    let recorded = crate::lake::read_lake_info(&client)
        .await?
        .map(|i| i.data_path)
        .unwrap_or_default();
    if recorded != lake.data_path.to_string() {
        return Err(JobError::DataPathChanged {
            recorded,
            registered: lake.data_path.to_string(),
        });
    }
    let foreign = crate::lake_session::foreign_inlined_tables(&mut client, &lake.name).await?;
    if !foreign.is_empty() {
        return Err(JobError::Tampered(foreign.join(", ")));
    }
    if dry_run {
        report.inlined_rows_pending =
            crate::lake_session::inlined_rows(&mut client, &lake.name, None).await?;
    }
    let plan_cleanup_secs = cleanup_threshold(&ctx.admin.settings, &settings).as_secs();
    let plan = MaintainPlan {
        conninfo: ctx.admin.pg.lake_conninfo(&lake.name),
        data_path: lake.data_path.to_string(),
        dry_run,
        flush: settings.flush_inlined_data,
        expire_secs: settings.expire_snapshots_older_than.map(|d| d.0.as_secs()),
        merge: settings.merge_adjacent_files,
        cleanup_secs: plan_cleanup_secs,
    };
    let stop = cancel.child_token();
    let deadline = tokio::time::sleep(settings.max_runtime.0);
    tokio::pin!(deadline);
    let max_runtime = settings.max_runtime.0;
    let reply = worker_step(
        ctx,
        &Job::Maintain(plan),
        &stop,
        deadline.as_mut(),
        max_runtime,
        report,
    )
    .await?;
    let Reply::Maintained(done) = reply else {
        return Err(WorkerError::Failed(format!("unexpected answer {reply:?}")).into());
    };
    report.rows_flushed = done.rows_flushed;
    report.snapshots_expired = done.snapshots_expired;
    report.files_merged = done.files_merged;
    report.files_created = done.files_created;
    report.files_deleted = i64::try_from(done.old_files.len()).unwrap_or(i64::MAX);
    report.conflicts_retried = done.retries;
    report.bytes_deleted = storage::object_sizes(&lake.data_path, &ctx.s3, &done.old_files).await?;
    if !dry_run && !done.old_files.is_empty() {
        let cleanup = Job::CleanupOldFiles {
            conninfo: ctx.admin.pg.lake_conninfo(&lake.name),
            data_path: lake.data_path.to_string(),
            older_than_secs: plan_cleanup_secs,
        };
        let reply =
            worker_step(ctx, &cleanup, &stop, deadline.as_mut(), max_runtime, report).await?;
        let Reply::Cleaned { files } = reply else {
            return Err(WorkerError::Failed(format!("unexpected answer {reply:?}")).into());
        };
        report.files_deleted = files;
    }
    if settings.catalog_garbage {
        report.garbage = crate::garbage::collect(&mut client, &lake.name, dry_run).await?;
    }
    Ok(())
}

/// Runs `job` in a DuckDB worker until it answers, `stop` fires (a shutdown) or `deadline`
/// (`max_runtime`) passes; the outcome says which.
async fn worker_step(
    ctx: &JobContext,
    job: &Job,
    stop: &CancellationToken,
    deadline: std::pin::Pin<&mut tokio::time::Sleep>,
    max_runtime: Duration,
    report: &mut JobReport,
) -> Result<Reply, JobError> {
    let reply = tokio::select! {
        r = ctx.runner.run(job, stop) => r,
        () = deadline => {
            stop.cancel();
            report.outcome = Outcome::TimedOut;
            return Err(JobError::TimedOut(humantime::format_duration(max_runtime).to_string()));
        }
    };
    match reply {
        Err(WorkerError::Cancelled) => {
            report.outcome = Outcome::Cancelled;
            Err(JobError::Cancelled)
        }
        other => Ok(other?),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_never_undercuts_the_recovery_window() {
        let mut admin = AdminSettings {
            admin_user: "admin".into(),
            home: "/tmp/home".into(),
            lakes: vec![],
            maintenance: MaintenanceConfig::default(),
            backup_target: None,
            recovery_window: Duration::ZERO,
            max_connections: 100,
            clients: lake_admin::ClientEndpoint {
                host: "localhost".into(),
                port: 5432,
                sslmode: None,
            },
        };
        let settings = MaintenanceConfig {
            cleanup_old_files_older_than: base::duration::HumanDuration(Duration::from_hours(1)),
            ..MaintenanceConfig::default()
        };
        assert_eq!(
            cleanup_threshold(&admin, &settings),
            Duration::from_hours(1)
        );
        admin.recovery_window = Duration::from_hours(24 * 7);
        assert_eq!(
            cleanup_threshold(&admin, &settings),
            Duration::from_hours(24 * 7)
        );
    }
}
