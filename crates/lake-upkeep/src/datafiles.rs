//! The catalog against its data path: `verify` (every file the catalog names exists with the
//! recorded size and, deep, row count), `orphans` (objects under the data path no snapshot
//! names) and `gc` (delete orphans older than a grace period, so the files running clients are
//! writing right now — not committed yet — are never touched).

use std::time::Duration;

use serde::Serialize;
use storage::{DataPath, Expected, Listed, Problem, StorageError};

use crate::inspect::{Catalog, InspectError};
use crate::settings::LakeConfig;
use crate::Admin;

/// Why a file command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("lake `{lake}`: the catalog's data path {recorded} does not parse ({reason})")]
    DataPath {
        lake: String,
        recorded: String,
        reason: String,
    },
    #[error("lake `{lake}`: the catalog records data path {recorded} but the lake is registered with {registered}; someone changed ducklake_metadata: restore its data_path row (as the lake's owner) before verify, orphans or gc")]
    DataPathChanged {
        lake: String,
        recorded: String,
        registered: String,
    },
    #[error("lake `{lake}`: refusing to delete under {path}: it {reason}")]
    SharedPath {
        lake: String,
        path: String,
        reason: String,
    },
    #[error("gc would delete {count} orphaned objects ({bytes} bytes) older than {grace} under {path}; run again with --yes to delete them")]
    NotConfirmed {
        count: usize,
        bytes: u64,
        grace: String,
        path: String,
    },
}

/// `verify`'s result.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub lake: String,
    pub data_path: String,
    pub deep: bool,
    pub files_checked: usize,
    pub bytes_checked: u64,
    pub problems: Vec<Problem>,
}

/// `orphans`' result.
#[derive(Debug, Clone, Serialize)]
pub struct OrphanReport {
    pub lake: String,
    pub data_path: String,
    /// Objects listed under the data path.
    pub objects: usize,
    /// Files the catalog names (any retained snapshot) or has scheduled for deletion.
    pub referenced: usize,
    pub orphans: Vec<Listed>,
}

/// `gc`'s result.
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    #[serde(flatten)]
    pub orphans: OrphanReport,
    /// The orphans old enough to delete (all of them were deleted, unless a dry run).
    pub deletable: Vec<Listed>,
    /// Orphans younger than the grace period: possibly a client's write in flight.
    pub kept_young: usize,
    pub deleted: u64,
}

impl GcReport {
    /// The refusal for a `gc` without `--yes` that has something to delete.
    pub fn unconfirmed(&self, grace: Duration) -> Option<FilesError> {
        (self.deleted == 0 && !self.deletable.is_empty()).then(|| FilesError::NotConfirmed {
            count: self.deletable.len(),
            bytes: self.deletable.iter().map(|o| o.size).sum(),
            grace: humantime::format_duration(grace).to_string(),
            path: self.orphans.data_path.clone(),
        })
    }
}

/// The lake's registered data path, once the catalog's own record agrees with it: a path a
/// lake user wrote into `ducklake_metadata` is never listed, let alone deleted from.
fn data_path(lake: &LakeConfig, catalog: &Catalog) -> Result<DataPath, FilesError> {
    let recorded = DataPath::parse(catalog.data_path()).map_err(|e| FilesError::DataPath {
        lake: lake.name.clone(),
        recorded: catalog.data_path().to_owned(),
        reason: e.to_string(),
    })?;
    if recorded != lake.data_path {
        return Err(FilesError::DataPathChanged {
            lake: lake.name.clone(),
            recorded: recorded.to_string(),
            registered: lake.data_path.to_string(),
        });
    }
    Ok(lake.data_path.clone())
}

/// Refuses to delete under `lake`'s data path when it could hold what the lake does not own:
/// the server's home, another lake's files, the backups.
fn refuse_shared(admin: &Admin, lake: &LakeConfig) -> Result<(), FilesError> {
    let refuse = |reason: String| FilesError::SharedPath {
        lake: lake.name.clone(),
        path: lake.data_path.to_string(),
        reason,
    };
    if let Some(reason) = crate::names::data_path_conflict(&admin.settings.home, &lake.data_path) {
        return Err(refuse(reason));
    }
    if let Some(other) = admin
        .settings
        .lakes
        .iter()
        .find(|o| o.name != lake.name && crate::names::overlaps(&o.data_path, &lake.data_path))
    {
        return Err(refuse(format!(
            "overlaps lake `{}`'s data path {}, whose files would look like orphans",
            other.name, other.data_path
        )));
    }
    if let Some(target) = &admin.settings.backup_target {
        if crate::names::overlaps(target, &lake.data_path) {
            return Err(refuse(format!("overlaps the backup target {target}")));
        }
    }
    Ok(())
}

/// Checks every file of every retained snapshot; `progress(checked, total)`.
pub async fn verify(
    admin: &Admin,
    s3: &storage::S3Settings,
    lake: &LakeConfig,
    deep: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<VerifyReport, FilesError> {
    let catalog = Catalog::open(&admin.pg, lake).await?;
    let path = data_path(lake, &catalog)?;
    let files = catalog.all_files().await?;
    let expected: Vec<Expected> = files
        .iter()
        .map(|f| Expected {
            path: f.path.clone(),
            size: u64::try_from(f.bytes).unwrap_or_default(),
            rows: u64::try_from(f.rows).ok(),
        })
        .collect();
    let problems = storage::verify(&path, s3, &expected, deep, progress).await?;
    Ok(VerifyReport {
        lake: lake.name.clone(),
        data_path: path.to_string(),
        deep,
        files_checked: expected.len(),
        bytes_checked: expected.iter().map(|e| e.size).sum(),
        problems,
    })
}

/// Objects under the data path that no retained snapshot names and DuckLake has not
/// scheduled for deletion.
pub async fn orphans(
    admin: &Admin,
    s3: &storage::S3Settings,
    lake: &LakeConfig,
) -> Result<OrphanReport, FilesError> {
    let catalog = Catalog::open(&admin.pg, lake).await?;
    let path = data_path(lake, &catalog)?;
    // List first, then read the catalog: a file committed in between is then known, never
    // taken for an orphan.
    let listed = storage::list(&path, s3).await?;
    let mut referenced: std::collections::HashSet<String> = catalog
        .all_files()
        .await?
        .into_iter()
        .map(|f| f.path)
        .collect();
    referenced.extend(catalog.scheduled_files().await?);
    let mut orphans: Vec<Listed> = listed
        .iter()
        .filter(|o| !referenced.contains(&o.path))
        .cloned()
        .collect();
    orphans.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(OrphanReport {
        lake: lake.name.clone(),
        data_path: path.to_string(),
        objects: listed.len(),
        referenced: referenced.len(),
        orphans,
    })
}

/// Deletes the orphans older than `grace` when `confirmed`; without it, reports what it would
/// delete and deletes nothing ([`GcReport::unconfirmed`] is the error to show then).
pub async fn gc(
    admin: &Admin,
    s3: &storage::S3Settings,
    lake: &LakeConfig,
    grace: Duration,
    confirmed: bool,
) -> Result<GcReport, FilesError> {
    refuse_shared(admin, lake)?;
    let found = orphans(admin, s3, lake).await?;
    let (deletable, young): (Vec<Listed>, Vec<Listed>) = found
        .orphans
        .iter()
        .cloned()
        .partition(|o| o.age_secs >= grace.as_secs());
    let mut report = GcReport {
        kept_young: young.len(),
        deletable,
        orphans: found,
        deleted: 0,
    };
    if report.deletable.is_empty() {
        return Ok(report);
    }
    if !confirmed {
        return Ok(report);
    }
    // Once more, just before deleting: only what is still unreferenced goes.
    let again = orphans(admin, s3, lake).await?;
    let still: std::collections::HashSet<&str> =
        again.orphans.iter().map(|o| o.path.as_str()).collect();
    let doomed: Vec<String> = report
        .deletable
        .iter()
        .filter(|o| still.contains(o.path.as_str()))
        .map(|o| o.path.clone())
        .collect();
    let path = DataPath::parse(&report.orphans.data_path).map_err(|e| FilesError::DataPath {
        lake: lake.name.clone(),
        recorded: report.orphans.data_path.clone(),
        reason: e.to_string(),
    })?;
    report.deleted = storage::delete(&path, s3, &doomed).await?;
    tracing::info!(lake = %lake.name, deleted = report.deleted, "gc deleted orphaned objects");
    Ok(report)
}
