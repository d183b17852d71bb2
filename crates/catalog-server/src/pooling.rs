//! The supervised connection pooler (`[pooler]`, the `pooler` crate): PostgreSQL made ready
//! for it (the lookup role and, in each lake database, the lookup function), and the task
//! that keeps PgBouncer running — started once the lakes are up, restarted with backoff when
//! it dies, stopped before PostgreSQL.

use std::time::{Duration, Instant};

use pooler::{PoolerSettings, RunningPooler, AUTH_ROLE};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::lake_session::{PgHandle, SERVERS_GROUP};
use crate::postgres::{quote_ident, Cluster, PgError, SUPERUSER};
use crate::status::{PoolerState, PoolerStatus, StatusSender};

/// A pooler that ran this long before it exited starts again at once.
const HEALTHY_RUN: Duration = Duration::from_mins(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The pooler's settings for `config` in front of `cluster`.
pub fn settings(config: &Config, cluster: &Cluster) -> Result<PoolerSettings, pooler::PoolerError> {
    Ok(PoolerSettings {
        bin: pooler::find_binary(config.pooler.bin.as_deref())?,
        // In the home (the supervisor's), not in `run/` (PostgreSQL's OS user's).
        dir: config.home.join("pooler"),
        listen_address: config.postgres.listen_address.clone(),
        port: config.pooler.port,
        databases: Vec::new(),
        pg_socket_dir: config.socket_dir(),
        pg_port: config.postgres.port,
        tls_cert: cluster.pgdata.join("server.crt"),
        tls_key: cluster.pgdata.join("server.key"),
        max_client_conn: config.pooler.max_client_conn,
        pool_size: config.pooler.pool_size,
        // The rest stays for the admin, the server's own sessions and direct clients.
        max_db_connections: (config.max_connections() * 3 / 4).max(1),
        os_user: cluster.os_user.as_ref().map(|u| (u.uid, u.gid)),
        pidfile: config.home.join("pooler.pid"),
        start_timeout: Duration::from_secs(30),
    })
}

/// The pooler's lookup role: LOGIN (peer authentication on the socket only, `pg_hba.conf`),
/// no attribute, a few connections. `su` is a superuser session in `postgres`.
pub async fn prepare_role(su: &tokio_postgres::Client) -> Result<(), PgError> {
    crate::postgres::create_role_if_missing(su, AUTH_ROLE, true).await?;
    su.batch_execute(&format!(
        "ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {limit} PASSWORD NULL;
         ALTER ROLE {role} RESET ALL;",
        role = quote_ident(AUTH_ROLE),
        limit = pooler::LOOKUP_CONNECTIONS + 4,
    ))
    .await
    .map_err(PgError::sql(format!("prepare role {AUTH_ROLE}")))
}

/// The lookup function in `lake`'s database, as the superuser with the search path pinned.
pub async fn install_lookup(pg: &PgHandle, lake: &str) -> Result<(), PgError> {
    let su = pg.admin_in(lake, "ducklake-catalog pooler").await?;
    su.batch_execute(&format!(
        "RESET ALL; SET ROLE NONE; SET search_path = pg_catalog, pg_temp;\n{}",
        pooler::lookup_function_sql(lake, SUPERUSER, SERVERS_GROUP)
    ))
    .await
    .map_err(PgError::sql(format!(
        "install the pooler's user lookup in lake {lake}"
    )))
}

/// The lakes ready now, by name: the databases the pooler serves.
fn ready_lakes(status: &crate::status::Status) -> Vec<String> {
    status
        .lakes
        .iter()
        .filter(|(_, l)| l.state == crate::status::LakeState::Ready)
        .map(|(name, _)| name.clone())
        .collect()
}

/// Keeps the pooler running until `stop`: started now, restarted with backoff (reset after a
/// healthy minute) when it exits, stopped on `stop`; `stopped` turns true once it is down. It
/// serves the lakes ready in the status, and reloads when that set changes.
pub async fn supervise(
    mut settings: PoolerSettings,
    status: StatusSender,
    stop: CancellationToken,
    stopped: watch::Sender<bool>,
) {
    let publish = |change: &dyn Fn(&mut PoolerStatus)| {
        status.send_modify(|s| change(s.pooler.get_or_insert_with(Default::default)));
    };
    publish(&|p| {
        p.state = PoolerState::Starting;
        p.port = settings.port;
    });
    let mut backoff = Duration::from_secs(1);
    let mut lakes = status.subscribe();
    loop {
        settings.databases = ready_lakes(&lakes.borrow_and_update());
        let started = tokio::select! {
            r = pooler::start(&settings) => r,
            () = stop.cancelled() => break,
        };
        let mut running: RunningPooler = match started {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the connection pooler did not start");
                let line = e.to_string();
                publish(&|p| {
                    p.state = PoolerState::Restarting;
                    p.pid = None;
                    p.last_error = Some(line.clone());
                });
                if sleep_or_stop(backoff, &stop).await {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let pid = running.pid();
        let since = Instant::now();
        let serving = settings.databases.clone();
        publish(&|p| {
            p.state = PoolerState::Running;
            p.pid = Some(pid);
            p.lakes.clone_from(&serving);
        });
        let exit = loop {
            tokio::select! {
                () = stop.cancelled() => break None,
                exit = running.exited() => break Some(exit),
                Ok(()) = lakes.changed() => {
                    let now = ready_lakes(&lakes.borrow_and_update());
                    if now != settings.databases {
                        settings.databases = now;
                        reload(&running, &settings, &status);
                    }
                }
            }
        };
        match exit {
            None => {
                match running.stop().await {
                    Ok(s) => {
                        tracing::info!(pooler_pid = pid, status = %s, "the connection pooler stopped");
                    }
                    Err(e) => {
                        tracing::warn!(pooler_pid = pid, error = %e, "stopping the connection pooler");
                    }
                }
                break;
            }
            Some(exit) => {
                let exit = exit.map_or_else(|e| e.to_string(), |s| s.to_string());
                let line = format!(
                    "pgbouncer exited unexpectedly ({exit}): {}",
                    running.last_lines()
                );
                tracing::error!(pooler_pid = pid, %exit, "the connection pooler exited unexpectedly; restarting it");
                publish(&|p| {
                    p.state = PoolerState::Restarting;
                    p.pid = None;
                    p.restarts += 1;
                    p.last_error = Some(line.clone());
                });
                if since.elapsed() >= HEALTHY_RUN {
                    backoff = Duration::from_secs(1);
                }
                if sleep_or_stop(backoff, &stop).await {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    publish(&|p| {
        p.state = PoolerState::Stopped;
        p.pid = None;
    });
    let _ = stopped.send(true);
}

/// Has the running pooler serve `settings.databases` now, and says so in the status.
fn reload(running: &RunningPooler, settings: &PoolerSettings, status: &StatusSender) {
    match running.reload(settings) {
        Ok(()) => {
            tracing::info!(lakes = ?settings.databases, "the connection pooler serves the lakes ready now");
            status.send_modify(|s| {
                if let Some(p) = s.pooler.as_mut() {
                    p.lakes.clone_from(&settings.databases);
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "reloading the connection pooler"),
    }
}

async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = stop.cancelled() => true,
    }
}
