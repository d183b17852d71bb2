//! Reaching a PostgreSQL: the supervised cluster's Unix socket as its internal superuser
//! ([`Socket`]), or an external PostgreSQL over TLS ([`remote`]); connection strings for libpq
//! clients; and PostgreSQL's own error text on one line ([`pg_message`], [`PgError`]).
//!
//! Both the supervisor (`pg-cluster`) and the DuckLake administration build on it; it knows
//! neither.

pub mod remote;

pub use base::{conninfo_value, quote_ident, quote_literal};

use std::path::PathBuf;

/// The internal superuser role, reachable only over the Unix socket by the supervisor.
pub const SUPERUSER: &str = "ducklake_supervisor";

/// A session kept open between the looks of a periodic task — a new one for each look would
/// fill PostgreSQL's connection log — and opened again once it closed (PostgreSQL restarted).
#[derive(Debug, Default)]
pub struct KeptSession(Option<tokio_postgres::Client>);

impl KeptSession {
    /// The open session, opened with `open` first when there is none or it closed.
    pub async fn get<E, F>(
        &mut self,
        open: impl FnOnce() -> F,
    ) -> Result<&tokio_postgres::Client, E>
    where
        F: std::future::Future<Output = Result<tokio_postgres::Client, E>>,
    {
        if self
            .0
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            self.0 = Some(open().await?);
        }
        Ok(self.0.as_ref().expect("opened just above"))
    }
}

/// Why a session with PostgreSQL, or a step around one, failed. Each is one line with
/// PostgreSQL's own words (never a bare "db error").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
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
    Remote(Box<remote::RemoteError>),
}

impl From<remote::RemoteError> for PgError {
    fn from(e: remote::RemoteError) -> Self {
        PgError::Remote(Box::new(e))
    }
}

impl PgError {
    pub fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
        let action = action.into();
        move |error| PgError::Io { action, error }
    }

    pub fn sql(action: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PgError {
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
        return base::one_line(&format!("{s} [SQLSTATE {}]", db.code().code()));
    }
    match std::error::Error::source(e) {
        Some(cause) => base::one_line(&format!("{e}: {cause}")),
        None => base::one_line(&e.to_string()),
    }
}

/// How the supervisor reaches PostgreSQL as [`SUPERUSER`]: peer auth over the Unix socket.
pub fn superuser_config(
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
/// Where PostgreSQL's Unix socket is: how the supervisor, and the commands that run beside
/// `serve`, reach it as [`SUPERUSER`] (peer auth) or as the admin (password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub dir: PathBuf,
    pub port: u16,
}

impl Socket {
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
