//! Durability: WAL archiving, base backups, automatic restore, PITR, S3 outages, fencing —
//! the real binary, real PostgreSQL 15, moto S3 and real DuckDB writers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{error_line, extensions, home, run_cli, serve_fails, venv, Moto, Server};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const PASSWORD: &str = "durability-test-pw-1";
/// The RPO the product promises: commits acknowledged longer ago than this survive any crash.
const RPO_SECS: f64 = 2.0;

fn script() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("tests/python/commit_log.py")
}

fn pg_bin(name: &str) -> PathBuf {
    std::env::var_os("DUCKLAKE_TEST_PG_BIN")
        .map_or_else(
            || PathBuf::from("/usr/lib/postgresql/15/bin"),
            PathBuf::from,
        )
        .join(name)
}

/// A server environment: lake `sales` on `data_path`, backups to `target`.
fn env_for(moto: Option<&Moto>, data_path: &str, target: &str) -> Vec<(String, String)> {
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

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A Python DuckDB process against the server's lake `sales` (and moto, when the server's
/// S3 endpoint is set).
fn python_client(server: &Server) -> Command {
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

fn client(server: &Server, args: &[&str]) -> std::process::Output {
    python_client(server).args(args).output().unwrap()
}

fn client_ok(server: &Server, args: &[&str]) -> String {
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
fn read_commits(server: &Server) -> BTreeMap<String, BTreeSet<u64>> {
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
fn acknowledged(log: &Path) -> Vec<(String, u64, f64)> {
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

fn spawn_writers(server: &Server, n: usize, seconds: f64, log: &Path) -> Vec<std::process::Child> {
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

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Runs `cmd` from the PostgreSQL bin folder against the server's socket as the internal
/// superuser (peer authentication: the test runs as the supervisor's OS user).
fn superuser_tool(server: &Server, tool: &str, args: &[&str]) -> String {
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

/// `pg_dumpall`, minus the lines that legitimately differ between two servers.
fn dump(server: &Server) -> String {
    superuser_tool(server, "pg_dumpall", &["--no-role-passwords"])
        .lines()
        // `\restrict` lines carry a random key per run (PostgreSQL 15.14+).
        .filter(|l| !l.starts_with("-- Dumped") && !l.contains("restrict "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// amcheck over every B-tree index of every database; returns how many were checked.
fn amcheck(server: &Server) -> u64 {
    let dbs = superuser_tool(
        server,
        "psql",
        &[
            "-d",
            "postgres",
            "-Atc",
            "SELECT datname FROM pg_database WHERE datallowconn",
        ],
    );
    let mut checked = 0;
    for db in dbs.lines() {
        let n = superuser_tool(
            server,
            "psql",
            &[
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                "CREATE EXTENSION IF NOT EXISTS amcheck; SELECT count(*) FROM (SELECT bt_index_check(c.oid::regclass, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence <> 't') s",
            ],
        );
        checked += n.trim().lines().last().unwrap().parse::<u64>().unwrap();
    }
    checked
}

/// Runs a command that prints one JSON document and must succeed.
fn cli_json(home: &Path, env: &[(String, String)], args: &[&str]) -> serde_json::Value {
    let out = run_cli(home, &refs(env), args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
}

fn backup_body(server: &Server) -> serde_json::Value {
    server.get("/readyz").unwrap().1["backup"].clone()
}

/// Starts a server and waits for its first base backup.
fn start_backed_up(home: &Path, env: &[(String, String)]) -> Server {
    let mut s = Server::start(home, &refs(env));
    s.wait_for(Duration::from_mins(1), |_, b| {
        b["backup"]["last_base_backup"]["id"].is_string()
    });
    s
}

/// Waits until the archive holds every commit made so far. Nothing pending is not enough: the
/// newest commits sit in the current segment until `archive_timeout` switches it, so the test
/// switches now (as a graceful stop does) and waits for that segment by name.
fn wait_archived(server: &mut Server) {
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
fn kill_everything(server: &mut Server) {
    let pg = server.postgres_pid();
    server.signal(Signal::SIGKILL);
    let _ = kill(Pid::from_raw(-pg), Signal::SIGKILL);
    let _ = server.wait_exit(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::postgres_running(&server.home.join("pgdata")) {
        assert!(Instant::now() < deadline, "postgres survived SIGKILL");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn s3_setup() -> (Moto, Vec<(String, String)>) {
    let moto = Moto::start(&[]);
    moto.python("s3.create_bucket(Bucket='lake'); s3.create_bucket(Bucket='backups')");
    let env = env_for(Some(&moto), "s3://lake/sales/", "s3://backups/catalog/");
    (moto, env)
}

#[test]
fn restore_on_an_empty_home_gives_back_an_identical_catalog() {
    let (_moto, env) = s3_setup();
    let first = home();
    let mut a = Server::start(first.path(), &refs(&env));
    client_ok(&a, &["sql", "CREATE TABLE lake.facts AS SELECT i AS id, 'row ' || i AS label FROM range(50000) t(i)"]);
    let log = first.path().join("commits.log");
    for mut w in spawn_writers(&a, 2, 2.0, &log) {
        w.wait().unwrap();
    }
    // An on-demand base backup, then more commits that only the WAL archive holds.
    let manifest = cli_json(first.path(), &env, &["backup", "now", "--format", "json"]);
    assert!(manifest["stored_bytes"].as_u64().unwrap() > 0);
    client_ok(
        &a,
        &[
            "sql",
            "UPDATE lake.facts SET label = 'changed' WHERE id < 100",
        ],
    );
    client_ok(
        &a,
        &[
            "sql",
            "CREATE TABLE lake.after_backup AS SELECT 42 AS answer",
        ],
    );
    let before = dump(&a);
    let commits_before = read_commits(&a);
    assert_eq!(a.stop().code(), Some(0), "{}", a.logs());
    assert!(
        a.logs().contains("archive flushed before stopping"),
        "{}",
        a.logs()
    );

    let listed = run_cli(first.path(), &refs(&env), &["backup", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(manifest["id"].as_str().unwrap()),
        "{listed}"
    );

    // A replacement task: nothing on disk but the configuration.
    let second = home();
    let mut b = Server::spawn(second.path(), &refs(&env));
    let ready = b.wait_ready(Duration::from_mins(3));
    assert!(ready["backup"]["restored_from"].is_string(), "{ready}");
    assert_eq!(dump(&b), before, "pg_dumpall differs after the restore");
    assert!(amcheck(&b) > 10);
    assert_eq!(read_commits(&b), commits_before);
    let rows = client_ok(
        &b,
        &[
            "sql",
            "SELECT count(*), count(*) FILTER (WHERE label = 'changed') FROM lake.facts",
        ],
    );
    assert_eq!(rows.trim(), r#"[["50000", "100"]]"#);
    let rows = client_ok(&b, &["sql", "SELECT answer FROM lake.after_backup"]);
    assert_eq!(rows.trim(), r#"[["42"]]"#);

    // The restored server took a fresh base backup on its new timeline; verify restores it
    // into a scratch folder and checks it without touching the target.
    b.wait_for(Duration::from_mins(1), |_, body| {
        body["backup"]["last_base_backup"]["id"].is_string()
    });
    let report = cli_json(
        second.path(),
        &env,
        &["backup", "verify", "--format", "json"],
    );
    assert_eq!(report["lakes"][0]["name"], "sales", "{report}");
    assert!(report["indexes_checked"].as_u64().unwrap() > 10, "{report}");
}

#[test]
fn a_killed_task_loses_no_commit_acknowledged_more_than_the_rpo_before() {
    let (_moto, env) = s3_setup();
    let first = home();
    let mut a = Server::start(first.path(), &refs(&env));
    let log = first.path().join("commits.log");
    let writers = spawn_writers(&a, 4, 90.0, &log);
    // Let the writers get going (Python and DuckDB start slowly on a loaded machine), then
    // commit for a few more seconds before the kill.
    let deadline = Instant::now() + Duration::from_mins(1);
    while acknowledged(&log).len() < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(4));
    let killed_at = now_secs();
    kill_everything(&mut a);
    for mut w in writers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let acked = acknowledged(&log);
    assert!(
        acked.len() > 100,
        "only {} commits before the kill",
        acked.len()
    );

    let second = home();
    let mut b = Server::spawn(second.path(), &refs(&env));
    b.wait_ready(Duration::from_mins(3));
    let present = read_commits(&b);
    let mut lost_old = Vec::new();
    let mut lost_recent = 0;
    for (table, seq, at) in &acked {
        let there = present.get(table).is_some_and(|s| s.contains(seq));
        if !there && killed_at - at > RPO_SECS {
            lost_old.push((table.clone(), *seq, killed_at - at));
        } else if !there {
            lost_recent += 1;
        }
    }
    assert!(
        lost_old.is_empty(),
        "commits acknowledged more than {RPO_SECS} s before the kill are missing: {lost_old:?}"
    );
    eprintln!(
        "{} commits acknowledged, {lost_recent} lost, all within {RPO_SECS} s of the kill",
        acked.len()
    );
}

#[test]
fn point_in_time_restore_brings_back_a_dropped_table() {
    let (_moto, env) = s3_setup();
    let first = home();
    let mut a = start_backed_up(first.path(), &env);
    client_ok(
        &a,
        &[
            "sql",
            "CREATE TABLE lake.precious AS SELECT i FROM range(1234) t(i)",
        ],
    );
    client_ok(&a, &["sql", "CREATE TABLE lake.other AS SELECT 1 AS x"]);
    std::thread::sleep(Duration::from_millis(1500));
    let before_drop = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1500));
    client_ok(&a, &["sql", "DROP TABLE lake.precious"]);
    client_ok(&a, &["sql", "INSERT INTO lake.other VALUES (2)"]);
    assert_eq!(a.stop().code(), Some(0), "{}", a.logs());

    let second = home();
    let mut env2 = env.clone();
    env2.push((
        "DUCKLAKE_CATALOG_POSTGRES__PORT".into(),
        common::free_port().to_string(),
    ));
    let t = before_drop.to_rfc3339();
    let out = run_cli(second.path(), &refs(&env2), &["restore", "--to-time", &t]);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("lakes: sales"));

    let b = Server::start(second.path(), &refs(&env));
    let rows = client_ok(&b, &["sql", "SELECT count(*) FROM lake.precious"]);
    assert_eq!(rows.trim(), r#"[["1234"]]"#);
    let rows = client_ok(&b, &["sql", "SELECT count(*) FROM lake.other"]);
    assert_eq!(
        rows.trim(),
        r#"[["1"]]"#,
        "the insert after T must not be there"
    );

    // A restore never overwrites a home that holds a cluster.
    let out = run_cli(second.path(), &refs(&env), &["restore"]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&String::from_utf8_lossy(&out.stderr));
    assert!(line.contains("refuses to overwrite"), "{line}");
}

/// A TCP proxy that can drop every connection and refuse new ones: S3 going away.
struct Outage {
    port: u16,
    up: Arc<AtomicBool>,
}

impl Outage {
    fn start(upstream: u16) -> Outage {
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

#[test]
fn an_s3_outage_loses_nothing_and_the_archive_catches_up() {
    let moto = Moto::start(&[]);
    moto.python("s3.create_bucket(Bucket='backups')");
    let proxy = Outage::start(moto.port);
    let lake_dir = home();
    let data_path = lake_dir.path().join("sales");
    let mut env = env_for(
        Some(&moto),
        data_path.to_str().unwrap(),
        "s3://backups/catalog/",
    );
    for (k, v) in &mut env {
        if k == "DUCKLAKE_CATALOG_S3__ENDPOINT" {
            *v = format!("http://127.0.0.1:{}", proxy.port);
        }
    }
    let first = home();
    let mut a = start_backed_up(first.path(), &env);
    let log = first.path().join("commits.log");
    let writers = spawn_writers(&a, 2, 12.0, &log);
    std::thread::sleep(Duration::from_secs(3));
    proxy.up.store(false, Ordering::SeqCst);
    // S3 is gone: commits go on, WAL piles up locally, readiness stays up and reports the lag.
    let during = a.wait_for(Duration::from_mins(1), |code, b| {
        code == 200
            && b["backup"]["pending_wal"].as_u64() > Some(2)
            && b["backup"]["archive"]["failures"].as_u64() > Some(0)
    });
    assert!(
        during["backup"]["archive_lag_secs"].as_f64().unwrap() > 0.0,
        "{during}"
    );
    for (i, mut w) in writers.into_iter().enumerate() {
        assert!(
            w.wait().unwrap().success(),
            "writer {i}: {}",
            std::fs::read_to_string(log.with_extension(format!("writer{i}.err")))
                .unwrap_or_default()
        );
    }
    proxy.up.store(true, Ordering::SeqCst);
    wait_archived(&mut a);
    let acked = acknowledged(&log);
    assert!(acked.len() > 50);
    kill_everything(&mut a);

    let second = home();
    let b = Server::start(second.path(), &refs(&env));
    let present = read_commits(&b);
    for (table, seq, _) in &acked {
        assert!(
            present.get(table).is_some_and(|s| s.contains(seq)),
            "{table} #{seq} was acknowledged and archived late, but is missing"
        );
    }
}

#[test]
fn a_replacement_fences_the_old_instance_and_other_clusters_are_refused() {
    let lake_dir = home();
    let target_dir = home();
    let target = target_dir.path().join("backups");
    let data_path = lake_dir.path().join("sales");
    let env = env_for(None, data_path.to_str().unwrap(), target.to_str().unwrap());
    let first = home();
    let mut a = start_backed_up(first.path(), &env);
    client_ok(&a, &["sql", "CREATE TABLE lake.t AS SELECT 1 AS x"]);
    wait_archived(&mut a);

    // The new task restores while the old one still runs; the old one must stop archiving.
    let second = home();
    let b = Server::start(second.path(), &refs(&env));
    assert_eq!(backup_body(&b)["lease_generation"], 2);
    // Its next archive attempt finds the newer lease (the client may already see it stop).
    let _ = client(&a, &["sql", "CREATE TABLE lake.from_old AS SELECT 1 AS x"]);
    let status = a.wait_exit(Duration::from_mins(1));
    assert_eq!(status.code(), Some(1), "{}", a.logs());
    assert!(a.logs().contains("superseded"), "{}", a.logs());
    let (code, stderr) = serve_fails(first.path(), &refs(&env));
    assert_eq!(code, 1);
    let line = error_line(&stderr);
    assert!(line.contains("was superseded"), "{line}");
    drop(b);

    // A cluster that never used this target is refused: it holds another cluster's history.
    let other = home();
    let other_env = env_for(
        None,
        lake_dir.path().join("other").to_str().unwrap(),
        target.to_str().unwrap(),
    );
    let without_target: Vec<(String, String)> = other_env
        .iter()
        .filter(|(k, _)| k != "DUCKLAKE_CATALOG_BACKUP__TARGET")
        .cloned()
        .collect();
    let mut c = Server::start(other.path(), &refs(&without_target));
    assert_eq!(c.stop().code(), Some(0));
    let (code, stderr) = serve_fails(other.path(), &refs(&other_env));
    assert_eq!(code, 1);
    let line = error_line(&stderr);
    assert!(line.contains("history of another cluster"), "{line}");
}

#[test]
fn bad_backup_targets_and_damaged_archives_are_named() {
    // A missing bucket stops the server before it serves, naming the target.
    let (moto, _) = s3_setup();
    let dir = home();
    let env = env_for(
        Some(&moto),
        "s3://lake/sales/",
        "s3://no-such-bucket/catalog/",
    );
    let (code, stderr) = serve_fails(dir.path(), &refs(&env));
    assert_eq!(code, 1);
    let line = error_line(&stderr);
    assert!(
        line.contains("backup target s3://no-such-bucket/catalog/")
            && line.contains("does not exist"),
        "{line}"
    );

    // Credentials the target's S3 rejects: named as the backup target's, with the fix.
    let strict = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let local_lake = home();
    let env = env_for(
        Some(&strict),
        local_lake.path().join("sales").to_str().unwrap(),
        "s3://backups/catalog/",
    );
    let (code, stderr) = serve_fails(home().path(), &refs(&env));
    assert_eq!(code, 1);
    let line = error_line(&stderr);
    assert!(
        line.contains("backup target s3://backups/catalog/")
            && line.contains("credentials were rejected"),
        "{line}"
    );

    // A damaged WAL segment is never replayed: the restore stops and names the object.
    let lake_dir = home();
    let target_dir = home();
    let target = target_dir.path().join("backups");
    let env = env_for(
        None,
        lake_dir.path().join("sales").to_str().unwrap(),
        target.to_str().unwrap(),
    );
    let first = home();
    let mut a = start_backed_up(first.path(), &env);
    client_ok(
        &a,
        &["sql", "CREATE TABLE lake.t AS SELECT i FROM range(10) t(i)"],
    );
    assert_eq!(a.stop().code(), Some(0));
    let stop_wal = std::fs::read_dir(target.join("basebackups"))
        .unwrap()
        .flatten()
        .find_map(|d| std::fs::read(d.path().join("manifest.json")).ok())
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m).unwrap()["stop_wal"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .unwrap();
    let mut after: Vec<PathBuf> = std::fs::read_dir(target.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.len() == 24 && n.as_str() > stop_wal.as_str()
        })
        .collect();
    after.sort();
    let victim = after
        .first()
        .expect("WAL archived after the base backup")
        .clone();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let second = home();
    let (code, stderr) = serve_fails(second.path(), &refs(&env));
    assert_eq!(code, 1);
    let line = error_line(&stderr);
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        line.contains("restore failed") || line.contains("corrupt"),
        "{line}"
    );
    let logs = std::fs::read_to_string(
        second.path().join(
            std::fs::read_dir(second.path())
                .unwrap()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with("serve-"))
                .unwrap()
                .file_name(),
        ),
    )
    .unwrap();
    assert!(logs.contains(&name) && logs.contains("corrupt"), "{logs}");
}
