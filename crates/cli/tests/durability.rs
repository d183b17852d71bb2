//! Durability: WAL archiving, base backups, automatic restore, PITR, S3 outages, fencing —
//! the real binary, real PostgreSQL 15, moto S3 and real DuckDB writers.

mod common;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::durable::*;
use common::{error_line, home, run_cli, serve_fails, Moto, Server};

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
