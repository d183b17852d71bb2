//! The running `postgres` child: start, readiness, unexpected exit, shutdown.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::logs::{forward, RecentLines};
use super::{Cluster, ClusterError};

/// How a running PostgreSQL is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// SIGINT: abort sessions, checkpoint, exit cleanly.
    Fast,
    /// SIGQUIT: exit at once; crash recovery replays WAL on the next start.
    Immediate,
}

/// A `postgres` process started by [`Cluster::start`]. Dropping it kills the child, so a failed
/// start never leaves PostgreSQL behind.
#[derive(Debug)]
pub struct RunningPostgres {
    child: Child,
    pid: i32,
    recent: RecentLines,
    stop_timeout: Duration,
}

impl Cluster {
    /// Spawns `postgres -D PGDATA` and waits until it answers `SELECT 1` over the socket.
    pub async fn start(&self) -> Result<RunningPostgres, ClusterError> {
        self.check_port_free()?;
        let mut cmd = Command::new(self.bins.postgres());
        cmd.arg("-D")
            .arg(&self.pgdata)
            .env_clear()
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches only the supervisor, which
            // then stops PostgreSQL in order.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(user) = &self.os_user {
            cmd.uid(user.uid).gid(user.gid);
        }
        if let Some(pw) = &self.replication_password {
            cmd.env("PGPASSWORD", pw.expose());
        }
        let mut child = cmd.spawn().map_err(ClusterError::io("spawn postgres"))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .expect("a just-spawned child has a pid");
        let recent = RecentLines::default();
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward(stderr, recent.clone(), self.log_events.clone()));
        }
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(forward(stdout, recent.clone(), self.log_events.clone()));
        }
        let mut running = RunningPostgres {
            child,
            pid,
            recent,
            stop_timeout: Duration::from_secs(self.stop_timeout_secs),
        };
        running.wait_ready(self).await?;
        tracing::info!(
            pg_pid = pid,
            port = self.port,
            "postgres is accepting connections"
        );
        Ok(running)
    }
}

impl RunningPostgres {
    async fn wait_ready(&mut self, cluster: &Cluster) -> Result<(), ClusterError> {
        let deadline = Instant::now() + Duration::from_secs(cluster.start_timeout_secs);
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(ClusterError::io("poll postgres"))?
            {
                // Let the log forwarder drain the last lines before they are summarised.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if self.recent.mentions("Address already in use") {
                    return Err(ClusterError::PortInUse {
                        addr: format!("port {}", cluster.port),
                    });
                }
                return Err(ClusterError::StartFailed {
                    status: status.to_string(),
                    last_lines: self.recent.summary(),
                });
            }
            if let Ok(client) = cluster.connect_superuser("postgres").await {
                if client.simple_query("SELECT 1").await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(ClusterError::StartTimeout {
                    secs: cluster.start_timeout_secs,
                    last_lines: self.recent.summary(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits until PostgreSQL exits on its own (a crash, or an external signal).
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The exit status if PostgreSQL has exited, without waiting.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>, ClusterError> {
        self.child
            .try_wait()
            .map_err(ClusterError::io("poll postgres"))
    }

    /// The last lines PostgreSQL wrote, on one line.
    pub fn last_lines(&self) -> String {
        self.recent.summary()
    }

    /// Stops PostgreSQL: a fast shutdown (checkpoint) that becomes immediate after the stop
    /// timeout or when `immediate` is cancelled (a second signal); SIGKILL as the last resort.
    pub async fn shutdown(
        mut self,
        mode: ShutdownMode,
        immediate: &CancellationToken,
    ) -> Result<ExitStatus, ClusterError> {
        let started = Instant::now();
        if mode == ShutdownMode::Fast {
            tracing::info!(
                pg_pid = self.pid,
                "fast shutdown: checkpoint and stop postgres"
            );
            self.signal(Signal::SIGINT);
            tokio::select! {
                status = self.child.wait() => {
                    let status = status.map_err(ClusterError::io("wait for postgres"))?;
                    tracing::info!(elapsed_ms = started.elapsed().as_millis(), %status, "postgres stopped");
                    return Ok(status);
                }
                () = tokio::time::sleep(self.stop_timeout) => {
                    tracing::warn!(timeout_s = self.stop_timeout.as_secs(), "fast shutdown took too long; switching to immediate");
                }
                () = immediate.cancelled() => {
                    tracing::warn!("second signal: immediate shutdown");
                }
            }
        }
        self.signal(Signal::SIGQUIT);
        if let Ok(status) = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            return status.map_err(ClusterError::io("wait for postgres"));
        }
        tracing::error!(pg_pid = self.pid, "postgres ignored SIGQUIT; killing it");
        self.child
            .kill()
            .await
            .map_err(ClusterError::io("kill postgres"))?;
        self.child
            .wait()
            .await
            .map_err(ClusterError::io("wait for postgres"))
    }

    fn signal(&self, sig: Signal) {
        if let Err(e) = kill(Pid::from_raw(self.pid), sig) {
            tracing::warn!(pg_pid = self.pid, signal = %sig, error = %e, "signal postgres");
        }
    }
}
