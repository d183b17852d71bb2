//! PostgreSQL as the DuckLake administration sees it: sessions (`pg-conn`), the error of commands that
//! run beside `serve`, and role creation.

pub use base::{conninfo_value, quote_ident, quote_literal};
pub use pg_conn::{pg_message, superuser_config, PgError, Socket, SUPERUSER};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("the server's PostgreSQL is not reachable at {socket} ({detail}); commands that read or change the catalog run beside a running `ducklake-catalog serve` (same home, e.g. `docker exec`)")]
    Socket { socket: String, detail: String },
    #[error(transparent)]
    Remote(Box<pg_conn::remote::RemoteError>),
    #[error(transparent)]
    Registry(#[from] PgError),
}

impl From<pg_conn::remote::RemoteError> for LocalError {
    fn from(e: pg_conn::remote::RemoteError) -> Self {
        LocalError::Remote(Box::new(e))
    }
}

impl LocalError {
    pub fn new(socket: &Socket, e: &tokio_postgres::Error) -> LocalError {
        LocalError::Socket {
            socket: socket.dir.display().to_string(),
            detail: base::one_line(
                &std::error::Error::source(e).map_or_else(|| e.to_string(), ToString::to_string),
            ),
        }
    }
}

/// Creates role `name` (`LOGIN` or `NOLOGIN` per `login`) unless it exists; true when it was
/// created. `su` is a role-administering session.
pub async fn create_role_if_missing(
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
