//! Durability: continuous WAL archiving, base backups, retention, restore and fencing.
//!
//! Layout of a backup target (relative to its prefix):
//!
//! ```text
//! cluster.json                     system identifier of the one cluster whose history this is
//! leases/00000000000000000001.json  who may write history; the highest generation wins
//! wal/<segment|NN.history|….backup> sealed (checksummed, zstd) WAL files, never overwritten
//! basebackups/<id>/base.tar.zst    a streamed pg_basebackup tar
//! basebackups/<id>/manifest.json   written last: its presence makes the backup complete
//! ```
//!
//! PostgreSQL's `archive_command` and `restore_command` run the small `ducklake-wal` helper,
//! which hands each file to the supervisor's [`agent`] over a Unix socket; the agent alone holds
//! the AWS credentials and talks to the target. Fencing: every restore takes a new lease
//! generation with a create-only write; an instance whose generation is no longer the newest
//! refuses to archive and stops, and a data directory that was superseded refuses to start.

pub mod agent;
pub mod base;
pub mod ha;
pub mod lease;
pub mod restore;
mod settings;
pub mod wal;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use storage::{BackupTarget, Compression, TargetError};

use pg_conn::PgError;

pub use ha::{HaConfig, HaMode};
pub use settings::{BackupConfig, CompressionKind, RetentionConfig};

pub use agent::{AgentClient, ArchiveAgent, ArchiveStats};
pub use lease::Lease;

/// Name of the cluster identity object.
pub const CLUSTER_FILE: &str = "cluster.json";
/// Folder of the lease generations.
pub const LEASE_DIR: &str = "leases/";
/// Folder of archived WAL.
pub const WAL_DIR: &str = "wal/";
/// Folder of base backups.
pub const BASE_DIR: &str = "basebackups/";

/// Why a backup, restore or archive step failed. One line each, naming the target and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Cluster(#[from] pg_cluster::ClusterError),
    #[error("{place} holds the history of another cluster (system id {theirs}; this one is {ours}); give this catalog its own backup.target, or restore from that target into an empty home")]
    OtherCluster {
        place: String,
        theirs: String,
        ours: String,
    },
    #[error("this data directory was superseded: {holder} took over {place} at {since} (lease generation {generation}), so this instance must not write history there; stop it, or to carry on from this copy anyway move the home away and restore into an empty one")]
    Superseded {
        place: String,
        holder: String,
        since: String,
        generation: u64,
    },
    #[error("this data directory was superseded: {place} holds a timeline newer than this cluster's ({timeline}), promoted by a restore elsewhere; stop this instance, or restore into an empty home")]
    NewerTimeline { place: String, timeline: u32 },
    #[error("{place} is in use by {holder} since {since} and this data directory never held it; start with an empty home to restore from it, or give this catalog its own backup.target")]
    HeldByOther {
        place: String,
        holder: String,
        since: String,
    },
    #[error("{place}: another instance took the lease at the same moment (generation {generation}); only one may restore — stop the other one or retry")]
    LeaseRace { place: String, generation: u64 },
    #[error("{place} holds no complete base backup{when}; take one with `ducklake-catalog backup now` on the running server")]
    NoBackup { place: String, when: String },
    #[error("base backup failed: {0}")]
    BaseBackup(String),
    #[error("restore failed: {0}")]
    Restore(String),
    #[error("{home} already holds a cluster (PGDATA {pgdata}); restore refuses to overwrite it: choose an empty --home")]
    NotEmpty { home: PathBuf, pgdata: PathBuf },
    #[error("{0}")]
    Agent(String),
    #[error("backup.target is not set; set it (e.g. DUCKLAKE_CATALOG_BACKUP__TARGET=s3://bucket/catalog-backups/) to use backups")]
    NotConfigured,
    #[error("{action}: {error}")]
    Io {
        action: String,
        error: std::io::Error,
    },
}

impl BackupError {
    pub fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
        let action = action.into();
        move |error| BackupError::Io { action, error }
    }
}

/// Opens the configured backup target, if any, through `s3`.
pub fn open_target(
    settings: &BackupConfig,
    s3: &storage::S3Settings,
) -> Result<Option<BackupTarget>, BackupError> {
    settings
        .target
        .as_ref()
        .map(|t| BackupTarget::open(t, s3).map_err(BackupError::from))
        .transpose()
}

/// The configured compression, for the storage crate.
pub fn compression(settings: &BackupConfig) -> Compression {
    match settings.compression {
        CompressionKind::Zstd => Compression::Zstd,
        CompressionKind::None => Compression::None,
    }
}

/// The identity a target records on first use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterIdentity {
    pub system_identifier: String,
    pub created_at: DateTime<Utc>,
}

/// Records `sysid` as the target's cluster, or checks it is the one already recorded.
pub async fn ensure_identity(target: &BackupTarget, sysid: &str) -> Result<(), BackupError> {
    let id = ClusterIdentity {
        system_identifier: sysid.to_owned(),
        created_at: Utc::now(),
    };
    let body = serde_json::to_vec_pretty(&id).expect("identity serialises");
    if target.create(CLUSTER_FILE, body.into()).await? {
        tracing::info!(target = %target.path(), system_identifier = sysid, "backup target initialised for this cluster");
        return Ok(());
    }
    let theirs = read_json::<ClusterIdentity>(target, CLUSTER_FILE)
        .await?
        .map(|c| c.system_identifier)
        .unwrap_or_default();
    if theirs == sysid {
        Ok(())
    } else {
        Err(BackupError::OtherCluster {
            place: target.place(),
            theirs,
            ours: sysid.to_owned(),
        })
    }
}

/// Refuses a target where a newer timeline than `timeline` branched off (a restore elsewhere
/// promoted): this cluster's history is no longer the target's. Timelines are numbered
/// max + 1, so a newer one exists exactly when `timeline + 1` does.
pub async fn check_no_newer_timeline(
    target: &BackupTarget,
    timeline: u32,
) -> Result<(), BackupError> {
    let next = format!("{WAL_DIR}{:08X}.history", timeline + 1);
    if target.exists(&next).await? {
        return Err(BackupError::NewerTimeline {
            place: target.place(),
            timeline,
        });
    }
    Ok(())
}

/// Reads and parses a JSON object; a malformed one is reported as corrupt.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    target: &BackupTarget,
    name: &str,
) -> Result<Option<T>, BackupError> {
    let Some(bytes) = target.get(name).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| TargetError::Corrupt {
            place: target.place(),
            key: name.to_owned(),
            reason: format!("not valid JSON: {e}"),
        })
        .map_err(BackupError::from)
}

/// What a complete base backup holds; stored as `basebackups/<id>/manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupManifest {
    pub id: String,
    pub system_identifier: String,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    /// First WAL segment a restore of this backup needs.
    pub start_wal: String,
    /// Last WAL segment needed to make it consistent.
    pub stop_wal: String,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    /// Bytes of the uncompressed tar.
    pub raw_bytes: u64,
    /// Bytes stored in the target.
    pub stored_bytes: u64,
    /// SHA-256 of the stored object, hex.
    pub sha256: String,
    pub compression: String,
    pub segment_bytes: u64,
    pub product_version: String,
}

impl BackupManifest {
    /// The stored tar's object name.
    pub fn data_object(&self) -> String {
        data_object(&self.id, &self.compression)
    }
}

pub(crate) fn data_object(id: &str, compression: &str) -> String {
    let ext = if compression == "zstd" {
        "tar.zst"
    } else {
        "tar"
    };
    format!("{BASE_DIR}{id}/base.{ext}")
}

pub(crate) fn manifest_object(id: &str) -> String {
    format!("{BASE_DIR}{id}/manifest.json")
}

/// Every complete base backup in the target, oldest first.
pub async fn list_backups(target: &BackupTarget) -> Result<Vec<BackupManifest>, BackupError> {
    let mut out = Vec::new();
    for obj in target.list(BASE_DIR).await? {
        if obj.name.ends_with("/manifest.json") {
            if let Some(m) = read_json::<BackupManifest>(target, &obj.name).await? {
                out.push(m);
            }
        }
    }
    out.sort_by(|a, b| a.start_time.cmp(&b.start_time).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RetentionReport {
    pub backups_deleted: usize,
    pub wal_deleted: usize,
    pub kept: usize,
}

/// Deletes base backups outside the retention and the WAL no kept backup needs. Never deletes
/// the newest backup, history files, or WAL at or after the oldest kept backup's start.
pub async fn apply_retention(
    target: &BackupTarget,
    retention: &RetentionConfig,
    now: DateTime<Utc>,
) -> Result<RetentionReport, BackupError> {
    let backups = list_backups(target).await?;
    let mut report = RetentionReport::default();
    if backups.is_empty() {
        return Ok(report);
    }
    let count = usize::try_from(retention.count)
        .unwrap_or(usize::MAX)
        .max(1);
    let newest_first: Vec<&BackupManifest> = backups.iter().rev().collect();
    let (kept, dropped): (Vec<_>, Vec<_>) = newest_first.iter().enumerate().partition(|(i, m)| {
        *i < count
            || retention.max_age.is_some_and(|age| {
                now.signed_duration_since(m.stop_time)
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    < age.0
            })
    });
    report.kept = kept.len();
    let segment_bytes = backups[0].segment_bytes;
    let floor = kept
        .iter()
        .filter_map(|(_, m)| wal::Segment::parse(&m.start_wal, m.segment_bytes))
        .map(|s| s.number)
        .min()
        .unwrap_or(0);
    for (_, m) in dropped {
        // The manifest first: an interrupted delete leaves an incomplete backup, never a
        // manifest that points at nothing.
        target.delete(&manifest_object(&m.id)).await?;
        target.delete(&m.data_object()).await?;
        report.backups_deleted += 1;
    }
    // Uploads that never completed (no manifest) and are older than the oldest kept backup.
    let oldest_kept = kept.iter().map(|(_, m)| m.start_time).min();
    let complete: std::collections::HashSet<&str> = backups.iter().map(|m| m.id.as_str()).collect();
    for obj in target.list(BASE_DIR).await? {
        let id = obj.name[BASE_DIR.len()..].split('/').next().unwrap_or("");
        if !complete.contains(id) && oldest_kept.is_some_and(|t| obj.last_modified < t) {
            target.delete(&obj.name).await?;
        }
    }
    for obj in target.list(WAL_DIR).await? {
        let name = &obj.name[WAL_DIR.len()..];
        if name.ends_with(".history") {
            continue;
        }
        let seg = wal::Segment::parse(name.get(..24).unwrap_or(""), segment_bytes);
        if seg.is_some_and(|s| s.number < floor) {
            target.delete(&obj.name).await?;
            report.wal_deleted += 1;
        }
    }
    Ok(report)
}

/// The name of the agent's socket in the run folder.
pub const AGENT_SOCKET: &str = "ducklake-agent.sock";
/// The name of the helper PostgreSQL runs.
pub const HELPER: &str = "ducklake-wal";

/// `postgresql.conf` settings that archive through, and restore from, the agent. `archive` is
/// false for a throw-away verification copy, which must never write into the target.
pub fn archive_settings(
    settings: &BackupConfig,
    socket_dir: &Path,
    helper: &Path,
    archive: bool,
    recovery_target_time: Option<&DateTime<Utc>>,
) -> Vec<(String, String)> {
    let socket = socket_dir.join(AGENT_SOCKET);
    let q = |p: &Path| format!("'{}'", p.display());
    let mut s = vec![
        (
            "restore_command".to_owned(),
            format!("{} fetch {} %f %p", q(helper), q(&socket)),
        ),
        ("recovery_target_timeline".into(), "latest".into()),
        ("recovery_target_action".into(), "promote".into()),
    ];
    if archive {
        s.extend([
            ("archive_mode".to_owned(), "on".to_owned()),
            (
                "archive_command".into(),
                format!("{} push {} %p %f", q(helper), q(&socket)),
            ),
            (
                "archive_timeout".into(),
                format!("{}s", settings.archive_timeout.0.as_secs()),
            ),
        ]);
    }
    if let Some(t) = recovery_target_time {
        s.push((
            "recovery_target_time".into(),
            t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        ));
    }
    s
}

/// Copies the `ducklake-wal` helper (installed next to this binary) into the run folder, where
/// PostgreSQL's OS user can always execute it and its version matches the running server.
pub fn install_helper(
    socket_dir: &Path,
    owner: Option<&pg_cluster::OsUser>,
) -> Result<PathBuf, BackupError> {
    let exe = std::env::current_exe().map_err(BackupError::io("find this executable"))?;
    let source = exe.with_file_name(HELPER);
    let dir = socket_dir.to_path_buf();
    let dest = dir.join(HELPER);
    if dest.to_string_lossy().contains('\'') {
        return Err(BackupError::Agent(format!(
            "{} contains a single quote; choose a home without one",
            dest.display()
        )));
    }
    std::fs::create_dir_all(&dir).map_err(BackupError::io(format!("create {}", dir.display())))?;
    let tmp = dir.join(format!("{HELPER}.tmp"));
    std::fs::copy(&source, &tmp).map_err(|e| {
        BackupError::Agent(format!(
            "the {HELPER} helper is missing next to {} ({e}); reinstall ducklake-catalog with both binaries",
            exe.display()
        ))
    })?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(BackupError::io("chmod the helper"))?;
    std::fs::rename(&tmp, &dest).map_err(BackupError::io("install the helper"))?;
    if let Some(user) = owner {
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))
            .map_err(BackupError::io(format!("chown {}", dir.display())))?;
    }
    Ok(dest)
}

/// WAL files PostgreSQL has finished but not yet archived: how many, and how long the oldest
/// has waited.
pub fn pending_wal(pgdata: &Path) -> (u64, Option<Duration>) {
    let Ok(entries) = std::fs::read_dir(pgdata.join("pg_wal/archive_status")) else {
        return (0, None);
    };
    let mut count = 0;
    let mut oldest: Option<Duration> = None;
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().ends_with(".ready") {
            count += 1;
            let age = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if let Some(age) = age {
                oldest = Some(oldest.map_or(age, |o| o.max(age)));
            }
        }
    }
    (count, oldest)
}

/// Switches to a new WAL segment and waits until everything before it is archived, so a stop
/// loses no acknowledged commit. Returns false when `within` ran out first.
pub async fn flush_archive(
    cluster: &pg_cluster::Cluster,
    within: Duration,
) -> Result<bool, BackupError> {
    let client = cluster.connect_superuser("postgres").await?;
    let row = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .map_err(pg_cluster::PgError::sql("switch WAL before stopping"))?;
    let last: String = row.get(0);
    let deadline = std::time::Instant::now() + within;
    loop {
        let row = client
            .query_one(
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                &[],
            )
            .await
            .map_err(pg_cluster::PgError::sql("read pg_stat_archiver"))?;
        let archived: String = row.get(0);
        let (pending, _) = pending_wal(&cluster.pgdata);
        if pending == 0 || archived.get(..24).is_some_and(|a| a >= last.as_str()) {
            tracing::info!(last_wal = %last, "archive flushed before stopping");
            return Ok(true);
        }
        if std::time::Instant::now() > deadline {
            tracing::warn!(pending, last_wal = %last, "stopping with WAL not yet archived; it stays in PGDATA and is archived on the next start");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::base::duration::HumanDuration;
    use storage::{DataPath, S3Settings};

    const MB: u64 = 1 << 20;

    fn manifest(n: u64, start_seg: u64, at: DateTime<Utc>) -> BackupManifest {
        let seg = |s| {
            wal::Segment {
                timeline: 1,
                number: s,
            }
            .name(MB)
        };
        BackupManifest {
            id: format!("b{n}"),
            system_identifier: "42".into(),
            timeline: 1,
            start_lsn: "0/0".into(),
            stop_lsn: "0/0".into(),
            start_wal: seg(start_seg),
            stop_wal: seg(start_seg),
            start_time: at,
            stop_time: at,
            raw_bytes: 1,
            stored_bytes: 1,
            sha256: String::new(),
            compression: "zstd".into(),
            segment_bytes: MB,
            product_version: "test".into(),
        }
    }

    async fn seeded() -> (tempfile::TempDir, BackupTarget, DateTime<Utc>) {
        let dir = tempfile::tempdir().unwrap();
        let path = DataPath::parse(dir.path().to_str().unwrap()).unwrap();
        let t = BackupTarget::open(&path, &S3Settings::default()).unwrap();
        let now = Utc::now();
        for (n, start) in [(1, 2), (2, 5), (3, 8), (4, 11)] {
            let hours = i64::try_from(5 - n).unwrap();
            let m = manifest(n, start, now - chrono::Duration::hours(hours));
            t.create(&m.data_object(), "tar".into()).await.unwrap();
            let body = serde_json::to_vec(&m).unwrap();
            t.create(&manifest_object(&m.id), body.into())
                .await
                .unwrap();
        }
        for s in 1..=12 {
            let name = wal::Segment {
                timeline: 1,
                number: s,
            }
            .name(MB);
            t.create(&format!("{WAL_DIR}{name}"), "w".into())
                .await
                .unwrap();
        }
        t.create(&format!("{WAL_DIR}00000002.history"), "h".into())
            .await
            .unwrap();
        t.create(
            &format!("{WAL_DIR}000000010000000000000003.00000028.backup"),
            "b".into(),
        )
        .await
        .unwrap();
        (dir, t, now)
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_backups_and_the_wal_they_need() {
        let (_dir, t, now) = seeded().await;
        let keep_two = RetentionConfig {
            count: 2,
            max_age: None,
        };
        let report = apply_retention(&t, &keep_two, now).await.unwrap();
        assert_eq!((report.kept, report.backups_deleted), (2, 2));
        let ids: Vec<String> = list_backups(&t)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["b3", "b4"]);
        let wal: Vec<String> = t
            .list(WAL_DIR)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        // Segments 8-12 (b3 starts at 8), the history file; segments 1-7 and the old .backup go.
        assert_eq!(report.wal_deleted, 8, "{wal:?}");
        assert!(wal.contains(&format!("{WAL_DIR}00000002.history")));
        assert!(wal.contains(&format!("{WAL_DIR}000000010000000000000008")));
        assert!(!wal.contains(&format!("{WAL_DIR}000000010000000000000007")));
        assert!(!t.exists(&data_object("b1", "zstd")).await.unwrap());
    }

    #[tokio::test]
    async fn a_newer_timeline_in_the_target_supersedes_this_cluster() {
        let (_dir, t, _) = seeded().await;
        let err = check_no_newer_timeline(&t, 1).await.unwrap_err();
        assert!(err.to_string().contains("superseded"), "{err}");
        check_no_newer_timeline(&t, 2).await.unwrap();
    }

    #[tokio::test]
    async fn retention_by_age_keeps_younger_backups_beyond_the_count() {
        let (_dir, t, now) = seeded().await;
        let young = RetentionConfig {
            count: 1,
            max_age: Some(HumanDuration(Duration::from_mins(3 * 60 + 1))),
        };
        let report = apply_retention(&t, &young, now).await.unwrap();
        // b2 (3 h old), b3, b4 are younger than 3 h 1 min; b1 (4 h) goes.
        assert_eq!((report.kept, report.backups_deleted), (3, 1));
        assert!(t
            .exists(&format!("{WAL_DIR}000000010000000000000005"))
            .await
            .unwrap());
        assert!(!t
            .exists(&format!("{WAL_DIR}000000010000000000000004"))
            .await
            .unwrap());
    }
}
