//! The lake keeps itself healthy, proven against a real server and real DuckDB clients: a
//! scheduled job expires snapshots and merges small files while a client keeps writing, the
//! catalog garbage DuckLake leaves is removed without breaking time travel, `verify` finds
//! deleted, truncated and corrupt Parquet objects, and `gc` removes only old orphans.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{client_script, error_line, home, run_cli, Server};
use serde_json::Value;

const ADMIN_PASSWORD: &str = "admin-password-upkeep-1";

/// A server with lake `sales` on local disk and `[maintenance]` as given.
fn start(maintenance: &str) -> (tempfile::TempDir, Server) {
    let dir = home();
    std::fs::write(
        dir.path().join("catalog.toml"),
        format!(
            "[maintenance]\n{maintenance}\n\n[[lakes]]\nname = \"sales\"\ndata_path = \"{}/data/sales\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let config = dir.path().join("catalog.toml");
    let server = Server::start(
        dir.path(),
        &[
            ("DUCKLAKE_CATALOG_CONFIG", config.to_str().unwrap()),
            ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
        ],
    );
    (dir, server)
}

fn cli(server: &Server, args: &[&str]) -> std::process::Output {
    let config = server.home.join("catalog.toml");
    let port = server.pg_port.to_string();
    run_cli(
        &server.home,
        &[
            ("DUCKLAKE_CATALOG_CONFIG", config.to_str().unwrap()),
            ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("DUCKLAKE_CATALOG_POSTGRES__PORT", &port),
        ],
        args,
    )
}

fn json_ok(server: &Server, args: &[&str]) -> Value {
    let out = cli(server, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sql_one(server: &Server, query: &str) -> i64 {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        common::admin_client(server, ADMIN_PASSWORD, "sales")
            .await
            .unwrap()
            .query_one(query, &[])
            .await
            .unwrap()
            .get(0)
    })
}

fn data_dir(server: &Server) -> PathBuf {
    server.home.join("data/sales")
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|e| e == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn a_scheduled_job_expires_snapshots_and_merges_small_files_while_a_client_writes() {
    let (_dir, mut server) = start(
        "interval = \"4s\"\nexpire_snapshots_older_than = \"2s\"\ncleanup_old_files_older_than = \"1s\"",
    );
    let port = server.pooler_port.to_string();
    let writer = std::thread::spawn(move || {
        client_script(
            "writer.py",
            &["admin", ADMIN_PASSWORD, &port, "sales", "20"],
        )
    });
    // At least one job runs while the writer commits, and one after it stopped.
    let mut jobs = Vec::new();
    while !writer.is_finished() || jobs.len() < 2 {
        let body = server.wait_for(Duration::from_mins(1), |_, b| {
            b["maintenance"]["sales"]["last"]["started_at"].is_string()
        });
        let last = body["maintenance"]["sales"]["last"].clone();
        if jobs.last() != Some(&last) {
            jobs.push(last);
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(jobs.len() < 40, "{jobs:?}");
    }
    let wrote = writer.join().unwrap();
    assert_eq!(
        wrote["errors"],
        serde_json::json!([]),
        "the client saw: {wrote}"
    );
    assert_eq!(wrote["count"], wrote["rows"], "no row is lost: {wrote}");
    let total = |k: &str| jobs.iter().map(|j| j[k].as_i64().unwrap()).sum::<i64>();
    assert!(
        jobs.iter().all(|j| j["outcome"] == "ok"),
        "every job finished: {jobs:#?}"
    );
    assert!(total("snapshots_expired") > 0, "{jobs:#?}");
    assert!(total("files_merged") > 1, "{jobs:#?}");
    assert!(total("rows_flushed") > 0, "{jobs:#?}");
    assert!(total("files_deleted") > 0, "{jobs:#?}");
    // Merged: far fewer live files than the writer's Parquet commits.
    let live = sql_one(
        &server,
        "SELECT count(*) FROM ducklake_data_file WHERE end_snapshot IS NULL",
    );
    let parquet_commits = wrote["commits"].as_i64().unwrap() / 2;
    assert!(
        live < parquet_commits,
        "{live} live files for {parquet_commits} commits"
    );
    let body = server.get("/readyz").unwrap().1;
    assert!(body["maintenance"]["sales"]["next_run"].is_string());
    assert!(
        server.logs().contains("maintenance: "),
        "a log line per job"
    );
    assert!(server.stop().success());
}

#[test]
fn catalog_garbage_of_dropped_tables_is_removed_and_time_travel_still_works() {
    let (_dir, server) = start("enabled = false");
    let port = server.pooler_port.to_string();
    let made = client_script(
        "garbage.py",
        &["admin", ADMIN_PASSWORD, &port, "sales", "make"],
    );
    let before_drops = made["before_drops"].as_i64().unwrap().to_string();
    let stats_of_dropped = "SELECT count(*) FROM ducklake_table_column_stats s WHERE NOT EXISTS (
         SELECT 1 FROM ducklake_table t WHERE t.table_id = s.table_id AND t.end_snapshot IS NULL)";
    let orphan_before = sql_one(&server, stats_of_dropped);
    assert!(
        orphan_before >= 4,
        "DuckLake left stats of d0 and d1: {orphan_before}"
    );
    let inlined_before = sql_one(&server, "SELECT count(*) FROM ducklake_inlined_data_tables");

    let dry = json_ok(
        &server,
        &[
            "maintain",
            "--lake",
            "sales",
            "--dry-run",
            "--format",
            "json",
        ],
    );
    assert_eq!(
        dry["garbage"]["table_column_stats_rows"].as_i64().unwrap(),
        orphan_before
    );
    assert!(
        dry["garbage"]["inlined_tables"].as_i64().unwrap() >= 1,
        "{dry}"
    );
    assert_eq!(
        sql_one(&server, stats_of_dropped),
        orphan_before,
        "a dry run changes nothing"
    );

    let done = json_ok(
        &server,
        &["maintain", "--lake", "sales", "--format", "json"],
    );
    assert_eq!(done["outcome"], "ok", "{done}");
    assert_eq!(
        done["garbage"], dry["garbage"],
        "the dry run counted exactly"
    );
    assert_eq!(sql_one(&server, stats_of_dropped), 0);
    assert_eq!(
        sql_one(&server, "SELECT count(*) FROM ducklake_table_stats s WHERE NOT EXISTS (
             SELECT 1 FROM ducklake_table t WHERE t.table_id = s.table_id AND t.end_snapshot IS NULL)"),
        0
    );
    assert!(sql_one(&server, "SELECT count(*) FROM ducklake_inlined_data_tables") < inlined_before);

    let read = client_script(
        "garbage.py",
        &[
            "admin",
            ADMIN_PASSWORD,
            &port,
            "sales",
            "read",
            &before_drops,
        ],
    );
    assert_eq!(
        read["d0_before_drop"], 102,
        "time travel to the dropped table still reads it"
    );
    assert_eq!(read["d2"], 103, "the lake takes commits");
    let again = json_ok(
        &server,
        &["maintain", "--lake", "sales", "--format", "json"],
    );
    assert_eq!(again["garbage"]["table_column_stats_rows"], 0);
    let mut server = server;
    assert!(server.stop().success());
}

fn write_table(server: &Server) {
    let port = server.pooler_port.to_string();
    for _ in 0..3 {
        client_script(
            "lake_rows.py",
            &["admin", ADMIN_PASSWORD, &port, "sales", "write"],
        );
    }
}

#[test]
fn verify_finds_a_deleted_a_truncated_and_a_corrupt_parquet_object() {
    let (_dir, mut server) = start("enabled = false");
    write_table(&server);
    let ok = json_ok(
        &server,
        &["verify", "--lake", "sales", "--deep", "--format", "json"],
    );
    assert_eq!(ok["problems"], serde_json::json!([]), "{ok}");
    let files = parquet_files(&data_dir(&server));
    assert_eq!(ok["files_checked"].as_u64().unwrap(), files.len() as u64);
    assert!(files.len() >= 3);

    std::fs::remove_file(&files[0]).unwrap();
    let half = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[1], &half[..half.len() / 2]).unwrap();
    let mut corrupt = std::fs::read(&files[2]).unwrap();
    let n = corrupt.len();
    corrupt[n - 4..].copy_from_slice(b"XXXX");
    std::fs::write(&files[2], &corrupt).unwrap();

    let shallow = cli(&server, &["verify", "--lake", "sales", "--format", "json"]);
    assert_eq!(shallow.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&shallow.stdout).unwrap();
    let kinds: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["problem"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "missing").count(),
        1,
        "{report}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "size").count(),
        1,
        "{report}"
    );
    assert_eq!(
        kinds.len(),
        2,
        "same size, so only --deep sees the corrupt footer: {report}"
    );
    let deep = cli(&server, &["verify", "--lake", "sales", "--deep"]);
    assert_eq!(deep.status.code(), Some(1));
    let text = String::from_utf8_lossy(&deep.stdout);
    assert!(
        text.contains("unreadable") && text.contains(&*files[2].to_string_lossy()),
        "{text}"
    );
    let line = error_line(&String::from_utf8_lossy(&deep.stderr));
    assert!(
        line.contains("3 of") && line.contains("do not match the catalog"),
        "{line}"
    );
    assert!(server.stop().success());
}

#[test]
fn gc_removes_an_old_orphan_but_not_a_fresh_one_nor_a_referenced_file() {
    let (_dir, mut server) = start("enabled = false");
    write_table(&server);
    let referenced = parquet_files(&data_dir(&server));
    let old = data_dir(&server).join("main/events/ducklake-left-by-a-crashed-writer.parquet");
    let fresh = data_dir(&server).join("main/events/ducklake-being-written-now.parquet");
    std::fs::write(&old, b"PAR1 half a file").unwrap();
    std::fs::write(&fresh, b"PAR1 half a file").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_hours(48))
        .unwrap();

    let orphans = json_ok(&server, &["orphans", "--lake", "sales", "--format", "json"]);
    let listed: Vec<&str> = orphans["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{orphans}");
    assert!(
        listed.contains(&&*old.to_string_lossy()) && listed.contains(&&*fresh.to_string_lossy())
    );

    let plan = cli(&server, &["gc", "--lake", "sales"]);
    assert_eq!(plan.status.code(), Some(2));
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains(&format!("would delete {}", old.display())),
        "{text}"
    );
    assert!(!text.contains(&*fresh.to_string_lossy()), "{text}");
    let line = error_line(&String::from_utf8_lossy(&plan.stderr));
    assert!(line.contains("run again with --yes"), "{line}");
    assert!(old.exists(), "nothing is deleted without --yes");

    let done = json_ok(
        &server,
        &["gc", "--lake", "sales", "--yes", "--format", "json"],
    );
    assert_eq!(done["deleted"], 1, "{done}");
    assert_eq!(done["kept_young"], 1);
    assert!(!old.exists() && fresh.exists());
    assert!(
        referenced.iter().all(|f| f.exists()),
        "no referenced file is touched"
    );
    let ok = json_ok(&server, &["verify", "--lake", "sales", "--format", "json"]);
    assert_eq!(ok["problems"], serde_json::json!([]));
    assert!(server.stop().success());
}
