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

use serde::Serialize;

use crate::lake_session::{role_marker, scram_verifier, server_role, SERVERS_GROUP};
use crate::names::valid_identifier;
use crate::postgres::{quote_ident, quote_literal, PgError, SUPERUSER};
use crate::secret::Secret;
use crate::settings::LakeConfig;
use crate::Admin;
use base::secret::{check_strength, WeakPassword};

pub use lake_session::roles::LakeRole;

/// Why a user command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    #[error("`{name}` is not a valid user name: use 1-63 lowercase letters, digits and _, starting with a letter (not admin, postgres, pg_…, ducklake_…, nor ending in _reader, _writer, _owner or _server, which name a lake's own roles)")]
    BadName { name: String },
    #[error("user `{name}` already exists; choose another name, or `ducklake-catalog user rotate {name}` for a new password")]
    Exists { name: String },
    #[error("no user named `{name}`; `ducklake-catalog user list` shows them")]
    Unknown { name: String },
    #[error(transparent)]
    NotRunning(#[from] crate::postgres::LocalError),
    #[error(transparent)]
    Weak(WeakPassword),
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

/// The kinds of role the server makes per lake: the three groups, and the server role.
const ROLE_KINDS: [&str; 4] = ["reader", "writer", "owner", "server"];

/// The lake's role names that exist but are not this server's (a user, another product's
/// role): such a lake is refused rather than have an unrelated role become its group. A role
/// carries [`role_marker`] when the server made it; with `adopt_unmarked`, group roles of a lake
/// whose database already exists (made by an older release, before the marker) are adopted.
/// `su` is a superuser session in the `postgres` database.
pub async fn foreign_roles(
    su: &tokio_postgres::Client,
    lake: &str,
    adopt_unmarked: bool,
) -> Result<Vec<String>, PgError> {
    let mut foreign = Vec::new();
    for kind in ROLE_KINDS {
        let name = format!("{lake}_{kind}");
        let row = su
            .query_opt(
                "SELECT rolcanlogin, pg_catalog.shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&name],
            )
            .await
            .map_err(PgError::sql("look up the lake's roles"))?;
        let Some(row) = row else { continue };
        let login: bool = row.get(0);
        let comment: Option<String> = row.get(1);
        let ours = comment.as_deref() == Some(role_marker(lake, kind).as_str())
            || (adopt_unmarked && kind != "server" && !login && comment.is_none());
        if !ours {
            foreign.push(name);
        }
    }
    Ok(foreign)
}

/// Creates the lake's roles (marked as the server's) and their memberships and database
/// privileges; idempotent, run on every lake bring-up. `su` is a superuser session in the
/// `postgres` database; call [`foreign_roles`] first.
pub async fn ensure_lake_roles(
    su: &tokio_postgres::Client,
    lake: &str,
    admin: &str,
) -> Result<(), PgError> {
    for kind in ROLE_KINDS {
        let name = format!("{lake}_{kind}");
        crate::postgres::create_role_if_missing(su, &name, false).await?;
        su.batch_execute(&format!(
            "COMMENT ON ROLE {} IS {}",
            quote_ident(&name),
            quote_literal(&role_marker(lake, kind))
        ))
        .await
        .map_err(PgError::sql(format!("mark role {name}")))?;
        if kind != "server" {
            // A member can `SET ROLE` to its group and give it settings or a password (PostgreSQL
            // 15 lets a role change its own): inert for a NOLOGIN role, and undone here.
            su.batch_execute(&format!(
                "ALTER ROLE {r} WITH NOLOGIN PASSWORD NULL; ALTER ROLE {r} RESET ALL; ALTER ROLE {r} IN DATABASE {db} RESET ALL",
                r = quote_ident(&name),
                db = quote_ident(lake),
            ))
            .await
            .map_err(PgError::sql(format!("reset role {name}")))?;
        }
    }
    let reader = quote_ident(&LakeRole::Reader.group(lake));
    let writer = quote_ident(&LakeRole::Writer.group(lake));
    let owner = quote_ident(&LakeRole::Owner.group(lake));
    let owner_lit = quote_literal(&LakeRole::Owner.group(lake));
    let server = quote_ident(&server_role(lake));
    let servers = quote_ident(SERVERS_GROUP);
    let admin = quote_ident(admin);
    let db = quote_ident(lake);
    su.batch_execute(&format!(
        "REVOKE ALL ON DATABASE {db} FROM PUBLIC;
         GRANT CONNECT ON DATABASE {db} TO {reader}, {writer}, {server};
         GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {owner};
         GRANT {writer} TO {owner};
         GRANT {owner} TO {admin};
         GRANT {owner} TO {server};
         GRANT {servers} TO {server};
         ALTER ROLE {admin} IN DATABASE {db} SET role = {owner_lit};"
    ))
    .await
    .map_err(PgError::sql(format!(
        "grant lake {lake}'s roles their memberships"
    )))
}

async fn connect(admin: &Admin) -> Result<tokio_postgres::Client, UserError> {
    Ok(admin.pg.postgres("ducklake-catalog user").await?)
}

/// Suffixes of the roles the server makes per lake: no user name may end in one, so no user
/// can ever collide with a lake created later.
const RESERVED_SUFFIXES: [&str; 4] = ["_reader", "_writer", "_owner", "_server"];

fn check_name(admin: &Admin, name: &str) -> Result<(), UserError> {
    let reserved = name == admin.settings.admin_user
        || name == SUPERUSER
        || name == SERVERS_GROUP
        || name == "postgres"
        || name.starts_with("pg_")
        || name.starts_with("ducklake_")
        || RESERVED_SUFFIXES.iter().any(|s| name.ends_with(s));
    if !valid_identifier(name) || reserved {
        return Err(UserError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Sets `password` on a role as a SCRAM verifier computed here: the plaintext never reaches
/// PostgreSQL (its statement log, `pg_stat_statements`, an error message).
async fn set_password(
    client: &tokio_postgres::Client,
    sql_before_password: &str,
    password: &Secret,
) -> Result<(), PgError> {
    client
        .batch_execute(&format!(
            "{sql_before_password} PASSWORD {}",
            quote_literal(&scram_verifier(password.expose()))
        ))
        .await
        .map_err(PgError::sql("set the user's password"))
}

/// What a user may use of the server's shared resources, so a runaway client gets an error
/// instead of starving the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimits {
    /// Concurrent sessions (`CONNECTION LIMIT`).
    pub connections: u32,
}

impl UserLimits {
    /// The default: a quarter of `max_connections` (at least 8), so four busy users cannot
    /// take every connection from the admin, the server and the others.
    pub fn default_for(settings: &crate::AdminSettings) -> UserLimits {
        let max = settings.max_connections;
        UserLimits {
            connections: (max / 4).max(8),
        }
    }
}

/// Per-user settings every lake user gets: a statement may run 15 minutes, and temporary files
/// (sorts, hashes) are capped so one query cannot fill the disk the catalog lives on. A user
/// may lower its own `statement_timeout`; `temp_file_limit` only a superuser can change.
const USER_SETTINGS: &str = "SET statement_timeout = '15min'";
const USER_TEMP_FILE_LIMIT: &str = "SET temp_file_limit = '1GB'";

/// Creates `name`, a `role` of `lake`, with `password`.
pub async fn create(
    admin: &Admin,
    name: &str,
    lake: &LakeConfig,
    role: LakeRole,
    password: &Secret,
    limits: UserLimits,
) -> Result<UserInfo, UserError> {
    check_name(admin, name)?;
    check_strength(password, &format!("the new password of user {name}"))
        .map_err(UserError::Weak)?;
    let client = connect(admin).await?;
    if role_exists(&client, name).await? {
        return Err(UserError::Exists {
            name: name.to_owned(),
        });
    }
    let user = quote_ident(name);
    let group = quote_ident(&role.group(&lake.name));
    set_password(
        &client,
        &format!(
            "CREATE ROLE {user} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {} IN ROLE {group}",
            limits.connections
        ),
        password,
    )
    .await?;
    let db = quote_ident(&lake.name);
    // Readers act as the reader role too, so nothing they do can use a privilege granted to
    // their login role alone; writers' tables (inlined data) get one owner, see the module docs;
    // an owner's sessions act as the owner role, which is a writer too.
    client
        .batch_execute(&format!(
            "ALTER ROLE {user} IN DATABASE {db} SET role = {group_lit};
             ALTER ROLE {user} {USER_SETTINGS};",
            group_lit = quote_literal(&role.group(&lake.name)),
        ))
        .await
        .map_err(PgError::sql(format!(
            "make {name} act as {}",
            role.group(&lake.name)
        )))?;
    // A superuser-only setting: an external PostgreSQL's admin may not be allowed it.
    match client
        .batch_execute(&format!("ALTER ROLE {user} {USER_TEMP_FILE_LIMIT}"))
        .await
    {
        Ok(()) => {}
        Err(e) if !admin.pg.superuser() => {
            tracing::warn!(user = name, error = %crate::postgres::pg_message(&e), "the admin may not cap the user's temporary files (temp_file_limit); set temp_file_limit in the parameter group instead");
        }
        Err(e) => return Err(PgError::sql(format!("cap {name}'s temporary files"))(e).into()),
    }
    tracing::info!(user = name, lake = %lake.name, role = %role, connections = limits.connections, "created user");
    Ok(UserInfo {
        name: name.to_owned(),
        lake: lake.name.clone(),
        role,
    })
}

/// Changes how many sessions `name` may hold at once.
pub async fn set_limits(
    admin: &Admin,
    name: &str,
    limits: UserLimits,
) -> Result<UserInfo, UserError> {
    let info = find(admin, name).await?;
    let client = connect(admin).await?;
    client
        .batch_execute(&format!(
            "ALTER ROLE {} CONNECTION LIMIT {}",
            quote_ident(name),
            limits.connections
        ))
        .await
        .map_err(PgError::sql(format!("limit {name}'s connections")))?;
    Ok(info)
}

async fn role_exists(client: &tokio_postgres::Client, name: &str) -> Result<bool, PgError> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .map_err(PgError::sql("look up the user"))?
        .is_some())
}

/// Every user of the configured lakes (of `lake` only, when given), by name.
pub async fn list(admin: &Admin, lake: Option<&str>) -> Result<Vec<UserInfo>, UserError> {
    let client = connect(admin).await?;
    let mut users = Vec::new();
    for l in admin
        .settings
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
                     WHERE g.rolname = $1 AND m.rolcanlogin AND m.rolname <> $2
                       AND NOT pg_has_role(m.oid, $3::text, 'MEMBER') ORDER BY 1",
                    &[
                        &role.group(&l.name),
                        &admin.settings.admin_user,
                        &SERVERS_GROUP,
                    ],
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
pub async fn rotate(admin: &Admin, name: &str, password: &Secret) -> Result<UserInfo, UserError> {
    check_strength(password, &format!("the new password of user {name}"))
        .map_err(UserError::Weak)?;
    let info = find(admin, name).await?;
    let client = connect(admin).await?;
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
/// created belong to the lake's writer role, so the lake keeps them; anything its login role
/// itself owns goes to the lake's owner role.
pub async fn drop(admin: &Admin, name: &str) -> Result<UserInfo, UserError> {
    let info = find(admin, name).await?;
    let pg = &admin.pg;
    let client = pg
        .postgres("ducklake-catalog user")
        .await
        .map_err(UserError::from)?;
    let user = quote_ident(name);
    let sql = |what: &str| PgError::sql(format!("drop user {name}: {what}"));
    if !pg.superuser() {
        // A CREATEROLE admin acts on a role's sessions and objects once it has its privileges.
        client
            .batch_execute(&format!(
                "GRANT {user} TO {}",
                quote_ident(&admin.settings.admin_user)
            ))
            .await
            .map_err(sql("take its privileges"))?;
    }
    client
        .batch_execute(&format!(
            "REVOKE ALL ON DATABASE {db} FROM {user};
             ALTER ROLE {user} NOLOGIN;
             SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = {name_lit};",
            db = quote_ident(&info.lake),
            name_lit = quote_literal(name),
        ))
        .await
        .map_err(sql("end its sessions"))?;
    // REASSIGN and DROP OWNED work per database: in the lake's, as a superuser, with the search
    // path pinned. Neither runs code of the user's (lake users cannot create any, see
    // lake_session's guard).
    let lake_db = pg.admin_in(&info.lake, "ducklake-catalog user").await?;
    lake_db
        .batch_execute(&format!(
            "SET ROLE NONE; SET search_path = pg_catalog, pg_temp;
             REASSIGN OWNED BY {user} TO {owner};
             DROP OWNED BY {user};",
            owner = quote_ident(&LakeRole::Owner.group(&info.lake)),
        ))
        .await
        .map_err(sql("hand over what it owns"))?;
    client
        .batch_execute(&format!("DROP OWNED BY {user}; DROP ROLE {user};"))
        .await
        .map_err(sql("drop the role"))?;
    tracing::info!(user = name, lake = %info.lake, "dropped user");
    Ok(info)
}

async fn find(admin: &Admin, name: &str) -> Result<UserInfo, UserError> {
    list(admin, None)
        .await?
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| UserError::Unknown {
            name: name.to_owned(),
        })
}
