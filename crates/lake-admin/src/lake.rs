//! Lakes: one PostgreSQL database each, owned by the admin role, initialised as a DuckLake
//! catalog bound to its data path by the embedded DuckDB.

use std::path::PathBuf;
use std::time::Duration;

use storage::{preflight, StorageError};
use tokio_util::sync::CancellationToken;

use crate::duckdb_worker::{DuckDbRunner, Job};
use crate::lake_session::PgHandle;
use crate::postgres::{quote_ident, quote_literal, PgError};
use crate::secret::Secret;
use crate::settings::LakeConfig;
use crate::versions::{DUCKDB_PLATFORM, DUCKDB_VERSION};
use crate::Admin;

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
    #[error("lake `{lake}` cannot be created: role(s) {roles} already exist and are not this server's (a user, or another application's role); drop or rename them, or choose another lake name")]
    RoleTaken { lake: String, roles: String },
    #[error("DuckDB extensions for v{DUCKDB_VERSION} missing: {missing} (looked in {dir}); set duckdb.extension_directory to a folder holding every one of them, or run `cargo xtask deps`")]
    RequiredExtensions { missing: String, dir: String },
    #[error("{0}")]
    Unreachable(String),
    #[error("the admin login `{admin}` lacks {missing} on the external PostgreSQL; run `ALTER ROLE {admin} {missing}` as its master user (RDS's master user has both)")]
    AdminPrivileges { admin: String, missing: String },
}

/// What the catalog recorded for a ready lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeInfo {
    pub spec_version: String,
    pub data_path: String,
}

/// Creates or updates the admin login role and sets its password (on every start, so a
/// changed password takes effect without re-initialising), as a SCRAM verifier: the plaintext
/// never reaches PostgreSQL. Also what every lake relies on: the group of lake server roles
/// (refused over TCP by `pg_hba.conf`), and no CONNECT for PUBLIC on `postgres` and
/// `template1`, so lake users reach their lake's database and nothing else.
pub async fn ensure_admin_role(
    client: &tokio_postgres::Client,
    user: &str,
    password: &Secret,
) -> Result<(), PgError> {
    let role = quote_ident(user);
    if crate::postgres::create_role_if_missing(client, user, true).await? {
        tracing::info!(role = user, "created the admin role");
    }
    client
        .batch_execute(&format!(
            "ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {}",
            quote_literal(&crate::lake_session::scram_verifier(password.expose()))
        ))
        .await
        .map_err(PgError::sql(format!("set the password of role {user}")))?;
    crate::postgres::create_role_if_missing(client, crate::lake_session::SERVERS_GROUP, false)
        .await?;
    client
        .batch_execute(&format!(
            "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
             REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC;
             GRANT CONNECT ON DATABASE postgres TO {role};"
        ))
        .await
        .map_err(PgError::sql(
            "keep lake users out of postgres and template1",
        ))
}

/// Makes `lake` ready: storage preflight, database, roles, the database's guard, DuckLake
/// catalog, privileges, tuning. Runs in `serve` and in `lake create`. Inside the lake's
/// database only the lake's server role reads or writes ([`crate::lake_session`]); a lake whose
/// database this call created and that fails half-way is removed again.
/// On an external PostgreSQL: checks the admin login can administer lakes (`CREATEDB
/// CREATEROLE`; naming what is missing and the GRANT that fixes it) and creates the server
/// roles' group. The admin's own role is the DBA's: its password and attributes stay as they
/// are. `client` is the admin's session.
pub async fn ensure_external_admin(
    client: &tokio_postgres::Client,
    admin: &str,
) -> Result<(), LakeError> {
    let row = client
        .query_one(
            "SELECT rolcreatedb, rolcreaterole, pg_catalog.current_setting('server_version_num')::int
             FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| LakeError::Unreachable(PgError::sql("read the admin's attributes")(e).to_string()))?;
    let (createdb, createrole, version): (bool, bool, i32) = (row.get(0), row.get(1), row.get(2));
    let mut missing = Vec::new();
    if !createdb {
        missing.push("CREATEDB");
    }
    if !createrole {
        missing.push("CREATEROLE");
    }
    if !missing.is_empty() {
        return Err(LakeError::AdminPrivileges {
            admin: admin.to_owned(),
            missing: missing.join(" "),
        });
    }
    if version < 150_000 {
        return Err(LakeError::Unreachable(format!(
            "the external PostgreSQL is version {version}; DuckLake's catalog here needs PostgreSQL 15 or newer: upgrade it (RDS: modify the instance's engine version)"
        )));
    }
    crate::postgres::create_role_if_missing(client, crate::lake_session::SERVERS_GROUP, false)
        .await
        .map_err(|e| LakeError::Unreachable(e.to_string()))?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(lake = %lake.name))]
pub async fn ensure_lake(
    admin_ctx: &Admin,
    s3: &storage::S3Settings,
    lake: &LakeConfig,
    runner: &DuckDbRunner,
) -> Result<LakeInfo, LakeError> {
    let name = lake.name.clone();
    let pg_err = |error| LakeError::Postgres {
        lake: name.clone(),
        error,
    };
    preflight(&lake.data_path, s3)
        .await
        .map_err(|error| LakeError::Storage {
            lake: name.clone(),
            error,
        })?;
    let pg = &admin_ctx.pg;
    let admin = &admin_ctx.settings.admin_user;
    let su = pg
        .postgres("ducklake-catalog")
        .await
        .map_err(|e| LakeError::Unreachable(e.to_string()))?;
    lock_lake(&su, &lake.name).await.map_err(pg_err)?;
    let db_exists = su
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[&lake.name],
        )
        .await
        .map_err(|e| pg_err(PgError::sql("look up the lake database")(e)))?
        .is_some();
    let foreign = crate::users::foreign_roles(&su, &lake.name, db_exists)
        .await
        .map_err(pg_err)?;
    if !foreign.is_empty() {
        return Err(LakeError::RoleTaken {
            lake: name,
            roles: foreign.join(", "),
        });
    }
    let db = quote_ident(&lake.name);
    if !db_exists {
        su.batch_execute(&format!(
            "CREATE DATABASE {db} OWNER {} ENCODING 'UTF8' TEMPLATE template0",
            quote_ident(admin)
        ))
        .await
        .map_err(|e| pg_err(PgError::sql("create the lake database")(e)))?;
        tracing::info!(database = %lake.name, "created the lake database");
    }
    let result = bring_up(pg, &su, admin, lake, runner).await;
    if result.is_err() && !db_exists {
        // Nothing half-created: the database and the roles this call made go again.
        let _ = drop_lake_objects(&su, &lake.name, admin, pg.superuser()).await;
    }
    result
}

async fn bring_up(
    pg: &PgHandle,
    su: &tokio_postgres::Client,
    admin: &str,
    lake: &LakeConfig,
    runner: &DuckDbRunner,
) -> Result<LakeInfo, LakeError> {
    let name = lake.name.clone();
    let pg_err = |error| LakeError::Postgres {
        lake: name.clone(),
        error,
    };
    su.batch_execute(&format!(
        "ALTER DATABASE {} OWNER TO {}",
        quote_ident(&lake.name),
        quote_ident(admin)
    ))
    .await
    .map_err(|e| pg_err(PgError::sql("set the lake database's owner")(e)))?;
    crate::users::ensure_lake_roles(su, &lake.name, admin)
        .await
        .map_err(pg_err)?;
    guard(pg, lake, admin).await.map_err(pg_err)?;
    let session = pg
        .lake(&lake.name, "ducklake-catalog")
        .await
        .map_err(pg_err)?;
    let configured = lake.data_path.to_string();
    if let Some(info) = read_lake_info(&session).await.map_err(pg_err)? {
        if info.data_path != configured {
            return Err(LakeError::DataPathMismatch {
                lake: name,
                stored: info.data_path,
                configured,
            });
        }
        tune(&session).await.map_err(pg_err)?;
        return Ok(info);
    }
    let job = Job::Init {
        conninfo: pg.lake_conninfo(&lake.name),
        data_path: configured.clone(),
    };
    runner
        .run(&job, &CancellationToken::new())
        .await
        .map_err(|e| LakeError::DuckDb {
            lake: name.clone(),
            message: e.to_string(),
        })?;
    let info = read_lake_info(&session)
        .await
        .map_err(pg_err)?
        .ok_or_else(|| LakeError::DuckDb {
            lake: name.clone(),
            message: "ATTACH succeeded but no ducklake_metadata table was created".into(),
        })?;
    tracing::info!(data_path = %info.data_path, spec_version = %info.spec_version, "initialised the DuckLake catalog");
    // The catalog's tables are new: guard them (the lake roles' privileges), then tune.
    guard(pg, lake, admin).await.map_err(pg_err)?;
    tune(&session).await.map_err(pg_err)?;
    Ok(info)
}

/// Serialises changes to one lake's roles and guard between the server and the commands beside
/// it (`lake create`, `lake migrate`, the lake watch): concurrent GRANTs on the same catalog row
/// fail with "tuple concurrently updated". `su` is a session in the `postgres` database; the
/// lock lasts as long as it.
pub(crate) async fn lock_lake(su: &tokio_postgres::Client, lake: &str) -> Result<(), PgError> {
    su.execute(
        "SELECT pg_catalog.pg_advisory_lock(4476227, pg_catalog.hashtext($1))",
        &[&lake],
    )
    .await
    .map_err(PgError::sql(format!("lock lake {lake} for its bring-up")))?;
    Ok(())
}

/// The superuser's part of a lake's bring-up ([`crate::lake_session::prepare_database`]).
///
/// The guard gives way to clients: when a table lock it needs is held past
/// [`crate::lake_session::GUARD_LOCK_TIMEOUT_MS`] (a client's open transaction), its
/// transaction is rolled back and it is tried again, for up to about a minute.
pub(crate) async fn guard(pg: &PgHandle, lake: &LakeConfig, admin: &str) -> Result<(), PgError> {
    let su_lake = pg.admin_in(&lake.name, "ducklake-catalog").await?;
    let mut attempt = 0u32;
    loop {
        let result = crate::lake_session::prepare_database(
            &su_lake,
            &lake.name,
            admin,
            &lake.data_path.to_string(),
            pg.superuser(),
        )
        .await;
        match result {
            Err(e) if attempt < GUARD_ATTEMPTS && gave_way(&e) => {
                attempt += 1;
                tracing::info!(lake = %lake.name, attempt, "a client's transaction holds a catalog table the guard changes; trying again");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(10)))).await;
            }
            other => return other,
        }
    }
}

/// Tries of the guard that gives way to clients' locks ([`guard`]): about a minute in all.
const GUARD_ATTEMPTS: u32 = 40;

/// The guard's statement gave way to another session's lock (its `lock_timeout`, or chosen as
/// a deadlock's victim).
fn gave_way(e: &PgError) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(e, PgError::Sql { error, .. }
        if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
            || error.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED))
}

/// Drops a lake's database (ending its sessions) and the roles that carry the server's mark
/// for it; returns the login users of the lake that were dropped with it. `su` is a superuser
/// session in the `postgres` database. The admin, a member of the owner role, is never dropped.
pub async fn drop_lake_objects(
    su: &tokio_postgres::Client,
    lake: &str,
    admin: &str,
    superuser: bool,
) -> Result<Vec<String>, PgError> {
    let groups: Vec<String> = ["reader", "writer", "owner", "server"]
        .iter()
        .map(|k| format!("{lake}_{k}"))
        .collect();
    // Only roles this server made for this lake (see users::foreign_roles): a same-named role
    // of someone else's is never touched.
    let ours: Vec<String> = su
        .query(
            "SELECT rolname::text FROM pg_catalog.pg_roles
             WHERE rolname::text = ANY($1::text[])
               AND pg_catalog.shobj_description(oid, 'pg_authid') LIKE 'ducklake-catalog: the % role of lake ' || $2",
            &[&groups, &lake],
        )
        .await
        .map_err(PgError::sql("list the lake's roles"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let groups_only: Vec<&String> = ours.iter().filter(|r| !r.ends_with("_server")).collect();
    let users: Vec<String> = su
        .query(
            "SELECT DISTINCT m.rolname::text FROM pg_catalog.pg_auth_members a
             JOIN pg_catalog.pg_roles g ON g.oid = a.roleid JOIN pg_catalog.pg_roles m ON m.oid = a.member
             WHERE g.rolname::text = ANY($1::text[]) AND m.rolcanlogin
               AND NOT m.rolname::text = ANY($2::text[])
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members o
                               JOIN pg_catalog.pg_roles og ON og.oid = o.roleid
                               WHERE o.member = m.oid AND NOT og.rolname::text = ANY($1::text[])
                                 AND og.rolname <> $3)
               AND NOT m.rolsuper AND m.rolname::text <> $4 ORDER BY 1",
            &[&groups_only, &ours, &crate::lake_session::SERVERS_GROUP, &admin],
        )
        .await
        .map_err(PgError::sql("list the lake's users"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !superuser {
        // A CREATEROLE admin may end sessions of, and drop what is owned by, roles whose
        // privileges it has: it takes them first (they are dropped below).
        for role in users.iter().chain(&ours) {
            su.batch_execute(&format!(
                "GRANT {} TO {}",
                quote_ident(role),
                quote_ident(admin)
            ))
            .await
            .map_err(PgError::sql(format!("take the privileges of role {role}")))?;
        }
    }
    su.batch_execute(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(lake)
    ))
    .await
    .map_err(PgError::sql(format!("drop database {lake}")))?;
    for role in users.iter().chain(&ours) {
        su.batch_execute(&format!(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = {};
             DROP OWNED BY {ident}; DROP ROLE IF EXISTS {ident}",
            quote_literal(role),
            ident = quote_ident(role)
        ))
        .await
        .map_err(PgError::sql(format!("drop role {role}")))?;
    }
    Ok(users)
}

async fn tune(lake_db: &tokio_postgres::Client) -> Result<(), PgError> {
    let report = crate::tuning::apply(lake_db).await?;
    if !report.created.is_empty() {
        tracing::info!(created = ?report.created, "tuned the catalog for DuckLake's queries");
    }
    Ok(())
}

/// Reads the data path and format version DuckLake recorded, if the catalog exists.
pub async fn read_lake_info(client: &tokio_postgres::Client) -> Result<Option<LakeInfo>, PgError> {
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

/// The folder holding `v<engine>/<platform>/ducklake.duckdb_extension`: `configured`
/// (`duckdb.extension_directory`), else the first of `<home>/extensions`, the image's folder
/// and `~/.duckdb/extensions` that holds them.
pub fn find_extension_directory(
    configured: Option<&std::path::Path>,
    home: &std::path::Path,
) -> Result<PathBuf, LakeError> {
    let candidates: Vec<PathBuf> = if let Some(dir) = configured {
        vec![dir.to_path_buf()]
    } else {
        let mut c = vec![
            home.join("extensions"),
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
