//! `snapshots`, `tables`, `files` and `usage` read the catalog natively; on the same lake they
//! must say what DuckDB's own `ducklake_snapshots()`, `ducklake_table_info()` and
//! `ducklake_list_files()` say.

mod common;

use common::{client_script, error_line, home, run_cli, Server};
use serde_json::Value;

const PASSWORD: &str = "admin-password-inspect-1";

fn cli_json(server: &Server, args: &[&str]) -> Value {
    let out = cli(server, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn cli(server: &Server, args: &[&str]) -> std::process::Output {
    let mut full = args.to_vec();
    full.extend(["--lake", "lakehouse"]);
    run_cli(
        &server.home,
        &[
            (
                "DUCKLAKE_CATALOG_POSTGRES__PORT",
                &*server.pg_port.to_string(),
            ),
            ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", PASSWORD),
        ],
        &full,
    )
}

fn duckdb_view(server: &Server) -> Value {
    client_script(
        "inspect_lake.py",
        &[&server.pooler_port.to_string(), PASSWORD],
    )
}

#[test]
fn inspection_matches_what_duckdb_itself_reports() {
    let dir = home();
    let server = Server::start(
        dir.path(),
        &[("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", PASSWORD)],
    );
    let duck = duckdb_view(&server);

    let ours = cli_json(&server, &["snapshots", "--format", "json"]);
    let ours: Vec<Value> = ours
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s["id"],
                "schema_version": s["schema_version"],
                "changes": s["changes"].as_array().unwrap().len(),
                "author": s["author"],
                "message": s["commit_message"],
            })
        })
        .collect();
    assert_eq!(Value::from(ours), duck["snapshots"]);
    assert!(duck["snapshots"].as_array().unwrap().len() >= 7);

    let tables = cli_json(&server, &["tables", "--format", "json"]);
    let ours: Vec<Value> = tables
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t["name"], "files": t["data_files"], "bytes": t["bytes"], "deletes": t["delete_files"],
            })
        })
        .collect();
    let mut ours = ours;
    ours.sort_by_key(|t| t["name"].as_str().unwrap().to_owned());
    assert_eq!(Value::from(ours), duck["tables"]);
    assert_eq!(tables[0]["schema"], "main");
    assert_eq!(tables[1]["schema"], "ops");

    let files = cli_json(&server, &["files", "--table", "events", "--format", "json"]);
    let ours: Vec<Value> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            serde_json::json!({
                "path": f["path"],
                "bytes": f["bytes"],
                "delete": f["delete_files"].as_array().unwrap().first().map(|d| d["path"].clone()),
            })
        })
        .collect();
    assert_eq!(Value::from(ours), duck["files"]);
    assert_eq!(files.as_array().unwrap().len(), 2, "{files}");

    // Three rows were inlined into the catalog and not flushed yet.
    let usage = cli_json(&server, &["usage", "--format", "json"]);
    assert_eq!(usage[0]["table"], "events");
    assert_eq!(usage[0]["inlined_rows"], 3);
    assert_eq!(usage[0]["delete_files"], 2);

    // Any snapshot in the past: the table did not exist at snapshot 0.
    let at_zero = cli_json(&server, &["tables", "--snapshot", "0", "--format", "json"]);
    assert_eq!(at_zero, serde_json::json!([]));
    let text = String::from_utf8_lossy(&cli(&server, &["snapshots"]).stdout).into_owned();
    assert!(
        text.lines().next().unwrap().starts_with("snapshot")
            && text.contains("ingest-bot")
            && text.contains("three small rows"),
        "{text}"
    );
}

#[test]
fn an_unknown_spec_version_is_refused_not_misread() {
    let dir = home();
    let server = Server::start(
        dir.path(),
        &[("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", PASSWORD)],
    );
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = common::admin_client(&server, PASSWORD, "lakehouse")
            .await
            .unwrap();
        client
            .batch_execute("UPDATE ducklake_metadata SET value = '9.9' WHERE key = 'version'")
            .await
            .unwrap();
    });
    let out = cli(&server, &["tables"]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&String::from_utf8_lossy(&out.stderr));
    assert!(
        line.contains("lake `lakehouse` has DuckLake catalog spec 9.9, which this release does not read (it knows 1.0)"),
        "{line}"
    );
    let out = cli(&server, &["files", "--table", "nope"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn unknown_tables_and_snapshots_are_named() {
    let dir = home();
    let server = Server::start(
        dir.path(),
        &[("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", PASSWORD)],
    );
    for (args, needle) in [
        (
            vec!["files", "--table", "nope"],
            "lake `lakehouse` has no table `nope` (tables: )",
        ),
        (
            vec!["tables", "--snapshot", "99"],
            "lake `lakehouse` has no snapshot 99 (snapshots 0 to 0 exist)",
        ),
    ] {
        let out = cli(&server, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let line = error_line(&String::from_utf8_lossy(&out.stderr));
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

/// Every command, job and metrics refresh that enters a lake resets its server role first; many
/// at once must take turns rather than fail with PostgreSQL's "tuple concurrently updated".
#[test]
fn many_sessions_entering_one_lake_at_once_all_succeed() {
    let dir = home();
    let server = Server::start(
        dir.path(),
        &[("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", PASSWORD)],
    );
    for round in 0..3 {
        let outputs: Vec<std::process::Output> = std::thread::scope(|s| {
            let running: Vec<_> = (0..8)
                .map(|_| s.spawn(|| cli(&server, &["snapshots", "--format", "json"])))
                .collect();
            running.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for out in outputs {
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
