//! `status [--watch] [--format json]`: what `/metrics` shows, in the terminal, for an operator
//! with a shell in the task. It reads the running server's `/status` (the same facts).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use catalog_server::telemetry::{Facts, HaFacts};

use crate::commands::runtime;
use crate::{Failure, Format};

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Redraw every 2 seconds until interrupted.
    #[arg(long)]
    watch: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The server's `/status` URL. Default: at the configured http.listen.
    #[arg(long)]
    url: Option<String>,
}

/// `load` reads the configuration (for http.listen) when no --url is given.
pub(crate) fn run(
    args: &StatusArgs,
    load: impl Fn() -> Result<catalog_server::Config, Failure>,
) -> Result<(), Failure> {
    let config = load();
    let token = config.as_ref().ok().and_then(|c| c.metrics.token.clone());
    let url = match &args.url {
        Some(u) => u.clone(),
        None => config?.health_url("/status"),
    };
    let url = url.as_str();
    let rt = runtime()?;
    loop {
        let (code, body) = rt
            .block_on(health::get_json_with(
                url,
                Duration::from_secs(5),
                token.as_ref(),
            ))
            .map_err(anyhow::Error::new)?;
        if code != 200 {
            return Err(anyhow::anyhow!(
                "{url} answered {code}{}",
                if code == 401 {
                    ": it needs the metrics token; set metrics.token (or _file) as the server has it"
                } else {
                    ""
                }
            )
            .into());
        }
        match args.format {
            Format::Json => println!("{body}"),
            Format::Text => {
                let facts: Facts = serde_json::from_value(body)
                    .context("read the server's /status (is it the same version?)")?;
                if args.watch {
                    // Clear the screen and go home, as `watch` does.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", render(&facts));
            }
        }
        if !args.watch {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn age(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0} s ago"),
        Some(s) if s < 7200.0 => format!("{:.0} min ago", s / 60.0),
        Some(s) if s < 172_800.0 => format!("{:.1} h ago", s / 3600.0),
        Some(s) => format!("{:.1} days ago", s / 86_400.0),
    }
}

// Byte counts shown to one decimal: far below 2^52.
#[allow(clippy::cast_precision_loss)]
fn bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.1} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n:.0} B"),
    }
}

/// The facts as a few plain-text sections.
/// The failover line: the role, the lease, and how far behind (standby) or who follows
/// (primary).
fn ha_line(h: &HaFacts) -> String {
    if h.primary {
        let sync = match h.synchronous {
            Some(true) => ", zero-loss: commits wait for a standby",
            Some(false) => ", zero-loss DEGRADED: commits do not wait (no standby)",
            None => "",
        };
        format!(
            "failover: primary (lease {}), {} standby(s) streaming{}{sync}",
            h.lease_generation,
            h.standbys,
            h.standby_lag_seconds
                .map(|l| format!(", replay lag {l:.2}s"))
                .unwrap_or_default()
        )
    } else {
        format!(
            "failover: hot standby (following lease {}), replay lag {}",
            h.lease_generation,
            h.replay_lag_seconds
                .map_or_else(|| "unknown".to_owned(), |l| format!("{l:.2}s"))
        )
    }
}

pub(crate) fn render(f: &Facts) -> String {
    let mut out = String::new();
    let s = &f.server;
    let _ = writeln!(
        out,
        "ducklake-catalog {} (DuckDB {}, DuckLake spec {}): {}, up {}, PostgreSQL {} ({} restarts)",
        s.version,
        s.duckdb_version,
        s.ducklake_spec,
        if s.ready { "ready" } else { "NOT READY" },
        age(Some(s.uptime_seconds)).trim_end_matches(" ago"),
        if f.postgres.up { "up" } else { "DOWN" },
        s.postgres_restarts,
    );
    if let Some(p) = &f.pooler {
        let _ = writeln!(
            out,
            "pooler {} ({} restarts)",
            if p.up { "up" } else { "DOWN" },
            p.restarts
        );
    }
    if let Some(h) = &f.ha {
        let _ = writeln!(out, "{}", ha_line(h));
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:>9} {:>7} {:>7} {:>10} {:>8} {:>9} {:>14}",
        "LAKE", "SNAPSHOTS", "TABLES", "FILES", "BYTES", "INLINED", "CONFLICTS", "LAST COMMIT"
    );
    for (name, l) in &f.lakes {
        let _ = writeln!(
            out,
            "{name:<16} {:>9} {:>7} {:>7} {:>10} {:>8} {:>9} {:>14}",
            l.snapshots,
            l.tables,
            l.data_files,
            bytes(l.data_bytes),
            l.inlined_rows,
            l.commit_conflicts,
            age(l.newest_snapshot_age_seconds),
        );
    }
    let total: u64 = f.postgres.connections.iter().map(|c| c.count).sum();
    let mut by_kind: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for c in &f.postgres.connections {
        *by_kind.entry(c.role_kind.as_str()).or_default() += c.count;
    }
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(
        out,
        "\nconnections {total} of {} ({})",
        f.postgres.max_connections,
        kinds.join(", ")
    );
    match &f.backup {
        Some(b) => {
            let _ = writeln!(
                out,
                "backups to {}: RPO now {:.1} s ({} WAL pending), last base backup {}{}",
                b.target,
                b.rpo_seconds,
                b.pending_wal,
                age(b.base_backup_age_seconds),
                if b.base_backup_failing {
                    ", LAST ATTEMPT FAILED"
                } else {
                    ""
                },
            );
        }
        None => {
            let _ = writeln!(out, "backups: off (backup.target unset)");
        }
    }
    for (lake, m) in &f.maintenance {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let last = match m.last_ok {
            None => "never ran".to_owned(),
            Some(ok) => format!(
                "{} {} ({:.1} s)",
                if ok { "ok" } else { "FAILED" },
                age(m.last_run_timestamp.map(|t| now - t)),
                m.last_duration_seconds.unwrap_or_default()
            ),
        };
        let next = m.next_run_timestamp.map_or_else(
            || "not scheduled".to_owned(),
            |t| format!("next in {:.0} min", ((t - now) / 60.0).max(0.0)),
        );
        let _ = writeln!(
            out,
            "maintenance {lake}: {}{last}, {next}",
            if m.running { "running; " } else { "" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use catalog_server::telemetry::{LakeFacts, PoolerFacts};

    #[test]
    fn the_text_shows_each_lake_and_says_what_is_down() {
        let mut f = Facts::default();
        f.server.version = "0.1.0".into();
        f.postgres.max_connections = 100;
        f.pooler = Some(PoolerFacts {
            up: false,
            restarts: 2,
        });
        f.lakes.insert(
            "sales".into(),
            LakeFacts {
                snapshots: 12,
                data_bytes: 2_500_000,
                commit_conflicts: 3,
                newest_snapshot_age_seconds: Some(30.0),
                ..Default::default()
            },
        );
        let text = render(&f);
        assert!(text.contains("NOT READY"), "{text}");
        assert!(text.contains("PostgreSQL DOWN"), "{text}");
        assert!(text.contains("pooler DOWN (2 restarts)"), "{text}");
        let line = text.lines().find(|l| l.starts_with("sales")).unwrap();
        for want in ["12", "2.5 MB", "3", "30 s ago"] {
            assert!(line.contains(want), "{want}: {line}");
        }
        assert!(text.contains("backups: off"), "{text}");
    }

    #[test]
    fn the_failover_line_names_the_role_and_the_lag() {
        let mut f = Facts {
            ha: Some(HaFacts {
                primary: false,
                lease_generation: 2,
                replay_lag_seconds: Some(0.5),
                ..HaFacts::default()
            }),
            ..Facts::default()
        };
        assert!(render(&f).contains("failover: hot standby (following lease 2), replay lag 0.50s"));
        f.ha = Some(HaFacts {
            primary: true,
            lease_generation: 3,
            synchronous: Some(false),
            ..HaFacts::default()
        });
        let text = render(&f);
        assert!(
            text.contains("failover: primary (lease 3), 0 standby(s)"),
            "{text}"
        );
        assert!(text.contains("zero-loss DEGRADED"), "{text}");
    }
}
