//! `cargo xtask container --smoke`: the image, run for real. moto on the host stands in for S3;
//! the container serves one lake whose data path is in a moto bucket, its pooler published on a
//! loopback port, and the checks are what a user of the container relies on:
//!
//! - the health check turns healthy, then the server is ready (timed from `run`);
//! - it runs as the image's non-root user, with `ducklake-catalog serve` as PID 1;
//! - the Python DuckDB client (venv, pinned version) attaches through the connection pooler
//!   (PgBouncer, the image's port 6432) over TLS (`sslmode=require`) and
//!   writes 20,000 rows as Parquet into the bucket plus 2 inlined rows;
//! - `config show` inside redacts the admin password and the S3 secret key;
//! - after the postmaster is SIGKILLed, PID 1 reaps the orphaned backends (no zombies) and the
//!   server restarts PostgreSQL;
//! - `stop` is a clean PostgreSQL shutdown, exit code 0, within the stop timeout, and every log
//!   line is one JSON object with no secret in it;
//! - started again, the rows are intact; after `kill` (SIGKILL of the whole container) and a
//!   start, PostgreSQL recovers and the rows are intact;
//! - a root-owned volume (with a `lost+found`) is refused with one line naming uid 10001.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};

use crate::container::{Built, Engine};
use crate::support::{checked_output, free_port, Moto};
use crate::workspace_root;

const UID: &str = "10001";
const ROWS: u64 = 20_002;
const PGDATA: &str = "/var/lib/ducklake-catalog/pgdata";

/// A container and its volume, removed on drop.
struct Container<'a> {
    engine: &'a Engine,
    name: String,
}

impl Container<'_> {
    fn exec(&self, cmd: &[&str]) -> Result<String> {
        let mut args = vec!["exec", self.name.as_str()];
        args.extend_from_slice(cmd);
        let out = self.engine.output(&args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `args` of the engine on this container (`stop`, `start`, `kill`, ...).
    fn engine(&self, args: &[&str]) -> Result<String> {
        let mut all = args.to_vec();
        all.push(self.name.as_str());
        let out = self.engine.output(&all)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn healthy(&self) -> bool {
        if self.engine.is_podman() {
            self.engine
                .cli()
                .args(["healthcheck", "run", &self.name])
                .output()
                .is_ok_and(|o| o.status.success())
        } else {
            self.engine(&["inspect", "--format", "{{.State.Health.Status}}"])
                .is_ok_and(|s| s == "healthy")
        }
    }

    fn ready(&self) -> bool {
        self.exec(&["ducklake-catalog", "health", "--ready"])
            .is_ok()
    }

    fn running(&self) -> bool {
        self.engine(&["inspect", "--format", "{{.State.Running}}"])
            .is_ok_and(|s| s == "true")
    }

    fn logs(&self) -> String {
        self.engine
            .cli()
            .args(["logs", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default()
    }

    /// Polls `cond` every 200 ms; the elapsed time from `since`, or an error with the logs.
    fn wait(&self, what: &str, since: Instant, cond: impl Fn(&Self) -> bool) -> Result<f64> {
        let deadline = Instant::now() + Duration::from_mins(3);
        loop {
            if cond(self) {
                return Ok(since.elapsed().as_secs_f64());
            }
            if !self.running() || Instant::now() > deadline {
                bail!(
                    "container never became {what}; its log:\n{}",
                    tail(&self.logs())
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Processes in the container in state Z, as `pid (comm)`.
    fn zombies(&self) -> Result<Vec<String>> {
        let stats = self.exec(&["sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null"])?;
        Ok(stats
            .lines()
            .filter(|l| {
                l.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.split_whitespace().next() == Some("Z"))
            })
            .map(|l| l.split(')').next().unwrap_or(l).to_owned() + ")")
            .collect())
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.engine.output(&["rm", "-f", "-v", &self.name]);
        let _ = self.engine.output(&["volume", "rm", "-f", &self.name]);
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The pinned DuckDB client writing to (or reading) the lake through the published port of
/// the connection pooler (what `connect` hands out).
struct Client {
    venv: PathBuf,
    extensions: PathBuf,
    pooler_port: u16,
    moto_port: u16,
    password: String,
}

impl Client {
    fn roundtrip(&self, mode: &str) -> Result<serde_json::Value> {
        let script = workspace_root().join("crates/cli/tests/python/lake_roundtrip.py");
        let mut cmd = Command::new(self.venv.join("bin/python"));
        cmd.arg(&script)
            .arg(mode)
            .env(
                "DLC_ATTACH",
                format!(
                    "ducklake:postgres:host=127.0.0.1 port={} user=admin dbname=lakehouse sslmode=require",
                    self.pooler_port
                ),
            )
            .env("PGPASSWORD", &self.password)
            .env("DLC_EXTENSIONS", &self.extensions)
            .env("DLC_S3_ENDPOINT", format!("127.0.0.1:{}", self.moto_port));
        let out = checked_output(&mut cmd, &format!("the DuckDB client ({mode})"))?;
        serde_json::from_slice(&out.stdout).context("read the client's JSON line")
    }

    fn expect_rows(&self, mode: &str) -> Result<()> {
        let seen = self.roundtrip(mode)?;
        ensure!(
            seen["count"].as_u64() == Some(ROWS),
            "expected {ROWS} rows, the client saw {seen}"
        );
        Ok(())
    }
}

/// The secrets the container is given, to look for where they must not appear.
struct Secrets {
    password: String,
    s3_secret: String,
}

impl Secrets {
    fn absent_from(&self, text: &str) -> bool {
        !text.contains(&self.password) && !text.contains(&self.s3_secret)
    }
}

pub(crate) fn smoke(
    engine: &Engine,
    tag: &str,
    venv: &Path,
    extensions: &Path,
    built: &Built,
) -> Result<()> {
    // Reachable from the container's network namespace through the host alias.
    let moto = Moto::start(venv, "0.0.0.0")?;
    moto.create_bucket("smoke")?;
    let name = format!("dlc-smoke-{}", std::process::id());
    let pooler_port = free_port()?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let secrets = Secrets {
        password: format!("smoke-pw-{nonce}"),
        s3_secret: format!("smoke-s3-secret-{nonce}"),
    };

    eprintln!("smoke: starting {tag} as {name}");
    let started = Instant::now();
    let c = run_container(engine, tag, &name, pooler_port, moto.port, &secrets)?;
    let to_healthy = c.wait("healthy", started, Container::healthy)?;
    let to_ready = c.wait("ready", started, Container::ready)?;
    eprintln!("smoke: ok: healthy after {to_healthy:.1} s, ready after {to_ready:.1} s");
    check_identity(&c)?;

    let client = Client {
        venv: venv.to_path_buf(),
        extensions: extensions.to_path_buf(),
        pooler_port,
        moto_port: moto.port,
        password: secrets.password.clone(),
    };
    write_parquet(&client, &moto)?;
    let shown = c.exec(&["ducklake-catalog", "config", "show"])?;
    ensure!(
        shown.contains("[redacted]") && secrets.absent_from(&shown),
        "config show does not redact the secrets:\n{shown}"
    );
    eprintln!("smoke: ok: config show redacts the secrets");
    kill_postmaster(&c, &client)?;
    let stop_secs = stop_cleanly(&c, &secrets)?;

    let restarted = Instant::now();
    c.engine(&["start"])?;
    let warm_ready = c.wait("ready after start", restarted, Container::ready)?;
    client.expect_rows("read")?;
    eprintln!("smoke: ok: started again, ready after {warm_ready:.1} s, rows intact");

    c.engine(&["kill"])?;
    let recovering = Instant::now();
    c.engine(&["start"])?;
    let recovered = c.wait("ready after kill", recovering, Container::ready)?;
    client.expect_rows("read")?;
    eprintln!(
        "smoke: ok: SIGKILLed container started again, recovered in {recovered:.1} s, rows intact"
    );

    refuses_a_root_owned_volume(engine, tag)?;

    println!(
        "container smoke passed: image {} MB (built in {:.0} s from host binaries); start to healthy {to_healthy:.1} s, to ready {to_ready:.1} s (cold: initdb, lake on S3); stop {stop_secs:.1} s; restart to ready {warm_ready:.1} s; after SIGKILL {recovered:.1} s",
        built.size_bytes / 1_000_000,
        built.build_secs
    );
    Ok(())
}

/// `run -d` with the lake on moto S3, the pooler (the clients' port) and HTTP published on
/// loopback, a named volume.
fn run_container<'a>(
    engine: &'a Engine,
    tag: &str,
    name: &str,
    pooler_port: u16,
    moto_port: u16,
    secrets: &Secrets,
) -> Result<Container<'a>> {
    let host = if engine.is_podman() {
        "host.containers.internal"
    } else {
        "host.docker.internal"
    };
    let env = [
        "DUCKLAKE_CATALOG_DATA_PATH=s3://smoke/lake/".to_owned(),
        format!("DUCKLAKE_CATALOG_S3__ENDPOINT=http://{host}:{moto_port}"),
        "DUCKLAKE_CATALOG_S3__ALLOW_HTTP=true".to_owned(),
        "DUCKLAKE_CATALOG_S3__FORCE_PATH_STYLE=true".to_owned(),
        "DUCKLAKE_CATALOG_S3__REGION=us-east-1".to_owned(),
        "DUCKLAKE_CATALOG_S3__ACCESS_KEY_ID=smoke-key-id".to_owned(),
        format!(
            "DUCKLAKE_CATALOG_S3__SECRET_ACCESS_KEY={}",
            secrets.s3_secret
        ),
        format!(
            "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD={}",
            secrets.password
        ),
    ];
    let (pg_map, http_map) = (
        format!("127.0.0.1:{pooler_port}:6432"),
        format!("127.0.0.1:{}:8080", free_port()?),
    );
    let volume = format!("{name}:/var/lib/ducklake-catalog");
    let mut args = vec![
        "run",
        "-d",
        "--name",
        name,
        "--stop-timeout",
        "60",
        "-p",
        &pg_map,
        "-p",
        &http_map,
        "-v",
        &volume,
    ];
    if !engine.is_podman() {
        args.extend(["--add-host", "host.docker.internal:host-gateway"]);
    }
    for e in &env {
        args.extend(["-e", e.as_str()]);
    }
    args.push(tag);
    let c = Container {
        engine,
        name: name.to_owned(),
    };
    engine.output(&args)?;
    Ok(c)
}

/// Non-root, `serve` as PID 1, PGDATA owned by the image's user.
fn check_identity(c: &Container<'_>) -> Result<()> {
    let uid = c.exec(&["id", "-u"])?;
    ensure!(
        uid.trim() == UID,
        "the container runs as uid {uid}, not {UID}"
    );
    let pid1 = c.exec(&["cat", "/proc/1/cmdline"])?.replace('\0', " ");
    ensure!(
        pid1.contains("ducklake-catalog serve"),
        "PID 1 is `{pid1}`, not ducklake-catalog serve"
    );
    let owner = c.exec(&["stat", "-c", "%u", PGDATA])?;
    ensure!(owner.trim() == UID, "PGDATA is owned by uid {owner}");
    eprintln!("smoke: ok: uid {UID}, PID 1 is `{}`", pid1.trim());
    // The image carries the official libduckdb, and the binary loads it (no LD_LIBRARY_PATH).
    let version = c.exec(&["ducklake-catalog", "version", "--format", "json"])?;
    let engine = serde_json::from_str::<serde_json::Value>(&version)
        .ok()
        .and_then(|v| v["duckdb_engine"].as_str().map(str::to_owned))
        .unwrap_or_default();
    ensure!(
        engine == crate::versions::DUCKDB_VERSION,
        "the embedded engine reports `{engine}`, not {} ({version})",
        crate::versions::DUCKDB_VERSION
    );
    let linked = c.exec(&[
        "sh",
        "-c",
        "ldd /usr/local/bin/ducklake-catalog | grep libduckdb",
    ])?;
    eprintln!(
        "smoke: ok: the embedded engine is DuckDB {engine}, linked from {}",
        linked.split("=>").nth(1).unwrap_or(&linked).trim()
    );
    Ok(())
}

/// The client writes over TLS; its Parquet files land in the bucket.
fn write_parquet(client: &Client, moto: &Moto) -> Result<()> {
    client.expect_rows("write")?;
    let parquet: usize = moto
        .python(
            "import os, boto3\n\
             s3 = boto3.client('s3', endpoint_url=os.environ['MOTO_ENDPOINT'], region_name='us-east-1', aws_access_key_id='t', aws_secret_access_key='t')\n\
             keys = [o['Key'] for o in s3.list_objects_v2(Bucket='smoke', Prefix='lake/').get('Contents', [])]\n\
             print(sum(k.endswith('.parquet') for k in keys))",
        )?
        .trim()
        .parse()
        .context("count Parquet objects")?;
    ensure!(parquet > 0, "no Parquet object under s3://smoke/lake/");
    eprintln!(
        "smoke: ok: DuckDB wrote {ROWS} rows over TLS, {parquet} Parquet object(s) in the bucket"
    );
    Ok(())
}

/// SIGKILL the postmaster: PID 1 reaps the orphaned backends, the server restarts PostgreSQL.
fn kill_postmaster(c: &Container<'_>, client: &Client) -> Result<()> {
    let pid_file = format!("{PGDATA}/postmaster.pid");
    let postmaster = c.exec(&["head", "-1", &pid_file])?.trim().to_owned();
    c.exec(&["sh", "-c", &format!("kill -9 {postmaster}")])?;
    c.wait("ready with a new postmaster", Instant::now(), |c| {
        c.exec(&["head", "-1", &pid_file])
            .is_ok_and(|p| p.trim() != postmaster)
            && c.ready()
    })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let z = c.zombies()?;
        if z.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "zombies left after the postmaster was killed: {z:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    client.expect_rows("read")?;
    eprintln!("smoke: ok: postmaster SIGKILLed, orphans reaped, PostgreSQL restarted, rows intact");
    Ok(())
}

/// `stop`: exit 0, a clean PostgreSQL shutdown, JSON lines only, no secret. Returns seconds.
fn stop_cleanly(c: &Container<'_>, secrets: &Secrets) -> Result<f64> {
    let stopping = Instant::now();
    c.engine(&["stop", "-t", "60"])?;
    let stop_secs = stopping.elapsed().as_secs_f64();
    let code = c.engine(&["inspect", "--format", "{{.State.ExitCode}}"])?;
    let logs = c.logs();
    ensure!(code == "0", "exit code {code} after stop:\n{}", tail(&logs));
    ensure!(
        logs.contains("database system is shut down") && logs.contains("stopped cleanly"),
        "no clean PostgreSQL shutdown in the log:\n{}",
        tail(&logs)
    );
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("a log line is not JSON: {line}"))?;
        ensure!(v.is_object(), "a log line is not a JSON object: {line}");
    }
    ensure!(secrets.absent_from(&logs), "a secret appears in the log");
    eprintln!(
        "smoke: ok: stop took {stop_secs:.1} s, exit 0, clean shutdown, JSON logs without secrets"
    );
    Ok(stop_secs)
}

/// A fresh volume that only root may write (an EBS file system, a bind mount): one line naming
/// the user and the fix, exit code 1.
fn refuses_a_root_owned_volume(engine: &Engine, tag: &str) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("dlc-smoke-root-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("lost+found"))?;
    let mount = format!("{}:/var/lib/ducklake-catalog", dir.display());
    let out = engine
        .cli()
        .args(["run", "--rm", "-v", &mount, tag])
        .output()
        .context("run the image on a root-owned folder")?;
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1)
            && stderr.contains("is not writable by this server's user (uid 10001)"),
        "a root-owned volume gave {}: {stderr}",
        out.status
    );
    eprintln!("smoke: ok: a root-owned volume is refused with one line naming uid 10001");
    Ok(())
}
