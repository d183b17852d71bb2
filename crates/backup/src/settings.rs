//! `[backup]`: the backup crate's own settings, which the product's configuration composes.

use ::base::duration::HumanDuration;
use serde::{Deserialize, Serialize};
use storage::DataPath;

/// `[backup]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Where WAL and base backups go: `s3://bucket/prefix/` or an absolute local folder. Give
    /// each catalog its own target. Unset: no backups (a warning is logged at start), and a
    /// replaced task loses every lake's catalog.
    pub target: Option<DataPath>,
    /// How often a base backup is taken (`24h`, `6h`, `30m`). One is also taken at first
    /// start, after a restore, and on `ducklake-catalog backup now`.
    pub base_interval: HumanDuration,
    /// Which base backups (and the WAL they need) are kept.
    pub retention: RetentionConfig,
    /// `zstd` or `none`, for WAL segments and base backups.
    pub compression: CompressionKind,
    /// The recovery point objective: a commit reaches the target at most about this long after
    /// it is acknowledged (PostgreSQL's `archive_timeout`; whole seconds, at least `1s`). Each
    /// second with commits costs one S3 PUT.
    pub archive_timeout: HumanDuration,
    /// Restore the newest base backup and all archived WAL when the home holds no cluster and
    /// the target holds a backup (a replaced task).
    pub auto_restore: bool,
}

/// `[backup.retention]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Keep at least this many of the newest base backups.
    pub count: u32,
    /// Also keep every base backup younger than this (`7d`); unset: only `count` counts.
    pub max_age: Option<HumanDuration>,
}

/// Compression of backup objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionKind {
    Zstd,
    None,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            target: None,
            base_interval: HumanDuration(std::time::Duration::from_hours(24)),
            retention: RetentionConfig::default(),
            compression: CompressionKind::Zstd,
            archive_timeout: HumanDuration(std::time::Duration::from_secs(1)),
            auto_restore: true,
        }
    }
}

impl BackupConfig {
    /// How far back a point-in-time restore can go: the oldest base backup retention keeps
    /// (`count` × `base_interval`, or `max_age` when longer). `None` without a target.
    pub fn recovery_window(&self) -> Option<std::time::Duration> {
        self.target.as_ref()?;
        let by_count = self.base_interval.0 * self.retention.count;
        Some(
            by_count.max(
                self.retention
                    .max_age
                    .map_or_else(Default::default, |a| a.0),
            ),
        )
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            count: 7,
            max_age: None,
        }
    }
}
