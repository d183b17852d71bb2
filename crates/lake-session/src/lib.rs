//! The trust boundary inside a lake's database (docs/security.md).
//!
//! Everyone holding a lake user's credentials is hostile: readers, writers and owners can
//! create tables and write rows the server later reads. So the server never reads or writes a
//! lake's catalog as a superuser. Inside lake `L` it acts only as `L_server`, a non-superuser
//! LOGIN role that is a member of `L_owner` and nothing else ([`connect`]):
//!
//! - its session pins `search_path = pg_catalog, pg_temp` and `row_security = off` (a table
//!   with a policy is an error, never a policy run), and acts as `L_owner` (`SET ROLE`), so what
//!   it can do is exactly what the lake's owner can: a hostile owner gains nothing by making the
//!   server run its code, a hostile writer at most what an owner may do inside the same lake;
//! - its password is derived from a key in `<home>/secrets/server.key` and re-set as a SCRAM
//!   verifier before every login, so code that changed it from inside a session gains nothing;
//!   and `L_server` is in [`SERVERS_GROUP`], which `pg_hba.conf` refuses over TCP: it logs in
//!   only on the Unix socket;
//! - names read from catalog data (the inlined-data tables writers register) are used only when
//!   [`inlined_data_table`] confirms them: DuckLake's name pattern, an ordinary table without
//!   row security, owned by the lake's writer or owner role, locked before it is checked.
//!
//! And the guard ([`GUARD_SQL`], `lake_guard.sql`) keeps lake users to what DuckLake does:
//! least-privilege grants (writers insert, and close rows at the current snapshot; they never
//! delete), row triggers on DuckLake's tables (snapshots only move forward, options that only
//! the owner may set, no path outside the data path scheduled for deletion), and event
//! triggers that refuse every DDL command but the table, index and sequence commands DuckLake
//! sends: nobody but the superuser creates functions, views, triggers, rules, policies or
//! types, so no lake user can plant code that runs in someone else's session.
//!
//! A superuser session enters a lake database only at bring-up ([`prepare_database`]), with the
//! search path pinned, to run statements that execute no user code on objects only it controls.

pub mod postgres;
pub mod roles;

use base::Secret;
use pg_conn::remote;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::postgres::{quote_ident, quote_literal, PgError, Socket};
use crate::roles::LakeRole;

/// The group every lake's server role is in; `pg_hba.conf` rejects its members over TCP.
pub const SERVERS_GROUP: &str = "ducklake_servers";

/// The role the server acts as inside `lake`'s database.
pub fn server_role(lake: &str) -> String {
    format!("{lake}_server")
}

/// The comment that marks a role as this server's, for `lake`: a role of the right name but
/// without it is someone else's, and is never adopted or dropped.
pub fn role_marker(lake: &str, kind: &str) -> String {
    format!("ducklake-catalog: the {kind} role of lake {lake}")
}

/// The secret the server roles' passwords derive from: `<home>/secrets/server.key`, 32 random
/// bytes made on first use (mode 0600). Losing it costs nothing: passwords are re-set before
/// every login.
#[derive(Clone)]
pub struct ServerKey([u8; 32]);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

impl ServerKey {
    /// Reads the key from `secrets_dir`, creating it if missing.
    pub fn load_or_create(secrets_dir: &Path) -> Result<ServerKey, PgError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = secrets_dir.join("server.key");
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return Ok(ServerKey(key));
            }
        }
        std::fs::create_dir_all(secrets_dir)
            .map_err(PgError::io(format!("create {}", secrets_dir.display())))?;
        let key: [u8; 32] = rand::random();
        let tmp = secrets_dir.join(format!(".server.key.{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(PgError::io(format!("write {}", tmp.display())))?;
        file.write_all(&key)
            .map_err(PgError::io(format!("write {}", tmp.display())))?;
        drop(file);
        // Whoever renames first wins; everyone then reads the same key.
        if std::fs::hard_link(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
            let bytes =
                std::fs::read(&path).map_err(PgError::io(format!("read {}", path.display())))?;
            return <[u8; 32]>::try_from(bytes.as_slice())
                .map(ServerKey)
                .map_err(|_| PgError::Io {
                    action: format!("read {}", path.display()),
                    error: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "not 32 bytes: remove it, the server makes a new one",
                    ),
                });
        }
        let _ = std::fs::remove_file(&tmp);
        Ok(ServerKey(key))
    }

    /// The password of `lake`'s server role.
    fn password(&self, lake: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(b"\0lake-server\0");
        h.update(lake.as_bytes());
        h.finalize().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

/// A password as PostgreSQL stores it: a SCRAM-SHA-256 verifier computed here, so the
/// plaintext never reaches PostgreSQL (its logs, `pg_stat_statements`, its errors).
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// Makes `lake`'s server role what the server needs, whatever a session of it did: a LOGIN
/// role without any attribute, member of the owner role and [`SERVERS_GROUP`], with the derived
/// password and no per-role settings but `role = <lake>_owner` in the lake's database.
/// `su` is a role-administering session in the registry's database; `superuser` says whether it
/// is a superuser's (only a superuser may name the SUPERUSER, REPLICATION and BYPASSRLS
/// attributes in ALTER ROLE, even to turn them off; a CREATEROLE admin cannot grant them).
pub async fn reset_server_role(
    su: &tokio_postgres::Client,
    key: &ServerKey,
    lake: &str,
    superuser: bool,
) -> Result<(), PgError> {
    let role = server_role(lake);
    let ident = quote_ident(&role);
    let owner = LakeRole::Owner.group(lake);
    // Sessions of the metrics, maintenance and lake watch reset the role at the same moment;
    // two concurrent ALTER ROLEs of one role fail with "tuple concurrently updated", so they
    // take turns (a transaction-scoped advisory lock keyed by the role's name).
    let reset = su
        .batch_execute(&format!(
            "BEGIN;
             SELECT pg_catalog.pg_advisory_xact_lock({RESET_LOCK_CLASS}, pg_catalog.hashtext({role_lit}));
             ALTER ROLE {ident} WITH LOGIN {attrs} INHERIT CONNECTION LIMIT 20 PASSWORD {pw};
             ALTER ROLE {ident} RESET ALL;
             ALTER ROLE {ident} IN DATABASE {db} RESET ALL;
             ALTER ROLE {ident} IN DATABASE {db} SET role = {owner_lit};
             COMMIT;",
            role_lit = quote_literal(&role),
            attrs = no_attributes(superuser),
            pw = quote_literal(&scram_verifier(&key.password(lake))),
            db = quote_ident(lake),
            owner_lit = quote_literal(&owner),
        ))
        .await;
    if reset.is_err() {
        // The session stays usable for the caller's next statement.
        let _ = su.batch_execute("ROLLBACK").await;
    }
    reset.map_err(PgError::sql(format!("reset role {role}")))
}

/// The advisory lock class under which resets of one server role take turns.
const RESET_LOCK_CLASS: i32 = 0x4443_4c52; // "DCLR"

/// The attributes a lake role must not have, as ALTER ROLE may name them in a session that is
/// a superuser's or not (see [`reset_server_role`]).
pub fn no_attributes(superuser: bool) -> &'static str {
    if superuser {
        "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    } else {
        "NOCREATEDB NOCREATEROLE"
    }
}

/// What every session inside a lake pins: name resolution and no row security policy run.
const LAKE_SESSION_OPTIONS: &str = "-c search_path=pg_catalog,pg_temp -c row_security=off";

/// The database of the lake registry on an external PostgreSQL: created by the admin (which
/// may not create schemas in `postgres` there). The supervised cluster keeps it in `postgres`.
pub const REGISTRY_DB: &str = "ducklake_catalog";

/// A password that can change while it is shared (the admin's, rotated in Secrets Manager).
pub type PasswordCell = std::sync::Arc<std::sync::RwLock<Option<Secret>>>;

/// How the server administers PostgreSQL.
#[derive(Debug, Clone)]
enum Admin {
    /// The supervised cluster, over its Unix socket as its superuser (peer authentication).
    Local(Socket),
    /// An external PostgreSQL over TLS, as the admin login (`CREATEDB CREATEROLE`, never a
    /// superuser).
    Remote {
        pg: remote::RemotePg,
        password: PasswordCell,
    },
}

/// How the DuckLake administration reaches PostgreSQL: the role-administering session in the
/// registry's database, sessions as the admin in a lake's database (its bring-up), and sessions
/// inside each lake as its server role. Built from the supervised cluster's socket or from
/// `postgres.url`.
#[derive(Debug, Clone)]
pub struct PgHandle {
    admin: Admin,
    key: ServerKey,
}

impl PgHandle {
    /// The supervised cluster behind `socket`.
    pub fn new(socket: Socket, key: ServerKey) -> PgHandle {
        PgHandle {
            admin: Admin::Local(socket),
            key,
        }
    }

    /// The external PostgreSQL `pg`, logging in as its user with the password in `password`.
    pub fn remote(pg: remote::RemotePg, password: PasswordCell, key: ServerKey) -> PgHandle {
        PgHandle {
            admin: Admin::Remote { pg, password },
            key,
        }
    }

    /// Whether the administering sessions are a superuser's (the supervised cluster). An
    /// external PostgreSQL's admin is not: what needs a superuser degrades with a warning.
    pub fn superuser(&self) -> bool {
        matches!(self.admin, Admin::Local(_))
    }

    /// The external PostgreSQL, if that is what this handle reaches.
    pub fn external(&self) -> Option<&remote::RemotePg> {
        match &self.admin {
            Admin::Remote { pg, .. } => Some(pg),
            Admin::Local(_) => None,
        }
    }

    /// The database holding the lake registry.
    pub fn registry_db(&self) -> &'static str {
        match self.admin {
            Admin::Local(_) => "postgres",
            Admin::Remote { .. } => REGISTRY_DB,
        }
    }

    fn remote_password(password: &PasswordCell) -> String {
        password
            .read()
            .expect("the password lock is never poisoned")
            .as_ref()
            .map(|s| s.expose().to_owned())
            .unwrap_or_default()
    }

    /// A role-administering session in the registry's database, which no lake user can
    /// connect to: roles, databases, the lake registry. On an external PostgreSQL the registry
    /// database is created on first use.
    pub async fn postgres(
        &self,
        application_name: &str,
    ) -> Result<tokio_postgres::Client, crate::postgres::LocalError> {
        match &self.admin {
            Admin::Local(socket) => socket
                .connect_superuser("postgres", application_name)
                .await
                .map_err(|e| crate::postgres::LocalError::new(socket, &e)),
            Admin::Remote { pg, password } => {
                let pw = Self::remote_password(password);
                match pg
                    .connect(&pg.user, &pw, REGISTRY_DB, application_name, None)
                    .await
                {
                    Ok(c) => Ok(c),
                    Err(e) if e.database_missing() => {
                        let first = pg
                            .connect(&pg.user, &pw, &pg.dbname, application_name, None)
                            .await?;
                        create_registry_db(&first, &pg.user).await?;
                        Ok(pg
                            .connect(&pg.user, &pw, REGISTRY_DB, application_name, None)
                            .await?)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// A session as the administering role in database `db` (a lake's bring-up): the superuser
    /// of the supervised cluster, or the external PostgreSQL's admin, which owns the lake
    /// databases.
    pub async fn admin_in(
        &self,
        db: &str,
        application_name: &str,
    ) -> Result<tokio_postgres::Client, PgError> {
        match &self.admin {
            Admin::Local(socket) => socket
                .connect_superuser(db, application_name)
                .await
                .map_err(PgError::sql(format!("connect to database {db}"))),
            Admin::Remote { pg, password } => pg
                .connect(
                    &pg.user,
                    &Self::remote_password(password),
                    db,
                    application_name,
                    None,
                )
                .await
                .map_err(PgError::from),
        }
    }

    /// A session inside `lake` as its server role, acting as the lake's owner role with the
    /// search path pinned (see the module docs). Resets the role first.
    pub async fn lake(
        &self,
        lake: &str,
        application_name: &str,
    ) -> Result<tokio_postgres::Client, PgError> {
        let su = self.postgres(application_name).await.map_err(|e| match e {
            crate::postgres::LocalError::Registry(e) => e,
            crate::postgres::LocalError::Remote(e) => PgError::Remote(e),
            e @ crate::postgres::LocalError::Socket { .. } => PgError::Io {
                action: format!("reset lake {lake}'s server role"),
                error: std::io::Error::other(e.to_string()),
            },
        })?;
        reset_server_role(&su, &self.key, lake, self.superuser()).await?;
        drop(su);
        let role = server_role(lake);
        let password = self.key.password(lake);
        let client = match &self.admin {
            Admin::Local(socket) => {
                let mut cfg = tokio_postgres::Config::new();
                cfg.host_path(&socket.dir)
                    .port(socket.port)
                    .user(&role)
                    .password(password)
                    .dbname(lake)
                    .application_name(application_name)
                    .options(LAKE_SESSION_OPTIONS)
                    .connect_timeout(std::time::Duration::from_secs(5));
                let (client, conn) = cfg
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(PgError::sql(format!("connect to lake {lake} as {role}")))?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "lake session closed");
                    }
                });
                client
            }
            Admin::Remote { pg, .. } => {
                pg.connect(
                    &role,
                    &password,
                    lake,
                    application_name,
                    Some(LAKE_SESSION_OPTIONS),
                )
                .await?
            }
        };
        client
            .batch_execute(&format!(
                "SET ROLE {}; SET search_path = pg_catalog, pg_temp; SET row_security = off",
                quote_ident(&LakeRole::Owner.group(lake))
            ))
            .await
            .map_err(PgError::sql(format!("act as lake {lake}'s owner role")))?;
        Ok(client)
    }

    /// The connection string of `lake`'s server role, for the DuckDB worker. Call
    /// [`PgHandle::lake`] (or [`reset_server_role`]) first: it sets the password.
    pub fn lake_conninfo(&self, lake: &str) -> String {
        let password = self.key.password(lake);
        match &self.admin {
            Admin::Local(socket) => socket.conninfo(&server_role(lake), Some(&password), lake),
            Admin::Remote { pg, .. } => pg.conninfo(&server_role(lake), Some(&password), lake),
        }
    }

    pub fn key(&self) -> &ServerKey {
        &self.key
    }
}

/// Creates the registry's database on an external PostgreSQL, owned by the admin and closed to
/// everyone else.
async fn create_registry_db(first: &tokio_postgres::Client, admin: &str) -> Result<(), PgError> {
    let db = quote_ident(REGISTRY_DB);
    // One statement a call: CREATE DATABASE cannot run in a transaction block.
    first
        .batch_execute(&format!(
            "CREATE DATABASE {db} OWNER {} ENCODING 'UTF8' TEMPLATE template0",
            quote_ident(admin)
        ))
        .await
        .map_err(PgError::sql(format!(
            "create database {REGISTRY_DB} for the lake registry"
        )))?;
    first
        .batch_execute(&format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"))
        .await
        .map_err(PgError::sql(format!(
            "close database {REGISTRY_DB} to others"
        )))?;
    tracing::info!(
        database = REGISTRY_DB,
        "created the lake registry's database"
    );
    Ok(())
}

/// The names `ducklake_inlined_data_tables` registers (of table `table_id`, or all): catalog
/// data a lake user writes, to check with [`inlined_data_table`] before use.
async fn registered_inlined_tables(
    tx: &tokio_postgres::Transaction<'_>,
    table_id: Option<i64>,
) -> Result<Vec<String>, PgError> {
    Ok(tx
        .query(
            "SELECT table_name::text FROM public.ducklake_inlined_data_tables
             WHERE $1::bigint IS NULL OR table_id = $1 ORDER BY 1",
            &[&table_id],
        )
        .await
        .map_err(PgError::sql("list the inlined-data tables"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Rows waiting in `lake`'s inlined-data tables for a flush (of table `table_id`, or all),
/// reading only tables [`inlined_data_table`] confirms.
pub async fn inlined_rows(
    client: &mut tokio_postgres::Client,
    lake: &str,
    table_id: Option<i64>,
) -> Result<i64, PgError> {
    let tx = client
        .transaction()
        .await
        .map_err(PgError::sql("begin reading inlined rows"))?;
    let names = registered_inlined_tables(&tx, table_id).await?;
    let mut total = 0;
    for name in names {
        if !inlined_data_table(&tx, lake, &name).await? {
            continue;
        }
        let n: i64 = tx
            .query_one(
                &format!(
                    "SELECT count(*) FROM public.{} WHERE end_snapshot IS NULL",
                    quote_ident(&name)
                ),
                &[],
            )
            .await
            .map_err(PgError::sql(format!("count the rows of {name}")))?
            .get(0);
        total += n;
    }
    tx.rollback()
        .await
        .map_err(PgError::sql("end reading inlined rows"))?;
    Ok(total)
}

/// The entries of `ducklake_inlined_data_tables` that name something DuckLake would not have
/// made ([`inlined_data_table`]). DuckDB's own maintenance reads every registered table as the
/// owner role, so a job refuses to start while there is any.
pub async fn foreign_inlined_tables(
    client: &mut tokio_postgres::Client,
    lake: &str,
) -> Result<Vec<String>, PgError> {
    let tx = client
        .transaction()
        .await
        .map_err(PgError::sql("begin checking the inlined-data tables"))?;
    let names = registered_inlined_tables(&tx, None).await?;
    let mut foreign = Vec::new();
    for name in names {
        let present: bool = tx
            .query_one(
                "SELECT to_regclass('public.' || pg_catalog.quote_ident($1)) IS NOT NULL",
                &[&name],
            )
            .await
            .map_err(PgError::sql("look up an inlined-data table"))?
            .get(0);
        // A registered table that is gone is DuckLake's business (it reads none).
        if present && !inlined_data_table(&tx, lake, &name).await? {
            foreign.push(name);
        }
    }
    tx.rollback()
        .await
        .map_err(PgError::sql("end checking the inlined-data tables"))?;
    Ok(foreign)
}

/// DuckLake's name for an inlined-data table: `ducklake_inlined_data_<table id>_<version>`.
pub fn is_inlined_data_name(name: &str) -> bool {
    name.strip_prefix("ducklake_inlined_data_")
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(id, version)| {
            !id.is_empty()
                && !version.is_empty()
                && id.len() <= 20
                && version.len() <= 20
                && id.bytes().all(|b| b.is_ascii_digit())
                && version.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Whether `name`, read from `ducklake_inlined_data_tables`, is a table DuckLake made: its
/// name pattern, an ordinary table in `public` without row security, owned by `lake`'s writer
/// or owner role. The table is locked (`ACCESS SHARE`) before the check, so it cannot turn into
/// something else before the caller reads it in the same transaction. A `false` is logged.
pub async fn inlined_data_table(
    tx: &tokio_postgres::Transaction<'_>,
    lake: &str,
    name: &str,
) -> Result<bool, PgError> {
    if !is_inlined_data_name(name) {
        tracing::warn!(
            lake,
            table = name,
            "ducklake_inlined_data_tables names a table DuckLake would not create; ignoring it"
        );
        return Ok(false);
    }
    let present = tx
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_class WHERE relname = $1
               AND relnamespace = 'public'::pg_catalog.regnamespace",
            &[&name],
        )
        .await
        .map_err(PgError::sql(format!("look up {name}")))?
        .is_some();
    if !present {
        return Ok(false);
    }
    tx.batch_execute(&format!(
        "LOCK TABLE public.{} IN ACCESS SHARE MODE",
        quote_ident(name)
    ))
    .await
    .map_err(PgError::sql(format!("lock {name}")))?;
    let owners = [LakeRole::Writer.group(lake), LakeRole::Owner.group(lake)];
    let genuine: bool = tx
        .query_one(
            "SELECT coalesce(bool_and(c.relkind = 'r' AND NOT c.relrowsecurity
                                      AND r.rolname::text = ANY($2::text[])), false)
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
             WHERE c.relname = $1 AND c.relnamespace = 'public'::pg_catalog.regnamespace",
            &[&name, &owners.as_slice()],
        )
        .await
        .map_err(PgError::sql(format!("check {name}")))?
        .get(0);
    if !genuine {
        tracing::warn!(lake, table = name, "ducklake_inlined_data_tables names a relation that is not an ordinary table of the lake's writers; ignoring it");
    }
    Ok(genuine)
}

/// How long the guard waits for a table lock before it gives way (and is tried again): shorter
/// than PostgreSQL's `deadlock_timeout` (1 s), so when the guard and a client's transaction wait
/// on each other the guard yields, never the client.
pub const GUARD_LOCK_TIMEOUT_MS: u64 = 500;

/// The guard of a lake database ([`prepare_database`]): the lake roles' privileges, the row
/// triggers that keep writers to what DuckLake's writes do, and the event triggers that keep
/// code out. Placeholders are filled by [`guard_sql`].
const GUARD_SQL: &str = include_str!("lake_guard.sql");

/// Large objects are writes outside any table: their functions are revoked from PUBLIC (only
/// their owner, the superuser, may).
const LARGE_OBJECTS_SQL: &str = "DO $do$
DECLARE f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
           WHERE p.pronamespace = 'pg_catalog'::regnamespace
             AND (p.proname LIKE 'lo\\_%' OR p.proname IN ('lowrite', 'loread'))
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
  END LOOP;
END
$do$;";

/// [`GUARD_SQL`] for `lake`, whose admin role is `admin`, registered on `data_path`; without
/// the part only a superuser may run (the event triggers) unless `superuser`.
fn guard_sql(lake: &str, admin: &str, data_path: &str, superuser: bool) -> String {
    let sql = if superuser {
        GUARD_SQL.to_owned()
    } else {
        let begin = GUARD_SQL
            .find("-- BEGIN SUPERUSER")
            .expect("lake_guard.sql marks its superuser part");
        let end = GUARD_SQL
            .find("-- END SUPERUSER")
            .expect("lake_guard.sql marks its superuser part");
        format!("{}{}", &GUARD_SQL[..begin], &GUARD_SQL[end..])
    };
    sql.replace(":\"lake\"", &quote_ident(lake))
        .replace(":\"reader\"", &quote_ident(&LakeRole::Reader.group(lake)))
        .replace(":\"writer\"", &quote_ident(&LakeRole::Writer.group(lake)))
        .replace(":\"owner\"", &quote_ident(&LakeRole::Owner.group(lake)))
        .replace(":\"admin\"", &quote_ident(admin))
        .replace(":'lake'", &quote_literal(lake))
        .replace(":'data_path'", &quote_literal(data_path))
}

/// The superuser's part of a lake database's bring-up: statements that run no user code, on
/// objects no lake user controls, with the search path pinned. `su` is a superuser session
/// in the lake's database.
///
/// - The schema `public` belongs to the lake's owner role, so the rest of the bring-up (grants
///   on DuckLake's tables) runs as the server role, not as a superuser.
/// - Large objects are writes outside any table: their functions are revoked from PUBLIC.
/// - Tables of an older release that the admin owns go to the owner role, once.
/// - The guard ([`GUARD_SQL`]): the lake roles' privileges on DuckLake's tables, row triggers
///   and event triggers. Run again once DuckLake created its tables, and after a migration.
///
/// On an external PostgreSQL `su` is the admin's session (`superuser` false): the large-object
/// functions and the event triggers stay as they are, and a warning says so.
pub async fn prepare_database(
    su: &tokio_postgres::Client,
    lake: &str,
    admin: &str,
    data_path: &str,
    superuser: bool,
) -> Result<(), PgError> {
    let owner = quote_ident(&LakeRole::Owner.group(lake));
    su.batch_execute(&format!(
        "RESET ALL; SET ROLE NONE;
         SET search_path = pg_catalog, pg_temp;
         SET lock_timeout = '{GUARD_LOCK_TIMEOUT_MS}ms';
         ALTER SCHEMA public OWNER TO {owner};
         REVOKE ALL ON SCHEMA public FROM PUBLIC;"
    ))
    .await
    .map_err(PgError::sql(format!("secure lake {lake}'s database")))?;
    if superuser {
        // The guard is long: kept out of the DDL log (log_statement, superuser only).
        su.batch_execute(&format!("SET log_statement = 'none'; {LARGE_OBJECTS_SQL}"))
            .await
            .map_err(PgError::sql(format!(
                "revoke large objects in lake {lake}'s database"
            )))?;
    } else {
        tracing::warn!(lake, "the admin is not a superuser, so lake users' DDL is not confined by event triggers and large-object functions stay open: a writer of this lake can create functions, views and triggers in it (within the lake; see docs/external-postgres.md)");
    }
    let tables: Vec<String> = su
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c
             WHERE c.relnamespace = 'public'::pg_catalog.regnamespace AND c.relkind IN ('r', 'p')
               AND pg_catalog.pg_get_userbyid(c.relowner) = $1",
            &[&admin],
        )
        .await
        .map_err(PgError::sql("list the tables the admin owns"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for table in tables {
        su.batch_execute(&format!(
            "ALTER TABLE public.{} OWNER TO {owner}",
            quote_ident(&table)
        ))
        .await
        .map_err(PgError::sql(format!(
            "give {table} to the lake's owner role"
        )))?;
    }
    su.batch_execute(&guard_sql(lake, admin, data_path, superuser))
        .await
        .map_err(PgError::sql(format!("guard lake {lake}'s tables")))?;
    if !superuser {
        // Without the event trigger that hands each table a writer creates (DuckLake's
        // inlined data) to the owner role and grants it, readers read them through default
        // privileges; the next bring-up hands them over.
        su.batch_execute(&format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {writer} IN SCHEMA public GRANT SELECT ON TABLES TO {reader}",
            writer = quote_ident(&LakeRole::Writer.group(lake)),
            reader = quote_ident(&LakeRole::Reader.group(lake)),
        ))
        .await
        .map_err(PgError::sql(format!(
            "let lake {lake}'s readers read the tables its writers create"
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_duckdbs_inlined_names_pass() {
        assert!(is_inlined_data_name("ducklake_inlined_data_12_3"));
        for bad in [
            "ducklake_inlined_data_12",
            "ducklake_inlined_data__3",
            "ducklake_inlined_data_1_2_3",
            "ducklake_inlined_data_1_x",
            "public.ducklake_inlined_data_1_2",
            "ducklake_inlined_data_1_2\"; DROP TABLE x; --",
            "pg_authid",
        ] {
            assert!(!is_inlined_data_name(bad), "{bad}");
        }
    }

    #[test]
    fn server_passwords_differ_per_lake_and_key() {
        let a = ServerKey([1; 32]);
        let b = ServerKey([2; 32]);
        assert_ne!(a.password("x"), a.password("y"));
        assert_ne!(a.password("x"), b.password("x"));
        assert_eq!(a.password("x").len(), 64);
    }

    #[test]
    fn verifiers_never_hold_the_password() {
        let v = scram_verifier("correct horse battery staple");
        assert!(v.starts_with("SCRAM-SHA-256$"), "{v}");
        assert!(!v.contains("correct horse"));
    }
}
