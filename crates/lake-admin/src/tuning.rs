//! The catalog tuned for DuckLake's own queries: indexes DuckLake does not create, and
//! autovacuum settings for the tables every commit rewrites. Applied at every lake bring-up and
//! by `lake migrate`; idempotent; only `CREATE INDEX` and table storage parameters — DuckLake's
//! own columns, keys and rows are never changed.
//!
//! Where each index comes from (DuckLake 1.5.5's metadata manager, confirmed per statement with
//! `pg_stat_statements` by `cargo xtask bench catalog`, see docs/tuning.md):
//!
//! - every filtered scan reads `ducklake_file_column_stats WHERE column_id = … AND table_id = …`
//!   through `postgres_query` — without an index a sequential scan of every file's stats of every
//!   table (DuckLake PR #1147: 102 ms → 11 ms at 6M rows);
//! - the file list of a scan: `ducklake_data_file` and `ducklake_delete_file` by `table_id`
//!   within a snapshot range;
//! - schema and stats loads by `table_id`: `ducklake_column`, `ducklake_table_column_stats`,
//!   `ducklake_inlined_data_tables`, `ducklake_file_partition_value`.
//!
//! Session and server settings (JIT off, `idle_in_transaction_session_timeout`, autovacuum
//! naptime, `max_connections` sized to memory, `pg_stat_statements`) are in the managed
//! `postgresql.conf` (`postgres::cluster`).

use serde::Serialize;

use crate::postgres::{quote_ident, PgError};

/// An index DuckLake's queries need and DuckLake does not create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogIndex {
    pub name: &'static str,
    pub table: &'static str,
    pub columns: &'static [&'static str],
    /// The query shape it serves, for docs/tuning.md and `lake show`.
    pub serves: &'static str,
}

/// Every index the tuning adds, in the order they are built.
pub const INDEXES: &[CatalogIndex] = &[
    CatalogIndex {
        name: "ducklake_catalog_file_column_stats_table_column",
        table: "ducklake_file_column_stats",
        columns: &["table_id", "column_id"],
        serves: "per-column file stats of a filtered scan (`WHERE column_id = … AND table_id = …`)",
    },
    CatalogIndex {
        name: "ducklake_catalog_data_file_table_snapshot",
        table: "ducklake_data_file",
        columns: &["table_id", "begin_snapshot"],
        serves: "a table's data files at a snapshot",
    },
    CatalogIndex {
        name: "ducklake_catalog_delete_file_table_snapshot",
        table: "ducklake_delete_file",
        columns: &["table_id", "begin_snapshot"],
        serves: "a table's delete files at a snapshot",
    },
    CatalogIndex {
        name: "ducklake_catalog_column_table",
        table: "ducklake_column",
        columns: &["table_id", "begin_snapshot"],
        serves: "a table's columns at a snapshot",
    },
    CatalogIndex {
        name: "ducklake_catalog_table_column_stats_table",
        table: "ducklake_table_column_stats",
        columns: &["table_id"],
        serves: "a table's global column stats, read and rewritten on each commit",
    },
    CatalogIndex {
        name: "ducklake_catalog_file_partition_value_table_file",
        table: "ducklake_file_partition_value",
        columns: &["table_id", "data_file_id"],
        serves: "partition values of a table's files (partition pruning)",
    },
    CatalogIndex {
        name: "ducklake_catalog_inlined_data_tables_table",
        table: "ducklake_inlined_data_tables",
        columns: &["table_id"],
        serves: "the inlined-data tables of a table",
    },
];

/// Tables rewritten on every commit (stats rows are updated in place, snapshots appended):
/// vacuum them after a fixed number of changed rows instead of a fraction of the table, and
/// leave room on each page for HOT updates.
pub const CHURNING_TABLES: &[&str] = &[
    "ducklake_table_stats",
    "ducklake_table_column_stats",
    "ducklake_snapshot",
    "ducklake_snapshot_changes",
];

/// The storage parameters set on each of [`CHURNING_TABLES`].
pub const CHURN_SETTINGS: &str = "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 1000, fillfactor = 80";

/// What the tuning found or did in one lake.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TuningReport {
    /// Indexes present and valid (created now or before).
    pub indexes: Vec<String>,
    /// Indexes created by this run.
    pub created: Vec<String>,
    /// Indexes skipped because this spec version lacks the table or a column.
    pub skipped: Vec<String>,
}

/// Applies the tuning to a lake's catalog; `client` is a superuser session in the lake's
/// database. Indexes are built `CONCURRENTLY`, so a large existing lake keeps serving commits
/// meanwhile; an invalid index left by an interrupted build is dropped and built again.
pub async fn apply(client: &tokio_postgres::Client) -> Result<TuningReport, PgError> {
    let mut report = TuningReport::default();
    for index in INDEXES {
        if !has_columns(client, index.table, index.columns).await? {
            report.skipped.push(index.name.to_owned());
            continue;
        }
        match index_valid(client, index.name).await? {
            Some(true) => {
                report.indexes.push(index.name.to_owned());
                continue;
            }
            Some(false) => {
                tracing::warn!(
                    index = index.name,
                    "dropping an invalid index left by an interrupted build"
                );
                client
                    .batch_execute(&format!(
                        "DROP INDEX CONCURRENTLY IF EXISTS public.{}",
                        quote_ident(index.name)
                    ))
                    .await
                    .map_err(PgError::sql(format!(
                        "drop the invalid index {}",
                        index.name
                    )))?;
            }
            None => {}
        }
        // One statement per call: CONCURRENTLY cannot run inside a transaction block.
        client
            .batch_execute(&create_index_sql(index))
            .await
            .map_err(PgError::sql(format!("create index {}", index.name)))?;
        tracing::info!(
            index = index.name,
            table = index.table,
            "created a catalog index"
        );
        report.indexes.push(index.name.to_owned());
        report.created.push(index.name.to_owned());
    }
    for table in CHURNING_TABLES {
        if has_columns(client, table, &[]).await? {
            client
                .batch_execute(&format!(
                    "ALTER TABLE public.{} SET ({CHURN_SETTINGS})",
                    quote_ident(table)
                ))
                .await
                .map_err(PgError::sql(format!(
                    "set autovacuum parameters of {table}"
                )))?;
        }
    }
    Ok(report)
}

/// The tuning's indexes present and valid in a lake, by name.
pub async fn present(client: &tokio_postgres::Client) -> Result<Vec<String>, PgError> {
    let names: Vec<&str> = INDEXES.iter().map(|i| i.name).collect();
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE c.relname::text = ANY($1::text[]) AND i.indisvalid ORDER BY 1",
            &[&names],
        )
        .await
        .map_err(PgError::sql("list the catalog indexes"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn create_index_sql(index: &CatalogIndex) -> String {
    let columns: Vec<String> = index.columns.iter().map(|c| quote_ident(c)).collect();
    format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON public.{} ({})",
        quote_ident(index.name),
        quote_ident(index.table),
        columns.join(", ")
    )
}

/// Whether `public.table` exists with every one of `columns`.
async fn has_columns(
    client: &tokio_postgres::Client,
    table: &str,
    columns: &[&str],
) -> Result<bool, PgError> {
    let wanted: Vec<&str> = columns.to_vec();
    let row = client
        .query_one(
            "SELECT to_regclass('public.' || quote_ident($1::text)) IS NOT NULL,
                    (SELECT count(*) FROM information_schema.columns
                      WHERE table_schema = 'public' AND table_name::text = $1::text
                        AND column_name::text = ANY($2::text[]))",
            &[&table, &wanted],
        )
        .await
        .map_err(PgError::sql(format!("look up table {table}")))?;
    let exists: bool = row.get(0);
    let found: i64 = row.get(1);
    Ok(exists && usize::try_from(found).is_ok_and(|n| n == columns.len()))
}

/// `Some(valid)` when an index of that name exists.
async fn index_valid(client: &tokio_postgres::Client, name: &str) -> Result<Option<bool>, PgError> {
    Ok(client
        .query_opt(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relname = $1",
            &[&name],
        )
        .await
        .map_err(PgError::sql(format!("look up index {name}")))?
        .map(|r| r.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tuning_only_adds_indexes_and_storage_parameters() {
        for index in INDEXES {
            let sql = create_index_sql(index);
            assert!(
                sql.starts_with("CREATE INDEX CONCURRENTLY IF NOT EXISTS \"ducklake_catalog_"),
                "{sql}"
            );
            assert!(index.name.len() <= 63, "{} is too long", index.name);
            assert!(index.table.starts_with("ducklake_"), "{}", index.table);
        }
        assert!(!CHURN_SETTINGS.to_lowercase().contains("column"));
    }

    #[test]
    fn index_names_are_unique() {
        let mut names: Vec<&str> = INDEXES.iter().map(|i| i.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), INDEXES.len());
    }
}
