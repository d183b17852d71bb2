//! The supervisor's state, published on a `watch` channel for the health endpoints (and the
//! failover loops, which publish their part).

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::sync::watch;

/// What the supervisor knows about PostgreSQL and the lakes right now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub postgres: PgState,
    pub lakes: BTreeMap<String, LakeStatus>,
    /// Unexpected PostgreSQL exits since the server started.
    pub restarts: u32,
    /// The last error the supervisor handled, one line.
    pub last_error: Option<String>,
    /// WAL archiving and base backups; `None` when `backup.target` is unset.
    pub backup: Option<BackupStatus>,
    /// Where the admin password comes from and, for a Secrets Manager secret, its rotations.
    pub admin_password: Option<PasswordStatus>,
    /// Scheduled maintenance per lake: the last job and when the next is due.
    pub maintenance: BTreeMap<String, MaintenanceStatus>,
    /// The connection pooler; `None` when `pooler.enabled` is off.
    pub pooler: Option<PoolerStatus>,
    /// This server's part in failover; `None` with `ha.mode = "single"`.
    pub ha: Option<HaStatus>,
}

/// A server of a highly available backup target: primary or hot standby, and how far behind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HaStatus {
    pub role: HaRole,
    /// The lease generation the primary holds (this server's, or the one it follows).
    pub lease_generation: Option<u64>,
    /// The primary's address: the one this server advertises, or the one it streams from.
    pub primary: Option<String>,
    /// Standby: the WAL receiver streams from the primary now (else: the archive).
    pub streaming: bool,
    /// Standby: how far replay is behind the newest commit it received (0 when caught up).
    pub replay_lag_secs: Option<f64>,
    /// Standby: the newest WAL position replayed (`pg_lsn`).
    pub replay_lsn: Option<String>,
    /// Standby: how long the primary's heartbeat has not changed.
    pub heartbeat_age_secs: Option<f64>,
    /// Primary: standbys streaming from it now.
    pub standbys: u32,
    /// Primary: the largest replay lag of the standbys streaming from it (seconds).
    pub standby_lag_secs: Option<f64>,
    /// Primary with `ha.synchronous`: commits wait for a standby now (false: degraded).
    pub synchronous: Option<bool>,
    /// Primary: when the lease was last renewed (RFC 3339).
    pub last_renewal: Option<String>,
}

/// `primary`, `standby` or `promoting`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HaRole {
    #[default]
    Primary,
    Standby,
    /// Took the lease; waiting out the old primary's last renewal, then promoting.
    Promoting,
}

impl HaRole {
    /// The role's name, as serialised.
    pub fn name(self) -> &'static str {
        match self {
            HaRole::Primary => "primary",
            HaRole::Standby => "standby",
            HaRole::Promoting => "promoting",
        }
    }
}

/// The supervised connection pooler (PgBouncer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolerStatus {
    pub state: PoolerState,
    pub port: u16,
    pub pid: Option<i32>,
    /// Unexpected exits since the server started.
    pub restarts: u32,
    /// The last start failure or exit, one line.
    pub last_error: Option<String>,
    /// The lakes it serves now (`lake create` waits until a new one is among them).
    pub lakes: Vec<String>,
}

/// The pooler's lifecycle, serialised as `starting`, `running`, `restarting` or `stopped`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolerState {
    #[default]
    Starting,
    Running,
    /// It exited or failed to start; a restart is scheduled.
    Restarting,
    Stopped,
}

impl PoolerState {
    /// The state's name, as serialised.
    pub fn name(self) -> &'static str {
        match self {
            PoolerState::Starting => "starting",
            PoolerState::Running => "running",
            PoolerState::Restarting => "restarting",
            PoolerState::Stopped => "stopped",
        }
    }
}

/// One lake's scheduled maintenance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MaintenanceStatus {
    /// A job runs now.
    pub running: bool,
    /// When the next job is due (UTC, RFC 3339); `None` with maintenance disabled.
    pub next_run: Option<String>,
    pub last: Option<lake_upkeep::maintenance::JobReport>,
}

/// The admin password's source, never its value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PasswordStatus {
    /// `postgres.admin_password`, `…_file`, `generated`, or `Secrets Manager secret …`.
    pub source: String,
    /// The Secrets Manager version in use.
    pub version_id: Option<String>,
    /// Rotated values applied since the server started.
    pub rotations: u32,
    /// When the secret was last read successfully (RFC 3339).
    pub last_checked: Option<String>,
    /// The last failed read or apply, one line; cleared by the next success.
    pub last_error: Option<String>,
}

/// The durability side: archive progress and lag, base backups, fencing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupStatus {
    pub target: String,
    pub lease_generation: Option<u64>,
    pub archive: backup::ArchiveStats,
    /// WAL segments PostgreSQL finished but the target does not have yet.
    pub pending_wal: u64,
    /// How long the oldest pending segment has waited: the archive lag.
    pub archive_lag_secs: Option<f64>,
    /// Set when another instance took over the target; this one stops.
    pub fenced: Option<String>,
    pub last_base_backup: Option<BaseBackupInfo>,
    pub last_base_backup_error: Option<String>,
    /// The backup this instance was restored from at start, if any.
    pub restored_from: Option<String>,
}

/// A finished base backup, in short.
#[derive(Debug, Clone, Serialize)]
pub struct BaseBackupInfo {
    pub id: String,
    pub finished_at: chrono::DateTime<chrono::Utc>,
    pub stored_bytes: u64,
    pub wal_range: String,
}

/// The PostgreSQL child's lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PgState {
    /// Preparing the data directory or waiting for PostgreSQL to accept connections.
    #[default]
    Starting,
    /// Restoring from the backup target: downloading a base backup or replaying WAL. Alive,
    /// not ready.
    Restoring {
        phase: String,
    },
    Running {
        pid: i32,
    },
    /// PostgreSQL exited unexpectedly; a restart is scheduled.
    Restarting {
        exit: String,
    },
    Stopping,
    Stopped,
    /// Start-up failed for good; the server is exiting.
    Failed,
    /// No PostgreSQL of its own: the server administers the external one at `endpoint`
    /// (`postgres.url`), which the readiness check pings.
    External {
        endpoint: String,
    },
}

impl PgState {
    /// The state's name, as serialised in the `state` field.
    pub fn name(&self) -> &'static str {
        match self {
            PgState::Starting => "starting",
            PgState::Restoring { .. } => "restoring",
            PgState::Running { .. } => "running",
            PgState::Restarting { .. } => "restarting",
            PgState::Stopping => "stopping",
            PgState::Stopped => "stopped",
            PgState::Failed => "failed",
            PgState::External { .. } => "external",
        }
    }

    /// True while the PostgreSQL child runs or is being brought up or down in order.
    pub fn is_alive(&self) -> bool {
        matches!(
            self,
            PgState::Starting
                | PgState::Restoring { .. }
                | PgState::Running { .. }
                | PgState::Stopping
                | PgState::External { .. }
        )
    }
}

/// One lake's readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LakeStatus {
    pub state: LakeState,
    pub data_path: String,
    /// The DuckLake format version recorded in the lake's catalog.
    pub spec_version: Option<String>,
    pub error: Option<String>,
}

/// Whether a lake can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LakeState {
    Pending,
    Ready,
    Error,
}

impl Status {
    /// True when PostgreSQL runs, every lake is initialised, the pooler (when enabled) runs and
    /// this instance was not fenced.
    pub fn lakes_ready(&self) -> bool {
        if self.is_standby() {
            return self.accepting() && self.backup.as_ref().is_none_or(|b| b.fenced.is_none());
        }
        self.accepting()
            && self.backup.as_ref().is_none_or(|b| b.fenced.is_none())
            && self
                .pooler
                .as_ref()
                .is_none_or(|p| p.state == PoolerState::Running)
            && !self.lakes.is_empty()
            && self.lakes.values().all(|l| l.state == LakeState::Ready)
    }

    /// True on a hot standby (readers only; its lakes are the primary's, replicated).
    pub fn is_standby(&self) -> bool {
        self.ha.as_ref().is_some_and(|h| h.role != HaRole::Primary)
    }

    /// The failover role's name; `None` for a single server.
    pub fn role(&self) -> Option<&'static str> {
        self.ha.as_ref().map(|h| h.role.name())
    }

    /// True when PostgreSQL accepts connections (a `SELECT 1` check is worth running).
    pub fn accepting(&self) -> bool {
        matches!(
            self.postgres,
            PgState::Running { .. } | PgState::External { .. }
        )
    }

    /// Why the server is not ready, as `/readyz` says it; `None` when [`Status::lakes_ready`].
    pub fn blocker(&self) -> Option<String> {
        if self.lakes_ready() {
            return None;
        }
        if let PgState::Restoring { phase } = &self.postgres {
            return Some(format!("restoring from the backup target: {phase}"));
        }
        if !self.accepting() {
            return Some(format!("postgres is {}", self.postgres.name()));
        }
        if let Some(reason) = self.backup.as_ref().and_then(|b| b.fenced.as_ref()) {
            return Some(format!("fenced: {reason}"));
        }
        if let Some(p) = self
            .pooler
            .as_ref()
            .filter(|p| p.state != PoolerState::Running)
        {
            return Some(format!(
                "the connection pooler is {}{}",
                p.state.name(),
                p.last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        if let Some((name, lake)) = self.lakes.iter().find(|(_, l)| l.state == LakeState::Error) {
            return Some(format!(
                "lake {name}: {}",
                lake.error.as_deref().unwrap_or("error")
            ));
        }
        Some("lakes are being initialised".into())
    }
}

/// The sending side, owned by the supervisor.
pub type StatusSender = watch::Sender<Status>;
/// The receiving side, read by the health endpoints.
pub type StatusReceiver = watch::Receiver<Status>;

/// A new channel holding the initial (starting) status.
pub fn channel() -> (StatusSender, StatusReceiver) {
    watch::channel(Status::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_match_the_serialised_tag() {
        for state in [
            PgState::Starting,
            PgState::Restoring { phase: "x".into() },
            PgState::Running { pid: 1 },
            PgState::Restarting { exit: "x".into() },
            PgState::Stopping,
            PgState::Stopped,
            PgState::Failed,
            PgState::External {
                endpoint: "db:5432".into(),
            },
        ] {
            let json = serde_json::to_value(&state).unwrap();
            assert_eq!(json["state"], state.name());
        }
        for state in [
            PoolerState::Starting,
            PoolerState::Running,
            PoolerState::Restarting,
            PoolerState::Stopped,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.name());
        }
    }

    fn running_with_a_ready_lake(s: &mut Status) {
        s.postgres = PgState::Running { pid: 1 };
        s.lakes.insert(
            "lakehouse".into(),
            LakeStatus {
                state: LakeState::Ready,
                data_path: "/d/".into(),
                spec_version: Some("1.0".into()),
                error: None,
            },
        );
    }

    #[test]
    fn the_blocker_names_the_first_reason_not_to_serve() {
        let mut s = Status::default();
        assert_eq!(s.blocker().as_deref(), Some("postgres is starting"));
        assert!(s.postgres.is_alive());
        s.postgres = PgState::Restoring {
            phase: "replaying archived WAL".into(),
        };
        assert_eq!(
            s.blocker().as_deref(),
            Some("restoring from the backup target: replaying archived WAL")
        );
        assert!(s.postgres.is_alive(), "a long restore is alive");
        running_with_a_ready_lake(&mut s);
        assert_eq!(s.blocker(), None);
        s.backup = Some(BackupStatus {
            fenced: Some("superseded".into()),
            ..Default::default()
        });
        assert_eq!(s.blocker().as_deref(), Some("fenced: superseded"));
        s.backup = None;
        let lake = s.lakes.get_mut("lakehouse").unwrap();
        lake.state = LakeState::Error;
        lake.error = Some("preflight failed".into());
        assert_eq!(
            s.blocker().as_deref(),
            Some("lake lakehouse: preflight failed")
        );
        s.postgres = PgState::Restarting {
            exit: "signal: 9".into(),
        };
        assert!(!s.postgres.is_alive());
        assert_eq!(s.blocker().as_deref(), Some("postgres is restarting"));
    }
}
