//! `lake create|list|show|drop|migrate`: the lakes this catalog serves.

use std::io::{IsTerminal as _, Write as _};

use anyhow::Context as _;
use catalog_server::config::Config;
use catalog_server::lakes::{self, LakeListing, LakesError};
use clap::Subcommand;
use storage::DataPath;

use crate::commands::runtime;
use crate::{Failure, Format};

#[derive(Debug, Subcommand)]
pub(crate) enum LakeCommand {
    /// Create a lake bound to a data path (an S3 prefix or an absolute folder). The running
    /// server serves it within seconds and after every restart.
    Create {
        name: String,
        /// `s3://bucket/prefix/` or an absolute local folder; fixed for the lake's life.
        #[arg(long)]
        data_path: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Every lake: data path, DuckLake spec version and the clients that attach it, snapshots,
    /// tables, data files, bytes, last commit.
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// One lake in detail: the listing, its ATTACH string, its users and the catalog indexes.
    Show {
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Drop a lake created by command: its catalog, users and (with --delete-data) every
    /// object under its data path. Refuses without --yes.
    Drop {
        name: String,
        /// Also delete every object under the lake's data path.
        #[arg(long)]
        delete_data: bool,
        /// Really do it.
        #[arg(long)]
        yes: bool,
    },
    /// Upgrade a lake's catalog to the embedded DuckDB's DuckLake spec with DuckLake's own
    /// migration, then grant and tune it again.
    Migrate {
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

pub(crate) fn run(config: &Config, command: &LakeCommand) -> Result<(), Failure> {
    let rt = runtime()?;
    let admin = crate::commands::admin(&rt, config)?;
    match command {
        LakeCommand::Create {
            name,
            data_path,
            format,
        } => {
            let path = DataPath::parse(data_path)
                .map_err(|e| Failure::config(anyhow::anyhow!("--data-path: {e}")))?;
            let info = rt
                .block_on(lakes::create(
                    &admin,
                    &config.s3_settings(None),
                    &crate::commands::duckdb_runner(config)?,
                    name,
                    &path,
                ))
                .map_err(failure)?;
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"name": name, "data_path": info.data_path, "spec_version": info.spec_version})
                ),
                Format::Text => println!(
                    "created lake {name} on {} (DuckLake spec {}); `ducklake-catalog connect --lake {name}` shows how to attach",
                    info.data_path, info.spec_version
                ),
            }
            if config.pooler_enabled() {
                rt.block_on(wait_until_pooled(config, name));
            }
            Ok(())
        }
        LakeCommand::List { format } => {
            let all = rt.block_on(lakes::list(&admin)).map_err(failure)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string(&all).context("serialise")?),
                Format::Text => print_listings(&all),
            }
            Ok(())
        }
        LakeCommand::Show { name, format } => show(&rt, &admin, name, *format),
        LakeCommand::Drop {
            name,
            delete_data,
            yes,
        } => drop(&rt, (config, &admin), name, *delete_data, *yes),
        LakeCommand::Migrate { name, format } => {
            let runner = crate::commands::duckdb_runner(config)?;
            let r = rt
                .block_on(lakes::migrate(&admin, &runner, name))
                .map_err(failure)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string(&r).context("serialise")?),
                Format::Text => {
                    if r.from == r.to {
                        println!("lake {name} is at DuckLake spec {} already", r.to);
                    } else {
                        println!(
                            "migrated lake {name} from DuckLake spec {} to {}",
                            r.from, r.to
                        );
                    }
                    println!(
                        "tuning: {} indexes ({} created now)",
                        r.tuning.indexes.len(),
                        r.tuning.created.len()
                    );
                }
            }
            Ok(())
        }
    }
}

fn show(
    rt: &tokio::runtime::Runtime,
    admin: &catalog_server::Admin,
    name: &str,
    format: Format,
) -> Result<(), Failure> {
    let d = rt.block_on(lakes::show(admin, name)).map_err(failure)?;
    if format == Format::Json {
        println!("{}", serde_json::to_string(&d).context("serialise")?);
        return Ok(());
    }
    print_listings(std::slice::from_ref(&d.listing));
    println!();
    println!("attach     {};", d.attach);
    let users: Vec<String> = d
        .users
        .iter()
        .map(|u| format!("{} ({})", u.name, u.role))
        .collect();
    println!("users      {}", or_none(&users.join(", ")));
    println!("indexes    {}", or_none(&d.indexes.join(", ")));
    if !d.missing_indexes.is_empty() {
        println!(
            "missing    {} (built at the next start or by `ducklake-catalog lake migrate {name}`)",
            d.missing_indexes.join(", ")
        );
    }
    Ok(())
}

fn drop(
    rt: &tokio::runtime::Runtime,
    (config, admin): (&Config, &catalog_server::Admin),
    name: &str,
    delete_data: bool,
    yes: bool,
) -> Result<(), Failure> {
    let mut bar = Progress::new();
    let report = rt
        .block_on(lakes::drop(
            admin,
            &config.s3_settings(None),
            name,
            delete_data,
            yes,
            |d, l| {
                bar.show(d, l);
            },
        ))
        .map_err(failure)?;
    bar.finish();
    let users = if report.users_dropped.is_empty() {
        String::new()
    } else {
        format!(" and its users {}", report.users_dropped.join(", "))
    };
    match report.objects_deleted {
        Some(n) => println!(
            "dropped lake {name}{users}; deleted {n} objects under {}",
            report.data_path
        ),
        None => println!(
            "dropped lake {name}{users}; its objects under {} are kept",
            report.data_path
        ),
    }
    Ok(())
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "—"
    } else {
        s
    }
}

/// Mistakes in what was asked are usage errors (exit 2); the rest happen at run time.
fn failure(e: LakesError) -> Failure {
    match e {
        LakesError::BadName { .. }
        | LakesError::PathUnsafe { .. }
        | LakesError::Lake(catalog_server::lake::LakeError::RoleTaken { .. })
        | LakesError::Exists { .. }
        | LakesError::PathTaken { .. }
        | LakesError::PathIsBackup { .. }
        | LakesError::Unknown { .. }
        | LakesError::InConfig { .. }
        | LakesError::NotConfirmed { .. } => Failure::config(e),
        other => anyhow::Error::new(other).into(),
    }
}

fn print_listings(all: &[LakeListing]) {
    let header = [
        "lake",
        "data path",
        "spec",
        "clients",
        "snapshots",
        "tables",
        "files",
        "bytes",
        "last commit (UTC)",
    ];
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|l| {
            let s = l.summary.as_ref();
            let num = |f: fn(&catalog_server::inspect::Summary) -> i64| {
                s.map_or_else(|| "—".to_owned(), |s| f(s).to_string())
            };
            vec![
                l.name.clone(),
                l.data_path.clone(),
                l.spec_version.clone().unwrap_or_else(|| "—".into()),
                l.clients.unwrap_or("—").to_owned(),
                num(|s| s.snapshots),
                num(|s| s.tables),
                num(|s| s.data_files),
                num(|s| s.bytes),
                s.and_then(|s| s.last_commit.clone())
                    .or_else(|| l.note.clone())
                    .unwrap_or_else(|| "—".into()),
            ]
        })
        .collect();
    crate::inspect::print_table(&header, &rows);
}

/// A progress bar on a terminal (stderr), a line per thousand objects otherwise.
struct Progress {
    tty: bool,
    shown: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    fn show(&mut self, deleted: u64, listed: u64) {
        let mut err = std::io::stderr();
        if self.tty {
            let bar = crate::maintain::bar(deleted, listed);
            let _ = write!(err, "\rdeleting objects [{bar}] {deleted}/{listed}");
        } else {
            let _ = writeln!(err, "deleting objects: {deleted}/{listed}");
        }
        let _ = err.flush();
        self.shown = true;
    }

    fn finish(&self) {
        if self.tty && self.shown {
            eprintln!();
        }
    }
}

/// Waits (up to 30 s) until the running server's pooler serves `lake`, which clients are given
/// the port of: the lake watch brings it up within seconds, then the pooler is reloaded. No
/// running server: nothing to wait for (it serves the lake when it starts).
async fn wait_until_pooled(config: &Config, lake: &str) {
    let url = config.health_url("/readyz");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match health::get_json(&url, std::time::Duration::from_secs(2)).await {
            Err(_) => return,
            Ok((_, body)) => {
                let pooler = &body["pooler"];
                let serves = pooler["lakes"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|n| n == lake));
                if pooler.is_null() || serves {
                    return;
                }
            }
        }
        if std::time::Instant::now() > deadline {
            eprintln!(
                "ducklake-catalog: warning: the running server's connection pooler does not serve lake {lake} yet; clients get `SASL authentication failed` on the pooled port until it does (see its log)"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
