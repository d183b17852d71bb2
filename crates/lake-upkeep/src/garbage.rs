//! Catalog garbage DuckLake leaves behind, found and removed in one transaction, only where it is
//! provably unreferenced (observed with DuckDB 1.5.5: these stay until every snapshot that saw
//! the table expires, and many lakes never expire snapshots):
//!
//! - global stats rows (`ducklake_table_stats`, `ducklake_table_column_stats`) of tables with
//!   no live version: they describe a table's *current* contents, and DuckLake reads
//!   `ducklake_table_column_stats` in full on every commit attempt;
//! - `ducklake_file_column_stats` rows of data files the catalog no longer has;
//! - inlined-data tables with no rows at all whose table has no live version, or that an
//!   inlined-data table of a newer schema version of the same table superseded (nothing can be
//!   read from an empty table, at any snapshot);
//! - duplicate rows in `ducklake_files_scheduled_for_deletion`.
//!
//! Tables that shrank are vacuumed right after (and rewritten when the garbage was most of
//! them), so the next commit reads neither dead rows nor empty pages.
//!
//! Time travel is unaffected: data files, their stats, and non-empty inlined rows of dropped
//! tables stay until DuckLake's own `ducklake_expire_snapshots` removes them.

use serde::Serialize;

use crate::postgres::{quote_ident, PgError};

/// What was (or, on a dry run, would be) removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GarbageReport {
    pub table_stats_rows: u64,
    pub table_column_stats_rows: u64,
    pub file_column_stats_rows: u64,
    pub inlined_tables: u64,
    pub scheduled_duplicates: u64,
}

impl GarbageReport {
    /// Everything removed, in rows and tables.
    pub fn total(&self) -> u64 {
        self.table_stats_rows
            + self.table_column_stats_rows
            + self.file_column_stats_rows
            + self.inlined_tables
            + self.scheduled_duplicates
    }
}

/// Deleted rows stay in the table as dead tuples until vacuumed, and DuckLake reads
/// `ducklake_table_column_stats` in full on every commit: vacuum what shrank now rather than
/// when autovacuum gets to it, so commits are fast again at once.
async fn vacuum_shrunk(client: &tokio_postgres::Client, r: &GarbageReport) -> Result<(), PgError> {
    let shrunk = [
        ("ducklake_table_stats", r.table_stats_rows),
        ("ducklake_table_column_stats", r.table_column_stats_rows),
        ("ducklake_file_column_stats", r.file_column_stats_rows),
        (
            "ducklake_files_scheduled_for_deletion",
            r.scheduled_duplicates,
        ),
        ("ducklake_inlined_data_tables", r.inlined_tables),
    ];
    for (table, removed) in shrunk {
        if removed == 0 {
            continue;
        }
        let name = format!("public.{}", quote_ident(table));
        // One statement per call: VACUUM cannot run in a transaction block.
        client
            .batch_execute(&format!("VACUUM (ANALYZE) {name}"))
            .await
            .map_err(PgError::sql(format!("vacuum {table}")))?;
        // VACUUM frees the rows but keeps the pages, which a full read still scans. When the
        // garbage was most of the table, rewrite what is left (small by then), waiting for a
        // client's lock 5 s at most: the plain VACUUM above already made it correct.
        let live: f64 = client
            .query_one(
                "SELECT greatest(reltuples, 0)::float8 FROM pg_catalog.pg_class WHERE oid = $1::text::regclass",
                &[&name],
            )
            .await
            .map_err(PgError::sql(format!("size up {table}")))?
            .get(0);
        #[allow(clippy::cast_precision_loss)] // a row count compared with an estimate
        let mostly_garbage = removed as f64 > live;
        if mostly_garbage {
            let rewrite = client
                .batch_execute(&format!(
                    "SET lock_timeout = '5s'; VACUUM (FULL, ANALYZE) {name}; RESET lock_timeout"
                ))
                .await;
            if let Err(e) = rewrite {
                let _ = client.batch_execute("RESET lock_timeout").await;
                tracing::warn!(table, error = %e, "could not rewrite a table that was mostly garbage; autovacuum reuses its space");
            }
        }
    }
    Ok(())
}

const NOT_LIVE: &str = "NOT EXISTS (SELECT 1 FROM public.ducklake_table t
                                    WHERE t.table_id = s.table_id AND t.end_snapshot IS NULL)";

/// Removes the catalog garbage of one lake; `client` is a session inside the lake as its server
/// role ([`crate::lake_session`]). Inlined-data tables are dropped only when
/// [`crate::lake_session::inlined_data_table`] confirms DuckLake made them. With `dry_run` the
/// same statements run and are rolled back, so the counts are exact.
pub async fn collect(
    client: &mut tokio_postgres::Client,
    lake: &str,
    dry_run: bool,
) -> Result<GarbageReport, PgError> {
    let sql = PgError::sql;
    let tx = client
        .transaction()
        .await
        .map_err(sql("begin the garbage collection"))?;
    // Wait for a client's lock at most briefly: the next job tries again.
    tx.batch_execute("SET LOCAL lock_timeout = '5s'")
        .await
        .map_err(sql("set the lock timeout"))?;
    let mut r = GarbageReport {
        table_stats_rows: tx
            .execute(
                &format!("DELETE FROM public.ducklake_table_stats s WHERE {NOT_LIVE}"),
                &[],
            )
            .await
            .map_err(sql("remove table stats of dropped tables"))?,
        table_column_stats_rows: tx
            .execute(
                &format!("DELETE FROM public.ducklake_table_column_stats s WHERE {NOT_LIVE}"),
                &[],
            )
            .await
            .map_err(sql("remove column stats of dropped tables"))?,
        file_column_stats_rows: tx
            .execute(
                "DELETE FROM public.ducklake_file_column_stats s WHERE NOT EXISTS (
                     SELECT 1 FROM public.ducklake_data_file d WHERE d.data_file_id = s.data_file_id)",
                &[],
            )
            .await
            .map_err(sql("remove file stats of removed files"))?,
        scheduled_duplicates: tx
            .execute(
                "DELETE FROM public.ducklake_files_scheduled_for_deletion a
                 USING public.ducklake_files_scheduled_for_deletion b
                 WHERE a.data_file_id = b.data_file_id AND a.path = b.path AND a.ctid > b.ctid",
                &[],
            )
            .await
            .map_err(sql("remove duplicate deletion entries"))?,
        inlined_tables: 0,
    };
    let candidates = tx
        .query(
            "SELECT i.table_name::text FROM public.ducklake_inlined_data_tables i
             WHERE to_regclass('public.' || pg_catalog.quote_ident(i.table_name)) IS NOT NULL
               AND (NOT EXISTS (SELECT 1 FROM public.ducklake_table t
                                WHERE t.table_id = i.table_id AND t.end_snapshot IS NULL)
                    OR i.schema_version < (SELECT max(n.schema_version) FROM public.ducklake_inlined_data_tables n
                                           WHERE n.table_id = i.table_id))",
            &[],
        )
        .await
        .map_err(sql("list the inlined-data tables"))?;
    for row in candidates {
        let name: String = row.get(0);
        if !crate::lake_session::inlined_data_table(&tx, lake, &name).await? {
            continue;
        }
        let table = format!("public.{}", quote_ident(&name));
        let empty: bool = tx
            .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {table})"), &[])
            .await
            .map_err(PgError::sql(format!("look into {name}")))?
            .get(0);
        if !empty {
            continue;
        }
        tx.execute(
            "DELETE FROM public.ducklake_inlined_data_tables WHERE table_name = $1",
            &[&name],
        )
        .await
        .map_err(PgError::sql(format!("unregister {name}")))?;
        tx.batch_execute(&format!("DROP TABLE {table}"))
            .await
            .map_err(PgError::sql(format!("drop {name}")))?;
        r.inlined_tables += 1;
    }
    if dry_run {
        tx.rollback().await.map_err(sql("roll back the dry run"))?;
    } else {
        tx.commit()
            .await
            .map_err(sql("commit the garbage collection"))?;
        vacuum_shrunk(client, &r).await?;
    }
    Ok(r)
}
