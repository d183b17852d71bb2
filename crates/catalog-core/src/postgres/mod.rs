//! The PostgreSQL supervisor: initdb, managed configuration, start, health, stop.
//!
//! ```text
//!            prepare()            start()             wait_ready()
//!  [absent] ─────────► [initialised] ──────► [starting] ──────────► [running]
//!                                              │  exit / timeout        │ exits unexpectedly
//!                                              ▼                        ▼
//!                                          StartFailed           (serve restarts with backoff)
//!  [running] ── shutdown(Fast) ──► SIGINT: checkpoint, exit ──► [stopped]
//!            └─ timeout or second signal ──► SIGQUIT (immediate) ──► SIGKILL after 5 s
//! ```
//!
//! PostgreSQL runs as a direct child in its own process group, never daemonised; its stderr is
//! parsed line by line and re-emitted as tracing events ([`logs`]). The internal superuser
//! [`SUPERUSER`] authenticates by `peer` over the Unix socket only; clients log in as the
//! configured admin role, which is not a superuser.

mod binaries;
mod cluster;
mod logs;
mod process;
mod tls;

pub(crate) use base::{conninfo_value, quote_ident, quote_literal};
pub use binaries::PgBinaries;
pub(crate) use cluster::{create_home_dir, home_io, own_tree};
pub use cluster::{Boot, Cluster, ControlData, OsUser};
pub use process::{RunningPostgres, ShutdownMode};

use std::path::PathBuf;

/// The internal superuser role, reachable only over the Unix socket by the supervisor.
pub const SUPERUSER: &str = "ducklake_supervisor";

/// Why PostgreSQL could not be prepared, started or stopped. Each is one line with the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    #[error("PostgreSQL 15 server binaries not found (looked in {looked}); install postgresql-15 (apt-get install postgresql-15) or set postgres.bin_dir")]
    BinariesMissing { looked: String },
    #[error("{bin_dir} holds `{found}`, not PostgreSQL 15; install postgresql-15 or fix postgres.bin_dir")]
    WrongBinaries { bin_dir: PathBuf, found: String },
    #[error("{pgdata} holds a PostgreSQL {found} cluster but this server runs PostgreSQL 15; upgrade it with pg_upgrade or point home elsewhere (it was not changed)")]
    WrongMajor { pgdata: PathBuf, found: String },
    #[error("{pgdata} is not empty and is not a ducklake-catalog data directory; refusing to touch it: move it away or choose another home")]
    ForeignDataDir { pgdata: PathBuf },
    #[error("home {path} is not writable by this server's user (uid {uid}): make it so (`chown -R {uid} {path}`) or use a volume that user owns; the container image runs as uid 10001")]
    HomeNotWritable { path: PathBuf, uid: u32 },
    #[error(
        "another postgres (pid {pid}) is running on {pgdata}; stop it before starting this server"
    )]
    AlreadyRunning { pid: i32, pgdata: PathBuf },
    #[error("OS user `{user}` (postgres.os_user) does not exist; create it (useradd --system {user}) or set postgres.os_user")]
    NoOsUser { user: String },
    #[error("OS user `{user}` cannot reach {path}: make every parent folder of the home traversable (chmod o+x) or choose another home")]
    Unreachable { user: String, path: PathBuf },
    #[error("postgres.port: {addr} is already in use; stop what listens there or choose another port (--port or DUCKLAKE_CATALOG_POSTGRES__PORT)")]
    PortInUse { addr: String },
    #[error("initdb failed ({status}): {stderr}")]
    Initdb { status: String, stderr: String },
    #[error("postgres exited during start ({status}): {last_lines}")]
    StartFailed { status: String, last_lines: String },
    #[error("postgres did not accept connections within {secs} s (postgres.start_timeout_secs): {last_lines}")]
    StartTimeout { secs: u64, last_lines: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{action}: {error}")]
    Io {
        action: String,
        error: std::io::Error,
    },
    #[error("{action}: {}", pg_message(error))]
    Sql {
        action: String,
        error: tokio_postgres::Error,
    },
    #[error(transparent)]
    Remote(Box<crate::remote::RemoteError>),
}

impl From<crate::remote::RemoteError> for PgError {
    fn from(e: crate::remote::RemoteError) -> Self {
        PgError::Remote(Box::new(e))
    }
}

impl PgError {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
        let action = action.into();
        move |error| PgError::Io { action, error }
    }

    pub(crate) fn sql(action: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        let action = action.into();
        move |error| PgError::Sql { action, error }
    }
}

/// PostgreSQL's own words for `e` (message, detail, hint and SQLSTATE), on one line; for an
/// error that did not come from the server, the client's error and its cause. Never the bare
/// "db error" tokio-postgres displays.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_owned();
        if let Some(detail) = db.detail() {
            s = format!("{s} ({detail})");
        }
        if let Some(hint) = db.hint() {
            s = format!("{s}; hint: {hint}");
        }
        return crate::one_line(&format!("{s} [SQLSTATE {}]", db.code().code()));
    }
    match std::error::Error::source(e) {
        Some(cause) => crate::one_line(&format!("{e}: {cause}")),
        None => crate::one_line(&e.to_string()),
    }
}

/// How the supervisor reaches PostgreSQL as [`SUPERUSER`]: peer auth over the Unix socket.
pub(crate) fn superuser_config(
    socket_dir: &std::path::Path,
    port: u16,
    dbname: &str,
    application_name: &str,
    timeout: std::time::Duration,
) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(socket_dir)
        .port(port)
        .user(SUPERUSER)
        .dbname(dbname)
        .application_name(application_name)
        .connect_timeout(timeout);
    cfg
}

/// The running server's PostgreSQL could not be reached over its Unix socket.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("the server's PostgreSQL is not reachable at {socket} ({detail}); commands that read or change the catalog run beside a running `ducklake-catalog serve` (same home, e.g. `docker exec`)")]
    Socket { socket: String, detail: String },
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    #[error(transparent)]
    Registry(#[from] PgError),
}

impl LocalError {
    pub(crate) fn new(socket: &Socket, e: &tokio_postgres::Error) -> LocalError {
        LocalError::Socket {
            socket: socket.dir.display().to_string(),
            detail: crate::one_line(
                &std::error::Error::source(e).map_or_else(|| e.to_string(), ToString::to_string),
            ),
        }
    }
}

/// Where PostgreSQL's Unix socket is: how the supervisor, and the commands that run beside
/// `serve`, reach it as [`SUPERUSER`] (peer auth) or as the admin (password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub dir: PathBuf,
    pub port: u16,
}

impl Socket {
    /// The running server's socket for this configuration (`<home>/run`).
    pub fn for_config(config: &crate::config::Config) -> Socket {
        Socket {
            dir: config.socket_dir(),
            port: config.postgres.port,
        }
    }

    /// libpq connection string for `user` over the socket.
    pub fn conninfo(&self, user: &str, password: Option<&str>, dbname: &str) -> String {
        use std::fmt::Write as _;
        let mut s = format!(
            "host={} port={} user={} dbname={}",
            conninfo_value(&self.dir.to_string_lossy()),
            self.port,
            conninfo_value(user),
            conninfo_value(dbname)
        );
        if let Some(pw) = password {
            let _ = write!(s, " password={}", conninfo_value(pw));
        }
        s
    }

    /// A superuser session in `db`, its connection driven by a background task.
    pub async fn connect_superuser(
        &self,
        db: &str,
        application_name: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let cfg = superuser_config(
            &self.dir,
            self.port,
            db,
            application_name,
            std::time::Duration::from_secs(5),
        );
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "superuser connection closed");
            }
        });
        Ok(client)
    }
}

/// Creates role `name` (`LOGIN` or `NOLOGIN` per `login`) unless it exists; true when it was
/// created. `su` is a role-administering session.
pub(crate) async fn create_role_if_missing(
    su: &tokio_postgres::Client,
    name: &str,
    login: bool,
) -> Result<bool, PgError> {
    let exists = su
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await
        .map_err(PgError::sql(format!("look up role {name}")))?
        .is_some();
    if exists {
        return Ok(false);
    }
    su.batch_execute(&format!(
        "CREATE ROLE {} {}",
        quote_ident(name),
        if login { "LOGIN" } else { "NOLOGIN" }
    ))
    .await
    .map_err(PgError::sql(format!("create role {name}")))?;
    Ok(true)
}
