//! The administration's own settings: the lakes the configuration names, their maintenance,
//! and what the administration needs to know of the rest of the server ([`AdminSettings`]).
//! The configuration crate composes them; nothing here reads it.

use std::path::PathBuf;
use std::time::Duration;

use base::duration::HumanDuration;
use serde::{Deserialize, Serialize};
use storage::DataPath;

/// What the DuckLake administration needs of the server's configuration.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// The admin login (`postgres.admin_user`): owns the lake databases, is a member of every
    /// lake's owner role, and may not name a lake or a user.
    pub admin_user: String,
    /// The server's home: no data path may hold it or reach into its state.
    pub home: PathBuf,
    /// The lakes the configuration names (`[[lakes]]`), served besides the registered ones.
    pub lakes: Vec<LakeConfig>,
    /// The server-wide maintenance (`[maintenance]`).
    pub maintenance: MaintenanceConfig,
    /// Where backups go (`backup.target`): no data path may overlap it.
    pub backup_target: Option<DataPath>,
    /// The backups' recovery window: cleanup never deletes a file a restore within it names.
    pub recovery_window: Duration,
    /// PostgreSQL's `max_connections` (configured or sized to memory): per-user caps derive
    /// from it.
    pub max_connections: u32,
    /// Where lake users connect, for the ATTACH strings the administration shows.
    pub clients: ClientEndpoint,
}

/// Where lake users connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEndpoint {
    pub host: String,
    pub port: u16,
    /// libpq's `sslmode` clients should use: `require` for an external PostgreSQL (whose
    /// `pg_hba.conf` is not ours); unset for the supervised one (TLS is offered, libpq's
    /// default `prefer` takes it).
    pub sslmode: Option<&'static str>,
}

impl AdminSettings {
    /// The maintenance settings of `lake`: its own `[lakes.maintenance]`, else `[maintenance]`.
    pub fn maintenance_of<'a>(&'a self, lake: &'a LakeConfig) -> &'a MaintenanceConfig {
        lake.maintenance.as_ref().unwrap_or(&self.maintenance)
    }
}

/// `[[lakes]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Lake name, also its PostgreSQL database name: lowercase letters, digits, `_`.
    pub name: String,
    /// `s3://bucket/prefix/` or an absolute local folder; stored in the lake at creation.
    pub data_path: DataPath,
    /// This lake's maintenance, replacing `[maintenance]` (keys it omits take their defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceConfig>,
}

impl LakeConfig {
    /// A lake with the server-wide maintenance settings.
    pub fn new(name: String, data_path: DataPath) -> Self {
        LakeConfig {
            name,
            data_path,
            maintenance: None,
        }
    }
}

/// `[maintenance]`: what the server does for each lake on its own, with DuckLake's functions.
/// On by default with conservative settings (like S3 Tables' compaction and snapshot expiry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(clippy::struct_excessive_bools)] // each is one documented on/off key
pub struct MaintenanceConfig {
    /// Run maintenance jobs on a schedule.
    pub enabled: bool,
    /// Time between the end of one job and the start of the next, per lake (`6h`).
    pub interval: HumanDuration,
    /// `ducklake_expire_snapshots` of snapshots older than this (`5d`); unset: never expire.
    pub expire_snapshots_older_than: Option<HumanDuration>,
    /// `ducklake_merge_adjacent_files`: merge small Parquet files.
    pub merge_adjacent_files: bool,
    /// `ducklake_flush_inlined_data`: move inlined rows into Parquet files.
    pub flush_inlined_data: bool,
    /// `ducklake_cleanup_old_files`: delete files scheduled for deletion longer than this
    /// (`10d`); never less than the backups' recovery window.
    pub cleanup_old_files_older_than: HumanDuration,
    /// Remove the catalog garbage DuckLake leaves (stats of dropped tables, empty inlined-data
    /// tables, duplicate deletion entries).
    pub catalog_garbage: bool,
    /// A job still running after this is interrupted (`30m`).
    pub max_runtime: HumanDuration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            enabled: true,
            interval: HumanDuration(Duration::from_hours(6)),
            expire_snapshots_older_than: Some(HumanDuration(Duration::from_hours(5 * 24))),
            merge_adjacent_files: true,
            flush_inlined_data: true,
            cleanup_old_files_older_than: HumanDuration(Duration::from_hours(10 * 24)),
            catalog_garbage: true,
            max_runtime: HumanDuration(Duration::from_mins(30)),
        }
    }
}
