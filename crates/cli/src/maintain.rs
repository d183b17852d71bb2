//! `maintain`, `verify`, `orphans`, `gc`: a lake's upkeep, run now beside the server.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use catalog_server::config::Config;
use catalog_server::datafiles::{self, FilesError};
use catalog_server::maintenance::{self, JobContext, Outcome};
use tokio_util::sync::CancellationToken;

use crate::commands::runtime;
use crate::{Command, Failure, Format};

/// Runs `maintain`, `verify`, `orphans` or `gc`.
pub(crate) fn run(config: &Config, command: &Command) -> Result<(), Failure> {
    match command {
        Command::Maintain {
            lake,
            dry_run,
            format,
        } => maintain(config, lake, *dry_run, *format),
        Command::Verify { lake, deep, format } => verify(config, lake, *deep, *format),
        Command::Orphans { lake, format } => orphans(config, lake, *format),
        Command::Gc {
            lake,
            older_than,
            yes,
            format,
        } => gc(config, lake, *older_than, *yes, *format),
        _ => unreachable!("commands.rs sends only the upkeep commands here"),
    }
}

/// `maintain --lake L [--dry-run]`: one maintenance job now, as the schedule would run it.
fn maintain(config: &Config, lake: &str, dry_run: bool, format: Format) -> Result<(), Failure> {
    let lake = config.lake(lake).map_err(Failure::config)?.clone();
    runtime()?.block_on(async {
        let ctx = JobContext {
            admin: catalog_server::admin::admin(config)
                .await
                .map_err(anyhow::Error::new)?,
            s3: config.s3_settings(None),
            runner: crate::commands::duckdb_runner(config)?,
        };
        let cancel = CancellationToken::new();
        let on_ctrl_c = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_ctrl_c.cancel();
            }
        });
        let report = maintenance::run(&ctx, &lake, dry_run, &cancel).await;
        match format {
            Format::Json => println!("{}", serde_json::to_string(&report).context("serialise")?),
            Format::Text => {
                let verb = if dry_run { "would do" } else { "did" };
                println!("maintenance of lake {} {verb}: {}", report.lake, report.summary());
                if dry_run {
                    println!("{} inlined rows wait for a flush", report.inlined_rows_pending);
                }
            }
        }
        match report.outcome {
            Outcome::Ok => Ok(()),
            Outcome::Busy => Err(anyhow!(
                "another maintenance job runs on lake {} (the server's schedule); try again when it ends",
                report.lake
            )
            .into()),
            _ => Err(anyhow!(
                "maintenance of lake {} did not finish: {}",
                report.lake,
                report.error.unwrap_or_default()
            )
            .into()),
        }
    })
}

/// `verify --lake L [--deep]`.
fn verify(config: &Config, lake: &str, deep: bool, format: Format) -> Result<(), Failure> {
    let lake = config.lake(lake).map_err(Failure::config)?.clone();
    let tty = std::io::stderr().is_terminal();
    let progress = move |done: u64, total: u64| {
        if tty && (done == total || done.is_multiple_of(100)) {
            eprint!("\rverifying [{}] {done}/{total}", bar(done, total));
            if done == total {
                eprintln!();
            }
        }
    };
    let rt = runtime()?;
    let admin = crate::commands::admin(&rt, config)?;
    let report = rt
        .block_on(datafiles::verify(
            &admin,
            &config.s3_settings(None),
            &lake,
            deep,
            &progress,
        ))
        .map_err(failure)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string(&report).context("serialise")?),
        Format::Text => {
            println!(
                "checked {} files ({} bytes) of lake {} under {}{}",
                report.files_checked,
                report.bytes_checked,
                report.lake,
                report.data_path,
                if deep {
                    ", Parquet footers included"
                } else {
                    ""
                }
            );
            for p in &report.problems {
                println!("✗ {}", serde_json::to_string(p).context("serialise")?);
            }
        }
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "lake {}: {} of {} files do not match the catalog; restore them from a backup of the bucket, or see docs/maintenance.md#verify",
            report.lake,
            report.problems.len(),
            report.files_checked
        )
        .into())
    }
}

/// `orphans --lake L`.
fn orphans(config: &Config, lake: &str, format: Format) -> Result<(), Failure> {
    let lake = config.lake(lake).map_err(Failure::config)?.clone();
    let rt = runtime()?;
    let admin = crate::commands::admin(&rt, config)?;
    let report = rt
        .block_on(datafiles::orphans(&admin, &config.s3_settings(None), &lake))
        .map_err(failure)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string(&report).context("serialise")?),
        Format::Text => {
            for o in &report.orphans {
                println!("{}  {} bytes  {}", o.last_modified, o.size, o.path);
            }
            println!(
                "{} orphaned of {} objects under {} ({} files referenced)",
                report.orphans.len(),
                report.objects,
                report.data_path,
                report.referenced
            );
        }
    }
    Ok(())
}

/// `gc --lake L [--older-than D] [--yes]`.
fn gc(
    config: &Config,
    lake: &str,
    older_than: Duration,
    yes: bool,
    format: Format,
) -> Result<(), Failure> {
    let lake = config.lake(lake).map_err(Failure::config)?.clone();
    let rt = runtime()?;
    let admin = crate::commands::admin(&rt, config)?;
    let report = rt
        .block_on(datafiles::gc(
            &admin,
            &config.s3_settings(None),
            &lake,
            older_than,
            yes,
        ))
        .map_err(failure)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string(&report).context("serialise")?),
        Format::Text => {
            let verb = if yes { "deleting" } else { "would delete" };
            for o in &report.deletable {
                println!("{verb} {}  ({} bytes, {})", o.path, o.size, o.last_modified);
            }
            println!(
                "{} orphans deleted; {} younger than {} kept (possibly a write in flight)",
                report.deleted,
                report.kept_young,
                humantime::format_duration(older_than)
            );
        }
    }
    match report.unconfirmed(older_than) {
        Some(e) => Err(Failure::config(e)),
        None => Ok(()),
    }
}

fn failure(e: FilesError) -> Failure {
    anyhow::Error::new(e).into()
}

/// A 30-character progress bar.
pub(crate) fn bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = done
        .saturating_mul(WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH);
    (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect()
}
