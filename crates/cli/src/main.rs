//! `ducklake-catalog`: the binary. Parses the command line, loads the configuration once, sets up
//! tracing, wires the supervisor (catalog-server) to the health endpoints (health) and to signals,
//! and turns errors into one line on stderr and an exit code: 2 for bad configuration or usage,
//! 1 for everything else. The only crate that calls `std::process::exit`.

mod backup;
mod commands;
mod connect;
mod init;
mod inspect;
mod lakes;
mod maintain;
mod status;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code for a configuration or usage error.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a runtime failure.
const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "ducklake-catalog",
    version,
    about = "The PostgreSQL catalog for DuckLake, supervised."
)]
struct Cli {
    /// TOML configuration file (env DUCKLAKE_CATALOG_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder holding all state (env DUCKLAKE_CATALOG_HOME; default ./.ducklake-catalog).
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run PostgreSQL, the lakes and the health endpoints until SIGTERM or SIGINT.
    Serve,
    /// Probe the running server: liveness (/healthz) by default — the container HEALTHCHECK,
    /// green during a long restore — or readiness with --ready. Exit 0 when OK, 1 otherwise.
    Health {
        /// Probe /readyz (PostgreSQL answers, every lake ready, not fenced) instead of /healthz.
        #[arg(long)]
        ready: bool,
        /// URL to probe. Default: /healthz (or /readyz) at the configured http.listen.
        #[arg(long)]
        url: Option<String>,
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// What the running server knows about itself — lakes, connections, backups,
    /// maintenance — as `/metrics` shows it (the server's `/status`); --watch redraws it.
    Status(status::StatusArgs),
    /// Show configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the product, DuckDB engine, DuckLake spec and PostgreSQL versions.
    Version {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Base backups in backup.target: take one now, list them, or verify the newest by restoring it.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Hand the primary role to a hot standby with no lost commit (`ha.mode = "auto"`): run on
    /// the primary's home; PostgreSQL stops cleanly, a standby takes the lease and promotes,
    /// and this server joins it as a standby.
    Switchover,
    /// Restore the newest base backup and the archived WAL (or the state at --to-time) into an
    /// empty home, then stop; `serve` on that home continues from it and owns the target.
    Restore {
        /// Point in time, UTC, RFC 3339 (`2026-11-26T10:15:00Z`) or `2026-11-26 10:15:00`.
        #[arg(long, value_name = "TIME")]
        to_time: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the least-privilege IAM policy (JSON) for this configuration: the server's task
    /// role (every lake's data path and the backup target), or a DuckDB client's writer or
    /// reader role.
    IamPolicy {
        /// Only this lake (default: every configured lake).
        #[arg(long)]
        lake: Option<String>,
        #[arg(long, value_enum, default_value_t = IamRole::Server)]
        role: IamRole,
        /// Print a table explaining each statement instead of the policy.
        #[arg(long)]
        explain: bool,
    },
    /// Print how to connect to a lake: the ATTACH string, host, port, dbname, user, data path;
    /// with --lang, a complete program for that client, and with --check, run it against this
    /// server.
    Connect(connect::ConnectArgs),
    /// Check everything a working catalog needs, in order, and print ✓/✗ with the fix for each
    /// failure: config, PostgreSQL binaries, home, PostgreSQL TLS logins, lakes, AWS region and
    /// credentials, data paths, the admin password secret, metering, clock skew. Works before
    /// the first start and against a running server. Exit 0 only when every check passes.
    Doctor {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Per-lake credentials: readers query, writers write, neither reaches another lake or
    /// PostgreSQL itself. Runs beside the server (same home), over its Unix socket.
    User {
        #[command(subcommand)]
        command: users::UserCommand,
    },
    /// The lakes this catalog serves: create, list, show, drop, migrate. Runs beside the
    /// server (same home), over its Unix socket.
    Lake {
        #[command(subcommand)]
        command: lakes::LakeCommand,
    },
    /// Run a lake's maintenance now, as the schedule does: flush inlined data, expire
    /// snapshots, merge small files, clean up old files, remove catalog garbage.
    Maintain {
        #[arg(long)]
        lake: String,
        /// Report what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Check every file the catalog names exists under the data path with its recorded size
    /// (and with --deep, its Parquet footer's row count). Exit 1 when any does not.
    Verify {
        #[arg(long)]
        lake: String,
        /// Also read each Parquet footer (two ranged reads a file, no download).
        #[arg(long)]
        deep: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List the objects under a lake's data path that no retained snapshot names.
    Orphans {
        #[arg(long)]
        lake: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Delete orphaned objects older than a grace period (default 24h, so running clients'
    /// uncommitted writes are never touched). Prints what it deletes; refuses without --yes.
    Gc {
        #[arg(long)]
        lake: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        older_than: std::time::Duration,
        #[arg(long)]
        yes: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// A lake's snapshots: id, time, changes, author and commit message.
    Snapshots {
        #[arg(long)]
        lake: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// A lake's tables at a snapshot (default: the latest), with file counts and sizes.
    Tables {
        #[arg(long)]
        lake: String,
        #[arg(long)]
        snapshot: Option<i64>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// A table's live data files: path, rows, bytes, snapshot range, delete files.
    Files {
        #[arg(long)]
        lake: String,
        /// `name` (schema main) or `schema.name`.
        #[arg(long)]
        table: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Bytes and files per table, and rows still inlined in the catalog (pending a flush).
    Usage {
        #[arg(long)]
        lake: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// Flags that override configuration keys; global so `connect` and `health` see what `serve`
/// was given.
#[derive(Debug, clap::Args)]
struct Overrides {
    /// PostgreSQL port (postgres.port).
    #[arg(long, global = true)]
    port: Option<u16>,
    /// PostgreSQL listen addresses (postgres.listen_address).
    #[arg(long, global = true)]
    listen_address: Option<String>,
    /// Health HTTP address (http.listen).
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    http_listen: Option<String>,
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Ask the running server for a base backup now and wait for it.
    Now {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List the complete base backups and the archived WAL.
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Restore the newest backup into a temporary folder, start it, check every lake's catalog
    /// and index, and remove the copy. Never writes to the target.
    Verify {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted.
    Show,
    /// Print every configuration key with its environment variable, default and meaning
    /// (the table in docs/configuration.md).
    Reference {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IamRole {
    Server,
    Writer,
    Reader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// An error with the exit code it maps to.
#[derive(Debug)]
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    fn config(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: EXIT_CONFIG,
            error: error.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure {
            code: EXIT_FAILURE,
            error,
        }
    }
}

fn main() -> ExitCode {
    // The DuckDB worker the server starts for each unit of DuckDB work (see
    // catalog_server::duckdb_worker): no configuration, no tracing, one job on stdin.
    let mut args = std::env::args_os().skip(1);
    if args
        .next()
        .is_some_and(|a| a == catalog_server::duckdb_worker::SUBCOMMAND)
    {
        let dir = args.next().map(PathBuf::from).unwrap_or_default();
        let code = catalog_server::duckdb_worker::worker_main(&dir);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve) && init::is_pid1() {
        return init::run().unwrap_or_else(|e| {
            eprintln!("ducklake-catalog: error: as PID 1: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        });
    }
    match commands::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let line = format!("{:#}", f.error)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("ducklake-catalog: error: {line}");
            ExitCode::from(f.code)
        }
    }
}
