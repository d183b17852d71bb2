//! `serve`'s heart: prepare the cluster, run PostgreSQL, make the lakes ready, restart
//! PostgreSQL when it dies, and stop it in order on shutdown.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use tokio_util::sync::CancellationToken;

use storage::BackupTarget;
use tokio::sync::{mpsc, watch, Notify};

use crate::backup::agent::BackupRequest;
use crate::backup::{self, lease, restore, ArchiveAgent, BackupError, BackupManifest, Lease};
use crate::config::{Config, LakeConfig, RetentionConfig};
use crate::connection::read_password_file;
use crate::duckdb_worker::{missing_extensions, DuckDbRunner};
use crate::ha::Followed;
use crate::lake::{ensure_admin_role, ensure_lake, find_extension_directory, LakeError};
use crate::lake_session::{PasswordCell, PgHandle, ServerKey};
use crate::postgres::{
    create_home_dir, Boot, Cluster, ControlData, OsUser, PgError, RunningPostgres, ShutdownMode,
};
use crate::secret::Secret;
use crate::secrets_manager::{self, SecretError, SecretRef};
use crate::status::{
    BackupStatus, BaseBackupInfo, LakeState, LakeStatus, PasswordStatus, PgState, StatusSender,
};
use crate::Admin;

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Cluster(#[from] crate::postgres::ClusterError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Lakes(#[from] crate::lakes::LakesError),
    #[error("admin password: {0}")]
    Password(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Pooler(#[from] pooler::PoolerError),
    #[error("{0}")]
    Fenced(String),
    #[error("another `ducklake-catalog serve` (pid {pid}) is running on home {home}; stop it first, or give this one its own home (nothing was changed)")]
    AlreadyServing { pid: String, home: PathBuf },
    #[error("the embedded DuckDB is not usable: {0}")]
    Engine(String),
    #[error("{0}; the server stopped PostgreSQL in order (nothing acknowledged is lost): start it again, and report the log line above as a bug")]
    TaskLost(String),
    #[error("{0}")]
    External(String),
    #[error(transparent)]
    Failover(#[from] crate::ha::FailoverError),
    #[error("this server was the primary of {place} until a standby took over (lease generation {generation}); its data directory may hold commits the new primary never saw, so it does not rejoin on its own: move {home} away (keep it to inspect) and start again to join as a standby", home = home.display())]
    Diverged {
        place: String,
        generation: u64,
        home: PathBuf,
    },
}

/// Runs PostgreSQL and the lakes until `shutdown` is cancelled.
#[derive(Debug)]
pub struct Supervisor {
    config: Config,
    status: StatusSender,
    /// The binary whose `duckdb-worker` subcommand runs DuckDB work (this one).
    worker_program: PathBuf,
    /// Notified on SIGHUP: read the admin password secret again now.
    reload: Arc<Notify>,
    /// The process's AWS identity (Secrets Manager, S3), set up before the supervisor.
    aws: Option<aws::AwsContext>,
    /// How the lakes' data paths and the backup target are reached.
    s3: storage::S3Settings,
    /// The admin password in force, shared with the readiness probe of an external
    /// PostgreSQL (which logs in as the admin).
    admin_password: PasswordCell,
    /// The metrics' facts as last gathered (`observe`).
    facts: watch::Sender<telemetry::Facts>,
    started: std::time::Instant,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A switchover's refusal without a standby.
const NO_STANDBY: &str = "no standby streams from this primary: a switchover now would stop every writer until a standby starts; start one (ha.mode = \"auto\", same backup.target) and wait until /readyz/standby is 200";
/// How long a switchover waits for a standby to take the lease.
const SWITCHOVER_WAIT: Duration = Duration::from_mins(1);

/// How a start, or a standby's run, ended: PostgreSQL runs (as the primary), the server
/// stops, or PostgreSQL is to be started again.
#[allow(clippy::large_enum_variant)] // one value per start, moved on at once
enum StandbyEnd {
    Promoted(RunningPostgres),
    Stopped,
    Restart,
}

/// How one run of the supervised cluster ended without an error.
enum Ended {
    Stopped,
    /// A switchover handed the lease over: run again, as a standby.
    Rejoin,
}
/// A PostgreSQL that ran this long before it exited was healthy: its restart backoff starts
/// over from one second.
const HEALTHY_RUN: Duration = Duration::from_mins(1);

/// The delay before restarting PostgreSQL: 1 s doubling to [`MAX_BACKOFF`] while starts fail or
/// runs are short, back to 1 s after a run of [`HEALTHY_RUN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_secs(1))
    }
}

impl Backoff {
    /// A start failed: the delay to wait now.
    fn failed(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        now
    }

    /// PostgreSQL exited after running `ran` : the delay to wait now.
    fn exited(&mut self, ran: Duration) -> Duration {
        if ran >= HEALTHY_RUN {
            *self = Backoff::default();
        }
        self.failed()
    }
}

/// The server's long-running tasks, in one `JoinSet` and each named: a task that panics or
/// ends before the server stops is reported by [`Tasks::next_lost`], never lost silently.
#[derive(Debug, Default)]
struct Tasks {
    set: tokio::task::JoinSet<()>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
}

impl Tasks {
    fn spawn(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits for a task to end (forever while all run): its name and how it ended.
    async fn next_lost(&mut self) -> (&'static str, String) {
        let Some(ended) = self.set.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (id, how) = match ended {
            Ok((id, ())) => (id, "ended early".to_owned()),
            Err(e) => (e.id(), lost_how(e)),
        };
        (self.names.remove(&id).unwrap_or("unnamed"), how)
    }

    /// After a stop: lets the tasks see their stop token, then ends the rest.
    async fn finish(&mut self) {
        let all_ended = async { while self.set.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), all_ended)
            .await
            .is_err()
        {
            self.set.shutdown().await;
        }
    }
}

/// How a task that did not return ended: its panic message, or that it was cancelled.
fn lost_how(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "was cancelled".into();
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text payload".into());
    format!("panicked: {}", crate::one_line(&message))
}
/// How long PostgreSQL may take to accept connections while replaying a restore's WAL.
const RESTORE_START_SECS: u64 = 6 * 3600;

/// The durability side of a running server.
#[derive(Debug)]
struct Durable {
    target: BackupTarget,
    agent: ArchiveAgent,
    control: ControlData,
}

impl Supervisor {
    /// `aws` is the process's AWS identity ([`Config::prepare_aws`]), when anything configured
    /// uses AWS.
    pub fn new(
        config: Config,
        aws: Option<aws::AwsContext>,
        status: StatusSender,
        worker_program: PathBuf,
    ) -> Self {
        Supervisor {
            s3: config.s3_settings(aws.as_ref()),
            aws,
            config,
            status,
            worker_program,
            reload: Arc::new(Notify::new()),
            admin_password: PasswordCell::default(),
            facts: watch::channel(telemetry::Facts::default()).0,
            started: std::time::Instant::now(),
        }
    }

    /// The metrics' facts as last gathered; `observe::current` lays the live status over them.
    pub fn facts(&self) -> watch::Receiver<telemetry::Facts> {
        self.facts.subscribe()
    }

    /// The task that gathers the metrics' facts every `metrics.refresh`, until `stop`.
    fn spawn_observer(
        &self,
        pg: &PgHandle,
        log_events: Option<pg_cluster::logs::LogEvents>,
        stop: &CancellationToken,
        tasks: &mut Tasks,
    ) {
        let observer = crate::observe::Observer {
            admin: self.admin(pg),
            refresh: self.config.metrics.refresh.0,
            log_events,
            archiving: self.config.backup.target.is_some(),
            emf: (self.config.metrics.cloudwatch == crate::config::CloudWatch::Emf)
                .then(|| self.config.metrics.cloudwatch_service.clone()),
            home: self.config.home.clone(),
            started: self.started,
        };
        tasks.spawn(
            "metrics",
            crate::observe::run(
                observer,
                self.status.subscribe(),
                self.facts.clone(),
                stop.clone(),
            ),
        );
    }

    /// The readiness check's `SELECT 1`: over the supervised cluster's socket, or as the admin
    /// on the external PostgreSQL.
    pub fn probe(&self) -> Probe {
        let mut probe = Probe::new(&self.config);
        if let Some(remote) = self.config.external() {
            probe.remote = Some((remote.clone(), self.admin_password.clone()));
        }
        probe
    }

    /// What SIGHUP notifies: the admin password secret is read again at once.
    pub fn reload_handle(&self) -> Arc<Notify> {
        self.reload.clone()
    }

    /// Prepares and runs everything; returns after a clean stop. `immediate` is cancelled by a
    /// second signal and turns a fast shutdown into an immediate one.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        immediate: CancellationToken,
    ) -> Result<(), ServeError> {
        let result = if self.config.external().is_some() {
            self.run_external(&shutdown).await
        } else {
            loop {
                match Box::pin(self.run_inner(&shutdown, &immediate)).await {
                    // A switchover made this home a standby's: start over as one.
                    Ok(Ended::Rejoin) => self.status.send_modify(|s| s.ha = None),
                    Ok(Ended::Stopped) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
        };
        self.status.send_modify(|s| {
            s.postgres = if result.is_ok() {
                PgState::Stopped
            } else {
                PgState::Failed
            };
            if let Err(e) = &result {
                s.last_error = Some(e.to_string());
            }
        });
        result
    }

    // One loop owns PostgreSQL's lifecycle (start, standby, primary, switchover, restart, stop);
    // each step is a method, and the order of the steps reads here in one place.
    #[allow(clippy::too_many_lines)]
    async fn run_inner(
        &self,
        shutdown: &CancellationToken,
        immediate: &CancellationToken,
    ) -> Result<Ended, ServeError> {
        // First: one server per home. A second one changes nothing (no file, no lease).
        let _serving = serve_lock(&self.config.home)?;
        let mut pooler = self.check_pooler()?;
        let runner = self.engine().await?;
        let password = self.admin_password().await?;
        stop_orphaned_postgres(&self.config).await?;
        let agent_stop = CancellationToken::new();
        let _agent_guard = agent_stop.clone().drop_guard();
        // Every long-running task of the server, so none is lost silently (see `Tasks`).
        let mut tasks = Tasks::default();
        let (cluster, boot, durable) = self.prepare(&agent_stop, &mut tasks).await?;
        let pg = self.pg_handle(&cluster)?;
        let recovering = cluster.pgdata.join("recovery.signal").exists();
        let mut standby = crate::ha::is_standby(&cluster.pgdata);
        let ha = self.ha(&cluster, durable.as_ref());
        let mut fenced = durable.as_ref().map(|d| d.agent.fenced());
        let (password_tx, password) = watch::channel(password);
        let released = Arc::new(watch::channel(None::<String>).0);
        let (switchover_tx, mut switchovers) = mpsc::channel(1);
        let mut first = true;
        let mut backoff = Backoff::default();
        loop {
            let replaying = first && (recovering || standby);
            let restore = first && recovering && !standby;
            let stops = (shutdown, immediate);
            let mut running = match self
                .start_postgres(
                    &cluster,
                    (first, replaying, restore, standby),
                    durable.as_ref(),
                    &mut backoff,
                    stops,
                )
                .await?
            {
                StandbyEnd::Promoted(r) => r,
                StandbyEnd::Stopped => return Ok(Ended::Stopped),
                StandbyEnd::Restart => continue,
            };
            let pid = running.pid();
            let since = Instant::now();
            self.status
                .send_modify(|s| s.postgres = PgState::Running { pid });
            let mut promoted = false;
            if let (true, Some(ha)) = (standby, &ha) {
                match self
                    .as_standby(ha, running, (shutdown, immediate), &mut backoff, since)
                    .await?
                {
                    StandbyEnd::Promoted(r) => {
                        running = r;
                        standby = false;
                        promoted = true;
                    }
                    StandbyEnd::Stopped => return Ok(Ended::Stopped),
                    StandbyEnd::Restart => continue,
                }
            }
            if let (true, Some(ha), Some(lease)) =
                (first, &ha, durable.as_ref().and_then(|d| d.agent.lease()))
            {
                // Renewing from the first moment as the primary: a standby must never see this
                // generation without a heartbeat while the set-up runs.
                ha.agent.set_switchover_handler(switchover_tx.clone());
                let lead = ha.clone().lead(lease, released.clone(), agent_stop.clone());
                tasks.spawn("lease renewal", lead);
            }
            let current = password.borrow().clone();
            let lakes = match self
                .bring_up_primary(ha.as_ref(), &cluster, &current, (&pg, &runner))
                .await
            {
                Ok(up) => up,
                Err(e) if first => {
                    running.shutdown(ShutdownMode::Fast, immediate).await?;
                    return Err(e);
                }
                Err(e) => {
                    tracing::error!(error = %e, "a lake is not ready after the restart");
                    self.status
                        .send_modify(|s| s.last_error = Some(e.to_string()));
                    Vec::new()
                }
            };
            if first {
                let stops = (&agent_stop, shutdown);
                self.spawn_lakes(&lakes, (&pg, &runner), stops, Some(&cluster), &mut tasks);
                if let Some(d) = &durable {
                    let fresh = recovering || promoted;
                    self.spawn_backup_tasks(d, &cluster, boot, fresh, &agent_stop, &mut tasks);
                }
                self.spawn_password_watch(Some(&cluster), &password_tx, &agent_stop, &mut tasks);
                self.spawn_pooler(&cluster, &mut pooler, &mut tasks)?;
            }
            first = false;
            // In this order: a stop cancels tasks that watch `shutdown` (they end then, which is
            // no loss), and a fenced instance must not restart PostgreSQL.
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => {
                        pooler.stop().await;
                        self.stop_in_order(&cluster, running, durable.is_some(), immediate).await?;
                        agent_stop.cancel();
                        tasks.finish().await;
                        return Ok(Ended::Stopped);
                    }
                    reason = fenced_signal(fenced.as_mut()) => {
                        return Err(self.stop_fenced(reason, running, immediate).await);
                    }
                    Some(reply) = switchovers.recv() => {
                        if self.status.borrow().ha.as_ref().is_none_or(|h| h.standbys == 0) {
                            let _ = reply.send(Err(NO_STANDBY.into()));
                            continue;
                        }
                        let ha = ha.as_ref().expect("switchovers come to an HA primary");
                        pooler.stop().await;
                        let handed = self.switch_over(ha, &cluster, running, &released, immediate).await;
                        let _ = reply.send(handed);
                        agent_stop.cancel();
                        tasks.finish().await;
                        return Ok(Ended::Rejoin);
                    }
                    exit = running.exited() => {
                        let exit = exit.map_or_else(|e| e.to_string(), |s| s.to_string());
                        self.postgres_exited(pid, &exit, &running);
                        if sleep_or_cancel(backoff.exited(since.elapsed()), shutdown).await {
                            return Ok(Ended::Stopped);
                        }
                        break;
                    }
                    (task, how) = tasks.next_lost() => {
                        let reason = format!("the server's {task} task {how}");
                        tracing::error!(task, %how, "a background task of the server stopped: stopping PostgreSQL in order and exiting, so the orchestrator starts a fresh server");
                        pooler.stop().await;
                        self.stop_in_order(&cluster, running, durable.is_some(), immediate).await?;
                        return Err(ServeError::TaskLost(reason));
                    }
                }
            }
        }
    }

    /// Starts PostgreSQL (`Promoted` carries the running one), waiting for a restore's WAL
    /// replay when `restore`; a failed restart is retried after the backoff (`Restart`), a
    /// failed first start is the error.
    async fn start_postgres(
        &self,
        cluster: &Cluster,
        (first, replay, restore, standby): (bool, bool, bool, bool),
        durable: Option<&Durable>,
        backoff: &mut Backoff,
        (shutdown, immediate): (&CancellationToken, &CancellationToken),
    ) -> Result<StandbyEnd, ServeError> {
        self.status.send_modify(|s| s.postgres = PgState::Starting);
        let starting = self.starting(cluster, replay, standby);
        let started = tokio::select! {
            r = starting.start() => r,
            () = shutdown.cancelled() => return Ok(StandbyEnd::Stopped),
        };
        let running = match started {
            Ok(r) => r,
            Err(e) if first => return Err(explain(e.into(), durable)),
            Err(e) => {
                tracing::error!(error = %e, "restarting postgres failed");
                self.status
                    .send_modify(|s| s.last_error = Some(e.to_string()));
                if sleep_or_cancel(backoff.failed(), shutdown).await {
                    return Ok(StandbyEnd::Stopped);
                }
                return Ok(StandbyEnd::Restart);
            }
        };
        if !restore {
            return Ok(StandbyEnd::Promoted(running));
        }
        match Self::finish_recovery(cluster, running, shutdown, immediate).await {
            Ok(Some(r)) => Ok(StandbyEnd::Promoted(r)),
            Ok(None) => Ok(StandbyEnd::Stopped),
            Err(e) => Err(explain(e, durable)),
        }
    }

    /// The lakes, with failover's primary settings around them: no commit waits for a
    /// standby during the set-up; zero-loss mode (if on) once it is done.
    async fn bring_up_primary(
        &self,
        ha: Option<&crate::ha::Ha>,
        cluster: &Cluster,
        password: &Secret,
        (pg, runner): (&PgHandle, &DuckDbRunner),
    ) -> Result<Vec<LakeConfig>, ServeError> {
        if let Some(ha) = ha {
            ha.before_bring_up().await?;
        }
        let lakes = self.bring_up_lakes(cluster, password, pg, runner).await?;
        if let Some(ha) = ha {
            ha.start_primary().await?;
        }
        Ok(lakes)
    }

    /// A standby's PostgreSQL runs: follow the primary until this server promotes (then it
    /// goes on as the primary), the server stops, or PostgreSQL exits (restart it after the
    /// backoff).
    async fn as_standby(
        &self,
        ha: &crate::ha::Ha,
        running: RunningPostgres,
        (shutdown, immediate): (&CancellationToken, &CancellationToken),
        backoff: &mut Backoff,
        since: Instant,
    ) -> Result<StandbyEnd, ServeError> {
        let pid = running.pid();
        match ha.follow(running, shutdown).await? {
            Followed::Promoted(r) => Ok(StandbyEnd::Promoted(r)),
            Followed::Stopped(r) => {
                self.stop_in_order(&ha.cluster, r, false, immediate).await?;
                Ok(StandbyEnd::Stopped)
            }
            Followed::Exited(r, exit) => {
                self.postgres_exited(pid, &exit, &r);
                if sleep_or_cancel(backoff.exited(since.elapsed()), shutdown).await {
                    return Ok(StandbyEnd::Stopped);
                }
                Ok(StandbyEnd::Restart)
            }
        }
    }

    /// The failover loops' context, with `ha.mode = "auto"` and a backup target.
    fn ha(&self, cluster: &Cluster, durable: Option<&Durable>) -> Option<crate::ha::Ha> {
        let d = durable.filter(|_| self.config.ha.enabled())?;
        Some(crate::ha::Ha {
            config: self.config.ha.clone(),
            target: d.target.clone(),
            agent: d.agent.clone(),
            cluster: cluster.clone(),
            status: self.status.clone(),
            home: self.config.home.clone(),
            sysid: d.control.system_identifier.clone(),
            port: self.config.postgres.port,
        })
    }

    /// A planned switchover: stops PostgreSQL cleanly (the standbys receive every WAL record),
    /// releases the lease at the end of the WAL, and waits until a standby took over; then this
    /// data directory becomes a standby's. Answers with what happened; on `Err` the caller
    /// starts PostgreSQL again as the primary.
    async fn switch_over(
        &self,
        ha: &crate::ha::Ha,
        cluster: &Cluster,
        running: RunningPostgres,
        released: &watch::Sender<Option<String>>,
        immediate: &CancellationToken,
    ) -> Result<String, String> {
        let generation = ha.agent.lease().map_or(0, |l| l.generation);
        tracing::warn!(
            "switchover: stopping PostgreSQL cleanly and handing the lease to a standby"
        );
        if let Err(e) = self.stop_in_order(cluster, running, true, immediate).await {
            return Err(format!("stopping PostgreSQL failed: {e}"));
        }
        let end = match cluster.control_data().await {
            Ok(c) => c.checkpoint_lsn,
            Err(e) => return Err(format!("reading where the WAL ends failed: {e}")),
        };
        if let Err(e) = crate::ha::mark_standby(&cluster.pgdata, cluster.os_user.as_ref()) {
            return Err(format!(
                "this data directory could not be made a standby's: {e}"
            ));
        }
        released.send_replace(Some(end.clone()));
        let waited = Instant::now();
        while waited.elapsed() < SWITCHOVER_WAIT {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match lease::current(&ha.target).await {
                Ok(Some(l)) if l.generation > generation => {
                    let done = format!(
                        "handed over at WAL {end} to the server on {} (lease generation {}); this server joins it as a standby",
                        l.host, l.generation
                    );
                    tracing::warn!("{done}");
                    return Ok(done);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "switchover: reading the lease failed"),
            }
        }
        Err(format!(
            "no standby took over within {}s; this server starts again as a standby and takes the released lease back itself unless one does",
            SWITCHOVER_WAIT.as_secs()
        ))
    }

    /// `serve` with an external PostgreSQL (`postgres.url`): no cluster, no WAL shipping; the
    /// lakes, their users' roles, the maintenance schedule and the lake watch as with the
    /// supervised one, as the admin login.
    async fn run_external(&self, shutdown: &CancellationToken) -> Result<(), ServeError> {
        let remote = self
            .config
            .external()
            .expect("run_external is for postgres.url")
            .clone();
        let _serving = serve_lock(&self.config.home)?;
        let runner = self.engine().await?;
        let password = self.admin_password().await?;
        *self.admin_password.write().expect("never poisoned") = Some(password.clone());
        let key = ServerKey::load_or_create(&self.config.home.join("secrets"))?;
        let pg = PgHandle::remote(remote.clone(), self.admin_password.clone(), key);
        let stop = CancellationToken::new();
        let _stop_guard = stop.clone().drop_guard();
        let mut tasks = Tasks::default();
        let endpoint = format!("{}:{}", remote.host, remote.port);
        tracing::info!(%endpoint, admin = %remote.user, sslmode = remote.sslmode(), "administering an external PostgreSQL (postgres.url): no PostgreSQL of its own, no WAL shipping");
        // The admin's privileges are checked before anything is created (the registry's
        // database included).
        let first = remote
            .connect(
                &remote.user,
                password.expose(),
                &remote.dbname,
                "ducklake-catalog",
                None,
            )
            .await
            .map_err(PgError::from)?;
        crate::lake::ensure_external_admin(&first, &remote.user).await?;
        drop(first);
        let client = pg
            .postgres("ducklake-catalog")
            .await
            .map_err(|e| ServeError::External(e.to_string()))?;
        enable_statement_stats(&client).await;
        let admin = self.admin(&pg);
        let lakes = crate::lakes::reconcile(&client, &admin).await?;
        drop(client);
        self.status.send_modify(|s| {
            s.postgres = PgState::External {
                endpoint: endpoint.clone(),
            };
        });
        for lake in &lakes {
            bring_up_lake(&admin, &self.s3, (lake, false), &runner, &self.status).await?;
        }
        self.spawn_lakes(&lakes, (&pg, &runner), (&stop, shutdown), None, &mut tasks);
        let (password_tx, _password_rx) = watch::channel(password);
        self.spawn_password_watch(None, &password_tx, &stop, &mut tasks);
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                self.status.send_modify(|s| s.postgres = PgState::Stopping);
                stop.cancel();
                tasks.finish().await;
                Ok(())
            }
            (task, how) = tasks.next_lost() => {
                tracing::error!(task, %how, "a background task of the server stopped: exiting, so the orchestrator starts a fresh server");
                Err(ServeError::TaskLost(format!("the server's {task} task {how}")))
            }
        }
    }

    /// A newer instance took the lease: stop PostgreSQL now, so no commit is acknowledged that
    /// cannot be archived. The error to exit with.
    async fn stop_fenced(
        &self,
        reason: String,
        running: RunningPostgres,
        immediate: &CancellationToken,
    ) -> ServeError {
        self.status.send_modify(|s| {
            s.postgres = PgState::Stopping;
            s.last_error = Some(reason.clone());
        });
        tracing::error!(%reason, "fenced by a newer instance: stopping postgres so no commit is acknowledged that cannot be archived");
        match running.shutdown(ShutdownMode::Fast, immediate).await {
            Ok(_) => ServeError::Fenced(reason),
            Err(e) => e.into(),
        }
    }

    /// Publishes and logs an unexpected exit of PostgreSQL (a restart follows).
    fn postgres_exited(&self, pid: i32, exit: &str, running: &RunningPostgres) {
        tracing::error!(pg_pid = pid, %exit, last_lines = %running.last_lines(), "postgres exited unexpectedly; restarting");
        self.status.send_modify(|s| {
            s.postgres = PgState::Restarting {
                exit: exit.to_owned(),
            };
            s.restarts += 1;
            s.last_error = Some(format!("postgres exited unexpectedly ({exit})"));
        });
    }

    /// The DuckDB worker, checked before anything is created: the extension folder holds what
    /// the server needs (or the library has it built in) and the worker loads it all.
    async fn engine(&self) -> Result<DuckDbRunner, ServeError> {
        let extension_dir = find_extension_directory(
            self.config.duckdb.extension_directory.as_deref(),
            &self.config.home,
        )?;
        let missing = missing_extensions(&extension_dir);
        if !missing.is_empty() {
            return Err(LakeError::RequiredExtensions {
                missing: missing.join(", "),
                dir: extension_dir.display().to_string(),
            }
            .into());
        }
        let runner = DuckDbRunner::new(self.worker_program.clone(), extension_dir);
        let engine = runner
            .probe()
            .await
            .map_err(|e| ServeError::Engine(e.to_string()))?;
        tracing::debug!(engine, "the DuckDB worker loads every required extension");
        Ok(runner)
    }

    /// The cluster to start; a restore's WAL replay may take long before the first connection
    /// (liveness stays green meanwhile).
    fn starting(&self, cluster: &Cluster, restoring: bool, standby: bool) -> Cluster {
        let mut starting = cluster.clone();
        if !standby {
            // Only a standby's PostgreSQL connects to another: only it gets the password.
            starting.replication_password = None;
        }
        if restoring {
            starting.start_timeout_secs = starting.start_timeout_secs.max(RESTORE_START_SECS);
            self.status.send_modify(|s| {
                s.postgres = PgState::Restoring {
                    phase: "replaying archived WAL".into(),
                };
            });
        }
        starting
    }

    /// Waits for archive recovery to end; `None` when a shutdown came first (PostgreSQL is
    /// stopped then).
    async fn finish_recovery(
        cluster: &Cluster,
        mut running: RunningPostgres,
        shutdown: &CancellationToken,
        immediate: &CancellationToken,
    ) -> Result<Option<RunningPostgres>, ServeError> {
        let promoted = tokio::select! {
            r = restore::wait_promoted(cluster, &mut running) => r,
            () = shutdown.cancelled() => {
                running.shutdown(ShutdownMode::Fast, immediate).await?;
                return Ok(None);
            }
        };
        if let Err(e) = promoted {
            running.shutdown(ShutdownMode::Fast, immediate).await?;
            return Err(e.into());
        }
        Ok(Some(running))
    }

    /// The orderly stop: ship the last WAL (with backups), then a fast shutdown.
    async fn stop_in_order(
        &self,
        cluster: &Cluster,
        running: RunningPostgres,
        archiving: bool,
        immediate: &CancellationToken,
    ) -> Result<(), ServeError> {
        self.status.send_modify(|s| s.postgres = PgState::Stopping);
        if archiving {
            let within = Duration::from_secs(self.config.postgres.stop_timeout_secs) / 2;
            if let Err(e) = backup::flush_archive(cluster, within).await {
                tracing::warn!(error = %e, "could not flush the archive before stopping");
            }
        }
        running.shutdown(ShutdownMode::Fast, immediate).await?;
        Ok(())
    }

    /// Restores when the home is empty and the target has a backup, prepares the data
    /// directory, and with a target takes the lease and starts the archive agent.
    async fn prepare(
        &self,
        agent_stop: &CancellationToken,
        tasks: &mut Tasks,
    ) -> Result<(Cluster, Boot, Option<Durable>), ServeError> {
        let config = self.config.clone();
        let target = backup::open_target(&config.backup, &self.s3)?;
        let os_user = OsUser::for_settings(&config.cluster_settings())?;
        let mut restored = None;
        let mut extra = Vec::new();
        if let Some(t) = &target {
            if !self.join_as_standby(t, os_user.as_ref()).await? {
                restored = self.restore_if_empty(t, os_user.as_ref()).await?;
            }
            let helper = backup::install_helper(&config.socket_dir(), os_user.as_ref())?;
            extra =
                backup::archive_settings(&config.backup, &config.socket_dir(), &helper, true, None);
            if config.ha.enabled() {
                extra.extend(config.ha.postgres_settings());
            }
        } else {
            tracing::warn!("backup.target is not set: the catalog lives only in this home; if the disk is lost, every lake's metadata is lost with it");
        }
        let (mut cluster, boot) = tokio::task::spawn_blocking(move || {
            Cluster::prepare(&config.cluster_settings(), extra)
        })
        .await
        .expect("cluster preparation does not panic")?;
        if self.config.ha.enabled() {
            cluster
                .replication_password
                .clone_from(&self.config.ha.replication_password);
        }
        tracing::info!(?boot, pgdata = %cluster.pgdata.display(), "data directory ready");
        let durable = match target {
            Some(t) => Some(
                self.take_target(t, &cluster, restored, os_user.as_ref(), agent_stop, tasks)
                    .await?,
            ),
            None => None,
        };
        Ok((cluster, boot, durable))
    }

    /// With `ha.mode = "auto"`, an empty home and a live primary on the target: unpack its
    /// newest base backup as a standby (no lease taken). True when it did.
    async fn join_as_standby(
        &self,
        target: &BackupTarget,
        os_user: Option<&OsUser>,
    ) -> Result<bool, ServeError> {
        let pgdata = self.config.pgdata();
        if !self.config.ha.enabled() || pgdata.join("PG_VERSION").exists() {
            return Ok(false);
        }
        // Never a restore over a lease: if its primary is alive the standby follows it; if it
        // is dead the standby replays the whole archive and takes over once the heartbeat
        // stood still for a lease period — what a restore would give, without ever fencing a
        // live primary early.
        let Some(holder) = lease::current(target).await? else {
            return Ok(false);
        };
        tracing::info!(holder = %holder.host, generation = holder.generation, "empty home and a primary's lease on the target: joining as a hot standby (taking over if it stopped renewing)");
        self.status.send_modify(|s| {
            s.postgres = PgState::Restoring {
                phase: "downloading the newest base backup for a standby".into(),
            };
        });
        create_home_dir(&self.config.home, &self.config.socket_dir())?;
        let manifest = crate::ha::bootstrap_standby(target, &pgdata, os_user).await?;
        tracing::info!(backup = %manifest.id, "standby data directory ready");
        Ok(true)
    }

    /// With an empty home and a target that holds a backup: take over the target and unpack
    /// the newest base backup (PostgreSQL replays the WAL once started).
    async fn restore_if_empty(
        &self,
        target: &BackupTarget,
        os_user: Option<&OsUser>,
    ) -> Result<Option<(BackupManifest, Lease)>, ServeError> {
        let pgdata = self.config.pgdata();
        if pgdata.join("PG_VERSION").exists() {
            return Ok(None);
        }
        let newest = restore::choose(target, None).await?;
        let Some(manifest) = newest else {
            if target
                .exists(backup::CLUSTER_FILE)
                .await
                .map_err(BackupError::from)?
            {
                return Err(BackupError::NoBackup {
                    place: target.place(),
                    when: " to restore from, yet it holds another cluster's WAL (cluster.json); give this catalog its own backup.target".into(),
                }
                .into());
            }
            return Ok(None);
        };
        if !self.config.backup.auto_restore {
            return Err(BackupError::Restore(format!(
                "the home is empty and {} holds backup {}; restore it with `ducklake-catalog restore`, or set backup.auto_restore = true",
                target.place(),
                manifest.id
            ))
            .into());
        }
        self.status.send_modify(|s| {
            s.postgres = PgState::Restoring {
                phase: format!("downloading base backup {}", manifest.id),
            };
        });
        tracing::info!(backup = %manifest.id, target = %target.path(), "empty home: restoring from the backup target");
        // The socket folder: it proves the home writable before the lease is written there.
        create_home_dir(&self.config.home, &self.config.socket_dir())?;
        let lease =
            lease::acquire(target, &self.config.home, &manifest.system_identifier, true).await?;
        restore::unpack(target, &manifest, &pgdata, os_user).await?;
        Ok(Some((manifest, lease)))
    }

    /// Checks the target belongs to this cluster, holds the lease and starts the agent.
    async fn take_target(
        &self,
        target: BackupTarget,
        cluster: &Cluster,
        restored: Option<(BackupManifest, Lease)>,
        os_user: Option<&OsUser>,
        stop: &CancellationToken,
        tasks: &mut Tasks,
    ) -> Result<Durable, ServeError> {
        let control = cluster.control_data().await?;
        backup::ensure_identity(&target, &control.system_identifier).await?;
        let (restored, lease) = if let Some((m, l)) = restored {
            (Some(m), Some(l))
        } else if crate::ha::is_standby(&cluster.pgdata) {
            // A standby holds no lease: it takes one when it takes over.
            (None, None)
        } else {
            let lease = lease::acquire(
                &target,
                &self.config.home,
                &control.system_identifier,
                false,
            )
            .await
            .map_err(|e| self.rejoin_refused(e))?;
            backup::check_no_newer_timeline(&target, control.timeline).await?;
            (None, Some(lease))
        };
        let agent = ArchiveAgent::new(
            target.clone(),
            backup::compression(&self.config.backup),
            control.segment_bytes,
            lease.clone(),
        );
        let socket = self.config.socket_dir().join(backup::AGENT_SOCKET);
        let serving = agent.listen(&socket, os_user.map(|u| (u.uid, u.gid)), stop.clone())?;
        tasks.spawn("archive agent", serving);
        self.status.send_modify(|s| {
            s.backup = Some(BackupStatus {
                target: target.path().to_string(),
                lease_generation: lease.as_ref().map(|l| l.generation),
                restored_from: restored.as_ref().map(|m| m.id.clone()),
                ..BackupStatus::default()
            });
        });
        Ok(Durable {
            target,
            agent,
            control,
        })
    }

    /// With failover on, a superseded primary's data directory is named for what it is: it may
    /// hold commits the new primary never saw, so it never rejoins on its own.
    fn rejoin_refused(&self, e: BackupError) -> ServeError {
        match e {
            BackupError::Superseded {
                place, generation, ..
            } if self.config.ha.enabled() => ServeError::Diverged {
                place,
                generation,
                home: self.config.home.clone(),
            },
            e => e.into(),
        }
    }

    /// Starts the base-backup schedule and the archive-status reporter.
    fn spawn_backup_tasks(
        &self,
        d: &Durable,
        cluster: &Cluster,
        boot: Boot,
        restored: bool,
        stop: &CancellationToken,
        tasks: &mut Tasks,
    ) {
        let (tx, rx) = mpsc::channel(4);
        d.agent.set_backup_handler(tx);
        let schedule = BackupSchedule {
            cluster: cluster.clone(),
            target: d.target.clone(),
            compression: backup::compression(&self.config.backup),
            control: d.control.clone(),
            interval: self.config.backup.base_interval.0,
            retention: self.config.backup.retention.clone(),
            status: self.status.clone(),
        };
        let now = boot == Boot::First || restored;
        tasks.spawn("base-backup schedule", schedule.run(now, rx, stop.clone()));
        tasks.spawn(
            "archive reporter",
            report_archive(
                d.agent.clone(),
                cluster.pgdata.clone(),
                self.status.clone(),
                stop.clone(),
            ),
        );
    }

    /// Makes every lake ready: the configured ones (written to the registry) and those created
    /// by command. Returns them.
    async fn bring_up_lakes(
        &self,
        cluster: &Cluster,
        password: &Secret,
        pg: &PgHandle,
        runner: &DuckDbRunner,
    ) -> Result<Vec<LakeConfig>, ServeError> {
        let client = cluster.connect_superuser("postgres").await?;
        ensure_admin_role(&client, &self.config.postgres.admin_user, password).await?;
        enable_statement_stats(&client).await;
        let pooled = self.config.pooler_enabled();
        if pooled {
            crate::pooling::prepare_role(&client).await?;
        }
        if let Some(pw) = self
            .config
            .ha
            .replication_password
            .as_ref()
            .filter(|_| self.config.ha.enabled())
        {
            crate::ha::ensure_replication_role(&client, pw).await?;
        }
        let admin = self.admin(pg);
        let lakes = crate::lakes::reconcile(&client, &admin).await?;
        drop(client);
        for lake in &lakes {
            bring_up_lake(&admin, &self.s3, (lake, pooled), runner, &self.status).await?;
        }
        Ok(lakes)
    }

    /// Serves lakes `lake create` adds and forgets those `lake drop` removes, while running.
    fn spawn_lake_watch(
        &self,
        pg: &PgHandle,
        runner: &DuckDbRunner,
        stop: &CancellationToken,
        tasks: &mut Tasks,
    ) {
        let config = self.config.clone();
        let s3 = self.s3.clone();
        let admin = self.admin(pg);
        let runner = runner.clone();
        let status = self.status.clone();
        let stop = stop.clone();
        tasks.spawn("lake watch", async move {
            // One session kept open (reopened after a PostgreSQL restart): a new one every few
            // seconds would fill the connection log.
            let mut registry = pg_conn::KeptSession::default();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(crate::lakes::WATCH_INTERVAL) => {}
                    () = stop.cancelled() => return,
                }
                let open = || admin.pg.postgres("ducklake-catalog lake watch");
                let Ok(client) = registry.get(open).await else {
                    continue;
                };
                if let Err(e) =
                    watch_lakes_once(client, &admin, (&config, &s3), &runner, &status).await
                {
                    tracing::debug!(error = %e, "could not read the lake registry");
                }
            }
        });
    }

    /// Logs the ATTACH string of each lake `up`; starts the lake watch and the metrics'
    /// gathering (until `stop`), and every lake's scheduled
    /// maintenance (until `shutdown`, which stops a running job). `cluster`: the supervised one,
    /// whose log lines count commit conflicts.
    fn spawn_lakes(
        &self,
        up: &[LakeConfig],
        (pg, runner): (&PgHandle, &DuckDbRunner),
        (stop, shutdown): (&CancellationToken, &CancellationToken),
        cluster: Option<&Cluster>,
        tasks: &mut Tasks,
    ) {
        self.announce(up);
        self.spawn_lake_watch(pg, runner, stop, tasks);
        let log_events = cluster.map(|c| c.log_events.clone());
        self.spawn_observer(pg, log_events, stop, tasks);
        let ctx = crate::maintenance::JobContext {
            admin: self.admin(pg),
            s3: self.s3.clone(),
            runner: runner.clone(),
        };
        tasks.spawn(
            "maintenance schedule",
            crate::schedule::schedule(ctx, self.status.clone(), shutdown.clone()),
        );
    }

    /// With `pooler.enabled`, before anything starts: the pooler's program exists (else a
    /// one-line error, not a half start), and the status says it is starting (not ready until
    /// it runs).
    fn check_pooler(&self) -> Result<PoolerControl, ServeError> {
        let control = PoolerControl::new(self.config.pooler_enabled());
        if !self.config.pooler_enabled() {
            return Ok(control);
        }
        pooler::find_binary(self.config.pooler.bin.as_deref())?;
        let port = self.config.pooler.port;
        self.status.send_modify(|s| {
            s.pooler = Some(crate::status::PoolerStatus {
                state: crate::status::PoolerState::Starting,
                port,
                ..Default::default()
            });
        });
        Ok(control)
    }

    /// The administration's handle on the supervised `cluster`, with the key in
    /// `<home>/secrets`.
    fn pg_handle(&self, cluster: &Cluster) -> Result<PgHandle, ServeError> {
        let key = ServerKey::load_or_create(&self.config.home.join("secrets"))?;
        Ok(PgHandle::new(cluster.socket(), key))
    }

    /// The pooler's task (with `pooler.enabled`, once): it runs until `pooler` stops it.
    fn spawn_pooler(
        &self,
        cluster: &Cluster,
        pooler: &mut PoolerControl,
        tasks: &mut Tasks,
    ) -> Result<(), ServeError> {
        let Some(down) = pooler.down_tx.take() else {
            return Ok(());
        };
        let settings = crate::pooling::settings(&self.config, cluster)?;
        tasks.spawn(
            "connection pooler",
            crate::pooling::supervise(settings, self.status.clone(), pooler.stop.clone(), down),
        );
        Ok(())
    }

    /// The DuckLake administration through `pg`, with this configuration's settings.
    fn admin(&self, pg: &PgHandle) -> Admin {
        Admin {
            pg: pg.clone(),
            settings: self.config.admin_settings(),
        }
    }

    /// Logs, per lake, the ATTACH string to paste into DuckDB (never the password).
    fn announce(&self, lakes: &[LakeConfig]) {
        for lake in lakes {
            announce_lake(&self.config, lake);
        }
    }

    /// The admin password: from Secrets Manager, the configuration, or generated once (stored
    /// 0600). Publishes its source (never its value) in the status.
    async fn admin_password(&self) -> Result<Secret, ServeError> {
        let pg = &self.config.postgres;
        let mut status = PasswordStatus::default();
        let password = if let Some(r) = &pg.admin_password_secret {
            let aws = self
                .aws
                .as_ref()
                .expect("serve prepares AWS when a secret is configured");
            let fetched = secrets_manager::fetch(aws, r).await?;
            status.source = format!("Secrets Manager secret {r}");
            status.version_id = fetched.version_id;
            status.last_checked = Some(chrono::Utc::now().to_rfc3339());
            tracing::info!(secret = %r, version = ?status.version_id, "read the admin password from Secrets Manager");
            fetched.password
        } else if let Some(pw) = &pg.admin_password {
            status.source = if pg.admin_password_file.is_some() {
                "postgres.admin_password_file".into()
            } else {
                "postgres.admin_password".into()
            };
            pw.clone()
        } else {
            status.source = "generated".into();
            self.generated_password()?
        };
        self.status.send_modify(|s| s.admin_password = Some(status));
        Ok(password)
    }

    /// The generated password, created once and stored 0600.
    fn generated_password(&self) -> Result<Secret, ServeError> {
        let file: PathBuf = self.config.generated_password_file();
        let err = |what: &str, e: std::io::Error| {
            ServeError::Password(format!("{what} {}: {e}", file.display()))
        };
        if let Some(pw) = read_password_file(&file).map_err(|e| err("read", e))? {
            return Ok(pw);
        }
        let secrets = file.parent().expect("the file is inside <home>/secrets");
        create_home_dir(&self.config.home, secrets)?;
        fs::set_permissions(secrets, fs::Permissions::from_mode(0o700))
            .map_err(|e| err("chmod the folder of", e))?;
        let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&file)
            .map_err(|e| err("create", e))?;
        writeln!(f, "{password}").map_err(|e| err("write", e))?;
        tracing::info!(file = %file.display(), "generated the admin password and stored it (mode 0600); set postgres.admin_password or admin_password_file to choose one");
        Ok(Secret::new(password))
    }

    /// With a Secrets Manager secret: read it again every `admin_password_refresh` and on
    /// SIGHUP, and apply a changed value with `ALTER ROLE`.
    fn spawn_password_watch(
        &self,
        cluster: Option<&Cluster>,
        current: &watch::Sender<Secret>,
        stop: &CancellationToken,
        tasks: &mut Tasks,
    ) {
        let Some(secret) = self.config.postgres.admin_password_secret.clone() else {
            let reload = self.reload.clone();
            let stop = stop.clone();
            tasks.spawn("SIGHUP listener", async move {
                loop {
                    tokio::select! {
                        () = reload.notified() => tracing::info!("SIGHUP: nothing to reload (postgres.admin_password_secret is not set)"),
                        () = stop.cancelled() => return,
                    }
                }
            });
            return;
        };
        let watch = PasswordWatch {
            secret,
            aws: self
                .aws
                .clone()
                .expect("serve prepares AWS when a secret is configured"),
            user: self.config.postgres.admin_user.clone(),
            cluster: cluster.cloned(),
            current: current.clone(),
            cell: self.admin_password.clone(),
            status: self.status.clone(),
        };
        let interval = self.config.postgres.admin_password_refresh.0;
        let reload = self.reload.clone();
        let stop = stop.clone();
        tasks.spawn("admin password watch", async move {
            loop {
                let why = tokio::select! {
                    () = tokio::time::sleep(interval), if !interval.is_zero() => "interval",
                    () = reload.notified() => "SIGHUP",
                    () = stop.cancelled() => return,
                };
                watch.check(why).await;
            }
        });
    }
}

/// Reads the admin password secret again and applies a rotated value.
struct PasswordWatch {
    secret: SecretRef,
    aws: aws::AwsContext,
    user: String,
    /// The supervised cluster, whose admin role takes the rotated password; `None` with an
    /// external PostgreSQL, where the rotation already happened (RDS/Secrets Manager) and the
    /// server only logs in with the new value.
    cluster: Option<Cluster>,
    current: watch::Sender<Secret>,
    cell: PasswordCell,
    status: StatusSender,
}

impl PasswordWatch {
    async fn check(&self, why: &str) {
        let result = self.apply_if_rotated().await;
        let now = chrono::Utc::now().to_rfc3339();
        self.status.send_modify(|s| {
            let p = s.admin_password.get_or_insert_with(PasswordStatus::default);
            match &result {
                Ok(fetched) => {
                    p.last_checked = Some(now);
                    p.last_error = None;
                    if let Some((version, rotated)) = fetched {
                        p.version_id.clone_from(version);
                        p.rotations += u32::from(*rotated);
                    }
                }
                Err(e) => p.last_error = Some(e.clone()),
            }
        });
        match result {
            Ok(Some((version, true))) => {
                tracing::info!(secret = %self.secret, ?version, trigger = why, "applied the rotated admin password (ALTER ROLE; open connections stay)");
            }
            Ok(_) => {
                tracing::debug!(secret = %self.secret, trigger = why, "admin password secret unchanged");
            }
            Err(e) => {
                tracing::warn!(error = %e, trigger = why, "the admin password secret could not be checked; the current password stays in force");
            }
        }
    }

    /// `Ok(Some((version, rotated)))` after a successful read.
    async fn apply_if_rotated(&self) -> Result<Option<(Option<String>, bool)>, String> {
        let fetched = secrets_manager::fetch(&self.aws, &self.secret)
            .await
            .map_err(|e| e.to_string())?;
        if *self.current.borrow() == fetched.password {
            return Ok(Some((fetched.version_id, false)));
        }
        if let Some(cluster) = &self.cluster {
            let client = cluster
                .connect_superuser("postgres")
                .await
                .map_err(|e| e.to_string())?;
            ensure_admin_role(&client, &self.user, &fetched.password)
                .await
                .map_err(|e| e.to_string())?;
        }
        *self.cell.write().expect("never poisoned") = Some(fetched.password.clone());
        self.current.send_replace(fetched.password);
        Ok(Some((fetched.version_id, true)))
    }
}

/// A failed start during a restore is best explained by the WAL download that failed.
fn explain(e: ServeError, durable: Option<&Durable>) -> ServeError {
    match durable.and_then(|d| d.agent.last_fetch_error()) {
        Some(fetch) => BackupError::Restore(format!("{fetch} (postgres stopped: {e})")).into(),
        None => e,
    }
}

/// Resolves with the reason once the agent reports this instance fenced; never without one.
async fn fenced_signal(rx: Option<&mut watch::Receiver<Option<String>>>) -> String {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        if let Some(reason) = rx.borrow_and_update().clone() {
            return reason;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Takes base backups on the interval and on request, then applies the retention.
#[derive(Debug)]
struct BackupSchedule {
    cluster: Cluster,
    target: BackupTarget,
    compression: storage::Compression,
    control: ControlData,
    interval: Duration,
    retention: RetentionConfig,
    status: StatusSender,
}

impl BackupSchedule {
    async fn run(
        self,
        now: bool,
        mut requests: mpsc::Receiver<BackupRequest>,
        stop: CancellationToken,
    ) {
        let mut next = if now {
            tokio::time::Instant::now()
        } else {
            self.first_due().await
        };
        loop {
            let reply = tokio::select! {
                () = tokio::time::sleep_until(next) => None,
                req = requests.recv() => match req {
                    Some(reply) => Some(reply),
                    None => return,
                },
                () = stop.cancelled() => return,
            };
            let result = tokio::select! {
                r = self.take_one() => r,
                () = stop.cancelled() => return,
            };
            next = tokio::time::Instant::now()
                + if result.is_ok() {
                    self.interval
                } else {
                    self.interval.min(Duration::from_mins(5))
                };
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
    }

    /// When the next backup is due, from the newest one of this cluster in the target.
    async fn first_due(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let newest = backup::list_backups(&self.target)
            .await
            .ok()
            .and_then(|all| {
                all.into_iter()
                    .rev()
                    .find(|m| m.system_identifier == self.control.system_identifier)
            });
        let Some(m) = newest else { return now };
        self.set_last(&m);
        if m.timeline < self.control.timeline {
            // Restored to a point in time since: a backup on the new timeline makes the next
            // restore short.
            return now;
        }
        let age = chrono::Utc::now()
            .signed_duration_since(m.stop_time)
            .to_std()
            .unwrap_or(Duration::ZERO);
        now + self.interval.saturating_sub(age)
    }

    fn set_last(&self, m: &BackupManifest) {
        let info = BaseBackupInfo {
            id: m.id.clone(),
            finished_at: m.stop_time,
            stored_bytes: m.stored_bytes,
            wal_range: format!("{}..{}", m.start_wal, m.stop_wal),
        };
        self.status.send_modify(|s| {
            if let Some(b) = &mut s.backup {
                b.last_base_backup = Some(info);
                b.last_base_backup_error = None;
            }
        });
    }

    async fn take_one(&self) -> Result<BackupManifest, BackupError> {
        let result =
            backup::base::take(&self.cluster, &self.target, self.compression, &self.control).await;
        match &result {
            Ok(m) => {
                self.set_last(m);
                match backup::apply_retention(&self.target, &self.retention, chrono::Utc::now())
                    .await
                {
                    Ok(r) => tracing::info!(
                        kept = r.kept,
                        backups_deleted = r.backups_deleted,
                        wal_deleted = r.wal_deleted,
                        "backup retention applied"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "backup retention failed; retried after the next backup");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "base backup failed");
                let msg = e.to_string();
                self.status.send_modify(|s| {
                    if let Some(b) = &mut s.backup {
                        b.last_base_backup_error = Some(msg);
                    }
                });
            }
        }
        result
    }
}

/// Publishes the archive counters and lag every second; warns while the archive falls behind.
async fn report_archive(
    agent: ArchiveAgent,
    pgdata: PathBuf,
    status: StatusSender,
    stop: CancellationToken,
) {
    let fenced = agent.fenced();
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let counters = agent.stats();
        let (pending, lag) = backup::pending_wal(&pgdata);
        let lag_secs = lag.map(|d| d.as_secs_f64());
        if lag.is_some_and(|d| d > Duration::from_secs(10))
            && last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(30))
        {
            last_warning = Some(tokio::time::Instant::now());
            tracing::warn!(
                pending_wal = pending,
                archive_lag_secs = lag_secs.unwrap_or_default(),
                last_failure = counters.last_failure.as_deref().unwrap_or(""),
                "the WAL archive is behind; PostgreSQL keeps the WAL until it is stored"
            );
        }
        let reason = fenced.borrow().clone();
        status.send_modify(|s| {
            if let Some(b) = &mut s.backup {
                b.archive = counters;
                b.pending_wal = pending;
                b.archive_lag_secs = lag_secs;
                b.fenced = reason;
            }
        });
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// How the serve loop stops the pooler's task before PostgreSQL.
struct PoolerControl {
    stop: CancellationToken,
    /// Given to the task when it is spawned (with `pooler.enabled`).
    down_tx: Option<watch::Sender<bool>>,
    down: watch::Receiver<bool>,
}

impl PoolerControl {
    fn new(enabled: bool) -> Self {
        let (tx, down) = watch::channel(!enabled);
        PoolerControl {
            stop: CancellationToken::new(),
            down_tx: enabled.then_some(tx),
            down,
        }
    }

    /// Stops the pooler (when it runs) and waits until it is down, at most 10 s: clients go
    /// before PostgreSQL does.
    async fn stop(&mut self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.down.wait_for(|d| *d)).await;
    }
}

/// Sleeps for `d`; true when `cancel` fired first.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = cancel.cancelled() => true,
    }
}

/// Makes one lake ready, publishing its state (pending, then ready or error).
async fn bring_up_lake(
    admin: &Admin,
    s3: &storage::S3Settings,
    (lake, pooled): (&LakeConfig, bool),
    runner: &DuckDbRunner,
    status: &StatusSender,
) -> Result<(), LakeError> {
    let mut entry = LakeStatus {
        state: LakeState::Pending,
        data_path: lake.data_path.to_string(),
        spec_version: None,
        error: None,
    };
    status.send_modify(|s| {
        s.lakes.insert(lake.name.clone(), entry.clone());
    });
    let mut result = ensure_lake(admin, s3, lake, runner).await;
    if pooled && result.is_ok() {
        if let Err(error) = crate::pooling::install_lookup(&admin.pg, &lake.name).await {
            result = Err(LakeError::Postgres {
                lake: lake.name.clone(),
                error,
            });
        }
    }
    match &result {
        Ok(info) => {
            entry.state = LakeState::Ready;
            entry.spec_version = Some(info.spec_version.clone());
        }
        Err(e) => {
            entry.state = LakeState::Error;
            entry.error = Some(e.to_string());
        }
    }
    status.send_modify(|s| {
        s.lakes.insert(lake.name.clone(), entry);
    });
    result.map(|_| ())
}

/// One look at the registry: bring up lakes not served yet, forget dropped ones.
async fn watch_lakes_once(
    client: &tokio_postgres::Client,
    admin: &Admin,
    (config, s3): (&Config, &storage::S3Settings),
    runner: &DuckDbRunner,
    status: &StatusSender,
) -> Result<(), ServeError> {
    let pooled = config.pooler_enabled();
    let lakes = crate::lakes::serving_now(client, admin).await?;
    let served: Vec<String> = status.borrow().lakes.keys().cloned().collect();
    for name in &served {
        if !lakes.iter().any(|l| &l.name == name) {
            tracing::info!(lake = %name, "lake dropped: no longer served");
            status.send_modify(|s| {
                s.lakes.remove(name);
            });
        }
    }
    for lake in lakes.iter().filter(|l| !served.contains(&l.name)) {
        match bring_up_lake(admin, s3, (lake, pooled), runner, status).await {
            Ok(()) => announce_lake(config, lake),
            Err(e) => tracing::error!(lake = %lake.name, error = %e, "a created lake is not ready"),
        }
    }
    Ok(())
}

/// The lock that makes a home one server's: `<home>/serve.lock`, held (`flock`) for as long as
/// `serve` runs and naming its pid. Taken before anything in the home is read or written.
fn serve_lock(home: &std::path::Path) -> Result<nix::fcntl::Flock<fs::File>, ServeError> {
    use std::io::Read as _;
    create_home_dir(home, home)?;
    let path = home.join("serve.lock");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(crate::postgres::home_io(
            home,
            format!("open {}", path.display()),
        ))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)
                .and_then(|()| write!(lock, "{}", std::process::id()))
                .map_err(PgError::io(format!("write {}", path.display())))?;
            Ok(lock)
        }
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(ServeError::AlreadyServing {
                pid: if pid.trim().is_empty() {
                    "unknown".into()
                } else {
                    pid.trim().to_owned()
                },
                home: home.to_path_buf(),
            })
        }
    }
}

/// A PostgreSQL still running on this home's data directory while no `serve` holds the home
/// (its server was killed): stopped with a checkpoint (fast shutdown), so the new server
/// supervises the only PostgreSQL there is.
async fn stop_orphaned_postgres(config: &Config) -> Result<(), ServeError> {
    let pidfile = config.pgdata().join("postmaster.pid");
    let Ok(content) = fs::read_to_string(&pidfile) else {
        return Ok(());
    };
    let Some(pid) = content
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return Ok(());
    };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains("postgres") {
        return Ok(());
    }
    tracing::warn!(pg_pid = pid, "a PostgreSQL left running by a server that died holds this home; stopping it (fast shutdown)");
    let target = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGINT);
    let deadline =
        std::time::Instant::now() + Duration::from_secs(config.postgres.stop_timeout_secs);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        if std::time::Instant::now() > deadline {
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGQUIT);
            tokio::time::sleep(Duration::from_secs(2)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Logs the ATTACH string of `lake` (never the password).
fn announce_lake(config: &Config, lake: &LakeConfig) {
    let info = crate::connection::for_lake(config, lake);
    tracing::info!(
        lake = %lake.name,
        data_path = %info.data_path,
        password = %info.password_source,
        "ready: {}  -- give the password as PGPASSWORD or run `ducklake-catalog connect --show-password`",
        info.attach_sql(false)
    );
}

/// Records what clients run (`pg_stat_statements`), where the module is installed.
async fn enable_statement_stats(client: &tokio_postgres::Client) {
    let loaded: bool = client
        .query_one(
            "SELECT current_setting('shared_preload_libraries') LIKE '%pg_stat_statements%'",
            &[],
        )
        .await
        .is_ok_and(|r| r.get(0));
    if loaded {
        if let Err(e) = client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
        {
            tracing::warn!(error = %crate::postgres::pg_message(&e), "pg_stat_statements is loaded but its extension could not be created");
        }
    }
}

/// Checks PostgreSQL answers `SELECT 1` over the supervisor's socket, for readiness. Keeps one
/// connection open between checks so a probe every few seconds does not flood the connection log.
#[derive(Debug, Clone)]
pub struct Probe {
    socket_dir: PathBuf,
    port: u16,
    /// An external PostgreSQL, pinged as the admin with the password in force.
    remote: Option<(crate::remote::RemotePg, PasswordCell)>,
    client: Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
}

impl Probe {
    pub fn new(config: &Config) -> Self {
        Probe {
            socket_dir: config.socket_dir(),
            port: config.postgres.port,
            remote: None,
            client: Arc::default(),
        }
    }

    /// The probe's session: the supervised cluster's superuser over its socket, or the admin
    /// on the external PostgreSQL.
    async fn connect(&self, timeout: Duration) -> Result<tokio_postgres::Client, String> {
        if let Some((remote, password)) = &self.remote {
            let pw = password
                .read()
                .expect("never poisoned")
                .as_ref()
                .map(|p| p.expose().to_owned())
                .ok_or("the admin password is not read yet")?;
            return remote
                .connect(
                    &remote.user,
                    &pw,
                    &remote.dbname,
                    "ducklake-catalog-health",
                    None,
                )
                .await
                .map_err(|e| e.to_string());
        }
        let cfg = crate::postgres::superuser_config(
            &self.socket_dir,
            self.port,
            "postgres",
            "ducklake-catalog-health",
            timeout,
        );
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| crate::postgres::pg_message(&e))?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// One `SELECT 1`, bounded by `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), String> {
        let mut slot = self.client.lock().await;
        let attempt = async {
            if slot.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
                *slot = Some(self.connect(timeout).await?);
            }
            let client = slot.as_ref().expect("connected just above");
            client
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| crate::postgres::pg_message(&e))
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => Err(format!("SELECT 1 failed: {e}")),
            Err(_) => Err(format!(
                "SELECT 1 took longer than {} ms",
                timeout.as_millis()
            )),
        };
        *slot = None;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_backoff_doubles_to_its_cap_and_starts_over_after_a_healthy_run() {
        let mut b = Backoff::default();
        let short = Duration::from_secs(2);
        let delays: Vec<u64> = (0..7).map(|_| b.exited(short).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.failed(), MAX_BACKOFF, "failed starts keep the cap");
        assert_eq!(
            b.exited(HEALTHY_RUN).as_secs(),
            1,
            "a run of HEALTHY_RUN resets the backoff"
        );
        assert_eq!(b.exited(short).as_secs(), 2);
    }

    #[tokio::test]
    async fn a_task_that_panics_or_returns_is_reported_by_name() {
        let mut tasks = Tasks::default();
        let stop = CancellationToken::new();
        let waiting = stop.clone();
        tasks.spawn("waiter", async move { waiting.cancelled().await });
        tasks.spawn("faulty", async {
            let v: Vec<u8> = Vec::new();
            let _ = v.get(3).expect("an index the task assumed exists");
        });
        let (name, how) = tasks.next_lost().await;
        assert_eq!(name, "faulty");
        assert!(
            how.starts_with("panicked: an index the task assumed exists"),
            "{how}"
        );
        tasks.spawn("quitter", async {});
        let (name, how) = tasks.next_lost().await;
        assert_eq!((name, how.as_str()), ("quitter", "ended early"));
        // Nothing else ended: waiting for the next loss does not return.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), tasks.next_lost())
                .await
                .is_err()
        );
        stop.cancel();
        tasks.finish().await;
        assert!(tasks.set.is_empty());
    }
}
