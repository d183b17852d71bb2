//! Native inspection of a lake's DuckLake catalog — snapshots, tables, files, usage — read with
//! SQL over the running server's Unix socket; no DuckDB needed. Only catalog spec versions this
//! release knows are read: another version is refused with the reason, never misread.

use serde::Serialize;

use crate::lake_session::PgHandle;
use crate::postgres::PgError;
use crate::settings::LakeConfig;

/// The DuckLake catalog spec versions whose tables this module knows.
pub const KNOWN_SPECS: &[&str] = &["1.0"];

/// Why a lake could not be inspected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    #[error("lake `{lake}` has DuckLake catalog spec {found}, which this release does not read (it knows {known}); upgrade ducklake-catalog")]
    UnknownSpec {
        lake: String,
        found: String,
        known: String,
    },
    #[error("lake `{lake}` holds no DuckLake catalog yet; start `ducklake-catalog serve` once to create it")]
    NoCatalog { lake: String },
    #[error("lake `{lake}` has no table `{table}` (tables: {known})")]
    UnknownTable {
        lake: String,
        table: String,
        known: String,
    },
    #[error("lake `{lake}` has no snapshot {snapshot} (snapshots {first} to {last} exist)")]
    UnknownSnapshot {
        lake: String,
        snapshot: i64,
        first: i64,
        last: i64,
    },
    #[error(transparent)]
    Local(#[from] crate::postgres::LocalError),
    #[error(transparent)]
    Postgres(#[from] PgError),
}

/// One snapshot: `snapshots --lake L`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub id: i64,
    /// UTC, RFC 3339.
    pub time: String,
    pub schema_version: i64,
    /// DuckLake's change list, e.g. `created_table:"main"."events"`, `inserted_into_table:1`.
    pub changes: Vec<String>,
    pub author: Option<String>,
    pub commit_message: Option<String>,
}

/// A table alive at a snapshot: `tables --lake L [--snapshot N]`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub id: i64,
    /// The snapshot that created it.
    pub created_at_snapshot: i64,
    pub data_files: i64,
    pub delete_files: i64,
    /// Rows in data files (deletes not subtracted; inlined rows not included).
    pub file_rows: i64,
    pub bytes: i64,
}

/// A live data file: `files --lake L --table T`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DataFile {
    pub id: i64,
    /// Absolute: the lake's data path, schema and table folders, and the file resolved.
    pub path: String,
    pub rows: i64,
    pub bytes: i64,
    pub begin_snapshot: i64,
    pub end_snapshot: Option<i64>,
    pub delete_files: Vec<DeleteFile>,
}

/// A delete file of a [`DataFile`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeleteFile {
    pub path: String,
    pub deleted_rows: i64,
    pub bytes: i64,
}

/// Space and pending work per table: `usage --lake L`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub schema: String,
    pub table: String,
    pub data_files: i64,
    pub data_bytes: i64,
    pub delete_files: i64,
    pub delete_bytes: i64,
    /// Rows still inlined in the catalog, waiting for `ducklake_flush_inlined_data`.
    pub inlined_rows: i64,
}

/// A file the catalog names, in any retained snapshot: `verify`, `orphans`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CatalogFile {
    /// `data` or `delete`.
    pub kind: &'static str,
    /// Absolute: the data path, schema and table folders, and the file.
    pub path: String,
    pub bytes: i64,
    /// Rows of a data file; deleted rows of a delete file.
    pub rows: i64,
}

/// A lake's size and activity at its latest snapshot: `lake list` and `lake show`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub snapshots: i64,
    pub tables: i64,
    pub data_files: i64,
    pub bytes: i64,
    /// UTC, RFC 3339; `None` before the first snapshot.
    pub last_commit: Option<String>,
}

/// What the metrics show of a lake's catalog ([`Catalog::figures`]).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Figures {
    pub snapshots: i64,
    /// The newest snapshot id: one more per commit.
    pub newest_snapshot_id: i64,
    /// Seconds since the newest snapshot; `None` without one.
    pub newest_snapshot_age_secs: Option<f64>,
    pub tables: i64,
    pub data_files: i64,
    pub delete_files: i64,
    pub data_bytes: i64,
    /// Rows inlined in the catalog, waiting for a flush.
    pub inlined_rows: i64,
}

/// A lake's catalog, opened for reading.
pub struct Catalog {
    client: tokio_postgres::Client,
    lake: String,
    data_path: String,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("lake", &self.lake)
            .finish_non_exhaustive()
    }
}

/// The condition "alive at snapshot `$1`" for a table with begin/end snapshots.
fn alive(alias: &str) -> String {
    format!("{alias}.begin_snapshot <= $1 AND ({alias}.end_snapshot IS NULL OR {alias}.end_snapshot > $1)")
}

impl Catalog {
    /// Connects to `lake`'s database (as its server role) and checks its spec version.
    pub async fn open(pg: &PgHandle, lake: &LakeConfig) -> Result<Catalog, InspectError> {
        Self::open_named(pg, &lake.name).await
    }

    /// [`Catalog::open`] by the lake's name (a lake created while the server runs).
    pub async fn open_named(pg: &PgHandle, lake: &str) -> Result<Catalog, InspectError> {
        let client = pg.lake(lake, "ducklake-catalog inspect").await?;
        let sql = PgError::sql;
        let exists: Option<String> = client
            .query_one(
                "SELECT pg_catalog.to_regclass('public.ducklake_metadata')::text",
                &[],
            )
            .await
            .map_err(sql("look for the DuckLake catalog"))?
            .get(0);
        if exists.is_none() {
            return Err(InspectError::NoCatalog {
                lake: lake.to_owned(),
            });
        }
        let rows = client
            .query(
                "SELECT key, value FROM public.ducklake_metadata WHERE key IN ('version', 'data_path') AND scope IS NULL",
                &[],
            )
            .await
            .map_err(sql("read ducklake_metadata"))?;
        let get = |k: &str| {
            rows.iter()
                .find(|r| r.get::<_, String>(0) == k)
                .map(|r| r.get::<_, String>(1))
                .unwrap_or_default()
        };
        let version = get("version");
        if !KNOWN_SPECS.contains(&version.as_str()) {
            return Err(InspectError::UnknownSpec {
                lake: lake.to_owned(),
                found: version,
                known: KNOWN_SPECS.join(", "),
            });
        }
        Ok(Catalog {
            client,
            lake: lake.to_owned(),
            data_path: get("data_path"),
        })
    }

    async fn latest_snapshot(&self) -> Result<(i64, i64), InspectError> {
        let row = self
            .client
            .query_one(
                "SELECT min(snapshot_id), max(snapshot_id) FROM public.ducklake_snapshot",
                &[],
            )
            .await
            .map_err(PgError::sql("read the snapshots"))?;
        Ok((row.get(0), row.get(1)))
    }

    /// Counts of snapshots, live tables and data files, live bytes, and the latest commit.
    pub async fn summary(&self) -> Result<Summary, InspectError> {
        let row = self
            .client
            .query_one(
                "SELECT (SELECT count(*) FROM public.ducklake_snapshot),
                        (SELECT count(*) FROM public.ducklake_table WHERE end_snapshot IS NULL),
                        (SELECT count(*) FROM public.ducklake_data_file WHERE end_snapshot IS NULL),
                        (SELECT coalesce(sum(file_size_bytes), 0)::bigint FROM public.ducklake_data_file WHERE end_snapshot IS NULL),
                        (SELECT to_char(max(snapshot_time) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM public.ducklake_snapshot)",
                &[],
            )
            .await
            .map_err(PgError::sql("summarise the catalog"))?;
        Ok(Summary {
            snapshots: row.get(0),
            tables: row.get(1),
            data_files: row.get(2),
            bytes: row.get(3),
            last_commit: row.get(4),
        })
    }

    /// Counts for the metrics, in one statement plus the inlined rows.
    pub async fn figures(&mut self) -> Result<Figures, InspectError> {
        let row = self
            .client
            .query_one(
                "SELECT (SELECT count(*) FROM public.ducklake_snapshot),
                        (SELECT coalesce(max(snapshot_id), 0)::bigint FROM public.ducklake_snapshot),
                        (SELECT extract(epoch FROM pg_catalog.now() - max(snapshot_time))::float8 FROM public.ducklake_snapshot),
                        (SELECT count(*) FROM public.ducklake_table WHERE end_snapshot IS NULL),
                        (SELECT count(*) FROM public.ducklake_data_file WHERE end_snapshot IS NULL),
                        (SELECT count(*) FROM public.ducklake_delete_file WHERE end_snapshot IS NULL),
                        (SELECT coalesce(sum(file_size_bytes), 0)::bigint FROM public.ducklake_data_file WHERE end_snapshot IS NULL)",
                &[],
            )
            .await
            .map_err(PgError::sql("count the catalog's snapshots, tables and files"))?;
        let inlined_rows =
            crate::lake_session::inlined_rows(&mut self.client, &self.lake, None).await?;
        Ok(Figures {
            snapshots: row.get(0),
            newest_snapshot_id: row.get(1),
            newest_snapshot_age_secs: row.get(2),
            tables: row.get(3),
            data_files: row.get(4),
            delete_files: row.get(5),
            data_bytes: row.get(6),
            inlined_rows,
        })
    }

    /// The lake's data path as the catalog recorded it.
    pub fn data_path(&self) -> &str {
        &self.data_path
    }

    /// Every data and delete file of every retained snapshot, with absolute paths.
    pub async fn all_files(&self) -> Result<Vec<CatalogFile>, InspectError> {
        let rows = self
            .client
            .query(
                "WITH s AS (SELECT DISTINCT ON (schema_id) schema_id, path, path_is_relative
                            FROM public.ducklake_schema ORDER BY schema_id, begin_snapshot DESC),
                      t AS (SELECT DISTINCT ON (table_id) table_id, schema_id, path, path_is_relative
                            FROM public.ducklake_table ORDER BY table_id, begin_snapshot DESC)
                 SELECT 'data', f.path, f.path_is_relative, f.file_size_bytes, f.record_count,
                        t.path, t.path_is_relative, s.path, s.path_is_relative
                 FROM public.ducklake_data_file f JOIN t USING (table_id) JOIN s ON s.schema_id = t.schema_id
                 UNION ALL
                 SELECT 'delete', f.path, f.path_is_relative, f.file_size_bytes, f.delete_count,
                        t.path, t.path_is_relative, s.path, s.path_is_relative
                 FROM public.ducklake_delete_file f JOIN t USING (table_id) JOIN s ON s.schema_id = t.schema_id",
                &[],
            )
            .await
            .map_err(PgError::sql("read the catalog's files"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let schema_dir = resolve(&self.data_path, r.get(7), r.get(8));
                let table_dir = resolve(&schema_dir, r.get(5), r.get(6));
                CatalogFile {
                    kind: if r.get::<_, &str>(0) == "data" {
                        "data"
                    } else {
                        "delete"
                    },
                    path: resolve(&table_dir, r.get(1), r.get(2)),
                    bytes: r.get::<_, Option<i64>>(3).unwrap_or_default(),
                    rows: r.get::<_, Option<i64>>(4).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Files DuckLake scheduled for deletion (expired, not yet cleaned up), absolute.
    pub async fn scheduled_files(&self) -> Result<Vec<String>, InspectError> {
        let rows = self
            .client
            .query(
                "SELECT path, path_is_relative FROM public.ducklake_files_scheduled_for_deletion",
                &[],
            )
            .await
            .map_err(PgError::sql("read the files scheduled for deletion"))?;
        Ok(rows
            .iter()
            .map(|r| resolve(&self.data_path, r.get(0), r.get(1)))
            .collect())
    }

    /// Every snapshot, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>, InspectError> {
        let rows = self
            .client
            .query(
                "SELECT s.snapshot_id,
                        to_char(s.snapshot_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        s.schema_version, c.changes_made, c.author, c.commit_message
                 FROM public.ducklake_snapshot s
                 LEFT JOIN public.ducklake_snapshot_changes c USING (snapshot_id)
                 ORDER BY s.snapshot_id",
                &[],
            )
            .await
            .map_err(PgError::sql("read the snapshots"))?;
        Ok(rows
            .iter()
            .map(|r| Snapshot {
                id: r.get(0),
                time: r.get(1),
                schema_version: r.get(2),
                changes: split_changes(r.get::<_, Option<String>>(3).as_deref()),
                author: r.get(4),
                commit_message: r.get(5),
            })
            .collect())
    }

    /// The tables alive at `snapshot` (the latest when `None`), by schema and name.
    pub async fn tables(&self, snapshot: Option<i64>) -> Result<Vec<Table>, InspectError> {
        let (first, last) = self.latest_snapshot().await?;
        let at = snapshot.unwrap_or(last);
        if at < first || at > last {
            return Err(InspectError::UnknownSnapshot {
                lake: self.lake.clone(),
                snapshot: at,
                first,
                last,
            });
        }
        let sql = format!(
            "SELECT s.schema_name, t.table_name, t.table_id, t.begin_snapshot,
                    (SELECT count(*) FROM public.ducklake_data_file f WHERE f.table_id = t.table_id AND {f}),
                    (SELECT count(*) FROM public.ducklake_delete_file d WHERE d.table_id = t.table_id AND {d}),
                    (SELECT coalesce(sum(f.record_count), 0)::bigint FROM public.ducklake_data_file f WHERE f.table_id = t.table_id AND {f}),
                    (SELECT coalesce(sum(f.file_size_bytes), 0)::bigint FROM public.ducklake_data_file f WHERE f.table_id = t.table_id AND {f})
             FROM public.ducklake_table t JOIN public.ducklake_schema s ON s.schema_id = t.schema_id AND {s}
             WHERE {t}
             ORDER BY 1, 2",
            f = alive("f"),
            d = alive("d"),
            s = alive("s"),
            t = alive("t"),
        );
        let rows = self
            .client
            .query(&sql, &[&at])
            .await
            .map_err(PgError::sql("read the tables"))?;
        Ok(rows
            .iter()
            .map(|r| Table {
                schema: r.get(0),
                name: r.get(1),
                id: r.get(2),
                created_at_snapshot: r.get(3),
                data_files: r.get(4),
                delete_files: r.get(5),
                file_rows: r.get(6),
                bytes: r.get(7),
            })
            .collect())
    }

    /// The current table named `table` (`name` or `schema.name`): its id and folder.
    async fn find_table(&self, table: &str) -> Result<(i64, String), InspectError> {
        let (schema, name) = table.split_once('.').unwrap_or(("main", table));
        let (_, last) = self.latest_snapshot().await?;
        let sql = format!(
            "SELECT t.table_id, s.path, s.path_is_relative, t.path, t.path_is_relative
             FROM public.ducklake_table t JOIN public.ducklake_schema s ON s.schema_id = t.schema_id
             WHERE {} AND s.schema_name = $2 AND t.table_name = $3",
            alive("t")
        );
        let row = self
            .client
            .query_opt(&sql, &[&last, &schema, &name])
            .await
            .map_err(PgError::sql("find the table"))?;
        let Some(row) = row else {
            let known = self
                .tables(None)
                .await?
                .iter()
                .map(|t| format!("{}.{}", t.schema, t.name))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(InspectError::UnknownTable {
                lake: self.lake.clone(),
                table: table.to_owned(),
                known,
            });
        };
        let schema_dir = resolve(&self.data_path, row.get(1), row.get(2));
        let table_dir = resolve(&schema_dir, row.get(3), row.get(4));
        Ok((row.get(0), table_dir))
    }

    /// The live data files of `table` with their delete files, oldest first.
    pub async fn files(&self, table: &str) -> Result<Vec<DataFile>, InspectError> {
        let (id, dir) = self.find_table(table).await?;
        let rows = self
            .client
            .query(
                "SELECT data_file_id, path, path_is_relative, record_count, file_size_bytes, begin_snapshot, end_snapshot
                 FROM public.ducklake_data_file WHERE table_id = $1 AND end_snapshot IS NULL ORDER BY data_file_id",
                &[&id],
            )
            .await
            .map_err(PgError::sql("read the data files"))?;
        let deletes = self
            .client
            .query(
                "SELECT data_file_id, path, path_is_relative, delete_count, file_size_bytes
                 FROM public.ducklake_delete_file WHERE table_id = $1 AND end_snapshot IS NULL ORDER BY delete_file_id",
                &[&id],
            )
            .await
            .map_err(PgError::sql("read the delete files"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let file_id: i64 = r.get(0);
                DataFile {
                    id: file_id,
                    path: resolve(&dir, r.get(1), r.get(2)),
                    rows: r.get(3),
                    bytes: r.get(4),
                    begin_snapshot: r.get(5),
                    end_snapshot: r.get(6),
                    delete_files: deletes
                        .iter()
                        .filter(|d| d.get::<_, i64>(0) == file_id)
                        .map(|d| DeleteFile {
                            path: resolve(&dir, d.get(1), d.get(2)),
                            deleted_rows: d.get(3),
                            bytes: d.get(4),
                        })
                        .collect(),
                }
            })
            .collect())
    }

    /// Files, bytes and inlined rows pending flush, per current table.
    pub async fn usage(&mut self) -> Result<Vec<Usage>, InspectError> {
        let mut out = Vec::new();
        for t in self.tables(None).await? {
            let deletes = self
                .client
                .query_one(
                    "SELECT count(*), coalesce(sum(file_size_bytes), 0)::bigint FROM public.ducklake_delete_file
                     WHERE table_id = $1 AND end_snapshot IS NULL",
                    &[&t.id],
                )
                .await
                .map_err(PgError::sql("read the delete files"))?;
            let inlined_rows =
                crate::lake_session::inlined_rows(&mut self.client, &self.lake, Some(t.id)).await?;
            out.push(Usage {
                schema: t.schema,
                table: t.name,
                data_files: t.data_files,
                data_bytes: t.bytes,
                delete_files: deletes.get(0),
                delete_bytes: deletes.get(1),
                inlined_rows,
            });
        }
        Ok(out)
    }
}

/// `path` under `base` when relative (DuckLake joins them as strings; folders end in `/`).
fn resolve(base: &str, path: Option<String>, relative: Option<bool>) -> String {
    let path = path.unwrap_or_default();
    if relative.unwrap_or(true) {
        format!("{base}{path}")
    } else {
        path
    }
}

/// DuckLake's comma-separated change list; commas inside quoted names do not split.
fn split_changes(raw: Option<&str>) -> Vec<String> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in raw.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_split_at_commas_outside_quotes() {
        assert_eq!(
            split_changes(Some(r#"created_table:"main"."a,b",inserted_into_table:3"#)),
            vec![r#"created_table:"main"."a,b""#, "inserted_into_table:3"]
        );
        assert!(split_changes(None).is_empty());
    }

    #[test]
    fn relative_paths_resolve_under_their_folder() {
        assert_eq!(
            resolve("s3://b/lake/main/t/", Some("f.parquet".into()), Some(true)),
            "s3://b/lake/main/t/f.parquet"
        );
        assert_eq!(
            resolve("s3://b/lake/", Some("s3://x/y.parquet".into()), Some(false)),
            "s3://x/y.parquet"
        );
    }
}
