//! DuckDB work in a child process, so a crash in the engine or an extension never takes the
//! server (and the PostgreSQL it supervises) down with it.
//!
//! The server runs `ducklake-catalog duckdb-worker` ([`DuckDbRunner`]) for each unit of DuckDB
//! work — initialising a lake's catalog, DuckLake's migration, a maintenance job, the probe at
//! start — and sends the [`Job`] as JSON on its stdin (connection strings hold the lake server
//! role's password: never on the command line). The worker ([`worker_main`]) runs it with the
//! embedded DuckDB and prints one JSON [`Reply`] on stdout. A worker that dies by a signal is
//! a failed job with a one-line error ([`WorkerError::Crashed`]); the server keeps serving.
//! Cancelling a job (shutdown, `max_runtime`) kills the worker: DuckLake commits are single
//! PostgreSQL transactions, so a killed worker leaves at most unreferenced files, which `gc`
//! removes.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

use base::quote_literal;
use base::versions::{DUCKDB_PLATFORM, DUCKDB_VERSION};

/// The hidden subcommand of the `ducklake-catalog` binary that runs one job.
pub const SUBCOMMAND: &str = "duckdb-worker";

/// Extensions the embedded DuckDB needs: DuckLake and PostgreSQL to reach catalogs, Parquet for
/// maintenance (flushing inlined rows and merging files write Parquet).
pub const REQUIRED_EXTENSIONS: [&str; 3] = ["ducklake", "postgres_scanner", "parquet"];

/// One unit of DuckDB work.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// Load every required extension and report the engine's version.
    Probe,
    /// ATTACH the lake with its DATA_PATH once: DuckLake creates its tables.
    Init { conninfo: String, data_path: String },
    /// DuckLake's own migration of an older catalog.
    Migrate { conninfo: String },
    /// A maintenance job's DuckDB steps, up to listing the old files cleanup would delete.
    Maintain(MaintainPlan),
    /// Cleanup: delete the files scheduled for deletion longer than `older_than_secs` ago.
    CleanupOldFiles {
        conninfo: String,
        data_path: String,
        older_than_secs: u64,
    },
}

/// What a maintenance job asks DuckDB to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintainPlan {
    pub conninfo: String,
    /// The data path the lake is registered with: DuckDB may touch files there and nowhere else.
    pub data_path: String,
    pub dry_run: bool,
    pub flush: bool,
    pub expire_secs: Option<u64>,
    pub merge: bool,
    pub cleanup_secs: u64,
}

/// What the DuckDB side of a maintenance job did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Maintained {
    pub rows_flushed: i64,
    pub snapshots_expired: i64,
    pub files_merged: i64,
    pub files_created: i64,
    /// Files cleanup would delete now, by path ([`Job::CleanupOldFiles`] deletes them).
    pub old_files: Vec<String>,
    pub retries: u32,
}

/// The worker's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Probed { engine: String },
    Done,
    Maintained(Maintained),
    Cleaned { files: i64 },
    Failed { message: String },
}

/// Why a job did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    #[error("start the DuckDB worker {program}: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("the DuckDB worker crashed ({status}) during {job}{stderr}; the server keeps running: report it with the lake's DuckDB and extension versions")]
    Crashed {
        job: &'static str,
        status: String,
        stderr: String,
    },
    #[error("the DuckDB worker gave no answer ({status}) during {job}{stderr}")]
    NoReply {
        job: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Failed(String),
    #[error("stopped")]
    Cancelled,
}

/// How the server starts workers: its own binary and the extension folder.
#[derive(Debug, Clone)]
pub struct DuckDbRunner {
    program: PathBuf,
    extension_dir: PathBuf,
}

impl DuckDbRunner {
    pub fn new(program: PathBuf, extension_dir: PathBuf) -> DuckDbRunner {
        DuckDbRunner {
            program,
            extension_dir,
        }
    }

    pub fn extension_dir(&self) -> &Path {
        &self.extension_dir
    }

    /// Runs `job` in a worker until it answers or `cancel` fires (which kills it).
    pub async fn run(&self, job: &Job, cancel: &CancellationToken) -> Result<Reply, WorkerError> {
        let what = job.name();
        let mut child = tokio::process::Command::new(&self.program)
            .arg(SUBCOMMAND)
            .arg(&self.extension_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| WorkerError::Spawn {
                program: self.program.display().to_string(),
                error,
            })?;
        let input = serde_json::to_vec(job).expect("a job serialises");
        if let Some(mut stdin) = child.stdin.take() {
            // A worker that died at once shows up below, with its status.
            let _ = stdin.write_all(&input).await;
        }
        let waited = tokio::select! {
            out = child.wait_with_output() => out,
            () = cancel.cancelled() => return Err(WorkerError::Cancelled),
        };
        let out = waited.map_err(|error| WorkerError::Spawn {
            program: self.program.display().to_string(),
            error,
        })?;
        let stderr = tail(&out.stderr);
        let reply: Option<Reply> = serde_json::from_slice(&out.stdout).ok();
        match reply {
            Some(Reply::Failed { message }) => Err(WorkerError::Failed(message)),
            Some(reply) if out.status.success() => Ok(reply),
            _ => {
                use std::os::unix::process::ExitStatusExt as _;
                let status = match out.status.signal() {
                    Some(sig) => format!(
                        "signal {sig}{}",
                        nix::sys::signal::Signal::try_from(sig)
                            .map(|s| format!(" {s}"))
                            .unwrap_or_default()
                    ),
                    None => out.status.to_string(),
                };
                if out.status.signal().is_some() {
                    Err(WorkerError::Crashed {
                        job: what,
                        status,
                        stderr,
                    })
                } else {
                    Err(WorkerError::NoReply {
                        job: what,
                        status,
                        stderr,
                    })
                }
            }
        }
    }

    /// The check at start: the worker loads every required extension and its engine is
    /// [`DUCKDB_VERSION`]. Returns the engine version.
    pub async fn probe(&self) -> Result<String, WorkerError> {
        match self.run(&Job::Probe, &CancellationToken::new()).await? {
            Reply::Probed { engine } => Ok(engine),
            other => Err(WorkerError::Failed(format!(
                "unexpected probe answer {other:?}"
            ))),
        }
    }
}

fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let last: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(3)
        .collect();
    if last.is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = last.into_iter().rev().collect();
        format!(": {}", base::one_line(&lines.join(" | ")))
    }
}

impl Job {
    fn conninfo(&self) -> Option<&str> {
        match self {
            Job::Probe => None,
            Job::Init { conninfo, .. }
            | Job::Migrate { conninfo }
            | Job::CleanupOldFiles { conninfo, .. } => Some(conninfo),
            Job::Maintain(plan) => Some(&plan.conninfo),
        }
    }

    /// `message` without the password of the job's connection string (DuckDB quotes the
    /// string in connection errors).
    fn redact(&self, message: &str) -> String {
        let password = self.conninfo().and_then(|c| {
            c.split_whitespace()
                .find_map(|kv| kv.strip_prefix("password="))
                .map(|v| v.trim_matches('\'').to_owned())
        });
        match password {
            Some(pw) if !pw.is_empty() => message.replace(&pw, base::secret::REDACTED),
            _ => message.to_owned(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Job::Probe => "the start-up probe",
            Job::Init { .. } => "the lake's initialisation",
            Job::Migrate { .. } => "the migration",
            Job::Maintain(_) => "maintenance",
            Job::CleanupOldFiles { .. } => "the cleanup of old files",
        }
    }
}

/// The worker process: reads one [`Job`] from stdin, runs it, prints one [`Reply`]. Returns
/// the process exit code.
pub fn worker_main(extension_dir: &Path) -> i32 {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("read the job: {e}");
        return 2;
    }
    let reply = match serde_json::from_slice::<Job>(&input) {
        Ok(job) => execute(extension_dir, &job),
        Err(e) => Reply::Failed {
            message: format!("the job does not parse: {e}"),
        },
    };
    let out = serde_json::to_vec(&reply).expect("a reply serialises");
    let mut stdout = std::io::stdout();
    if stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return 1;
    }
    0
}

fn execute(extension_dir: &Path, job: &Job) -> Reply {
    let result = match job {
        Job::Probe => probe(extension_dir).map(|engine| Reply::Probed { engine }),
        Job::Init {
            conninfo,
            data_path,
        } => embedded_duckdb(extension_dir)
            .and_then(|conn| {
                conn.execute_batch(&format!(
                    "ATTACH {} AS lake (DATA_PATH {}); DETACH lake;",
                    quote_literal(&format!("ducklake:postgres:{conninfo}")),
                    quote_literal(data_path)
                ))
            })
            .map(|()| Reply::Done)
            .map_err(|e| e.to_string()),
        Job::Migrate { conninfo } => embedded_duckdb(extension_dir)
            .and_then(|conn| {
                conn.execute_batch(&format!(
                    "ATTACH {} AS lake (AUTOMATIC_MIGRATION TRUE); DETACH lake;",
                    quote_literal(&format!("ducklake:postgres:{conninfo}"))
                ))
            })
            .map(|()| Reply::Done)
            .map_err(|e| e.to_string()),
        Job::Maintain(plan) => maintain(extension_dir, plan).map(Reply::Maintained),
        Job::CleanupOldFiles {
            conninfo,
            data_path,
            older_than_secs,
        } => cleanup(extension_dir, conninfo, data_path, *older_than_secs)
            .map(|files| Reply::Cleaned { files }),
    };
    result.unwrap_or_else(|message| Reply::Failed {
        message: job.redact(&base::one_line(&message)),
    })
}

fn probe(extension_dir: &Path) -> Result<String, String> {
    let conn = embedded_duckdb(extension_dir).map_err(|e| e.to_string())?;
    conn.execute_batch("LOAD parquet;")
        .map_err(|e| format!("load the parquet extension: {e}"))?;
    let engine: String = conn
        .query_row("SELECT library_version FROM pragma_version()", [], |r| {
            r.get(0)
        })
        .map_err(|e| e.to_string())?;
    let engine = engine.trim_start_matches('v').to_owned();
    if engine != DUCKDB_VERSION {
        return Err(format!(
            "the linked DuckDB library is {engine} but the extension files and this build are for {DUCKDB_VERSION}: install the libduckdb {DUCKDB_VERSION} this release ships (beside the binary or in ../lib)"
        ));
    }
    Ok(engine)
}

/// An in-memory DuckDB with the pinned ducklake and postgres extensions loaded from
/// `extension_dir`, never from the network.
pub fn embedded_duckdb(extension_dir: &Path) -> Result<duckdb::Connection, duckdb::Error> {
    let config = duckdb::Config::default()
        .with("extension_directory", extension_dir.to_string_lossy())?
        .with("autoinstall_known_extensions", "false")?
        .with("autoload_known_extensions", "true")?;
    let conn = duckdb::Connection::open_in_memory_with_flags(config)?;
    conn.execute_batch("LOAD ducklake; LOAD postgres;")?;
    Ok(conn)
}

/// Which of [`REQUIRED_EXTENSIONS`] are neither files in `extension_dir` nor built into the
/// linked engine.
pub fn missing_extensions(extension_dir: &Path) -> Vec<&'static str> {
    let platform = extension_dir
        .join(format!("v{DUCKDB_VERSION}"))
        .join(DUCKDB_PLATFORM);
    REQUIRED_EXTENSIONS
        .iter()
        .copied()
        .filter(|n| !platform.join(format!("{n}.duckdb_extension")).is_file())
        .filter(|n| !built_in(n))
        .collect()
}

/// Whether the linked engine has `name` statically (the official library has parquet).
fn built_in(name: &str) -> bool {
    let Ok(conn) = duckdb::Connection::open_in_memory() else {
        return false;
    };
    conn.query_row(
        "SELECT count(*) FROM duckdb_extensions() WHERE extension_name = ? AND install_mode = 'STATICALLY_LINKED'",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

/// Attempts of one step that meets a conflicting commit.
const CONFLICT_ATTEMPTS: u32 = 6;

/// The lake attached with the data path it is registered with (DuckLake refuses a catalog that
/// records another), and DuckDB confined to it: no file outside the data path is read, written
/// or deleted, whatever a catalog row names (a lake user writes those rows).
fn attached(
    extension_dir: &Path,
    conninfo: &str,
    data_path: &str,
) -> Result<duckdb::Connection, String> {
    let conn = embedded_duckdb(extension_dir).map_err(|e| e.to_string())?;
    // What later steps would load on demand, loaded before the file system closes.
    for ext in ["parquet", "httpfs", "aws"] {
        let _ = conn.execute_batch(&format!("LOAD {ext}"));
    }
    conn.execute_batch(&format!(
        "ATTACH {} AS lake (DATA_PATH {})",
        quote_literal(&format!("ducklake:postgres:{conninfo}")),
        quote_literal(data_path)
    ))
    .map_err(|e| format!("attach the lake: {e}"))?;
    conn.execute_batch(&format!(
        "SET allowed_directories = [{}]; SET enable_external_access = false; SET lock_configuration = true;",
        quote_literal(data_path)
    ))
    .map_err(|e| format!("confine DuckDB to the data path: {e}"))?;
    Ok(conn)
}

/// `message` of a step that reached outside the data path, said plainly.
fn outside(message: String, data_path: &str) -> String {
    if message.contains("disabled by configuration") {
        format!("{message}: a catalog row names a file outside the lake's data path {data_path} (a lake user wrote it); nothing outside the data path is read, written or deleted — as the lake's owner, remove that row")
    } else {
        message
    }
}

fn maintain(extension_dir: &Path, plan: &MaintainPlan) -> Result<Maintained, String> {
    maintain_steps(extension_dir, plan).map_err(|e| outside(e, &plan.data_path))
}

fn maintain_steps(extension_dir: &Path, plan: &MaintainPlan) -> Result<Maintained, String> {
    let mut done = Maintained::default();
    let conn = attached(extension_dir, &plan.conninfo, &plan.data_path)?;
    let dry = plan.dry_run;
    if plan.flush && !dry {
        done.rows_flushed = retrying(&conn, &mut done.retries, "flush inlined data", |c| {
            c.query_row(
                "SELECT coalesce(sum(rows_flushed), 0)::BIGINT FROM ducklake_flush_inlined_data('lake')",
                [],
                |r| r.get(0),
            )
        })?;
    }
    if let Some(secs) = plan.expire_secs {
        done.snapshots_expired = retrying(&conn, &mut done.retries, "expire snapshots", |c| {
            c.query_row(
                &format!("SELECT count(*)::BIGINT FROM ducklake_expire_snapshots('lake', older_than => {}, dry_run => {dry})", cutoff(secs)),
                [],
                |r| r.get(0),
            )
        })?;
    }
    if plan.merge && !dry {
        let (processed, created): (i64, i64) = retrying(
            &conn,
            &mut done.retries,
            "merge adjacent files",
            |c| {
                c.query_row(
                    "SELECT coalesce(sum(files_processed), 0)::BIGINT, coalesce(sum(files_created), 0)::BIGINT FROM ducklake_merge_adjacent_files('lake')",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            },
        )?;
        done.files_merged = processed;
        done.files_created = created;
    }
    let secs = plan.cleanup_secs;
    done.old_files = retrying(&conn, &mut done.retries, "list old files", |c| {
        let mut stmt = c.prepare(&format!(
            "SELECT path FROM ducklake_cleanup_old_files('lake', older_than => {}, dry_run => true)",
            cutoff(secs)
        ))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })?;
    Ok(done)
}

fn cleanup(
    extension_dir: &Path,
    conninfo: &str,
    data_path: &str,
    secs: u64,
) -> Result<i64, String> {
    let conn = attached(extension_dir, conninfo, data_path)?;
    let mut retries = 0;
    retrying(&conn, &mut retries, "clean up old files", |c| {
        c.query_row(
            &format!(
                "SELECT count(*)::BIGINT FROM ducklake_cleanup_old_files('lake', older_than => {})",
                cutoff(secs)
            ),
            [],
            |r| r.get::<_, i64>(0),
        )
    })
    .map_err(|e| outside(e, data_path))
}

/// `older_than` for `secs` ago, as a TIMESTAMPTZ literal (computed here, without ICU).
fn cutoff(secs: u64) -> String {
    let at = chrono::Utc::now()
        - chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000));
    format!("TIMESTAMPTZ '{}'", at.format("%Y-%m-%d %H:%M:%S%.6f+00"))
}

/// Runs `step`, retrying with backoff (0.5 s doubling) while it fails on a conflicting commit.
fn retrying<T>(
    conn: &duckdb::Connection,
    retries: &mut u32,
    what: &str,
    step: impl Fn(&duckdb::Connection) -> Result<T, duckdb::Error>,
) -> Result<T, String> {
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=CONFLICT_ATTEMPTS {
        match step(conn) {
            Ok(v) => return Ok(v),
            Err(e) if is_conflict(&e.to_string()) && attempt < CONFLICT_ATTEMPTS => {
                eprintln!(
                    "{what}: a client committed at the same time (attempt {attempt}); retrying"
                );
                *retries += 1;
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(e) => return Err(format!("{what}: {}", base::one_line(&e.to_string()))),
        }
    }
    unreachable!("the last attempt returns")
}

/// DuckLake's words for a commit that lost against a concurrent one.
fn is_conflict(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("conflict") || m.contains("could not serialize") || m.contains("deadlock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_recognised_and_other_errors_are_not() {
        assert!(is_conflict(
            "TransactionContext Error: Failed to commit DuckLake transaction: Transaction conflict - attempting to insert into table with index \"1\""
        ));
        assert!(is_conflict(
            "ERROR: could not serialize access due to concurrent update"
        ));
        assert!(!is_conflict(
            "IO Error: Cannot open file \"x.parquet\": No such file"
        ));
    }

    #[test]
    fn failures_never_carry_the_password() {
        let job = Job::Migrate {
            conninfo: "host=/run port=1 user=x_server dbname=x password=0a1b2c".into(),
        };
        let out = job.redact("Unable to connect to Postgres at \"host=/run password=0a1b2c\"");
        assert!(!out.contains("0a1b2c"), "{out}");
    }

    #[test]
    fn jobs_round_trip_as_json() {
        let job = Job::Maintain(MaintainPlan {
            conninfo: "host=/x".into(),
            data_path: "/d/".into(),
            dry_run: true,
            flush: true,
            expire_secs: Some(5),
            merge: false,
            cleanup_secs: 9,
        });
        let back: Job = serde_json::from_slice(&serde_json::to_vec(&job).unwrap()).unwrap();
        assert!(matches!(back, Job::Maintain(p) if p.dry_run && p.cleanup_secs == 9));
    }
}
