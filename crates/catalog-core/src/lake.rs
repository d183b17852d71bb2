//! Lakes: one PostgreSQL database each, owned by the admin role, initialised as a DuckLake
//! catalog bound to its data path by the embedded DuckDB.

use std::path::{Path, PathBuf};

use storage::{preflight, StorageError};

use crate::config::{Config, LakeConfig};
use crate::postgres::{quote_ident, quote_literal, PgError, Socket};
use crate::secret::Secret;
use crate::versions::{DUCKDB_PLATFORM, DUCKDB_VERSION};

/// Why a lake could not be made ready. One line each, naming the lake and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LakeError {
    #[error("lake `{lake}`: {error}")]
    Storage { lake: String, error: StorageError },
    #[error("lake `{lake}` is bound to data path {stored} but the configuration says {configured}; a lake's data path cannot change: restore the configured data_path or create a new lake")]
    DataPathMismatch {
        lake: String,
        stored: String,
        configured: String,
    },
    #[error("DuckDB extensions for v{DUCKDB_VERSION} not found (looked for ducklake and postgres_scanner in {looked}); set duckdb.extension_directory or run `cargo xtask deps`")]
    ExtensionsMissing { looked: String },
    #[error("lake `{lake}`: DuckLake initialisation failed: {message}")]
    DuckDb { lake: String, message: String },
    #[error("lake `{lake}`: {error}")]
    Postgres { lake: String, error: PgError },
}

/// What the catalog recorded for a ready lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeInfo {
    pub spec_version: String,
    pub data_path: String,
}

/// Creates or updates the admin login role and sets its password (on every start, so a
/// changed password takes effect without re-initialising).
pub async fn ensure_admin_role(
    client: &tokio_postgres::Client,
    user: &str,
    password: &Secret,
) -> Result<(), PgError> {
    let role = quote_ident(user);
    // Keep the password out of PostgreSQL's statement log, even when the statement fails.
    client
        .batch_execute("SET log_statement = 'none'; SET log_min_error_statement = 'panic'")
        .await
        .map_err(PgError::sql("silence statement logging"))?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .map_err(PgError::sql("look up the admin role"))?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
            .await
            .map_err(PgError::sql(format!("create role {user}")))?;
        tracing::info!(role = user, "created the admin role");
    }
    client
        .batch_execute(&format!(
            "ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {}",
            quote_literal(password.expose())
        ))
        .await
        .map_err(PgError::sql(format!("set the password of role {user}")))?;
    client
        .batch_execute("RESET log_statement; RESET log_min_error_statement")
        .await
        .map_err(PgError::sql("restore statement logging"))
}

/// Makes `lake` ready: storage preflight, database, privileges, DuckLake catalog, tuning. Runs
/// in `serve` and in `lake create`, over the cluster's Unix socket.
#[tracing::instrument(skip_all, fields(lake = %lake.name))]
pub async fn ensure_lake(
    socket: &Socket,
    config: &Config,
    lake: &LakeConfig,
    admin_password: &Secret,
    extension_dir: &Path,
) -> Result<LakeInfo, LakeError> {
    let name = lake.name.clone();
    let pg_err = |error| LakeError::Postgres {
        lake: name.clone(),
        error,
    };
    preflight(&lake.data_path, &config.s3_settings())
        .await
        .map_err(|error| LakeError::Storage {
            lake: name.clone(),
            error,
        })?;

    let admin = &config.postgres.admin_user;
    let connect = |db: &str| {
        let action = format!("connect to database {db} as {}", crate::postgres::SUPERUSER);
        let db = db.to_owned();
        async move {
            socket
                .connect_superuser(&db, "ducklake-catalog")
                .await
                .map_err(PgError::sql(action))
        }
    };
    let postgres = connect("postgres").await.map_err(pg_err)?;
    let db_exists = postgres
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&lake.name],
        )
        .await
        .map_err(|e| pg_err(PgError::sql("look up the lake database")(e)))?
        .is_some();
    let db = quote_ident(&lake.name);
    if !db_exists {
        postgres
            .batch_execute(&format!(
                "CREATE DATABASE {db} OWNER {} ENCODING 'UTF8'",
                quote_ident(admin)
            ))
            .await
            .map_err(|e| pg_err(PgError::sql("create the lake database")(e)))?;
        tracing::info!(database = %lake.name, "created the lake database");
    }
    postgres
        .batch_execute(&format!(
            "ALTER DATABASE {db} OWNER TO {owner}; REVOKE ALL ON DATABASE {db} FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {owner}",
            owner = quote_ident(admin)
        ))
        .await
        .map_err(|e| pg_err(PgError::sql("set the lake database's privileges")(e)))?;
    drop(postgres);

    let lake_db = connect(&lake.name).await.map_err(pg_err)?;
    lake_db
        .batch_execute(&format!(
            "REVOKE ALL ON SCHEMA public FROM PUBLIC; GRANT ALL ON SCHEMA public TO {}",
            quote_ident(admin)
        ))
        .await
        .map_err(|e| pg_err(PgError::sql("set the public schema's privileges")(e)))?;
    crate::users::ensure_lake_roles(&lake_db, &lake.name, admin)
        .await
        .map_err(pg_err)?;
    let configured = lake.data_path.to_string();
    if let Some(info) = read_lake_info(&lake_db).await.map_err(pg_err)? {
        if info.data_path != configured {
            return Err(LakeError::DataPathMismatch {
                lake: name,
                stored: info.data_path,
                configured,
            });
        }
        tune(&lake_db).await.map_err(pg_err)?;
        return Ok(info);
    }
    let conninfo = socket.conninfo(admin, Some(admin_password.expose()), &lake.name);
    let ext = extension_dir.to_path_buf();
    let data_path = configured.clone();
    let result = tokio::task::spawn_blocking(move || init_with_duckdb(&ext, &conninfo, &data_path))
        .await
        .expect("the DuckDB initialisation task does not panic");
    result.map_err(|e| LakeError::DuckDb {
        lake: name.clone(),
        message: redact(&e.to_string(), admin_password),
    })?;
    let info = read_lake_info(&lake_db)
        .await
        .map_err(pg_err)?
        .ok_or_else(|| LakeError::DuckDb {
            lake: name.clone(),
            message: "ATTACH succeeded but no ducklake_metadata table was created".into(),
        })?;
    tracing::info!(data_path = %info.data_path, spec_version = %info.spec_version, "initialised the DuckLake catalog");
    // The catalog's tables are new: grant them to the lake's roles, then tune.
    crate::users::ensure_lake_roles(&lake_db, &lake.name, admin)
        .await
        .map_err(pg_err)?;
    tune(&lake_db).await.map_err(pg_err)?;
    Ok(info)
}

async fn tune(lake_db: &tokio_postgres::Client) -> Result<(), PgError> {
    let report = crate::tuning::apply(lake_db).await?;
    if !report.created.is_empty() {
        tracing::info!(created = ?report.created, "tuned the catalog for DuckLake's queries");
    }
    Ok(())
}

/// Reads the data path and format version DuckLake recorded, if the catalog exists.
async fn read_lake_info(client: &tokio_postgres::Client) -> Result<Option<LakeInfo>, PgError> {
    let exists: Option<String> = client
        .query_one("SELECT to_regclass('public.ducklake_metadata')::text", &[])
        .await
        .map_err(PgError::sql("look for ducklake_metadata"))?
        .get(0);
    if exists.is_none() {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT key, value FROM public.ducklake_metadata WHERE key IN ('version', 'data_path') AND scope IS NULL",
            &[],
        )
        .await
        .map_err(PgError::sql("read ducklake_metadata"))?;
    let get = |k: &str| -> String {
        rows.iter()
            .find(|r| r.get::<_, String>(0) == k)
            .map(|r| r.get(1))
            .unwrap_or_default()
    };
    Ok(Some(LakeInfo {
        spec_version: get("version"),
        data_path: get("data_path"),
    }))
}

/// ATTACHes the lake with its DATA_PATH once, which creates DuckLake's tables in PostgreSQL.
fn init_with_duckdb(
    extension_dir: &Path,
    conninfo: &str,
    data_path: &str,
) -> Result<(), duckdb::Error> {
    let conn = embedded_duckdb(extension_dir)?;
    conn.execute_batch(&format!(
        "ATTACH {} AS lake (DATA_PATH {}); DETACH lake;",
        quote_literal(&format!("ducklake:postgres:{conninfo}")),
        quote_literal(data_path)
    ))
}

/// An in-memory DuckDB with the pinned ducklake and postgres extensions loaded from
/// `extension_dir`, never from the network.
pub(crate) fn embedded_duckdb(extension_dir: &Path) -> Result<duckdb::Connection, duckdb::Error> {
    let config = duckdb::Config::default()
        .with("extension_directory", extension_dir.to_string_lossy())?
        .with("autoinstall_known_extensions", "false")?
        .with("autoload_known_extensions", "true")?;
    let conn = duckdb::Connection::open_in_memory_with_flags(config)?;
    conn.execute_batch("LOAD ducklake; LOAD postgres;")?;
    Ok(conn)
}

/// The folder holding `v<engine>/<platform>/ducklake.duckdb_extension`.
pub fn find_extension_directory(config: &Config) -> Result<PathBuf, LakeError> {
    let candidates: Vec<PathBuf> = if let Some(dir) = &config.duckdb.extension_directory {
        vec![dir.clone()]
    } else {
        let mut c = vec![
            config.home.join("extensions"),
            PathBuf::from("/usr/lib/ducklake-catalog/extensions"),
        ];
        if let Some(home) = std::env::var_os("HOME") {
            c.push(PathBuf::from(home).join(".duckdb/extensions"));
        }
        c
    };
    for dir in &candidates {
        let platform = dir.join(format!("v{DUCKDB_VERSION}")).join(DUCKDB_PLATFORM);
        if ["ducklake", "postgres_scanner"]
            .iter()
            .all(|n| platform.join(format!("{n}.duckdb_extension")).is_file())
        {
            return Ok(dir.clone());
        }
    }
    let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    Err(LakeError::ExtensionsMissing {
        looked: looked.join(", "),
    })
}

/// Removes the password from an error message that may quote a connection string.
pub(crate) fn redact(message: &str, password: &Secret) -> String {
    let one_line = crate::one_line(message);
    if password.expose().is_empty() {
        return one_line;
    }
    one_line.replace(password.expose(), crate::secret::REDACTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duckdb_errors_lose_the_password() {
        let pw = Secret::new("s3cr3t");
        let msg =
            "Unable to connect to Postgres at \"host=/x user=admin password=s3cr3t\":\n refused";
        let out = redact(msg, &pw);
        assert!(!out.contains("s3cr3t") && !out.contains('\n'), "{out}");
    }
}
