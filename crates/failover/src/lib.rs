//! Failover (`ha.mode = "auto"`): the primary's lease renewals and zero-loss mode, a standby's
//! bootstrap, following and promotion, the replication role. The supervisor (catalog-server)
//! decides when each runs; the planned switchover's stop is its own.
//!
//! The timing argument lives in `backup::ha`; this crate runs it against PostgreSQL.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use backup::ha::{
    self, Expiry, HaConfig, Heartbeat, REPLICATION_ROLE, STANDBY_APPLICATION, STANDBY_SIGNAL,
};
use backup::{lease, restore, ArchiveAgent, BackupError, BackupManifest, Lease};
use base::{quote_ident, quote_literal, Secret};
use pg_cluster::{Cluster, OsUser, PgError, RunningPostgres};
use serve_status::{HaRole, HaStatus, StatusSender};
use storage::BackupTarget;

/// Why a failover step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FailoverError {
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("pg_promote did not finish within 60 s; see PostgreSQL's log above, and start the server again")]
    PromoteTimedOut,
}

/// Whether `pgdata` is a standby's (PostgreSQL's `standby.signal`).
pub fn is_standby(pgdata: &Path) -> bool {
    pgdata.join(STANDBY_SIGNAL).exists()
}

/// Unpacks the newest base backup into an empty PGDATA as a standby (no lease taken).
pub async fn bootstrap_standby(
    target: &BackupTarget,
    pgdata: &Path,
    os_user: Option<&OsUser>,
) -> Result<BackupManifest, BackupError> {
    let manifest = restore::choose(target, None)
        .await?
        .ok_or_else(|| BackupError::NoBackup {
            place: target.place(),
            when: " for a standby to start from".into(),
        })?;
    restore::unpack(target, &manifest, pgdata, os_user).await?;
    mark_standby(pgdata, os_user)?;
    Ok(manifest)
}

/// Turns a stopped data directory into a standby's: `standby.signal` instead of
/// `recovery.signal`.
pub fn mark_standby(pgdata: &Path, os_user: Option<&OsUser>) -> Result<(), BackupError> {
    let _ = std::fs::remove_file(pgdata.join("recovery.signal"));
    let signal = pgdata.join(STANDBY_SIGNAL);
    std::fs::write(&signal, b"").map_err(BackupError::io("write standby.signal"))?;
    if let Some(u) = os_user {
        std::os::unix::fs::chown(&signal, Some(u.uid), Some(u.gid))
            .map_err(BackupError::io("chown standby.signal"))?;
    }
    Ok(())
}

/// Creates (or updates) the replication role with `password`, as a SCRAM verifier.
pub async fn ensure_replication_role(
    client: &tokio_postgres::Client,
    password: &Secret,
) -> Result<(), PgError> {
    lake_session::postgres::create_role_if_missing(client, REPLICATION_ROLE, true).await?;
    client
        .batch_execute(&format!(
            "ALTER ROLE {} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS CONNECTION LIMIT 5 PASSWORD {}",
            quote_ident(REPLICATION_ROLE),
            quote_literal(&lake_session::scram_verifier(password.expose()))
        ))
        .await
        .map_err(PgError::sql(format!("set up the replication role {REPLICATION_ROLE}")))
}

/// Sets a managed setting with `ALTER SYSTEM` and reloads.
async fn set_system(
    client: &tokio_postgres::Client,
    name: &str,
    value: Option<&str>,
) -> Result<(), PgError> {
    let sql = match value {
        Some(v) => format!("ALTER SYSTEM SET {name} = {}", quote_literal(v)),
        None => format!("ALTER SYSTEM RESET {name}"),
    };
    client
        .batch_execute(&sql)
        .await
        .map_err(PgError::sql(format!("set {name}")))?;
    client
        .batch_execute("SELECT pg_catalog.pg_reload_conf()")
        .await
        .map_err(PgError::sql("reload the configuration"))
}

/// What a standby streams from: the primary's advertised address, TLS, the replication role
/// (its password is in PostgreSQL's environment).
fn conninfo(beat: &Heartbeat) -> String {
    format!(
        "host={} port={} user={REPLICATION_ROLE} application_name={STANDBY_APPLICATION} sslmode=require channel_binding=require connect_timeout=5",
        base::conninfo_value(&beat.host),
        beat.port
    )
}

/// Where this server's PostgreSQL is reached as a primary.
pub fn advertised(config: &HaConfig) -> String {
    config.advertise_host.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into())
    })
}

/// Everything the primary's and a standby's loops need.
#[derive(Clone)]
pub struct Ha {
    pub config: HaConfig,
    pub target: BackupTarget,
    pub agent: ArchiveAgent,
    pub cluster: Cluster,
    pub status: StatusSender,
    pub home: std::path::PathBuf,
    pub sysid: String,
    /// `postgres.port`: where standbys stream from this server.
    pub port: u16,
}

impl std::fmt::Debug for Ha {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ha(..)")
    }
}

/// A lease holder this standby may take over now.
struct Due {
    generation: u64,
    /// The heartbeat sequence the expiry saw (0: none).
    seq: u64,
    /// It released the lease (a switchover) and this standby replayed all of its WAL.
    released: bool,
}

/// How a standby's following ended.
#[derive(Debug)]
pub enum Followed {
    /// This server took the lease and promoted: it is the primary now.
    Promoted(RunningPostgres),
    /// The server is stopping.
    Stopped(RunningPostgres),
    /// PostgreSQL exited (restart it as a standby).
    Exited(RunningPostgres, String),
}

impl Ha {
    fn publish(&self, f: impl FnOnce(&mut HaStatus)) {
        self.status
            .send_modify(|s| f(s.ha.get_or_insert_with(HaStatus::default)));
    }

    /// Runs a standby until it promotes, stops or PostgreSQL exits: follows the newest lease
    /// holder's advertised address, publishes the replay lag, and takes over once the
    /// heartbeat stopped for a lease period (or at once after a switchover's release).
    pub async fn follow(
        &self,
        mut running: RunningPostgres,
        shutdown: &CancellationToken,
    ) -> Result<Followed, FailoverError> {
        let mut expiry = Expiry::new(self.config.lease_period.0);
        let mut pointed_at: Option<String> = None;
        let mut session = pg_conn::KeptSession::default();
        self.publish(|h| h.role = HaRole::Standby);
        tracing::info!("hot standby: following the primary (streaming, or the archive when it is out of reach)");
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(Followed::Stopped(running)),
                exit = running.exited() => {
                    let exit = exit.map_or_else(|e| e.to_string(), |s| s.to_string());
                    return Ok(Followed::Exited(running, exit));
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            match self
                .watch_once(&mut session, &mut expiry, &mut pointed_at)
                .await
            {
                Ok(Some(due)) => {
                    if let Some(lease) = self.take_over(&due).await? {
                        self.promote(&lease, due.released).await?;
                        return Ok(Followed::Promoted(running));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "standby: reading the primary's lease failed; still following");
                }
            }
        }
    }

    /// One look at the lease and heartbeat: points PostgreSQL at a new primary address,
    /// publishes the lag. `Some` when the holder may be taken over now: its heartbeat stood
    /// still for a lease period, or it released the lease and this standby replayed all of
    /// its WAL.
    async fn watch_once(
        &self,
        session: &mut pg_conn::KeptSession,
        expiry: &mut Expiry,
        pointed_at: &mut Option<String>,
    ) -> Result<Option<Due>, FailoverError> {
        let client = session
            .get(|| self.cluster.connect_superuser("postgres"))
            .await?;
        let replay = replay_state(client).await?;
        let Some(newest) = lease::current(&self.target).await? else {
            return Ok(None);
        };
        let beat = ha::read_heartbeat(&self.target, newest.generation).await?;
        let now = Instant::now();
        let seq = beat.as_ref().map_or(0, |b| b.seq);
        let expired = expiry.observe(newest.generation, seq, now);
        if let Some(b) = &beat {
            let info = conninfo(b);
            if pointed_at.as_deref() != Some(info.as_str()) && b.released_at.is_none() {
                set_system(client, "primary_conninfo", Some(&info)).await?;
                tracing::info!(primary = %format!("{}:{}", b.host, b.port), generation = b.generation, "standby: streaming from the primary");
                *pointed_at = Some(info);
            }
        }
        self.publish(|h| {
            h.lease_generation = Some(newest.generation);
            h.primary = beat.as_ref().map(|b| format!("{}:{}", b.host, b.port));
            h.streaming = replay.streaming;
            h.replay_lag_secs = Some(replay.lag_secs);
            h.replay_lsn.clone_from(&replay.lsn);
            h.heartbeat_age_secs = Some(expiry.unchanged_for(now).as_secs_f64());
        });
        let due = |released| Due {
            generation: newest.generation,
            seq,
            released,
        };
        if let Some(at) = beat.as_ref().and_then(|b| b.released_at.clone()) {
            // A switchover: take over at once when every WAL record of the old primary is
            // replayed; if not (it died mid-way), as after any stop, once the lease expired.
            let caught_up = client
                .query_one(
                    "SELECT pg_catalog.pg_last_wal_replay_lsn() OPERATOR(pg_catalog.>) $1::text::pg_lsn",
                    &[&at],
                )
                .await
                .map_err(PgError::sql("compare the replay position"))?
                .get::<_, Option<bool>>(0)
                .unwrap_or(false);
            if caught_up {
                return Ok(Some(due(true)));
            }
        }
        Ok(expired.then(|| due(false)))
    }

    /// Takes the next lease generation after one last read shows the heartbeat still as the
    /// expiry saw it; `None` when it moved, or another standby (or a restore) was first.
    async fn take_over(&self, due: &Due) -> Result<Option<Lease>, FailoverError> {
        let generation = due.generation;
        if !due.released {
            // The final read: a renewal that landed since the expiry's last look cancels it.
            let again = ha::read_heartbeat(&self.target, generation).await?;
            if again.as_ref().map_or(0, |b| b.seq) != due.seq {
                return Ok(None);
            }
        }
        match lease::take_next(&self.target, &self.home, &self.sysid, generation).await {
            Ok(lease) => {
                tracing::warn!(
                    generation = lease.generation,
                    switchover = due.released,
                    "took over the backup target's lease from the primary, which stopped renewing it; promoting"
                );
                Ok(Some(lease))
            }
            Err(BackupError::LeaseRace { .. }) => {
                tracing::info!("another server took over first; following it");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits out the old primary's last possible renewal (not after a switchover), then
    /// promotes PostgreSQL and archives under the new lease.
    async fn promote(&self, lease: &Lease, released: bool) -> Result<(), FailoverError> {
        self.agent.set_lease(lease.clone());
        // The new generation's first heartbeat now: another standby's expiry of it starts
        // here, not from nothing.
        let first = self.heartbeat(lease, None);
        if let Err(e) = ha::write_heartbeat(&self.target, &first).await {
            tracing::warn!(error = %e, "writing the new lease's first heartbeat failed; the renewals retry");
        }
        self.status.send_modify(|s| {
            if let Some(b) = s.backup.as_mut() {
                b.lease_generation = Some(lease.generation);
            }
        });
        self.publish(|h| {
            h.role = HaRole::Promoting;
            h.lease_generation = Some(lease.generation);
        });
        if !released {
            tokio::time::sleep(self.config.fence_after()).await;
        }
        let client = self.cluster.connect_superuser("postgres").await?;
        let promoted: bool = client
            .query_one("SELECT pg_catalog.pg_promote(true, 60)", &[])
            .await
            .map_err(PgError::sql("promote the standby"))?
            .get(0);
        if !promoted {
            return Err(FailoverError::PromoteTimedOut);
        }
        tracing::warn!(
            generation = lease.generation,
            "promoted: this server is the primary now"
        );
        Ok(())
    }

    /// Before the primary's own set-up writes: no commit waits for a standby yet (a data
    /// directory from a base backup or a promotion may carry the old primary's setting, and
    /// the set-up must not hang on a standby that is gone).
    pub async fn before_bring_up(&self) -> Result<(), FailoverError> {
        let client = self.cluster.connect_superuser("postgres").await?;
        set_system(&client, "synchronous_standby_names", None).await?;
        set_system(&client, "primary_conninfo", None).await?;
        Ok(())
    }

    /// Applies zero-loss mode once the primary is set up: commits wait for a standby
    /// (`ha.synchronous`), or never (`synchronous_standby_names` reset).
    pub async fn start_primary(&self) -> Result<(), FailoverError> {
        let client = self.cluster.connect_superuser("postgres").await?;
        let names = self.config.synchronous.then(synchronous_names);
        set_system(&client, "synchronous_standby_names", names.as_deref()).await?;
        self.publish(|h| {
            *h = HaStatus {
                role: HaRole::Primary,
                primary: Some(format!("{}:{}", advertised(&self.config), self.port)),
                synchronous: self.config.synchronous.then_some(true),
                ..HaStatus::default()
            };
        });
        Ok(())
    }

    /// The primary's lease: renewed every P/8; after P/2 without a renewal that completed,
    /// or once a newer generation exists, the agent is fenced (the supervisor then stops
    /// PostgreSQL). Also keeps zero-loss mode's promise when the standby goes away. Runs until
    /// `stop`.
    pub async fn lead(
        self,
        lease: Lease,
        released: Arc<watch::Sender<Option<String>>>,
        stop: CancellationToken,
    ) {
        let mut last_ok = Instant::now();
        let mut sync = SyncState::new(&self.config);
        loop {
            let sent = Instant::now();
            let deadline = last_ok + self.config.fence_after();
            // Bounded: a slow PostgreSQL never delays the fencing decision.
            let synchronous = tokio::time::timeout_at(deadline, sync.check(&self))
                .await
                .unwrap_or_else(|_| sync.waits());
            let mut beat = self.heartbeat(&lease, released.borrow().clone());
            beat.synchronous = synchronous;
            match tokio::time::timeout_at(deadline, ha::renew(&self.target, &lease, &beat)).await {
                Ok(Ok(())) => {
                    last_ok = sent;
                    self.publish(|h| h.last_renewal = Some(beat.renewed_at.to_rfc3339()));
                }
                Ok(Err(e @ BackupError::Superseded { .. })) => {
                    self.agent.fence(&e.to_string());
                    break;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the lease failed; retrying"),
                Err(_) => {}
            }
            if Instant::now() >= last_ok + self.config.fence_after() {
                self.agent.fence(&format!(
                    "the lease on {} was not renewed for {:?} (half of ha.lease_period): cut off from the backup target, this primary stops PostgreSQL so a standby can take over without two primaries; started again, it carries on if no standby took over, or refuses in one line if one did",
                    self.target.place(),
                    self.config.fence_after()
                ));
                break;
            }
            let next = (sent + self.config.renew_every()).min(last_ok + self.config.fence_after());
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
        }
        stop.cancelled().await;
    }

    /// A heartbeat of `lease` now. Its sequence is the time in microseconds, so it also grows
    /// across restarts of the same holder.
    fn heartbeat(&self, lease: &Lease, released_at: Option<String>) -> Heartbeat {
        let now = Utc::now();
        Heartbeat {
            generation: lease.generation,
            holder: lease.holder.clone(),
            seq: u64::try_from(now.timestamp_micros()).unwrap_or_default(),
            renewed_at: now,
            host: advertised(&self.config),
            port: self.port,
            synchronous: false,
            released_at,
        }
    }
}

/// `synchronous_standby_names` in zero-loss mode.
fn synchronous_names() -> String {
    format!("ANY 1 ({STANDBY_APPLICATION})")
}

/// Zero-loss mode's state on the primary: synchronous while a standby streams; degraded to
/// asynchronous after `ha.synchronous_timeout` without one (when set), and back.
struct SyncState {
    enabled: bool,
    timeout: Option<Duration>,
    missing_since: Option<Instant>,
    degraded: bool,
    /// The session it counts standbys in, kept between the renewals.
    session: pg_conn::KeptSession,
}

impl SyncState {
    fn new(config: &HaConfig) -> Self {
        SyncState {
            enabled: config.synchronous,
            timeout: config.synchronous_timeout.map(|t| t.0),
            missing_since: None,
            degraded: false,
            session: pg_conn::KeptSession::default(),
        }
    }

    /// Whether commits wait for a standby now.
    fn waits(&self) -> bool {
        self.enabled && !self.degraded
    }

    /// Counts the streaming standbys, switches the mode when due, and says whether commits
    /// wait for a standby now.
    async fn check(&mut self, ha: &Ha) -> bool {
        let opened = self
            .session
            .get(|| ha.cluster.connect_superuser("postgres"))
            .await;
        let Ok(client) = opened else {
            return self.waits();
        };
        let (standbys, lag) = client
            .query_one(
                "SELECT pg_catalog.count(*)::int4,
                        pg_catalog.max(pg_catalog.date_part('epoch', replay_lag))::float8
                 FROM pg_catalog.pg_stat_replication WHERE state OPERATOR(pg_catalog.=) 'streaming'",
                &[],
            )
            .await
            .map_or((0, None), |r| {
                (
                    u32::try_from(r.get::<_, i32>(0)).unwrap_or(0),
                    r.get::<_, Option<f64>>(1),
                )
            });
        ha.publish(|h| {
            h.standbys = standbys;
            h.standby_lag_secs = (standbys > 0).then_some(lag.unwrap_or(0.0));
        });
        if !self.enabled {
            return false;
        }
        let now = Instant::now();
        if standbys > 0 {
            self.missing_since = None;
            if self.degraded
                && set_system(
                    client,
                    "synchronous_standby_names",
                    Some(&synchronous_names()),
                )
                .await
                .is_ok()
            {
                self.degraded = false;
                tracing::warn!(
                    "a standby streams again: commits wait for it again (zero-loss mode restored)"
                );
            }
        } else {
            let since = *self.missing_since.get_or_insert(now);
            if let Some(timeout) = self.timeout {
                if !self.degraded
                    && now.duration_since(since) >= timeout
                    && set_system(client, "synchronous_standby_names", None)
                        .await
                        .is_ok()
                {
                    self.degraded = true;
                    tracing::error!(timeout = ?timeout, "no standby for ha.synchronous_timeout: commits no longer wait for one (asynchronous; a failover now may lose the last commits) until a standby streams again");
                }
            }
        }
        ha.publish(|h| h.synchronous = Some(!self.degraded));
        !self.degraded
    }
}

/// A standby's replay position and lag.
struct Replay {
    streaming: bool,
    lag_secs: f64,
    lsn: Option<String>,
}

async fn replay_state(client: &tokio_postgres::Client) -> Result<Replay, PgError> {
    let row = client
        .query_one(
            "SELECT (SELECT status FROM pg_catalog.pg_stat_wal_receiver LIMIT 1) OPERATOR(pg_catalog.=) 'streaming',
                    pg_catalog.pg_last_wal_replay_lsn()::text,
                    CASE WHEN pg_catalog.pg_last_wal_receive_lsn() OPERATOR(pg_catalog.=) pg_catalog.pg_last_wal_replay_lsn() THEN 0
                         ELSE COALESCE(pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.pg_last_xact_replay_timestamp()), 0) END::float8",
            &[],
        )
        .await
        .map_err(PgError::sql("read the standby's replay position"))?;
    Ok(Replay {
        streaming: row.get::<_, Option<bool>>(0).unwrap_or(false),
        lsn: row.get(1),
        lag_secs: row.get::<_, f64>(2).max(0.0),
    })
}
