//! What the durability and failover tests share: the commit-logging DuckDB client, writers,
//! the superuser tools, a server with backups, and an S3 that can go away.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{extensions, run_cli, venv, Moto, Server};

pub const PASSWORD: &str = "durability-test-pw-1";
/// The RPO the product promises: commits acknowledged longer ago than this survive any crash.
pub const RPO_SECS: f64 = 2.0;

pub fn script() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("tests/python/commit_log.py")
}

pub fn pg_bin(name: &str) -> PathBuf {
    std::env::var_os("DUCKLAKE_TEST_PG_BIN")
        .map_or_else(
            || PathBuf::from("/usr/lib/postgresql/15/bin"),
            PathBuf::from,
        )
        .join(name)
}

/// A server environment: lake `sales` on `data_path`, backups to `target`.
pub fn env_for(moto: Option<&Moto>, data_path: &str, target: &str) -> Vec<(String, String)> {
    let mut env = moto.map(Moto::server_env).unwrap_or_default();
    env.extend([
        ("DUCKLAKE_CATALOG_LAKE_NAME".into(), "sales".into()),
        ("DUCKLAKE_CATALOG_DATA_PATH".into(), data_path.into()),
        ("DUCKLAKE_CATALOG_BACKUP__TARGET".into(), target.into()),
        (
            "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD".into(),
            PASSWORD.into(),
        ),
    ]);
    env
}

pub fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A Python DuckDB process against the server's lake `sales` (and moto, when the server's
/// S3 endpoint is set).
pub fn python_client(server: &Server) -> Command {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.arg(script())
        .env(
            "DLC_ATTACH",
            format!(
                "ducklake:postgres:host=127.0.0.1 port={} user=admin dbname=sales",
                server.pooler_port
            ),
        )
        .env("PGPASSWORD", PASSWORD)
        .env("DLC_EXTENSIONS", extensions());
    if let Some(endpoint) = &server.s3_endpoint {
        cmd.env("DLC_S3_ENDPOINT", endpoint.trim_start_matches("http://"));
    }
    cmd
}

/// A DuckDB reader of a hot standby: PostgreSQL's own port (a standby runs no pooler),
/// attached `READ_ONLY`.
pub fn standby_client(server: &Server) -> Command {
    let mut cmd = python_client(server);
    cmd.env(
        "DLC_ATTACH",
        format!(
            "ducklake:postgres:host=127.0.0.1 port={} user=admin dbname=sales",
            server.pg_port
        ),
    )
    .env("DLC_ATTACH_OPTIONS", "READ_ONLY");
    cmd
}

pub fn client(server: &Server, args: &[&str]) -> std::process::Output {
    python_client(server).args(args).output().unwrap()
}

pub fn client_ok(server: &Server, args: &[&str]) -> String {
    let out = client(server, args);
    assert!(
        out.status.success(),
        "client {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every writer table's committed sequence numbers, read through DuckDB.
pub fn read_commits(server: &Server) -> BTreeMap<String, BTreeSet<u64>> {
    let v: serde_json::Value = serde_json::from_str(&client_ok(server, &["read"])).unwrap();
    v["tables"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(t, seqs)| {
            let set = seqs
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_u64().unwrap())
                .collect();
            (t.clone(), set)
        })
        .collect()
}

/// (writer table, seq, ack time) lines the writers logged.
pub fn acknowledged(log: &Path) -> Vec<(String, u64, f64)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                format!("w{}", w.next()?),
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
            ))
        })
        .collect()
}

pub fn spawn_writers(
    server: &Server,
    n: usize,
    seconds: f64,
    log: &Path,
) -> Vec<std::process::Child> {
    (0..n)
        .map(|i| {
            let err = std::fs::File::create(log.with_extension(format!("writer{i}.err"))).unwrap();
            python_client(server)
                .args(["write", &i.to_string(), &seconds.to_string()])
                .arg(log)
                .stdout(std::process::Stdio::null())
                .stderr(err)
                .spawn()
                .unwrap()
        })
        .collect()
}

pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Runs `cmd` from the PostgreSQL bin folder against the server's socket as the internal
/// superuser (peer authentication: the test runs as the supervisor's OS user).
pub fn superuser_tool(server: &Server, tool: &str, args: &[&str]) -> String {
    let out = Command::new(pg_bin(tool))
        .args(["-h", &server.home.join("run").to_string_lossy()])
        .args([
            "-p",
            &server.pg_port.to_string(),
            "-U",
            "ducklake_supervisor",
        ])
        .args(args)
        .env_clear()
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that prints one JSON document and must succeed.
pub fn cli_json(home: &Path, env: &[(String, String)], args: &[&str]) -> serde_json::Value {
    let out = run_cli(home, &refs(env), args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
}

pub fn backup_body(server: &Server) -> serde_json::Value {
    server.get("/readyz").unwrap().1["backup"].clone()
}

/// Starts a server and waits for its first base backup.
pub fn start_backed_up(home: &Path, env: &[(String, String)]) -> Server {
    let mut s = Server::start(home, &refs(env));
    s.wait_for(Duration::from_mins(1), |_, b| {
        b["backup"]["last_base_backup"]["id"].is_string()
    });
    s
}

/// Waits until the archive holds every commit made so far. Nothing pending is not enough: the
/// newest commits sit in the current segment until `archive_timeout` switches it, so the test
/// switches now (as a graceful stop does) and waits for that segment by name.
pub fn wait_archived(server: &mut Server) {
    let last = superuser_tool(
        server,
        "psql",
        &[
            "-d",
            "postgres",
            "-Atc",
            "SELECT pg_walfile_name(pg_switch_wal())",
        ],
    );
    let last = last.trim().to_owned();
    server.wait_for(Duration::from_mins(1), |_, b| {
        b["backup"]["pending_wal"] == 0
            && b["backup"]["archive"]["last_archived_wal"]
                .as_str()
                .and_then(|a| a.get(..24))
                .is_some_and(|a| a >= last.as_str())
    });
}

/// SIGKILL the supervisor and the whole PostgreSQL process group at once: a task that died.
pub fn kill_everything(server: &mut Server) {
    let pg = server.postgres_pid();
    server.signal(Signal::SIGKILL);
    let _ = kill(Pid::from_raw(-pg), Signal::SIGKILL);
    let _ = server.wait_exit(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while super::postgres_running(&server.home.join("pgdata")) {
        assert!(Instant::now() < deadline, "postgres survived SIGKILL");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn s3_setup() -> (Moto, Vec<(String, String)>) {
    let moto = Moto::start(&[]);
    moto.python("s3.create_bucket(Bucket='lake'); s3.create_bucket(Bucket='backups')");
    let env = env_for(Some(&moto), "s3://lake/sales/", "s3://backups/catalog/");
    (moto, env)
}

/// A TCP proxy that can drop every connection and refuse new ones: S3 going away.
pub struct Outage {
    pub port: u16,
    pub up: Arc<AtomicBool>,
}

impl Outage {
    pub fn start(upstream: u16) -> Outage {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if !flag.load(Ordering::SeqCst) {
                    drop(conn);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (conn.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, conn),
                ] {
                    let flag = flag.clone();
                    from.set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 16384];
                        loop {
                            if !flag.load(Ordering::SeqCst) {
                                let _ = from.shutdown(std::net::Shutdown::Both);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => {
                                    let _ = to.shutdown(std::net::Shutdown::Write);
                                    return;
                                }
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        });
        Outage { port, up }
    }
}
