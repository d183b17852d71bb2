//! `snapshots`, `tables`, `files`, `usage`: a lake's catalog read natively (no DuckDB).

use anyhow::Context as _;
use catalog_server::config::Config;
use catalog_server::inspect::{Catalog, InspectError};
use serde::Serialize;

use crate::commands::runtime;
use crate::{Failure, Format};

/// What to show of one lake.
#[derive(Debug, Clone)]
pub(crate) enum View {
    Snapshots,
    Tables { snapshot: Option<i64> },
    Files { table: String },
    Usage,
}

pub(crate) fn run(config: &Config, lake: &str, view: &View, format: Format) -> Result<(), Failure> {
    let lake = config.lake(lake).map_err(Failure::config)?;
    runtime()?.block_on(async {
        let admin = catalog_server::admin::admin(config)
            .await
            .map_err(anyhow::Error::new)?;
        let mut catalog = Catalog::open(&admin.pg, lake).await.map_err(failure)?;
        show(&mut catalog, view, format).await
    })
}

async fn show(catalog: &mut Catalog, view: &View, format: Format) -> Result<(), Failure> {
    match view {
        View::Snapshots => {
            let all = catalog.snapshots().await.map_err(failure)?;
            print(
                &all,
                format,
                &["snapshot", "time (UTC)", "changes", "author", "message"],
                |s| {
                    vec![
                        s.id.to_string(),
                        s.time.clone(),
                        s.changes.join(", "),
                        s.author.clone().unwrap_or_default(),
                        s.commit_message.clone().unwrap_or_default(),
                    ]
                },
            )
        }
        View::Tables { snapshot } => {
            let all = catalog.tables(*snapshot).await.map_err(failure)?;
            print(
                &all,
                format,
                &[
                    "table",
                    "id",
                    "since snapshot",
                    "data files",
                    "delete files",
                    "rows in files",
                    "bytes",
                ],
                |t| {
                    vec![
                        format!("{}.{}", t.schema, t.name),
                        t.id.to_string(),
                        t.created_at_snapshot.to_string(),
                        t.data_files.to_string(),
                        t.delete_files.to_string(),
                        t.file_rows.to_string(),
                        t.bytes.to_string(),
                    ]
                },
            )
        }
        View::Files { table } => {
            let all = catalog.files(table).await.map_err(failure)?;
            print(
                &all,
                format,
                &["path", "rows", "bytes", "snapshots", "delete files"],
                |f| {
                    vec![
                        f.path.clone(),
                        f.rows.to_string(),
                        f.bytes.to_string(),
                        format!(
                            "{}..{}",
                            f.begin_snapshot,
                            f.end_snapshot.map_or(String::new(), |e| e.to_string())
                        ),
                        f.delete_files
                            .iter()
                            .map(|d| format!("{} ({} rows)", d.path, d.deleted_rows))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ]
                },
            )
        }
        View::Usage => {
            let all = catalog.usage().await.map_err(failure)?;
            print(
                &all,
                format,
                &[
                    "table",
                    "data files",
                    "data bytes",
                    "delete files",
                    "delete bytes",
                    "inlined rows",
                ],
                |u| {
                    vec![
                        format!("{}.{}", u.schema, u.table),
                        u.data_files.to_string(),
                        u.data_bytes.to_string(),
                        u.delete_files.to_string(),
                        u.delete_bytes.to_string(),
                        u.inlined_rows.to_string(),
                    ]
                },
            )
        }
    }
}

fn failure(e: InspectError) -> Failure {
    anyhow::Error::new(e).into()
}

/// JSON for scripts, an aligned table for people.
fn print<T: Serialize>(
    rows: &[T],
    format: Format,
    header: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> Result<(), Failure> {
    if format == Format::Json {
        println!("{}", serde_json::to_string(rows).context("serialise")?);
        return Ok(());
    }
    let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
    print_table(header, &body);
    Ok(())
}

/// Prints `body` under `header`, each column as wide as its widest cell.
pub(crate) fn print_table(header: &[&str], body: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in body {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    println!("{}", line(&header));
    for row in body {
        println!("{}", line(row));
    }
}
