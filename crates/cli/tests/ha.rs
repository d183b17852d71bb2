//! Failover: two real servers on one backup target (moto S3), real PostgreSQL 15 streaming
//! replication and real DuckDB writers and readers. A killed primary in zero-loss mode, a
//! primary cut off from the backup target, a planned switchover, readers on the standby.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::durable::*;
use common::{error_line, home, serve_fails, Moto, Server};

const REPLICATION_PASSWORD: &str = "replication-test-pw-1";

/// Lake `sales` in a folder both servers share (as S3 would be), backups on moto through
/// `s3_endpoint`, failover on with a 4 s lease.
fn ha_env(moto: &Moto, s3_endpoint: &str, lake: &Path, synchronous: bool) -> Vec<(String, String)> {
    let mut env = env_for(
        Some(moto),
        lake.join("sales").to_str().unwrap(),
        "s3://backups/catalog/",
    );
    for (k, v) in &mut env {
        if k == "DUCKLAKE_CATALOG_S3__ENDPOINT" {
            s3_endpoint.clone_into(v);
        }
    }
    env.extend(
        [
            ("DUCKLAKE_CATALOG_HA__MODE", "auto"),
            ("DUCKLAKE_CATALOG_HA__LEASE_PERIOD", "4s"),
            ("DUCKLAKE_CATALOG_HA__ADVERTISE_HOST", "127.0.0.1"),
            (
                "DUCKLAKE_CATALOG_HA__REPLICATION_PASSWORD",
                REPLICATION_PASSWORD,
            ),
            (
                "DUCKLAKE_CATALOG_HA__SYNCHRONOUS",
                if synchronous { "true" } else { "false" },
            ),
            // After a failover no standby is left: commits wait this long, then go on.
            ("DUCKLAKE_CATALOG_HA__SYNCHRONOUS_TIMEOUT", "5s"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    env
}

fn moto_with_bucket() -> Moto {
    let moto = Moto::start(&[]);
    moto.python("s3.create_bucket(Bucket='backups')");
    moto
}

/// A primary with its first base backup, then a standby that streams from it.
fn pair(env_a: &[(String, String)], env_b: &[(String, String)]) -> (Server, Server) {
    let a = start_backed_up(&home().keep(), env_a);
    let mut b = Server::spawn(&home().keep(), &refs(env_b));
    b.wait_for(Duration::from_mins(2), |code, body| {
        code == 200 && body["ha"]["role"] == "standby" && body["ha"]["streaming"] == true
    });
    // (In zero-loss mode a commit waits for the standby, so the first one comes now.)
    client_ok(&a, &["sql", "CREATE TABLE lake.t AS SELECT 1 AS x"]);
    (a, b)
}

fn wait_role(server: &mut Server, role: &str) -> serde_json::Value {
    server.wait_for(Duration::from_mins(1), |code, body| {
        code == 200 && body["ha"]["role"] == role
    })
}

/// `psql` over TCP as the admin against `port`: (success, stdout + stderr).
fn psql(port: u16, sql: &str) -> (bool, String) {
    let out = Command::new(pg_bin("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "admin",
            "-d",
            "sales",
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql])
        .env_clear()
        .env("PGPASSWORD", PASSWORD)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn missing(log: &Path, on: &Server) -> Vec<(String, u64)> {
    let have = read_commits(on);
    acknowledged(log)
        .into_iter()
        .filter(|(t, seq, _)| !have.get(t).is_some_and(|s: &BTreeSet<u64>| s.contains(seq)))
        .map(|(t, seq, _)| (t, seq))
        .collect()
}

#[test]
fn a_standby_serves_readers_and_takes_over_a_killed_primary_losing_no_acknowledged_commit() {
    let moto = moto_with_bucket();
    let lake = home();
    let env = ha_env(&moto, &moto.endpoint(), lake.path(), true);
    let (mut a, mut b) = pair(&env, &env);

    // Roles as a load balancer sees them.
    assert_eq!(a.get("/readyz/primary").unwrap().0, 200);
    assert_eq!(a.get("/readyz/standby").unwrap().0, 503);
    assert_eq!(b.get("/readyz/standby").unwrap().0, 200);
    assert_eq!(b.get("/readyz/primary").unwrap().0, 503);
    let ready = a.wait_for(Duration::from_secs(30), |_, body| {
        body["ha"]["standbys"] == 1 && body["ha"]["synchronous"] == true
    });
    assert_eq!(ready["ha"]["role"], "primary", "{ready}");

    // A DuckDB reader on the standby sees the primary's commits; its writes fail.
    client_ok(&a, &["sql", "INSERT INTO lake.t VALUES (2)"]);
    let seen = standby_client(&b)
        .args(["sql", "SELECT sum(x) FROM lake.t"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&seen.stdout).contains("\"3\""),
        "{}",
        String::from_utf8_lossy(&seen.stderr)
    );
    let write = standby_client(&b)
        .args(["sql", "INSERT INTO lake.t VALUES (9)"])
        .output()
        .unwrap();
    assert!(!write.status.success());
    let err = String::from_utf8_lossy(&write.stderr);
    assert!(
        err.contains("read-only") || err.contains("read only"),
        "{err}"
    );
    // At the SQL level too: the catalog tables refuse every write on the standby.
    let (ok, out) = psql(
        b.pg_port,
        "INSERT INTO ducklake_snapshot SELECT * FROM ducklake_snapshot LIMIT 1",
    );
    assert!(
        !ok && out.contains("cannot execute INSERT in a read-only transaction"),
        "{out}"
    );

    // The replication role streams WAL over TLS and does nothing else: no database over TCP,
    // none over the socket, and no replication without TLS.
    for (host, db, extra) in [
        ("127.0.0.1", "sales", ""),
        (a.home.join("run").to_str().unwrap(), "postgres", ""),
        (
            "127.0.0.1",
            "replication",
            "replication=true sslmode=disable",
        ),
    ] {
        let out = Command::new(pg_bin("psql"))
            .arg(format!(
                "host={host} port={} user=ducklake_replication dbname={db} {extra}",
                a.pg_port
            ))
            .args(["-Atc", "SELECT 1"])
            .env_clear()
            .env("PGPASSWORD", REPLICATION_PASSWORD)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("pg_hba.conf"),
            "{host} {db}: {err}"
        );
    }

    // Writers on the primary; the primary's task dies.
    let log = lake.path().join("commits.log");
    let writers = spawn_writers(&a, 2, 30.0, &log);
    std::thread::sleep(Duration::from_secs(4));
    kill_everything(&mut a);
    let killed = Instant::now();
    let promoted = wait_role(&mut b, "primary");
    let rto = killed.elapsed();
    for mut w in writers {
        w.wait().unwrap();
    }
    eprintln!("failover took {rto:?}: {promoted}");
    assert!(rto < Duration::from_secs(30), "{rto:?}");
    b.wait_ready(Duration::from_mins(1));
    let acked = acknowledged(&log).len();
    assert!(acked > 10, "the writers committed only {acked} times");
    let lost = missing(&log, &b);
    assert!(
        lost.is_empty(),
        "acknowledged commits lost in zero-loss mode: {lost:?}"
    );
    assert_eq!(b.get("/readyz/primary").unwrap().0, 200);
    client_ok(&b, &["sql", "INSERT INTO lake.t VALUES (4)"]);

    // The old primary's data directory never rejoins silently.
    let (code, stderr) = serve_fails(&a.home, &refs(&env));
    assert_eq!(code, 1);
    let line = error_line(&stderr);
    assert!(line.contains("does not rejoin on its own"), "{line}");
}

#[test]
fn a_primary_cut_off_from_the_backup_target_stops_before_a_standby_takes_over() {
    let moto = moto_with_bucket();
    let proxy = Outage::start(moto.port);
    let lake = home();
    let env_a = ha_env(
        &moto,
        &format!("http://127.0.0.1:{}", proxy.port),
        lake.path(),
        false,
    );
    let env_b = ha_env(&moto, &moto.endpoint(), lake.path(), false);
    let (mut a, mut b) = pair(&env_a, &env_b);
    let log = lake.path().join("commits.log");
    let writers = spawn_writers(&a, 2, 30.0, &log);
    std::thread::sleep(Duration::from_secs(3));
    // S3 goes away for the primary only; it still runs and its standby still streams.
    proxy.up.store(false, Ordering::SeqCst);
    let status = a.wait_exit(Duration::from_mins(1));
    assert_eq!(status.code(), Some(1), "{}", a.logs());
    assert!(a.logs().contains("was not renewed"), "{}", a.logs());
    wait_role(&mut b, "primary");
    for mut w in writers {
        w.wait().unwrap();
    }
    // No split brain: the old primary's last acknowledged commit came before the standby
    // took the lease (and it promotes half a lease period after that).
    let taken = moto.python(
        "import json, re, datetime\n\
         d = json.loads(s3.get_object(Bucket='backups', Key='catalog/leases/00000000000000000002.json')['Body'].read())\n\
         t = re.sub(r'(\\.\\d{6})\\d*', r'\\1', d['acquired_at']).replace('Z', '+00:00')\n\
         print(datetime.datetime.fromisoformat(t).timestamp())",
    );
    let taken: f64 = taken.trim().parse().unwrap();
    let last_ack = acknowledged(&log)
        .iter()
        .map(|(_, _, at)| *at)
        .fold(0.0, f64::max);
    assert!(last_ack > 0.0);
    assert!(
        last_ack < taken,
        "the old primary acknowledged a commit at {last_ack}, after the standby took over at {taken}"
    );
    client_ok(&b, &["sql", "INSERT INTO lake.t VALUES (5)"]);
    // A switchover with no standby to take over is refused, and stops nothing.
    let refused = common::run_cli(&b.home, &refs(&env_b), &["switchover"]);
    assert!(!refused.status.success());
    let line = error_line(&String::from_utf8_lossy(&refused.stderr));
    assert!(
        line.contains("no standby streams from this primary"),
        "{line}"
    );
    client_ok(&b, &["sql", "INSERT INTO lake.t VALUES (6)"]);
    // Back in touch with S3, the old primary refuses in one line.
    proxy.up.store(true, Ordering::SeqCst);
    let (code, stderr) = serve_fails(&a.home, &refs(&env_a));
    assert_eq!(code, 1);
    assert!(
        error_line(&stderr).contains("does not rejoin on its own"),
        "{stderr}"
    );
}

#[test]
fn a_switchover_loses_no_commit_and_the_old_primary_follows_the_new_one() {
    let moto = moto_with_bucket();
    let lake = home();
    let env = ha_env(&moto, &moto.endpoint(), lake.path(), false);
    let (mut a, mut b) = pair(&env, &env);
    let log = lake.path().join("commits.log");
    for mut w in spawn_writers(&a, 2, 3.0, &log) {
        w.wait().unwrap();
    }
    // Refused where it makes no sense: on the standby.
    let refused = common::run_cli(&b.home, &refs(&env), &["switchover"]);
    assert!(!refused.status.success());
    assert!(
        error_line(&String::from_utf8_lossy(&refused.stderr)).contains("not a primary"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let started = Instant::now();
    let out = common::run_cli(&a.home, &refs(&env), &["switchover"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.logs()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("handed over"));
    wait_role(&mut b, "primary");
    eprintln!("switchover took {:?}", started.elapsed());
    b.wait_ready(Duration::from_mins(1));
    let lost = missing(&log, &b);
    assert!(lost.is_empty(), "commits lost in the switchover: {lost:?}");
    // The old primary, same process, follows the new one and serves readers.
    wait_role(&mut a, "standby");
    client_ok(&b, &["sql", "CREATE TABLE lake.after AS SELECT 7 AS x"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = standby_client(&a)
            .args(["sql", "SELECT x FROM lake.after"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("\"7\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
