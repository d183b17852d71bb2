//! Restore: unpack a base backup into an empty PGDATA (streamed, checksum-verified) and let
//! PostgreSQL replay the archived WAL through `restore_command`.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use storage::BackupTarget;
use tokio_util::io::SyncIoBridge;

use super::base::{hex, HashingReader};
use super::{list_backups, BackupError, BackupManifest};
use pg_cluster::{Cluster, OsUser, RunningPostgres};

/// The newest complete backup of the target, or for a point in time the newest that finished
/// before it.
pub async fn choose(
    target: &BackupTarget,
    before: Option<DateTime<Utc>>,
) -> Result<Option<BackupManifest>, BackupError> {
    let backups = list_backups(target).await?;
    Ok(backups
        .into_iter()
        .rev()
        .find(|m| before.is_none_or(|t| m.stop_time < t)))
}

/// Unpacks `manifest`'s backup into `pgdata` (which must not exist), owned by `os_user`, with
/// `recovery.signal` so PostgreSQL starts archive recovery. Returns the bytes unpacked.
pub async fn unpack(
    target: &BackupTarget,
    manifest: &BackupManifest,
    pgdata: &Path,
    os_user: Option<&OsUser>,
) -> Result<u64, BackupError> {
    let started = Instant::now();
    let staging = pgdata.with_file_name("pgdata.restore");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(BackupError::io("remove an interrupted restore"))?;
    }
    std::fs::create_dir_all(&staging).map_err(BackupError::io("create the restore folder"))?;
    let reader = target.reader(&manifest.data_object()).await?;
    let handle = tokio::runtime::Handle::current();
    let zstd = manifest.compression == "zstd";
    let dest = staging.clone();
    let expected = manifest.sha256.clone();
    let object = manifest.data_object();
    let place = target.place();
    let unpacked = tokio::task::spawn_blocking(move || -> Result<u64, BackupError> {
        let mut hashing = HashingReader {
            inner: SyncIoBridge::new_with_handle(reader, handle),
            sha: Sha256::new(),
            bytes: 0,
        };
        let fail =
            |e: std::io::Error| BackupError::Restore(format!("unpack {object} from {place}: {e}"));
        let raw_bytes = {
            let tar_stream: Box<dyn Read> = if zstd {
                Box::new(zstd::Decoder::new(&mut hashing).map_err(fail)?)
            } else {
                Box::new(&mut hashing)
            };
            let mut counted = HashingReader {
                inner: tar_stream,
                sha: Sha256::new(),
                bytes: 0,
            };
            let mut archive = tar::Archive::new(&mut counted);
            archive.set_preserve_permissions(true);
            archive.set_overwrite(false);
            archive.unpack(&dest).map_err(fail)?;
            std::io::copy(&mut counted, &mut std::io::sink()).map_err(fail)?;
            counted.bytes
        };
        std::io::copy(&mut hashing, &mut std::io::sink()).map_err(fail)?;
        let got = hex(&hashing.sha.finalize());
        if got != expected {
            return Err(BackupError::Target(storage::TargetError::Corrupt {
                place,
                key: object,
                reason: format!("SHA-256 {got}, manifest says {expected}"),
            }));
        }
        Ok(raw_bytes)
    })
    .await
    .expect("the restore stream does not panic");
    let raw_bytes = match unpacked {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    for stale in ["postmaster.pid", "postmaster.opts"] {
        let _ = std::fs::remove_file(staging.join(stale));
    }
    std::fs::create_dir_all(staging.join("pg_wal/archive_status"))
        .map_err(BackupError::io("create pg_wal"))?;
    std::fs::write(staging.join("recovery.signal"), b"")
        .map_err(BackupError::io("write recovery.signal"))?;
    pg_cluster::own_tree(&staging, os_user)?;
    std::fs::rename(&staging, pgdata)
        .map_err(BackupError::io("move the restored cluster into place"))?;
    tracing::info!(
        backup = %manifest.id,
        raw_bytes,
        elapsed_ms = started.elapsed().as_millis(),
        "base backup unpacked; PostgreSQL now replays the archived WAL"
    );
    Ok(raw_bytes)
}

/// Waits until PostgreSQL has finished archive recovery and promoted (or died trying).
pub async fn wait_promoted(
    cluster: &Cluster,
    running: &mut RunningPostgres,
) -> Result<(), BackupError> {
    let started = Instant::now();
    loop {
        if let Some(status) = running.try_exit()? {
            return Err(BackupError::Restore(format!(
                "postgres stopped during WAL replay ({status}): {}",
                running.last_lines()
            )));
        }
        if let Ok(client) = cluster.connect_superuser("postgres").await {
            if let Ok(row) = client.query_one("SELECT pg_is_in_recovery()", &[]).await {
                if !row.get::<_, bool>(0) {
                    tracing::info!(
                        elapsed_ms = started.elapsed().as_millis(),
                        "archive recovery complete; promoted to a new timeline"
                    );
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
