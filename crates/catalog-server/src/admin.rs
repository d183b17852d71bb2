//! The DuckLake administration ([`lake_admin`]) of this configuration's PostgreSQL, for the
//! commands that run beside `serve` and for the server itself.

use lake_admin::lake_session::{PasswordCell, ServerKey};
use lake_admin::{Admin, PgHandle};

use crate::config::Config;
use crate::postgres::{LocalError, PgError};

/// This configuration's PostgreSQL: the running server's socket in `<home>/run`, or
/// `postgres.url` (with the admin password read now); the key in `<home>/secrets`.
pub async fn pg_handle(config: &Config) -> Result<PgHandle, PgError> {
    let key = ServerKey::load_or_create(&config.home.join("secrets"))?;
    let Some(pg) = config.external() else {
        return Ok(PgHandle::new(config.socket(), key));
    };
    let password = crate::connection::admin_password(config)
        .await
        .map_err(|e| PgError::Io {
            action: "read the admin password".into(),
            error: std::io::Error::other(e.to_string()),
        })?;
    let cell: PasswordCell = std::sync::Arc::new(std::sync::RwLock::new(password));
    Ok(PgHandle::remote(pg.clone(), cell, key))
}

/// The administration of `config`'s PostgreSQL with `config`'s settings.
pub async fn admin(config: &Config) -> Result<Admin, PgError> {
    Ok(Admin {
        pg: pg_handle(config).await?,
        settings: config.admin_settings(),
    })
}

/// The role-administering session in the registry's database of `config`'s PostgreSQL, for
/// the commands that run beside `serve` (the supervised cluster's socket in `<home>/run`, or
/// `postgres.url`). Sessions inside a lake go through [`PgHandle::lake`], never as a superuser.
pub async fn connect_admin(
    config: &Config,
    application_name: &str,
) -> Result<tokio_postgres::Client, LocalError> {
    pg_handle(config).await?.postgres(application_name).await
}
