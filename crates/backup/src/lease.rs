//! The lease: which instance may write history into a backup target.
//!
//! Generations are separate objects (`leases/<generation>.json`) created with a create-only
//! write, so two instances can never both create the same generation. The holder of the newest
//! generation owns the target. An instance checks, before each WAL upload, that the next
//! generation does not exist; a restore (a replacement task, or `restore`) creates it and so
//! fences the old instance. The generation an instance holds is remembered in the home
//! (`<home>/backup-lease.json`), outside PGDATA, so a restored copy never inherits it. Lease
//! objects are never deleted (one per restore; a few hundred bytes each), so the check for the
//! next generation stays sound however old an instance is.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use storage::BackupTarget;

use super::{read_json, BackupError, LEASE_DIR};

/// One lease generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub generation: u64,
    /// A random id of the holding instance (new on every acquisition).
    pub holder: String,
    /// Host name of the holder, for messages.
    pub host: String,
    pub system_identifier: String,
    pub acquired_at: DateTime<Utc>,
}

impl Lease {
    /// `leases/<generation>.json`.
    pub fn object(generation: u64) -> String {
        format!("{LEASE_DIR}{generation:020}.json")
    }

    fn describe(&self) -> String {
        format!("the instance on {} (holder {})", self.host, self.holder)
    }
}

/// The file in the home that records the lease this data directory holds.
pub fn local_file(home: &Path) -> PathBuf {
    home.join("backup-lease.json")
}

fn read_local(home: &Path) -> Result<Option<Lease>, BackupError> {
    let path = local_file(home);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            BackupError::Restore(format!(
                "{} is not a lease record ({e}); remove it only if this home never archived",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BackupError::io(format!("read {}", path.display()))(e)),
    }
}

fn write_local(home: &Path, lease: &Lease) -> Result<(), BackupError> {
    let path = local_file(home);
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(lease).expect("lease serialises");
    std::fs::write(&tmp, body).map_err(BackupError::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(BackupError::io(format!("write {}", path.display())))
}

/// The newest lease generation in the target.
pub async fn current(target: &BackupTarget) -> Result<Option<Lease>, BackupError> {
    let objects = target.list(LEASE_DIR).await?;
    let Some(newest) = objects.iter().map(|o| &o.name).max() else {
        return Ok(None);
    };
    read_json(target, newest).await
}

/// Takes or confirms the lease for the cluster in `home`.
///
/// `takeover` is a restore: it always creates the next generation. Otherwise the home must
/// already hold the newest generation, or the target must have none yet.
pub async fn acquire(
    target: &BackupTarget,
    home: &Path,
    sysid: &str,
    takeover: bool,
) -> Result<Lease, BackupError> {
    let local = read_local(home)?;
    let newest = current(target).await?;
    if !takeover {
        match (&local, &newest) {
            (Some(mine), Some(theirs)) if mine.holder == theirs.holder => return Ok(mine.clone()),
            (Some(_), Some(theirs)) => {
                return Err(BackupError::Superseded {
                    place: target.place(),
                    holder: theirs.describe(),
                    since: theirs.acquired_at.to_rfc3339(),
                    generation: theirs.generation,
                })
            }
            (None, Some(theirs)) => {
                return Err(BackupError::HeldByOther {
                    place: target.place(),
                    holder: theirs.describe(),
                    since: theirs.acquired_at.to_rfc3339(),
                })
            }
            (_, None) => {}
        }
    }
    let generation = newest.as_ref().map_or(1, |l| l.generation + 1);
    create_generation(target, home, sysid, generation, takeover).await
}

/// Takes generation `after + 1` (a standby taking over from the holder of `after`): fails with
/// [`BackupError::LeaseRace`] when another instance created it first.
pub async fn take_next(
    target: &BackupTarget,
    home: &Path,
    sysid: &str,
    after: u64,
) -> Result<Lease, BackupError> {
    create_generation(target, home, sysid, after + 1, true).await
}

async fn create_generation(
    target: &BackupTarget,
    home: &Path,
    sysid: &str,
    generation: u64,
    takeover: bool,
) -> Result<Lease, BackupError> {
    let lease = Lease {
        generation,
        holder: uuid::Uuid::new_v4().to_string(),
        host: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into()),
        system_identifier: sysid.to_owned(),
        acquired_at: Utc::now(),
    };
    let body = serde_json::to_vec_pretty(&lease).expect("lease serialises");
    if !target
        .create(&Lease::object(generation), body.into())
        .await?
    {
        return Err(BackupError::LeaseRace {
            place: target.place(),
            generation,
        });
    }
    write_local(home, &lease)?;
    tracing::info!(target = %target.path(), generation, holder = %lease.holder, takeover, "holding the backup target lease");
    Ok(lease)
}

/// Whether a newer generation than `lease` exists: then this instance is fenced.
pub async fn superseded_by(
    target: &BackupTarget,
    lease: &Lease,
) -> Result<Option<Lease>, BackupError> {
    let next = Lease::object(lease.generation + 1);
    if !target.exists(&next).await? {
        return Ok(None);
    }
    Ok(current(target).await?.or(Some(Lease {
        generation: lease.generation + 1,
        holder: "unknown".into(),
        host: "unknown".into(),
        system_identifier: String::new(),
        acquired_at: Utc::now(),
    })))
}

/// The error an instance reports once it sees it was fenced.
pub fn fenced_error(target: &BackupTarget, newer: &Lease) -> BackupError {
    BackupError::Superseded {
        place: target.place(),
        holder: newer.describe(),
        since: newer.acquired_at.to_rfc3339(),
        generation: newer.generation,
    }
}
