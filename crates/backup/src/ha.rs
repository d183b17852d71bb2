//! High availability on a backup target: the primary renews its lease, standbys follow it and
//! take the next generation when it stops renewing.
//!
//! Timing, with P = `ha.lease_period`:
//! - the primary writes `heartbeats/<generation>.json` every P/8, each write followed by a
//!   check that generation + 1 does not exist (a renewal);
//! - the primary stops PostgreSQL once the newest renewal that completed was *sent* more than
//!   P/2 ago ([`HaConfig::fence_after`]);
//! - a standby takes generation + 1 (a create-only write) only when, on its own clock, the
//!   heartbeat has not changed for P and a read just before the create still shows it
//!   unchanged; it then waits P/2 more before promoting, which outlasts any renewal the old
//!   primary had in flight.
//!
//! So the old primary stops before the new one accepts a commit (docs/high-availability.md
//! gives the argument); a switchover skips the waits because the primary says, in its last
//! heartbeat, that it stopped and where its WAL ends.

use std::path::PathBuf;
use std::time::Duration;

use ::base::duration::HumanDuration;
use ::base::Secret;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use storage::BackupTarget;

use super::lease::{self, Lease};
use super::{read_json, BackupError};

/// The role standbys replicate as.
pub const REPLICATION_ROLE: &str = "ducklake_replication";
/// The `application_name` standbys connect with; `synchronous_standby_names` names it.
pub const STANDBY_APPLICATION: &str = "ducklake_standby";
/// Folder of the heartbeats, one object per lease generation.
pub const HEARTBEAT_DIR: &str = "heartbeats/";
/// In PGDATA: PostgreSQL's marker of a standby.
pub const STANDBY_SIGNAL: &str = "standby.signal";

/// `[ha]`: several servers on one backup target, one primary and hot standbys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// `single` (one server; a replaced task restores from the backup target) or `auto` (every
    /// server on the backup target is a candidate: the lease holder is the primary, the
    /// others are hot standbys that take over when it stops renewing).
    pub mode: HaMode,
    /// How long a primary may go without renewing its lease before a standby takes over
    /// (`8s`). The primary stops accepting writes after half of it without a renewal.
    pub lease_period: HumanDuration,
    /// The host name or address standbys reach this server's PostgreSQL at (on
    /// `postgres.port`); unset: this machine's host name.
    pub advertise_host: Option<String>,
    /// The password of the replication role (`ducklake_replication`), the same on every
    /// server of the backup target; at least 16 characters.
    pub replication_password: Option<Secret>,
    /// A file holding `replication_password`.
    pub replication_password_file: Option<PathBuf>,
    /// Zero-loss mode: a commit is acknowledged only once a standby has flushed it.
    pub synchronous: bool,
    /// With `synchronous`: how long commits wait for a missing standby before the primary
    /// degrades to asynchronous replication (logged, on `/metrics`); unset: wait for ever.
    pub synchronous_timeout: Option<HumanDuration>,
}

/// `ha.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HaMode {
    #[default]
    Single,
    Auto,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            mode: HaMode::Single,
            lease_period: HumanDuration(Duration::from_secs(8)),
            advertise_host: None,
            replication_password: None,
            replication_password_file: None,
            synchronous: false,
            synchronous_timeout: None,
        }
    }
}

impl HaConfig {
    /// Whether this server takes part in failover.
    pub fn enabled(&self) -> bool {
        self.mode == HaMode::Auto
    }

    /// How often the primary renews: P/8.
    pub fn renew_every(&self) -> Duration {
        self.lease_period.0 / 8
    }

    /// A primary whose newest completed renewal was sent longer ago than this stops: P/2.
    pub fn fence_after(&self) -> Duration {
        self.lease_period.0 / 2
    }

    /// `postgresql.conf` settings every server of a highly available target runs with (a
    /// primary may become a standby and back).
    pub fn postgres_settings(&self) -> Vec<(String, String)> {
        [
            ("hot_standby", "on"),
            // Readers' snapshots hold back the primary's cleanup instead of being cancelled.
            ("hot_standby_feedback", "on"),
            ("max_standby_streaming_delay", "30s"),
            ("max_standby_archive_delay", "30s"),
            ("wal_receiver_status_interval", "1s"),
            ("wal_receiver_timeout", "10s"),
            ("wal_sender_timeout", "10s"),
            ("wal_retrieve_retry_interval", "1s"),
            // A standby away for a while streams again from here before falling back to the
            // archive.
            ("wal_keep_size", "1GB"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

/// What the primary writes at every renewal: that it lives, and where standbys reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub generation: u64,
    pub holder: String,
    /// Grows by one at every renewal: standbys watch it change.
    pub seq: u64,
    pub renewed_at: DateTime<Utc>,
    /// Where standbys stream from.
    pub host: String,
    pub port: u16,
    /// Commits wait for a standby now (zero-loss mode, not degraded).
    pub synchronous: bool,
    /// Set by a switchover: the primary stopped, its WAL ends here (`pg_lsn` text), and a
    /// standby that replayed that far may take over at once.
    pub released_at: Option<String>,
}

impl Heartbeat {
    /// `heartbeats/<generation>.json`.
    pub fn object(generation: u64) -> String {
        format!("{HEARTBEAT_DIR}{generation:020}.json")
    }
}

/// Writes the heartbeat (replacing the last one).
pub async fn write_heartbeat(target: &BackupTarget, beat: &Heartbeat) -> Result<(), BackupError> {
    let body = serde_json::to_vec_pretty(beat).expect("heartbeat serialises");
    target
        .put(&Heartbeat::object(beat.generation), body.into())
        .await?;
    Ok(())
}

/// The heartbeat of `generation`, if its holder ever wrote one.
pub async fn read_heartbeat(
    target: &BackupTarget,
    generation: u64,
) -> Result<Option<Heartbeat>, BackupError> {
    read_json(target, &Heartbeat::object(generation)).await
}

/// One renewal: the heartbeat is written, then the next generation is checked for. A newer
/// generation is [`BackupError::Superseded`].
pub async fn renew(
    target: &BackupTarget,
    lease: &Lease,
    beat: &Heartbeat,
) -> Result<(), BackupError> {
    write_heartbeat(target, beat).await?;
    if let Some(newer) = lease::superseded_by(target, lease).await? {
        return Err(lease::fenced_error(target, &newer));
    }
    Ok(())
}

/// A standby's view of the primary's heartbeat: whether it stopped changing for a whole
/// period, measured on this machine's clock (the two clocks are never compared).
#[derive(Debug, Clone)]
pub struct Expiry {
    period: Duration,
    seen: Option<(u64, u64)>,
    since: tokio::time::Instant,
}

impl Expiry {
    pub fn new(period: Duration) -> Self {
        Expiry {
            period,
            seen: None,
            since: tokio::time::Instant::now(),
        }
    }

    /// Records a successful read of generation `generation`'s heartbeat (`seq` 0 when it has
    /// none); true when it has not changed for the whole period.
    pub fn observe(&mut self, generation: u64, seq: u64, now: tokio::time::Instant) -> bool {
        if self.seen != Some((generation, seq)) {
            self.seen = Some((generation, seq));
            self.since = now;
            return false;
        }
        now.duration_since(self.since) >= self.period
    }

    /// How long the heartbeat has been unchanged.
    pub fn unchanged_for(&self, now: tokio::time::Instant) -> Duration {
        now.duration_since(self.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_expires_only_after_a_whole_period_without_change() {
        let period = Duration::from_secs(8);
        let mut e = Expiry::new(period);
        let t0 = tokio::time::Instant::now();
        assert!(!e.observe(1, 5, t0));
        assert!(!e.observe(1, 5, t0 + Duration::from_secs(7)));
        // A change restarts the clock.
        assert!(!e.observe(1, 6, t0 + Duration::from_secs(7)));
        assert!(!e.observe(1, 6, t0 + Duration::from_secs(14)));
        assert!(e.observe(1, 6, t0 + Duration::from_secs(15)));
        // A new generation is a change too.
        assert!(!e.observe(2, 6, t0 + Duration::from_secs(16)));
    }

    #[test]
    fn the_primary_fences_itself_well_before_a_standby_may_take_over() {
        let c = HaConfig::default();
        assert!(c.fence_after() * 2 <= c.lease_period.0);
        assert!(c.renew_every() * 4 <= c.fence_after());
    }
}
