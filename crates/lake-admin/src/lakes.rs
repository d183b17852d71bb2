//! Lakes as a product: the registry of every lake this catalog serves, and
//! `lake create|list|show|drop|migrate`.
//!
//! The registry is a table in the cluster's `postgres` database (`ducklake_catalog.lakes`:
//! name, data path, origin, whether a drop is under way), so it is backed up and restored with
//! the catalogs it lists. Lakes in the configuration are written to it on every start (origin
//! `config`); `lake create` adds lakes of origin `command`, which `serve` brings up on every
//! start and, while running, within [`WATCH_INTERVAL`]. A lake stays until `lake drop`, even
//! when it is removed from the configuration: nothing is dropped by editing a file.
//!
//! The commands run beside the running server, over its Unix socket, like `user`: only the
//! instance that holds the backup lease writes to the catalog, so a stopped server's home is
//! never changed behind its back (a lake for a server that has never started belongs in
//! `[[lakes]]`).

use std::time::Duration;

use serde::Serialize;
use storage::{DataPath, StorageError};

use crate::duckdb_worker::{DuckDbRunner, Job};
use crate::inspect::{Catalog, InspectError, Summary};
use crate::lake::{ensure_lake, LakeError, LakeInfo};
use crate::lake_session::PgHandle;
use crate::names::{data_path_conflict, overlaps, valid_lake_name, MAX_LAKE_NAME};
use crate::postgres::{LocalError, PgError};
use crate::settings::LakeConfig;
use crate::versions::SPEC_CLIENTS;
use crate::Admin;

/// How often a running server looks for lakes created or dropped by command.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(3);

/// Where a lake came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `[[lakes]]` (or the default lake): reconciled on every start.
    Config,
    /// `lake create`.
    Command,
}

/// A row of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredLake {
    pub name: String,
    pub data_path: String,
    pub origin: Origin,
    /// `lake drop` began and has not finished (its data is being deleted).
    pub dropping: bool,
}

/// Why a lake command failed. One line each, naming the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LakesError {
    #[error("`{name}` is not a valid lake name: use 1-{MAX_LAKE_NAME} lowercase letters, digits and _, starting with a letter (not pg_…, ducklake_…, postgres, template0, template1 or the admin user)")]
    BadName { name: String },
    #[error("data path {path} {reason}")]
    PathUnsafe { path: String, reason: String },
    #[error("lake `{name}` already exists; choose another name (`ducklake-catalog lake list` shows them)")]
    Exists { name: String },
    #[error("data path {path} overlaps lake `{other}`'s data path {other_path}; give each lake its own prefix")]
    PathTaken {
        path: String,
        other: String,
        other_path: String,
    },
    #[error(
        "data path {path} overlaps the backup target {target}; give the lake a prefix outside it"
    )]
    PathIsBackup { path: String, target: String },
    #[error("no lake named `{name}`; lakes: {known}")]
    Unknown { name: String, known: String },
    #[error("lake `{name}` is in the configuration ([[lakes]] or DUCKLAKE_CATALOG_LAKE_NAME) and would come back on the next start; remove it there first, restart, then drop it")]
    InConfig { name: String },
    #[error("dropping lake `{name}` deletes its catalog ({tables} tables, {files} data files, {snapshots} snapshots) and its users{data}; run again with --yes to do it")]
    NotConfirmed {
        name: String,
        tables: i64,
        files: i64,
        snapshots: i64,
        data: String,
    },
    #[error("lake `{name}` has DuckLake spec {found}, which the embedded DuckDB cannot migrate ({message})")]
    Migration {
        name: String,
        found: String,
        message: String,
    },
    #[error("lake `{name}`'s registered data path {path} does not parse ({reason}); fix its row in ducklake_catalog.lakes")]
    RegisteredPath {
        name: String,
        path: String,
        reason: String,
    },
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("{0}")]
    Users(String),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    NotRunning(#[from] LocalError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Postgres(#[from] PgError),
}

/// A lake as `lake list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LakeListing {
    pub name: String,
    pub data_path: String,
    pub origin: Origin,
    /// The DuckLake catalog spec version (`None`: not initialised).
    pub spec_version: Option<String>,
    /// Which DuckDB clients attach this spec version.
    pub clients: Option<&'static str>,
    /// Size and activity; `None` when this release does not read the lake's spec version.
    #[serde(flatten)]
    pub summary: Option<Summary>,
    /// Why `summary` is missing, with the fix.
    pub note: Option<String>,
}

/// `lake show`: the listing, how to attach, users, and the tuning state.
#[derive(Debug, Clone, Serialize)]
pub struct LakeDetail {
    #[serde(flatten)]
    pub listing: LakeListing,
    pub attach: String,
    pub users: Vec<crate::users::UserInfo>,
    /// The tuning's indexes present in the catalog.
    pub indexes: Vec<String>,
    /// The tuning's indexes missing (built at the next start or by `lake migrate`).
    pub missing_indexes: Vec<String>,
}

/// What `lake drop` did.
#[derive(Debug, Clone, Serialize)]
pub struct DropReport {
    pub name: String,
    pub data_path: String,
    pub users_dropped: Vec<String>,
    /// Objects deleted under the data path (`None`: the data was kept).
    pub objects_deleted: Option<u64>,
}

/// What `lake migrate` did.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateReport {
    pub name: String,
    pub from: String,
    pub to: String,
    pub tuning: crate::tuning::TuningReport,
}

/// Creates the registry table if it is missing. `client` is a superuser session in `postgres`.
pub async fn ensure_registry(client: &tokio_postgres::Client) -> Result<(), PgError> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS ducklake_catalog;
             REVOKE ALL ON SCHEMA ducklake_catalog FROM PUBLIC;
             CREATE TABLE IF NOT EXISTS ducklake_catalog.lakes (
                 name text PRIMARY KEY,
                 data_path text NOT NULL UNIQUE,
                 origin text NOT NULL CHECK (origin IN ('config', 'command')),
                 created_at timestamptz NOT NULL DEFAULT now(),
                 dropping boolean NOT NULL DEFAULT false
             );",
        )
        .await
        .map_err(PgError::sql("create the lake registry"))
}

/// Every registered lake, by name. An empty list when the registry does not exist yet.
pub async fn registered(client: &tokio_postgres::Client) -> Result<Vec<RegisteredLake>, PgError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('ducklake_catalog.lakes') IS NOT NULL",
            &[],
        )
        .await
        .map_err(PgError::sql("look for the lake registry"))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT name, data_path, origin, dropping FROM ducklake_catalog.lakes ORDER BY name",
            &[],
        )
        .await
        .map_err(PgError::sql("read the lake registry"))?;
    Ok(rows
        .iter()
        .map(|r| RegisteredLake {
            name: r.get(0),
            data_path: r.get(1),
            origin: if r.get::<_, String>(2) == "config" {
                Origin::Config
            } else {
                Origin::Command
            },
            dropping: r.get(3),
        })
        .collect())
}

/// The lakes to serve: the configured ones (written to the registry, refusing a data path
/// another lake holds) and the registered ones not being dropped.
pub async fn reconcile(
    client: &tokio_postgres::Client,
    admin: &Admin,
) -> Result<Vec<LakeConfig>, LakesError> {
    ensure_registry(client).await?;
    let known = registered(client).await?;
    for lake in &admin.settings.lakes {
        let path = lake.data_path.to_string();
        if !known.iter().any(|r| r.name == lake.name) {
            if let Some(other) = known
                .iter()
                .find(|r| r.name != lake.name && paths_overlap(&r.data_path, &path))
            {
                return Err(LakesError::PathTaken {
                    path,
                    other: other.name.clone(),
                    other_path: other.data_path.clone(),
                });
            }
        }
        // The catalog itself records the data path; ensure_lake refuses a changed one.
        client
            .execute(
                "INSERT INTO ducklake_catalog.lakes (name, data_path, origin) VALUES ($1, $2, 'config')
                 ON CONFLICT (name) DO UPDATE SET origin = 'config'",
                &[&lake.name, &path],
            )
            .await
            .map_err(PgError::sql("register the configured lakes"))?;
    }
    Ok(serving(admin, &known))
}

/// The configured lakes, then the registered ones not configured and not being dropped.
fn serving(admin: &Admin, known: &[RegisteredLake]) -> Vec<LakeConfig> {
    let mut lakes = admin.settings.lakes.clone();
    for r in known {
        if r.dropping || lakes.iter().any(|l| l.name == r.name) {
            continue;
        }
        match DataPath::parse(&r.data_path) {
            Ok(data_path) => lakes.push(LakeConfig::new(r.name.clone(), data_path)),
            Err(e) => {
                tracing::error!(lake = %r.name, error = %e, "a registered lake's data path does not parse; skipping it");
            }
        }
    }
    lakes
}

/// The configured lakes and the running server's registered ones, so commands given `--lake`
/// find lakes created by command.
pub async fn with_registered(admin: &Admin) -> Result<Vec<LakeConfig>, LocalError> {
    let client = admin.pg.postgres("ducklake-catalog").await?;
    let known = registered(&client).await.unwrap_or_default();
    Ok(serving(admin, &known))
}

fn paths_overlap(a: &str, b: &str) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// `lake create NAME --data-path P`: checks the name and path against every lake and the backup
/// target, brings the lake up exactly as `serve` does (preflight, database, roles, DuckLake
/// catalog, tuning), then registers it; the running server serves it within
/// [`WATCH_INTERVAL`]. An existing database with a DuckLake catalog on the same data path is
/// adopted as it is (e.g. one an older client created).
pub async fn create(
    admin: &Admin,
    s3: &storage::S3Settings,
    runner: &DuckDbRunner,
    name: &str,
    data_path: &DataPath,
) -> Result<LakeInfo, LakesError> {
    if !valid_lake_name(name) || name == admin.settings.admin_user {
        return Err(LakesError::BadName {
            name: name.to_owned(),
        });
    }
    if let Some(reason) = data_path_conflict(&admin.settings.home, data_path) {
        return Err(LakesError::PathUnsafe {
            path: data_path.to_string(),
            reason,
        });
    }
    let client = admin.pg.postgres("ducklake-catalog lake").await?;
    ensure_registry(&client).await?;
    let known = registered(&client).await?;
    // Names and paths are taken by every lake: served, and being dropped (whose data path is
    // compared as recorded, parsed or not).
    let lakes = serving(admin, &known);
    let taken = |n: &str| lakes.iter().any(|l| l.name == n) || known.iter().any(|r| r.name == n);
    if taken(name) {
        return Err(LakesError::Exists {
            name: name.to_owned(),
        });
    }
    let new_path = data_path.to_string();
    if let Some(other) = known
        .iter()
        .find(|r| r.dropping && paths_overlap(&r.data_path, &new_path))
    {
        return Err(LakesError::PathTaken {
            path: new_path,
            other: other.name.clone(),
            other_path: other.data_path.clone(),
        });
    }
    if let Some(other) = lakes.iter().find(|l| overlaps(&l.data_path, data_path)) {
        return Err(LakesError::PathTaken {
            path: data_path.to_string(),
            other: other.name.clone(),
            other_path: other.data_path.to_string(),
        });
    }
    if let Some(target) = &admin.settings.backup_target {
        if overlaps(target, data_path) {
            return Err(LakesError::PathIsBackup {
                path: data_path.to_string(),
                target: target.to_string(),
            });
        }
    }
    let lake = LakeConfig::new(name.to_owned(), data_path.clone());
    let info = ensure_lake(admin, s3, &lake, runner).await?;
    client
        .execute(
            "INSERT INTO ducklake_catalog.lakes (name, data_path, origin) VALUES ($1, $2, 'command')",
            &[&lake.name, &info.data_path],
        )
        .await
        .map_err(PgError::sql("register the lake"))?;
    tracing::info!(lake = name, data_path = %info.data_path, "created lake");
    Ok(info)
}

/// Every lake the running server serves, with its spec version, clients and size.
pub async fn list(admin: &Admin) -> Result<Vec<LakeListing>, LakesError> {
    let client = admin.pg.postgres("ducklake-catalog lake").await?;
    let pg = &admin.pg;
    let known = registered(&client).await?;
    let mut out = Vec::new();
    for lake in serving(admin, &known) {
        let origin = known
            .iter()
            .find(|r| r.name == lake.name)
            .map_or(Origin::Config, |r| r.origin);
        out.push(listing(pg, &lake, origin).await?);
    }
    Ok(out)
}

async fn listing(
    pg: &PgHandle,
    lake: &LakeConfig,
    origin: Origin,
) -> Result<LakeListing, LakesError> {
    let mut item = LakeListing {
        name: lake.name.clone(),
        data_path: lake.data_path.to_string(),
        origin,
        spec_version: None,
        clients: None,
        summary: None,
        note: None,
    };
    match Catalog::open(pg, lake).await {
        Ok(catalog) => {
            item.spec_version = Some(crate::versions::DUCKLAKE_SPEC_VERSION.to_owned());
            item.summary = Some(catalog.summary().await?);
        }
        Err(InspectError::UnknownSpec { found, .. }) => {
            item.note = Some(format!(
                "spec {found}: run `ducklake-catalog lake migrate {}`",
                lake.name
            ));
            item.spec_version = Some(found);
        }
        Err(InspectError::NoCatalog { .. }) => {
            item.note = Some("not initialised yet".into());
        }
        Err(e) => return Err(e.into()),
    }
    item.clients = item.spec_version.as_deref().and_then(clients_for);
    Ok(item)
}

/// Which DuckDB clients attach a catalog of `spec`.
pub fn clients_for(spec: &str) -> Option<&'static str> {
    SPEC_CLIENTS
        .iter()
        .find(|(s, _)| *s == spec)
        .map(|(_, c)| *c)
}

/// The registered lake called `name` (configured or created by command).
async fn find(
    admin: &Admin,
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<(LakeConfig, Origin), LakesError> {
    let known = registered(client).await?;
    let lakes = serving(admin, &known);
    let lake = lakes
        .iter()
        .find(|l| l.name == name)
        .cloned()
        .ok_or_else(|| unknown(name, &lakes))?;
    let origin = known
        .iter()
        .find(|r| r.name == name)
        .map_or(Origin::Config, |r| r.origin);
    Ok((lake, origin))
}

fn unknown(name: &str, lakes: &[LakeConfig]) -> LakesError {
    LakesError::Unknown {
        name: name.to_owned(),
        known: lakes
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// `lake show NAME`.
pub async fn show(admin: &Admin, name: &str) -> Result<LakeDetail, LakesError> {
    let client = admin.pg.postgres("ducklake-catalog lake").await?;
    let pg = &admin.pg;
    let (lake, origin) = find(admin, &client, name).await?;
    let listing = listing(pg, &lake, origin).await?;
    let mut with_lake = admin.clone();
    with_lake.settings.lakes = vec![lake.clone()];
    let users = crate::users::list(&with_lake, Some(name))
        .await
        .map_err(|e| match e {
            crate::users::UserError::NotRunning(l) => LakesError::NotRunning(l),
            crate::users::UserError::Postgres(p) => LakesError::Postgres(p),
            other => LakesError::Users(other.to_string()),
        })?;
    let lake_db = pg.lake(name, "ducklake-catalog lake").await?;
    let indexes = crate::tuning::present(&lake_db).await?;
    let missing_indexes = crate::tuning::INDEXES
        .iter()
        .map(|i| i.name.to_owned())
        .filter(|n| !indexes.contains(n))
        .collect();
    let attach = crate::connection::ConnectionInfo::new(
        &admin.settings.clients,
        &admin.settings.admin_user,
        &lake,
    )
    .attach_sql(false);
    Ok(LakeDetail {
        listing,
        attach,
        users,
        indexes,
        missing_indexes,
    })
}

/// `lake drop NAME [--delete-data] --yes`. The catalog goes first, in one `DROP DATABASE`;
/// with `delete_data` the objects under the data path follow, with `progress(deleted, listed)`.
/// Until both are done the registry keeps the lake marked as dropping, so running the command
/// again finishes an interrupted drop.
pub async fn drop(
    admin: &Admin,
    s3: &storage::S3Settings,
    name: &str,
    delete_data: bool,
    confirmed: bool,
    progress: impl FnMut(u64, u64),
) -> Result<DropReport, LakesError> {
    if admin.settings.lakes.iter().any(|l| l.name == name) {
        return Err(LakesError::InConfig {
            name: name.to_owned(),
        });
    }
    let client = admin.pg.postgres("ducklake-catalog lake").await?;
    let pg = &admin.pg;
    let known = registered(&client).await?;
    let Some(entry) = known.iter().find(|r| r.name == name) else {
        return Err(unknown(name, &serving(admin, &known)));
    };
    let data_path = DataPath::parse(&entry.data_path).map_err(|e| LakesError::RegisteredPath {
        name: name.to_owned(),
        path: entry.data_path.clone(),
        reason: e.to_string(),
    })?;
    if delete_data {
        refuse_shared_data(admin, &known, name, &data_path)?;
    }
    if !confirmed {
        let lake = LakeConfig::new(name.to_owned(), data_path.clone());
        let summary = match Catalog::open(pg, &lake).await {
            Ok(c) => c.summary().await.unwrap_or_default(),
            Err(_) => Summary::default(),
        };
        return Err(LakesError::NotConfirmed {
            name: name.to_owned(),
            tables: summary.tables,
            files: summary.data_files,
            snapshots: summary.snapshots,
            data: if delete_data {
                format!(", and every object under {data_path}")
            } else {
                format!(" (the objects under {data_path} are kept; --delete-data removes them)")
            },
        });
    }
    client
        .execute(
            "UPDATE ducklake_catalog.lakes SET dropping = true WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(PgError::sql("mark the lake as dropping"))?;
    let users_dropped =
        crate::lake::drop_lake_objects(&client, name, &admin.settings.admin_user, pg.superuser())
            .await?;
    tracing::info!(lake = name, users = ?users_dropped, "dropped the lake's catalog");
    let objects_deleted = if delete_data {
        let n = storage::purge(&data_path, s3, progress).await?;
        tracing::info!(lake = name, objects = n, data_path = %data_path, "deleted the lake's data");
        Some(n)
    } else {
        None
    };
    client
        .execute(
            "DELETE FROM ducklake_catalog.lakes WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(PgError::sql("unregister the lake"))?;
    Ok(DropReport {
        name: name.to_owned(),
        data_path: data_path.to_string(),
        users_dropped,
        objects_deleted,
    })
}

/// Refuses to delete `data_path` (lake `name`'s) when it could hold data the lake does not
/// own: the server's home, another lake's files (a nested or enclosing path), the backups.
pub(crate) fn refuse_shared_data(
    admin: &Admin,
    known: &[RegisteredLake],
    name: &str,
    data_path: &DataPath,
) -> Result<(), LakesError> {
    if let Some(reason) = data_path_conflict(&admin.settings.home, data_path) {
        return Err(LakesError::PathUnsafe {
            path: data_path.to_string(),
            reason: format!("{reason}; its objects were not deleted"),
        });
    }
    let path = data_path.to_string();
    if let Some(other) = serving(admin, known)
        .iter()
        .filter(|l| l.name != name)
        .map(|l| (l.name.clone(), l.data_path.to_string()))
        .chain(
            known
                .iter()
                .filter(|r| r.name != name)
                .map(|r| (r.name.clone(), r.data_path.clone())),
        )
        .find(|(_, p)| paths_overlap(p, &path))
    {
        return Err(LakesError::PathTaken {
            path,
            other: other.0,
            other_path: other.1,
        });
    }
    if let Some(target) = &admin.settings.backup_target {
        if overlaps(target, data_path) {
            return Err(LakesError::PathIsBackup {
                path,
                target: target.to_string(),
            });
        }
    }
    Ok(())
}

/// `lake migrate NAME`: DuckLake's own migration of an older catalog to the embedded DuckDB's
/// spec (an `ATTACH … (AUTOMATIC_MIGRATION)` as the admin, who owns the catalog's tables),
/// then the grants and the tuning again. A lake already at the current spec gets only the
/// latter.
pub async fn migrate(
    admin: &Admin,
    runner: &DuckDbRunner,
    name: &str,
) -> Result<MigrateReport, LakesError> {
    let client = admin.pg.postgres("ducklake-catalog lake").await?;
    let (lake, _) = find(admin, &client, name).await?;
    crate::lake::lock_lake(&client, name).await?;
    let pg = &admin.pg;
    let lake_db = pg.lake(name, "ducklake-catalog lake").await?;
    let from = spec_version(&lake_db).await?;
    let current = crate::versions::DUCKLAKE_SPEC_VERSION;
    if from != current {
        let job = Job::Migrate {
            conninfo: pg.lake_conninfo(name),
        };
        runner
            .run(&job, &tokio_util::sync::CancellationToken::new())
            .await
            .map_err(|e| LakesError::Migration {
                name: name.to_owned(),
                found: from.clone(),
                message: e.to_string(),
            })?;
        tracing::info!(lake = name, from = %from, to = current, "migrated the DuckLake catalog");
    }
    let to = spec_version(&lake_db).await?;
    crate::lake::guard(pg, &lake, &admin.settings.admin_user).await?;
    let tuning = crate::tuning::apply(&lake_db).await?;
    Ok(MigrateReport {
        name: lake.name,
        from,
        to,
        tuning,
    })
}

async fn spec_version(client: &tokio_postgres::Client) -> Result<String, PgError> {
    Ok(client
        .query_opt(
            "SELECT value FROM public.ducklake_metadata WHERE key = 'version' AND scope IS NULL",
            &[],
        )
        .await
        .map_err(PgError::sql("read the DuckLake spec version"))?
        .map(|r| r.get(0))
        .unwrap_or_default())
}

/// The lakes to serve now, from the registry (no writes): the running server's watch.
pub async fn serving_now(
    client: &tokio_postgres::Client,
    admin: &Admin,
) -> Result<Vec<LakeConfig>, PgError> {
    Ok(serving(admin, &registered(client).await?))
}
