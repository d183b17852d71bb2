//! `backup now|list|verify` and `restore`.

use anyhow::{anyhow, Context as _};
use catalog_server::backup::{self, AgentClient, BackupManifest, WAL_DIR};
use catalog_server::config::Config;
use catalog_server::recovery;
use chrono::{DateTime, NaiveDateTime, Utc};

use crate::commands::{runtime, with_aws};
use crate::{BackupCommand, Failure, Format};

/// `switchover`: asks the primary on this home to hand over, and prints what happened.
pub(crate) fn switchover(config: &Config) -> Result<(), Failure> {
    let rt = runtime()?;
    let socket = config.socket_dir().join(backup::AGENT_SOCKET);
    let done = rt
        .block_on(AgentClient::switchover(&socket))
        .map_err(anyhow::Error::new)?;
    println!("{done}");
    Ok(())
}

pub(crate) fn run(config: &Config, command: &BackupCommand) -> Result<(), Failure> {
    let rt = runtime()?;
    let (config, s3) = &with_aws(&rt, config)?;
    match command {
        BackupCommand::Now { format } => {
            let socket = config.socket_dir().join(backup::AGENT_SOCKET);
            let m = rt
                .block_on(AgentClient::backup_now(&socket))
                .map_err(anyhow::Error::new)?;
            print_backups(std::slice::from_ref(&m), *format);
            Ok(())
        }
        BackupCommand::List { format } => rt.block_on(list(config, s3, *format)),
        BackupCommand::Verify { format } => {
            init_quiet_tracing(config);
            let report = rt
                .block_on(recovery::verify_newest(config, s3))
                .map_err(anyhow::Error::new)?;
            match format {
                Format::Json => {
                    println!("{}", serde_json::to_string(&report).context("serialise")?);
                }
                Format::Text => {
                    println!(
                        "backup {}: restored {} bytes, started, {} B-tree indexes checked in {} ms",
                        report.backup,
                        report.restored_bytes,
                        report.indexes_checked,
                        report.elapsed_ms
                    );
                    for l in &report.lakes {
                        println!(
                            "  lake {:<20} spec {:<5} snapshots {:<6} tables {}",
                            l.name,
                            l.spec_version.as_deref().unwrap_or("?"),
                            l.snapshots,
                            l.tables
                        );
                    }
                    println!("OK");
                }
            }
            Ok(())
        }
    }
}

async fn list(config: &Config, s3: &storage::S3Settings, format: Format) -> Result<(), Failure> {
    let target = backup::open_target(&config.backup, s3)
        .map_err(anyhow::Error::new)?
        .ok_or_else(|| Failure::config(anyhow::Error::new(backup::BackupError::NotConfigured)))?;
    let backups = backup::list_backups(&target)
        .await
        .map_err(anyhow::Error::new)?;
    let wal = target.list(WAL_DIR).await.map_err(anyhow::Error::new)?;
    let wal_bytes: u64 = wal.iter().map(|o| o.size).sum();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "target": target.path().to_string(),
                "backups": backups,
                "wal_files": wal.len(),
                "wal_bytes": wal_bytes,
                "newest_wal": wal.last().map(|o| o.name[WAL_DIR.len()..].to_owned()),
            })
        ),
        Format::Text => {
            println!("target {}", target.path());
            print_backups(&backups, Format::Text);
            println!(
                "archived WAL: {} files, {} bytes, newest {}",
                wal.len(),
                wal_bytes,
                wal.last().map_or("-", |o| &o.name[WAL_DIR.len()..])
            );
        }
    }
    Ok(())
}

fn print_backups(backups: &[BackupManifest], format: Format) {
    if format == Format::Json {
        for b in backups {
            println!("{}", serde_json::to_string(b).unwrap_or_default());
        }
        return;
    }
    println!(
        "{:<24} {:<20} {:>12} {:>12}  {:<4} WAL range",
        "id", "finished (UTC)", "stored", "raw", "tli"
    );
    for b in backups {
        println!(
            "{:<24} {:<20} {:>12} {:>12}  {:<4} {}..{}",
            b.id,
            b.stop_time.format("%Y-%m-%d %H:%M:%S"),
            b.stored_bytes,
            b.raw_bytes,
            b.timeline,
            b.start_wal,
            b.stop_wal
        );
    }
    if backups.is_empty() {
        println!("(no complete base backup)");
    }
}

pub(crate) fn restore(
    config: &Config,
    to_time: Option<&str>,
    format: Format,
) -> Result<(), Failure> {
    let to_time = to_time
        .map(parse_time)
        .transpose()
        .map_err(Failure::config)?;
    init_quiet_tracing(config);
    let rt = runtime()?;
    let (config, s3) = &with_aws(&rt, config)?;
    let report = rt
        .block_on(recovery::restore_home(config, s3, to_time))
        .map_err(anyhow::Error::new)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string(&report).context("serialise")?),
        Format::Text => println!(
            "restored backup {}{} into {} in {} ms; lakes: {}. Start it with `ducklake-catalog serve --home {}`",
            report.backup,
            report.to_time.map_or_else(String::new, |t| format!(" up to {}", t.to_rfc3339())),
            report.home,
            report.elapsed_ms,
            report.lakes.join(", "),
            report.home
        ),
    }
    Ok(())
}

fn parse_time(raw: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw.trim(), fmt) {
            return Ok(t.and_utc());
        }
    }
    Err(anyhow!(
        "--to-time `{raw}` is not a time; write UTC as 2026-11-26T10:15:00Z or \"2026-11-26 10:15:00\""
    ))
}

/// Progress lines on stderr for the long-running restore commands.
fn init_quiet_tracing(config: &Config) {
    let _ = health::init_stderr_tracing(&config.log.level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_in_time() {
        assert_eq!(
            parse_time("2026-11-26T10:15:00Z").unwrap().to_rfc3339(),
            "2026-11-26T10:15:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-26 10:15:00.250")
                .unwrap()
                .timestamp_millis()
                % 1000,
            250
        );
        assert!(parse_time("yesterday").is_err());
    }
}
