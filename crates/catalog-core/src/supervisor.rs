//! `serve`'s heart: prepare the cluster, run PostgreSQL, make the lakes ready, restart
//! PostgreSQL when it dies, and stop it in order on shutdown.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::connection::{read_password_file, ConnectionInfo};
use crate::lake::{ensure_admin_role, ensure_lake, find_extension_directory, LakeError};
use crate::postgres::{Cluster, PgError, ShutdownMode};
use crate::secret::Secret;
use crate::status::{LakeState, LakeStatus, PgState, StatusSender};

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("admin password: {0}")]
    Password(String),
}

/// Runs PostgreSQL and the lakes until `shutdown` is cancelled.
#[derive(Debug)]
pub struct Supervisor {
    config: Config,
    status: StatusSender,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Supervisor {
    pub fn new(config: Config, status: StatusSender) -> Self {
        Supervisor { config, status }
    }

    /// Prepares and runs everything; returns after a clean stop. `immediate` is cancelled by a
    /// second signal and turns a fast shutdown into an immediate one.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        immediate: CancellationToken,
    ) -> Result<(), ServeError> {
        let result = self.run_inner(&shutdown, &immediate).await;
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

    async fn run_inner(
        &self,
        shutdown: &CancellationToken,
        immediate: &CancellationToken,
    ) -> Result<(), ServeError> {
        let config = self.config.clone();
        let extension_dir = find_extension_directory(&config)?;
        let (cluster, boot) = tokio::task::spawn_blocking(move || Cluster::prepare(&config))
            .await
            .expect("cluster preparation does not panic")?;
        tracing::info!(?boot, pgdata = %cluster.pgdata.display(), "data directory ready");
        let password = self.admin_password()?;
        let mut first = true;
        let mut backoff = Duration::from_secs(1);
        loop {
            self.status.send_modify(|s| s.postgres = PgState::Starting);
            let started = tokio::select! {
                r = cluster.start() => r,
                () = shutdown.cancelled() => return Ok(()),
            };
            let mut running = match started {
                Ok(r) => r,
                Err(e) if first => return Err(e.into()),
                Err(e) => {
                    tracing::error!(error = %e, "restarting postgres failed");
                    self.status
                        .send_modify(|s| s.last_error = Some(e.to_string()));
                    if sleep_or_cancel(backoff, shutdown).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let pid = running.pid();
            self.status
                .send_modify(|s| s.postgres = PgState::Running { pid });
            match self
                .bring_up_lakes(&cluster, &password, &extension_dir)
                .await
            {
                Ok(()) => {}
                Err(e) if first => {
                    running.shutdown(ShutdownMode::Fast, immediate).await?;
                    return Err(e);
                }
                Err(e) => {
                    tracing::error!(error = %e, "a lake is not ready after the restart");
                    self.status
                        .send_modify(|s| s.last_error = Some(e.to_string()));
                }
            }
            if first {
                self.announce();
            }
            first = false;
            tokio::select! {
                exit = running.exited() => {
                    let exit = exit.map_or_else(|e| e.to_string(), |s| s.to_string());
                    tracing::error!(pg_pid = pid, %exit, last_lines = %running.last_lines(), "postgres exited unexpectedly; restarting");
                    self.status.send_modify(|s| {
                        s.postgres = PgState::Restarting { exit: exit.clone() };
                        s.restarts += 1;
                        s.last_error = Some(format!("postgres exited unexpectedly ({exit})"));
                    });
                    if sleep_or_cancel(backoff, shutdown).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                () = shutdown.cancelled() => {
                    self.status.send_modify(|s| s.postgres = PgState::Stopping);
                    running.shutdown(ShutdownMode::Fast, immediate).await?;
                    return Ok(());
                }
            }
        }
    }

    async fn bring_up_lakes(
        &self,
        cluster: &Cluster,
        password: &Secret,
        extension_dir: &std::path::Path,
    ) -> Result<(), ServeError> {
        let client = cluster.connect_superuser("postgres").await?;
        ensure_admin_role(&client, &self.config.postgres.admin_user, password).await?;
        drop(client);
        for lake in &self.config.lakes {
            let mut entry = LakeStatus {
                state: LakeState::Pending,
                data_path: lake.data_path.to_string(),
                spec_version: None,
                error: None,
            };
            self.status.send_modify(|s| {
                s.lakes.insert(lake.name.clone(), entry.clone());
            });
            let result = ensure_lake(cluster, &self.config, lake, password, extension_dir).await;
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
            self.status.send_modify(|s| {
                s.lakes.insert(lake.name.clone(), entry);
            });
            result?;
        }
        Ok(())
    }

    /// Logs, per lake, the ATTACH string to paste into DuckDB (never the password).
    fn announce(&self) {
        for lake in &self.config.lakes {
            let info = ConnectionInfo::for_lake(&self.config, lake);
            tracing::info!(
                lake = %lake.name,
                data_path = %info.data_path,
                password = %info.password_source,
                "ready: {}  -- give the password as PGPASSWORD or run `ducklake-catalog connect --show-password`",
                info.attach_sql(false)
            );
        }
    }

    /// The configured admin password, or the generated one (created once, stored 0600).
    fn admin_password(&self) -> Result<Secret, ServeError> {
        if let Some(pw) = &self.config.postgres.admin_password {
            return Ok(pw.clone());
        }
        let file: PathBuf = self.config.generated_password_file();
        let err = |what: &str, e: std::io::Error| {
            ServeError::Password(format!("{what} {}: {e}", file.display()))
        };
        if let Some(pw) = read_password_file(&file).map_err(|e| err("read", e))? {
            return Ok(pw);
        }
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
}

/// Sleeps for `d`; true when `cancel` fired first.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = cancel.cancelled() => true,
    }
}

/// Checks PostgreSQL answers `SELECT 1` over the supervisor's socket, for readiness. Keeps one
/// connection open between checks so a probe every few seconds does not flood the connection log.
#[derive(Debug, Clone)]
pub struct Probe {
    socket_dir: PathBuf,
    port: u16,
    client: Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
}

impl Probe {
    pub fn new(config: &Config) -> Self {
        Probe {
            socket_dir: config.socket_dir(),
            port: config.postgres.port,
            client: Arc::default(),
        }
    }

    /// One `SELECT 1`, bounded by `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), String> {
        let mut slot = self.client.lock().await;
        let attempt = async {
            if slot.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
                let cfg = crate::postgres::superuser_config(
                    &self.socket_dir,
                    self.port,
                    "postgres",
                    "ducklake-catalog-health",
                    timeout,
                );
                let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                *slot = Some(client);
            }
            let client = slot.as_ref().expect("connected just above");
            client.simple_query("SELECT 1").await.map(|_| ())
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
