//! Restores outside `serve`: `ducklake-catalog restore [--to-time T]` (point-in-time recovery
//! into an empty home, which then takes over the target) and `ducklake-catalog backup verify`
//! (the newest backup restored into a throw-away folder, started and checked, never writing
//! to the target).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use storage::BackupTarget;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::backup::{self, lease, restore, ArchiveAgent, BackupError, BackupManifest, Lease};
use crate::config::Config;
use crate::postgres::{create_home_dir, Cluster, OsUser, PgError, RunningPostgres, ShutdownMode};
use crate::supervisor::ServeError;

/// What `restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub to_time: Option<DateTime<Utc>>,
    pub home: String,
    pub lakes: Vec<String>,
    pub elapsed_ms: u128,
}

/// What `backup verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub backup: String,
    pub restored_bytes: u64,
    pub lakes: Vec<LakeCheck>,
    pub indexes_checked: u64,
    pub elapsed_ms: u128,
}

/// One lake's catalog in a verified backup.
#[derive(Debug, Clone, Serialize)]
pub struct LakeCheck {
    pub name: String,
    pub spec_version: Option<String>,
    pub snapshots: i64,
    pub tables: i64,
}

/// A cluster unpacked from a backup and running until it has replayed the archive.
struct Recovered {
    cluster: Cluster,
    running: RunningPostgres,
    raw_bytes: u64,
    _agent: DropGuard,
}

async fn recover(
    config: &Config,
    target: &BackupTarget,
    manifest: &BackupManifest,
    lease: Option<Lease>,
    to_time: Option<&DateTime<Utc>>,
) -> Result<Recovered, ServeError> {
    let os_user = OsUser::for_settings(&config.cluster_settings())?;
    let raw_bytes = restore::unpack(target, manifest, &config.pgdata(), os_user.as_ref()).await?;
    let helper = backup::install_helper(&config.socket_dir(), os_user.as_ref())?;
    let archive = lease.is_some();
    let extra = backup::archive_settings(
        &config.backup,
        &config.socket_dir(),
        &helper,
        archive,
        to_time,
    );
    let prepared = config.clone();
    let (mut cluster, _) =
        tokio::task::spawn_blocking(move || Cluster::prepare(&prepared.cluster_settings(), extra))
            .await
            .expect("cluster preparation does not panic")?;
    cluster.start_timeout_secs = cluster.start_timeout_secs.max(6 * 3600);
    let stop = CancellationToken::new();
    let agent = ArchiveAgent::new(
        target.clone(),
        backup::compression(&config.backup),
        manifest.segment_bytes,
        lease,
    );
    let socket = config.socket_dir().join(backup::AGENT_SOCKET);
    // A one-shot command: the agent serves only while this restore runs (until `stop`).
    tokio::spawn(agent.listen(
        &socket,
        os_user.as_ref().map(|u| (u.uid, u.gid)),
        stop.clone(),
    )?);
    let mut running = cluster.start().await?;
    if let Err(e) = restore::wait_promoted(&cluster, &mut running).await {
        running
            .shutdown(ShutdownMode::Fast, &CancellationToken::new())
            .await?;
        return Err(e.into());
    }
    Ok(Recovered {
        cluster,
        running,
        raw_bytes,
        _agent: stop.drop_guard(),
    })
}

fn require_target(config: &Config, s3: &storage::S3Settings) -> Result<BackupTarget, ServeError> {
    Ok(backup::open_target(&config.backup, s3)?.ok_or(BackupError::NotConfigured)?)
}

/// Restores the newest backup (or the state at `to_time`) into the configured, empty home and
/// stops; the next `serve` on that home continues from it and owns the target.
pub async fn restore_home(
    config: &Config,
    s3: &storage::S3Settings,
    to_time: Option<DateTime<Utc>>,
) -> Result<RestoreReport, ServeError> {
    let started = Instant::now();
    let target = require_target(config, s3)?;
    let pgdata = config.pgdata();
    let occupied = std::fs::read_dir(&pgdata).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Err(BackupError::NotEmpty {
            home: config.home.clone(),
            pgdata,
        }
        .into());
    }
    let manifest =
        restore::choose(&target, to_time)
            .await?
            .ok_or_else(|| BackupError::NoBackup {
                place: target.place(),
                when: to_time.map_or_else(String::new, |t| format!(" that finished before {t}")),
            })?;
    // The socket folder: it proves the home writable before the lease is written there.
    create_home_dir(&config.home, &config.socket_dir())?;
    tracing::info!(backup = %manifest.id, to_time = ?to_time, "restoring");
    let lease = lease::acquire(&target, &config.home, &manifest.system_identifier, true).await?;
    let Recovered {
        cluster,
        running,
        _agent,
        ..
    } = recover(config, &target, &manifest, Some(lease), to_time.as_ref()).await?;
    let lakes = list_lakes(&cluster).await;
    if let Err(e) = backup::flush_archive(&cluster, Duration::from_mins(1)).await {
        tracing::warn!(error = %e, "could not flush the archive after the restore");
    }
    running
        .shutdown(ShutdownMode::Fast, &CancellationToken::new())
        .await?;
    Ok(RestoreReport {
        backup: manifest.id,
        to_time,
        home: config.home.display().to_string(),
        lakes: lakes?,
        elapsed_ms: started.elapsed().as_millis(),
    })
}

async fn list_lakes(cluster: &Cluster) -> Result<Vec<String>, ServeError> {
    let client = cluster.connect_superuser("postgres").await?;
    let rows = client
        .query(
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY 1",
            &[],
        )
        .await
        .map_err(PgError::sql("list databases"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Restores the newest backup into a temporary folder, starts it on a free loopback port,
/// checks every lake's catalog and every B-tree index (amcheck), and removes the copy.
pub async fn verify_newest(
    config: &Config,
    s3: &storage::S3Settings,
) -> Result<VerifyReport, ServeError> {
    let started = Instant::now();
    let target = require_target(config, s3)?;
    let manifest = restore::choose(&target, None)
        .await?
        .ok_or_else(|| BackupError::NoBackup {
            place: target.place(),
            when: String::new(),
        })?;
    let scratch = std::env::temp_dir().join(format!("ducklake-verify-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&scratch)
        .map_err(BackupError::io(format!("create {}", scratch.display())))?;
    let mut vconfig = config.clone();
    vconfig.home.clone_from(&scratch);
    vconfig.postgres.listen_address = "127.0.0.1".into();
    vconfig.postgres.port = free_port()?;
    let result = async {
        let Recovered {
            cluster,
            running,
            raw_bytes,
            _agent,
        } = recover(&vconfig, &target, &manifest, None, None).await?;
        let checked = check_catalogs(&cluster).await;
        running
            .shutdown(ShutdownMode::Fast, &CancellationToken::new())
            .await?;
        let (lakes, indexes_checked) = checked?;
        Ok::<_, ServeError>(VerifyReport {
            backup: manifest.id.clone(),
            restored_bytes: raw_bytes,
            lakes,
            indexes_checked,
            elapsed_ms: started.elapsed().as_millis(),
        })
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn free_port() -> Result<u16, ServeError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(BackupError::io(
        "find a free port for the verification copy",
    ))?;
    Ok(l.local_addr()
        .map_err(BackupError::io("find a free port"))?
        .port())
}

async fn check_catalogs(cluster: &Cluster) -> Result<(Vec<LakeCheck>, u64), ServeError> {
    let mut lakes = Vec::new();
    let mut indexes = 0;
    for name in list_lakes(cluster).await? {
        let client = cluster.connect_superuser(&name).await?;
        let sql = |what: &str| PgError::sql(format!("verify {what} in {name}"));
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            .await
            .map_err(sql("amcheck"))?;
        let row = client
            .query_one(
                "SELECT count(*) FROM (
                   SELECT bt_index_check(c.oid::regclass, true)
                     FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                     JOIN pg_am a ON a.oid = c.relam
                    WHERE a.amname = 'btree' AND c.relpersistence <> 't') checked",
                &[],
            )
            .await
            .map_err(sql("B-tree indexes"))?;
        indexes += u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        let has_lake: bool = client
            .query_one(
                "SELECT to_regclass('public.ducklake_metadata') IS NOT NULL",
                &[],
            )
            .await
            .map_err(sql("the catalog"))?
            .get(0);
        if !has_lake {
            continue;
        }
        let row = client
            .query_one(
                "SELECT (SELECT value FROM ducklake_metadata WHERE key = 'version'),
                        (SELECT count(*) FROM ducklake_snapshot),
                        (SELECT count(*) FROM ducklake_table WHERE end_snapshot IS NULL)",
                &[],
            )
            .await
            .map_err(sql("the DuckLake catalog"))?;
        lakes.push(LakeCheck {
            name,
            spec_version: row.get(0),
            snapshots: row.get(1),
            tables: row.get(2),
        });
    }
    Ok((lakes, indexes))
}
