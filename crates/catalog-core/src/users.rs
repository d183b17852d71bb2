//! Per-lake credentials with least privilege: a *reader* can attach and query any snapshot but
//! every write fails with a permission error; a *writer* can do everything DuckLake clients do
//! in normal use. Neither can reach another lake (CONNECT is revoked from PUBLIC) nor PostgreSQL
//! itself (no superuser, no CREATEROLE, no CREATEDB).
//!
//! Each lake has two group roles, `<lake>_reader` and `<lake>_writer` (NOLOGIN); a user is a
//! LOGIN role that is a member of one. The privileges were found by running every operation
//! kind with the real DuckDB client (see `crates/cli/tests/users.rs`):
//!
//! - DuckLake's catalog is plain tables in the lake database's `public` schema: reading needs
//!   SELECT on them, writing needs SELECT, INSERT, UPDATE, DELETE.
//! - Inlined data (small inserts) lives in tables DuckLake creates at run time
//!   (`ducklake_inlined_data_<table>_<version>`), so writers need CREATE on the schema, and the
//!   tables they create must be readable by readers and usable by other writers and the admin.
//!   A writer's sessions therefore run as the `<lake>_writer` group role (`ALTER ROLE … IN
//!   DATABASE … SET role`), so every such table has one owner, and default privileges of that
//!   owner (and of the admin, who created the catalog) grant the rest.
//! - An *owner* (`<lake>_owner`) is a writer that owns DuckLake's tables of its lake, so it
//!   alone (with the admin, a member of each owner role) can alter or drop them — DuckLake's
//!   own migration needs that; it reaches no other lake either.
//! - Readers get SELECT only; a write reaches PostgreSQL as `permission denied` and DuckLake
//!   rolls the whole commit back.

use std::fmt;

use serde::Serialize;

use crate::config::{valid_identifier, Config, LakeConfig};
use crate::postgres::{connect_local, quote_ident, quote_literal, PgError, SUPERUSER};
use crate::secret::Secret;
use crate::secrets_manager::check_strength;

/// What a user may do in one lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LakeRole {
    Reader,
    Writer,
    /// A writer that also owns the lake's DuckLake tables: only it (and the admin, a member of
    /// every lake's owner role) can alter or drop them, e.g. to run DuckLake's own migration.
    Owner,
}

impl LakeRole {
    pub fn name(self) -> &'static str {
        match self {
            LakeRole::Reader => "reader",
            LakeRole::Writer => "writer",
            LakeRole::Owner => "owner",
        }
    }

    /// Every role, least privilege first.
    pub const ALL: [LakeRole; 3] = [LakeRole::Reader, LakeRole::Writer, LakeRole::Owner];

    /// The group role of `lake` that grants this.
    pub fn group(self, lake: &str) -> String {
        format!("{lake}_{}", self.name())
    }
}

impl fmt::Display for LakeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a user command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    #[error("`{name}` is not a valid user name: use 1-63 lowercase letters, digits and _, starting with a letter (not admin, postgres, pg_…, or a lake's group role)")]
    BadName { name: String },
    #[error("user `{name}` already exists; choose another name, or `ducklake-catalog user rotate {name}` for a new password")]
    Exists { name: String },
    #[error("no user named `{name}`; `ducklake-catalog user list` shows them")]
    Unknown { name: String },
    #[error(transparent)]
    NotRunning(#[from] crate::postgres::LocalError),
    #[error(transparent)]
    Weak(crate::secrets_manager::SecretError),
    #[error(transparent)]
    Postgres(#[from] PgError),
}

/// A user as `user list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    pub name: String,
    pub lake: String,
    pub role: LakeRole,
}

/// Grants a lake's group roles their privileges; idempotent, run on every lake bring-up (so
/// tables a newer DuckLake adds are covered too). `client` is a superuser session in the
/// lake's database.
pub async fn ensure_lake_roles(
    client: &tokio_postgres::Client,
    lake: &str,
    admin: &str,
) -> Result<(), PgError> {
    let reader = quote_ident(&LakeRole::Reader.group(lake));
    let writer = quote_ident(&LakeRole::Writer.group(lake));
    let owner = quote_ident(&LakeRole::Owner.group(lake));
    let owner_lit = quote_literal(&LakeRole::Owner.group(lake));
    let admin_name = admin;
    let admin = quote_ident(admin);
    let db = quote_ident(lake);
    for role in LakeRole::ALL {
        let name = role.group(lake);
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .map_err(PgError::sql("look up the lake's group roles"))?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE ROLE {} NOLOGIN", quote_ident(&name)))
                .await
                .map_err(PgError::sql(format!("create role {name}")))?;
        }
    }
    client
        .batch_execute(&format!(
            "GRANT CONNECT ON DATABASE {db} TO {reader}, {writer};
             GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {owner};
             GRANT USAGE ON SCHEMA public TO {reader};
             GRANT USAGE, CREATE ON SCHEMA public TO {writer};
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {writer};
             ALTER DEFAULT PRIVILEGES FOR ROLE {admin} IN SCHEMA public GRANT SELECT ON TABLES TO {reader};
             ALTER DEFAULT PRIVILEGES FOR ROLE {admin} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {writer};
             ALTER DEFAULT PRIVILEGES FOR ROLE {writer} IN SCHEMA public GRANT SELECT ON TABLES TO {reader};
             ALTER DEFAULT PRIVILEGES FOR ROLE {writer} IN SCHEMA public GRANT ALL ON TABLES TO {admin};
             GRANT {writer} TO {owner};
             GRANT {owner} TO {admin};
             ALTER ROLE {admin} IN DATABASE {db} SET role = {owner_lit};
             ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT SELECT ON TABLES TO {reader};
             ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {writer};"
        ))
        .await
        .map_err(PgError::sql(format!("grant lake {lake}'s roles their privileges")))?;
    // DuckLake's own tables belong to the lake's owner role: the admin's sessions in the lake
    // act as it (above), so what they create is the owner's at once; tables of a lake made
    // before this role existed are handed over here, once.
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tableowner = $1",
            &[&admin_name],
        )
        .await
        .map_err(PgError::sql("list the lake's tables"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for table in tables {
        client
            .batch_execute(&format!(
                "ALTER TABLE public.{} OWNER TO {owner}",
                quote_ident(&table)
            ))
            .await
            .map_err(PgError::sql(format!(
                "give {table} to the lake's owner role"
            )))?;
    }
    Ok(())
}

async fn connect(config: &Config, db: &str) -> Result<tokio_postgres::Client, UserError> {
    Ok(connect_local(config, db, "ducklake-catalog user").await?)
}

fn check_name(config: &Config, name: &str) -> Result<(), UserError> {
    let reserved = name == config.postgres.admin_user
        || name == SUPERUSER
        || name == "postgres"
        || name.starts_with("pg_")
        || config
            .lakes
            .iter()
            .any(|l| LakeRole::ALL.iter().any(|r| r.group(&l.name) == name));
    if !valid_identifier(name) || reserved {
        return Err(UserError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Sets `password` on `role` without it reaching PostgreSQL's statement log.
async fn set_password(
    client: &tokio_postgres::Client,
    sql_before_password: &str,
    password: &Secret,
) -> Result<(), PgError> {
    client
        .batch_execute("SET log_statement = 'none'; SET log_min_error_statement = 'panic'")
        .await
        .map_err(PgError::sql("silence statement logging"))?;
    client
        .batch_execute(&format!(
            "{sql_before_password} PASSWORD {}",
            quote_literal(password.expose())
        ))
        .await
        .map_err(PgError::sql("set the user's password"))?;
    client
        .batch_execute("RESET log_statement; RESET log_min_error_statement")
        .await
        .map_err(PgError::sql("restore statement logging"))
}

/// Creates `name`, a `role` of `lake`, with `password`.
pub async fn create(
    config: &Config,
    name: &str,
    lake: &LakeConfig,
    role: LakeRole,
    password: &Secret,
) -> Result<UserInfo, UserError> {
    check_name(config, name)?;
    check_strength(password, &format!("the new password of user {name}"))
        .map_err(UserError::Weak)?;
    let client = connect(config, &lake.name).await?;
    ensure_lake_roles(&client, &lake.name, &config.postgres.admin_user).await?;
    if role_exists(&client, name).await? {
        return Err(UserError::Exists {
            name: name.to_owned(),
        });
    }
    let user = quote_ident(name);
    let group = quote_ident(&role.group(&lake.name));
    set_password(
        &client,
        &format!("CREATE ROLE {user} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS IN ROLE {group}"),
        password,
    )
    .await?;
    if role != LakeRole::Reader {
        // One owner for every table writers create (inlined data), see the module docs; an
        // owner's sessions act as the owner role, which is a writer too.
        client
            .batch_execute(&format!(
                "ALTER ROLE {user} IN DATABASE {} SET role = {}",
                quote_ident(&lake.name),
                quote_literal(&role.group(&lake.name))
            ))
            .await
            .map_err(PgError::sql(format!(
                "make {name} act as {}",
                role.group(&lake.name)
            )))?;
    }
    tracing::info!(user = name, lake = %lake.name, role = %role, "created user");
    Ok(UserInfo {
        name: name.to_owned(),
        lake: lake.name.clone(),
        role,
    })
}

async fn role_exists(client: &tokio_postgres::Client, name: &str) -> Result<bool, PgError> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .map_err(PgError::sql("look up the user"))?
        .is_some())
}

/// Every user of the configured lakes (of `lake` only, when given), by name.
pub async fn list(config: &Config, lake: Option<&str>) -> Result<Vec<UserInfo>, UserError> {
    let client = connect(config, "postgres").await?;
    let mut users = Vec::new();
    for l in config
        .lakes
        .iter()
        .filter(|l| lake.is_none_or(|n| n == l.name))
    {
        for role in LakeRole::ALL {
            let rows = client
                .query(
                    "SELECT m.rolname FROM pg_auth_members a
                     JOIN pg_roles g ON g.oid = a.roleid
                     JOIN pg_roles m ON m.oid = a.member
                     WHERE g.rolname = $1 AND m.rolcanlogin AND m.rolname <> $2 ORDER BY 1",
                    &[&role.group(&l.name), &config.postgres.admin_user],
                )
                .await
                .map_err(PgError::sql("list users"))?;
            users.extend(rows.iter().map(|r| UserInfo {
                name: r.get(0),
                lake: l.name.clone(),
                role,
            }));
        }
    }
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(users)
}

/// Gives `name` a new password; sessions already open stay open.
pub async fn rotate(config: &Config, name: &str, password: &Secret) -> Result<UserInfo, UserError> {
    check_strength(password, &format!("the new password of user {name}"))
        .map_err(UserError::Weak)?;
    let info = find(config, name).await?;
    let client = connect(config, &info.lake).await?;
    set_password(
        &client,
        &format!("ALTER ROLE {}", quote_ident(name)),
        password,
    )
    .await?;
    tracing::info!(user = name, "rotated the password");
    Ok(info)
}

/// Drops `name`: its sessions are ended and it can no longer log in. Tables its sessions
/// created belong to the lake's writer role, so the lake keeps them.
pub async fn drop(config: &Config, name: &str) -> Result<UserInfo, UserError> {
    let info = find(config, name).await?;
    let client = connect(config, &info.lake).await?;
    let user = quote_ident(name);
    client
        .batch_execute(&format!(
            "REVOKE ALL ON DATABASE {db} FROM {user};
             ALTER ROLE {user} NOLOGIN;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {name_lit};
             REASSIGN OWNED BY {user} TO {admin};
             DROP OWNED BY {user};
             DROP ROLE {user};",
            db = quote_ident(&info.lake),
            name_lit = quote_literal(name),
            admin = quote_ident(&config.postgres.admin_user),
        ))
        .await
        .map_err(PgError::sql(format!("drop user {name}")))?;
    tracing::info!(user = name, lake = %info.lake, "dropped user");
    Ok(info)
}

async fn find(config: &Config, name: &str) -> Result<UserInfo, UserError> {
    list(config, None)
        .await?
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| UserError::Unknown {
            name: name.to_owned(),
        })
}
