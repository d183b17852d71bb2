//! The PostgreSQL 15 supervisor: finds the binaries, initialises and prepares the data
//! directory with the managed configuration and TLS files, sizes it to the container, runs
//! `postgres` as a child and turns its log lines into tracing events.
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
//! configured admin role, which is not a superuser. It takes its own settings
//! ([`ClusterSettings`]), never the product's whole configuration.

mod binaries;
mod cluster;
pub mod logs;
mod process;
pub mod sizing;
mod tls;

pub use binaries::PgBinaries;
pub use cluster::{create_home_dir, home_io, own_tree, Boot, Cluster, ControlData, OsUser};
pub use pg_conn::{PgError, Socket, SUPERUSER};
pub use process::{RunningPostgres, ShutdownMode};

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What the supervisor needs to know: where the cluster lives and how it runs.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The server's home (`secrets/` and the socket folder are made in it).
    pub home: PathBuf,
    pub pgdata: PathBuf,
    pub socket_dir: PathBuf,
    /// Folder with the server binaries; `None`: Debian's, else `pg_config --bindir`.
    pub bin_dir: Option<PathBuf>,
    pub listen_address: String,
    pub port: u16,
    /// The host name clients use, named in a generated certificate.
    pub client_host: String,
    /// OS user PostgreSQL runs as when the supervisor is root.
    pub os_user: String,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// `None`: sized to the container's memory ([`sizing`]).
    pub max_connections: Option<u32>,
    pub shared_buffers: String,
    pub wal_segment_size_mb: u32,
    pub stop_timeout_secs: u64,
    pub start_timeout_secs: u64,
    /// Extra `postgresql.conf` settings, written after the managed ones.
    pub settings: BTreeMap<String, String>,
}

/// Why PostgreSQL could not be prepared, started or stopped. Each is one line with the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
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
    #[error(transparent)]
    Pg(#[from] PgError),
}

impl ClusterError {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
        let action = action.into();
        move |error| ClusterError::Io { action, error }
    }
}
