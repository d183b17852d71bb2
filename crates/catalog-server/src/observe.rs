//! The metrics' facts (the `telemetry` crate renders them): gathered on their own schedule and
//! kept, so a scrape only renders what is kept plus the supervisor's live status.
//!
//! Every `metrics.refresh`, one task reads PostgreSQL's statistics (as the administering role,
//! in the registry database no lake user can reach, every name schema-qualified) and each ready
//! lake's catalog (as the lake's own server role, like `inspect`); every
//! [`GARBAGE_EVERY`]-th time also the catalog garbage (a rolled-back cleanup, as `maintenance
//! --dry-run` counts it). Commit conflicts come from PostgreSQL's own log lines
//! ([`pg_cluster::logs::LogEvents`]).

// Counts, bytes and milliseconds as f64 seconds and values: far below 2^52.
#![allow(clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use telemetry::{
    ArchiverFacts, BackupFacts, Connections, DatabaseFacts, Facts, LakeFacts, MaintenanceFacts,
    PgFacts, PoolerFacts, ServerFacts,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::lake_admin::Admin;
use crate::postgres::PgError;
use crate::status::{LakeState, PgState, PoolerState, Status};

/// The catalog garbage is counted every this many refreshes (its dry run takes locks briefly).
pub const GARBAGE_EVERY: u32 = 20;

/// What the gathering task needs.
#[derive(Debug)]
pub struct Observer {
    pub admin: Admin,
    pub refresh: Duration,
    /// PostgreSQL's log counts (the supervised cluster; `None` with an external PostgreSQL).
    pub log_events: Option<pg_cluster::logs::LogEvents>,
    /// `pg_stat_archiver` is read when WAL archiving is on.
    pub archiving: bool,
    /// Write CloudWatch EMF lines on stdout after each gathering, with this `Service`.
    pub emf: Option<String>,
    /// The home, whose volume's use the EMF lines report.
    pub home: std::path::PathBuf,
    pub started: Instant,
}

/// Gathers until `stop`, publishing each result on `tx`. A failed read keeps the last figures
/// of what it could not read and says `pg_up 0` when PostgreSQL did not answer.
pub async fn run(
    o: Observer,
    status: watch::Receiver<Status>,
    tx: watch::Sender<Facts>,
    stop: CancellationToken,
) {
    let mut session = pg_conn::KeptSession::default();
    let mut garbage: BTreeMap<String, u64> = BTreeMap::new();
    let mut round: u32 = 0;
    let mut emitted: Option<Facts> = None;
    loop {
        let lakes: Vec<String> = status
            .borrow()
            .lakes
            .iter()
            .filter(|(_, l)| l.state == LakeState::Ready)
            .map(|(n, _)| n.clone())
            .collect();
        let opened = session
            .get(|| o.admin.pg.postgres("ducklake-catalog metrics"))
            .await;
        let mut facts = tx.borrow().clone();
        facts.postgres = match opened {
            Ok(c) => postgres_facts(c, &o, &lakes).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "metrics: reading PostgreSQL's statistics");
                PgFacts::default()
            }),
            Err(_) => PgFacts::default(),
        };
        let conflicts = o
            .log_events
            .as_ref()
            .map(pg_cluster::logs::LogEvents::conflicts)
            .unwrap_or_default();
        let count_garbage = round.is_multiple_of(GARBAGE_EVERY);
        let mut lake_facts = BTreeMap::new();
        for lake in &lakes {
            let previous = facts.lakes.get(lake).cloned().unwrap_or_default();
            let mut l = lake_figures(&o.admin, lake).await.unwrap_or_else(|e| {
                tracing::debug!(lake = %lake, error = %e, "metrics: reading the catalog");
                previous
            });
            if count_garbage {
                if let Ok(g) = garbage_rows(&o.admin, lake).await {
                    garbage.insert(lake.clone(), g);
                }
            }
            l.garbage_rows = garbage.get(lake).copied().unwrap_or_default();
            l.commit_conflicts = conflicts.get(lake).copied().unwrap_or_default();
            lake_facts.insert(lake.clone(), l);
        }
        facts.lakes = lake_facts;
        let now = current(&status.borrow(), &facts, o.started);
        record_history(&mut facts.history, &now, o.refresh);
        if let Some(service) = &o.emf {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let disk = disk_used_percent(&o.home);
            for line in telemetry::emf(service, &now, emitted.as_ref(), stamp, disk) {
                println!("{line}");
            }
            emitted = Some(now);
        }
        tx.send_replace(facts);
        round = round.wrapping_add(1);
        tokio::select! {
            () = tokio::time::sleep(o.refresh) => {}
            () = stop.cancelled() => return,
        }
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

async fn lake_figures(admin: &Admin, lake: &str) -> Result<LakeFacts, String> {
    let mut catalog = crate::inspect::Catalog::open_named(&admin.pg, lake)
        .await
        .map_err(|e| e.to_string())?;
    let f = catalog.figures().await.map_err(|e| e.to_string())?;
    Ok(LakeFacts {
        snapshots: count(f.snapshots),
        newest_snapshot_id: count(f.newest_snapshot_id),
        newest_snapshot_age_seconds: f.newest_snapshot_age_secs,
        tables: count(f.tables),
        data_files: count(f.data_files),
        delete_files: count(f.delete_files),
        data_bytes: count(f.data_bytes),
        inlined_rows: count(f.inlined_rows),
        ..LakeFacts::default()
    })
}

async fn garbage_rows(admin: &Admin, lake: &str) -> Result<u64, PgError> {
    let mut c = admin.pg.lake(lake, "ducklake-catalog metrics").await?;
    Ok(crate::garbage::collect(&mut c, lake, true).await?.total())
}

/// PostgreSQL's statistics for `lakes`, as postgres_exporter reads them.
async fn postgres_facts(
    c: &tokio_postgres::Client,
    o: &Observer,
    lakes: &[String],
) -> Result<PgFacts, PgError> {
    let sql = PgError::sql;
    let max_connections: i64 = c
        .query_one(
            "SELECT pg_catalog.current_setting('max_connections')::bigint",
            &[],
        )
        .await
        .map_err(sql("read max_connections"))?
        .get(0);
    let rows = c
        .query(
            "SELECT a.datname::text, a.usename::text, coalesce(a.state, 'unknown'), count(*)::bigint,
                    r.rolsuper,
                    ARRAY(SELECT g.rolname::text FROM pg_catalog.pg_auth_members m
                          JOIN pg_catalog.pg_roles g ON g.oid = m.roleid WHERE m.member = a.usesysid)
               FROM pg_catalog.pg_stat_activity a
               LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
              WHERE a.backend_type = 'client backend' AND a.datname IS NOT NULL
              GROUP BY a.datname, a.usename, a.state, a.usesysid, r.rolsuper",
            &[],
        )
        .await
        .map_err(sql("read pg_stat_activity"))?;
    let mut grouped: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for r in &rows {
        let db: String = r.get(0);
        let user: Option<String> = r.get(1);
        let superuser: Option<bool> = r.get(4);
        let groups: Vec<String> = r.get(5);
        let kind = role_kind(
            &db,
            user.as_deref().unwrap_or_default(),
            superuser.unwrap_or(false),
            &groups,
            &o.admin.settings.admin_user,
        );
        *grouped.entry((db, kind.to_owned(), r.get(2))).or_default() += count(r.get(3));
    }
    let connections = grouped
        .into_iter()
        .map(|((database, role_kind, state), count)| Connections {
            database,
            role_kind,
            state,
            count,
        })
        .collect();
    let mut databases = BTreeMap::new();
    for r in c
        .query(
            "SELECT d.datname::text, d.xact_commit, d.xact_rollback, pg_catalog.pg_database_size(d.datid),
                    coalesce((SELECT extract(epoch FROM max(pg_catalog.now() - a.xact_start))::float8
                                FROM pg_catalog.pg_stat_activity a
                               WHERE a.datid = d.datid AND a.xact_start IS NOT NULL
                                 AND a.backend_type = 'client backend'), 0)
               FROM pg_catalog.pg_stat_database d WHERE d.datname = ANY($1)",
            &[&lakes],
        )
        .await
        .map_err(sql("read pg_stat_database"))?
    {
        databases.insert(
            r.get::<_, String>(0),
            DatabaseFacts {
                xact_commit: count(r.get(1)),
                xact_rollback: count(r.get(2)),
                size_bytes: count(r.get(3)),
                max_tx_duration_seconds: r.get(4),
            },
        );
    }
    let archiver = if o.archiving {
        let r = c
            .query_one(
                "SELECT archived_count, failed_count,
                        extract(epoch FROM pg_catalog.now() - last_archived_time)::float8
                   FROM pg_catalog.pg_stat_archiver",
                &[],
            )
            .await
            .map_err(sql("read pg_stat_archiver"))?;
        Some(ArchiverFacts {
            archived_count: count(r.get(0)),
            failed_count: count(r.get(1)),
            last_archive_age_seconds: r.get(2),
        })
    } else {
        None
    };
    Ok(PgFacts {
        up: true,
        max_connections: count(max_connections),
        connections,
        databases,
        archiver,
    })
}

/// Which kind of role a session in `db` is: the lake's owner, writer or reader (by the lake
/// role it is a member of), the admin, the catalog's own roles (`server`), or `other`.
fn role_kind(
    db: &str,
    user: &str,
    superuser: bool,
    groups: &[String],
    admin: &str,
) -> &'static str {
    let member = |suffix: &str| groups.iter().any(|g| *g == format!("{db}_{suffix}"));
    if user == admin {
        "admin"
    } else if superuser || user == format!("{db}_server") || user.starts_with("ducklake_") {
        "server"
    } else if member("owner") {
        "owner"
    } else if member("writer") {
        "writer"
    } else if member("reader") {
        "reader"
    } else {
        "other"
    }
}

fn rfc3339_secs(t: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.timestamp_millis() as f64 / 1000.0)
}

/// The kept facts with the supervisor's live status laid over them: readiness, restarts,
/// backups, maintenance and the pooler are always current.
pub fn current(status: &Status, kept: &Facts, started: Instant) -> Facts {
    let mut f = kept.clone();
    f.server = ServerFacts {
        ready: status.blocker().is_none() && status.accepting(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        duckdb_version: crate::versions::DUCKDB_VERSION.to_owned(),
        ducklake_spec: crate::versions::DUCKLAKE_SPEC_VERSION.to_owned(),
        postgres_restarts: u64::from(status.restarts),
        uptime_seconds: started.elapsed().as_secs_f64(),
        resident_memory_bytes: resident_memory(),
        recent_problems: kept.server.recent_problems.clone(),
    };
    if !matches!(
        status.postgres,
        PgState::Running { .. } | PgState::External { .. }
    ) {
        f.postgres.up = false;
    }
    for (name, lake) in &status.lakes {
        if let Some(l) = f.lakes.get_mut(name) {
            l.data_path.clone_from(&lake.data_path);
            l.spec_version = lake.spec_version.clone().unwrap_or_default();
            l.state = format!("{:?}", lake.state).to_lowercase();
        }
    }
    f.backup = status.backup.as_ref().map(|b| BackupFacts {
        target: b.target.clone(),
        rpo_seconds: b.archive_lag_secs.unwrap_or(0.0),
        pending_wal: b.pending_wal,
        archived_segments: b.archive.archived,
        archive_failures: b.archive.failures,
        base_backup_age_seconds: b
            .last_base_backup
            .as_ref()
            .map(|bb| (chrono::Utc::now() - bb.finished_at).num_milliseconds() as f64 / 1000.0),
        base_backup_bytes: b.last_base_backup.as_ref().map(|bb| bb.stored_bytes),
        base_backup_failing: b.last_base_backup_error.is_some(),
        lease_generation: b.lease_generation,
    });
    f.maintenance = status
        .maintenance
        .iter()
        .map(|(lake, m)| {
            let last = m.last.as_ref();
            (
                lake.clone(),
                MaintenanceFacts {
                    running: m.running,
                    last_run_timestamp: last.and_then(|r| rfc3339_secs(&r.started_at)),
                    last_duration_seconds: last.map(|r| r.duration_ms as f64 / 1000.0),
                    last_ok: last.map(|r| r.error.is_none()),
                    files_merged: last.map_or(0, |r| count(r.files_merged)),
                    files_deleted: last.map_or(0, |r| count(r.files_deleted)),
                    next_run_timestamp: m.next_run.as_deref().and_then(rfc3339_secs),
                },
            )
        })
        .collect();
    f.pooler = status.pooler.as_ref().map(|p| PoolerFacts {
        up: p.state == PoolerState::Running,
        restarts: u64::from(p.restarts),
    });
    f.ha = status.ha.as_ref().map(|h| telemetry::HaFacts {
        primary: h.role == crate::status::HaRole::Primary,
        lease_generation: h.lease_generation.unwrap_or(0),
        replay_lag_seconds: h.replay_lag_secs,
        standbys: u64::from(h.standbys),
        standby_lag_seconds: h.standby_lag_secs,
        synchronous: h.synchronous,
    });
    f
}

/// Adds `now` to `history`, keeping the last hour.
fn record_history(history: &mut Vec<telemetry::HistoryPoint>, now: &Facts, refresh: Duration) {
    let keep = usize::try_from(3600 / refresh.as_secs().max(1))
        .unwrap_or(240)
        .max(2);
    history.push(telemetry::HistoryPoint {
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        commits: now.lakes.values().map(|l| l.newest_snapshot_id).sum(),
        commit_conflicts: now.lakes.values().map(|l| l.commit_conflicts).sum(),
        rpo_seconds: now.backup.as_ref().map(|b| b.rpo_seconds),
    });
    if history.len() > keep {
        history.drain(..history.len() - keep);
    }
}

/// How full the volume holding `path` is, in percent.
fn disk_used_percent(path: &std::path::Path) -> Option<f64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let total = s.blocks() as f64;
    (total > 0.0).then(|| 100.0 * (total - s.blocks_available() as f64) / total)
}

/// This process's resident memory (`VmRSS`), 0 where `/proc` does not say.
fn resident_memory() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_told_apart_by_their_lake_role() {
        let g = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(role_kind("sales", "admin", false, &[], "admin"), "admin");
        assert_eq!(
            role_kind("sales", "sales_server", false, &[], "admin"),
            "server"
        );
        assert_eq!(
            role_kind("sales", "ducklake_pooler", false, &[], "admin"),
            "server"
        );
        assert_eq!(role_kind("sales", "postgres", true, &[], "admin"), "server");
        assert_eq!(
            role_kind("sales", "ana", false, &g(&["sales_writer"]), "admin"),
            "writer"
        );
        assert_eq!(
            role_kind("sales", "bo", false, &g(&["sales_reader"]), "admin"),
            "reader"
        );
        assert_eq!(
            role_kind("sales", "cy", false, &g(&["sales_owner"]), "admin"),
            "owner"
        );
        // A user of another lake (it could only be here by a grant we never make).
        assert_eq!(
            role_kind("sales", "hr1", false, &g(&["hr_writer"]), "admin"),
            "other"
        );
    }
}
