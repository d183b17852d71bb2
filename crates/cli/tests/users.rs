//! Per-lake users, proven with the real DuckDB client: a writer does every kind of operation a
//! DuckLake client does; a reader reads any snapshot, and each kind of write it attempts is
//! refused by PostgreSQL and changes nothing; neither reaches another lake or PostgreSQL itself.

mod common;

use std::io::Write as _;
use std::process::Stdio;

use common::{error_line, home, refused_by_permission, run_cli, Server};
use serde_json::Value;

const ADMIN_PASSWORD: &str = "admin-password-users-1";

/// Two lakes on local disk, `sales` and `hr`.
fn start() -> (tempfile::TempDir, Server) {
    let dir = home();
    let config = common::two_lakes(dir.path());
    let server = Server::start(
        dir.path(),
        &[
            ("DUCKLAKE_CATALOG_CONFIG", config.to_str().unwrap()),
            ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
        ],
    );
    (dir, server)
}

fn cli(server: &Server, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let config = server.home.join("catalog.toml");
    let env = [
        ("DUCKLAKE_CATALOG_CONFIG", config.to_str().unwrap()),
        (
            "DUCKLAKE_CATALOG_POSTGRES__PORT",
            &*server.pg_port.to_string(),
        ),
        ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
    ];
    match stdin {
        None => run_cli(&server.home, &env, args),
        Some(input) => {
            let mut cmd = common::base_command(&server.home, server.pg_port, server.http_port);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

/// `user create` and the password it printed.
fn create_user(server: &Server, name: &str, lake: &str, role: &str) -> String {
    let out = cli(
        server,
        &[
            "user", "create", name, "--lake", lake, "--role", role, "--format", "json",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["role"], role);
    v["password"].as_str().unwrap().to_owned()
}

/// Runs `lake_ops.py` and returns operation → outcome.
fn ops(server: &Server, user: &str, password: &str, lake: &str, mode: &str, table: &str) -> Value {
    ops_on(server.pooler_port, user, password, lake, mode, table)
}

/// [`ops`] on `port`: the pooler's (what clients are given) or PostgreSQL's own, where
/// another lake's user meets PostgreSQL's CONNECT privilege (the pooler's lookup refuses it
/// before that: `pooler.rs`).
fn ops_on(port: u16, user: &str, password: &str, lake: &str, mode: &str, table: &str) -> Value {
    common::client_script(
        "lake_ops.py",
        &[user, password, &port.to_string(), lake, mode, table],
    )
}

/// As the admin: a Parquet table `shared` and an inlined one `small` in `lake`.
fn seed(server: &Server, lake: &str) {
    common::seed_shared_and_small(&format!(
        "host=127.0.0.1 port={} user=admin password={ADMIN_PASSWORD} dbname={lake}",
        server.pooler_port
    ));
}

/// What the catalog holds, as the admin sees it: snapshots, and rows of `shared` and `small`.
fn catalog_state(server: &Server, lake: &str) -> Vec<i64> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = common::admin_client(server, ADMIN_PASSWORD, lake)
            .await
            .unwrap();
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM ducklake_snapshot),
                        (SELECT max(snapshot_id) FROM ducklake_snapshot),
                        (SELECT count(*) FROM ducklake_table WHERE end_snapshot IS NULL),
                        (SELECT count(*) FROM ducklake_data_file)",
                &[],
            )
            .await
            .unwrap();
        (0..4).map(|i| row.get::<_, i64>(i)).collect()
    })
}

/// DuckLake's maintenance functions: they delete catalog rows, which only the owner may.
const OWNER_ONLY: [&str; 5] = [
    "flush_inlined_data",
    "merge_adjacent_files",
    "expire_snapshots",
    "cleanup_old_files",
    "checkpoint",
];

#[test]
fn a_writer_does_every_operation_and_a_reader_only_reads() {
    let (_dir, server) = start();
    seed(&server, "sales");
    let writer_pw = create_user(&server, "pipeline", "sales", "writer");
    let reader_pw = create_user(&server, "analyst", "sales", "reader");

    // Before any writer: old snapshots are there to read.
    let read = ops(&server, "analyst", &reader_pw, "sales", "read", "shared");
    for (operation, outcome) in read.as_object().unwrap() {
        assert_eq!(outcome, "ok", "reader: {operation} failed: {outcome}");
    }

    let done = ops(&server, "pipeline", &writer_pw, "sales", "write", "events");
    for (operation, outcome) in done.as_object().unwrap() {
        // Maintenance deletes catalog rows and drops inlined tables: the lake's owner and the
        // server run it, a writer never deletes (docs/users.md).
        if OWNER_ONLY.contains(&operation.as_str()) {
            let text = outcome.as_str().unwrap();
            assert!(
                text == "ok" || refused_by_permission(text),
                "writer: {operation}: {text}"
            );
            continue;
        }
        assert_eq!(outcome, "ok", "writer: {operation} failed: {outcome}");
    }
    for refused in ["flush_inlined_data", "expire_snapshots", "checkpoint"] {
        assert!(
            refused_by_permission(done[refused].as_str().unwrap()),
            "writer: {refused} was not refused: {done}"
        );
    }
    assert_eq!(done.as_object().unwrap().len(), 19, "{done}");

    // The reader reads the admin's tables, the writer's (incl. inlined data it created) and
    // old snapshots.
    let read = ops(&server, "analyst", &reader_pw, "sales", "read", "events");
    for (operation, outcome) in read.as_object().unwrap() {
        assert_eq!(outcome, "ok", "reader: {operation} failed: {outcome}");
    }

    // Every kind of write, attached read-write: refused by PostgreSQL, nothing changed.
    let before = catalog_state(&server, "sales");
    let refused = ops(
        &server,
        "analyst",
        &reader_pw,
        "sales",
        "write-attempts",
        "shared",
    );
    for (operation, outcome) in refused.as_object().unwrap() {
        if operation == "attach" {
            assert_eq!(outcome, "ok");
            continue;
        }
        let text = outcome.as_str().unwrap();
        assert!(
            refused_by_permission(text),
            "reader: {operation} was not refused by a permission check: {text}"
        );
    }
    assert_eq!(refused.as_object().unwrap().len(), 10, "{refused}");
    assert_eq!(
        catalog_state(&server, "sales"),
        before,
        "a refused write changed the catalog"
    );
}

#[test]
fn an_owner_does_what_a_writer_does_and_alone_can_alter_ducklakes_tables() {
    let (_dir, server) = start();
    seed(&server, "sales");
    let owner_pw = create_user(&server, "steward", "sales", "owner");
    let writer_pw = create_user(&server, "pipeline", "sales", "writer");
    let done = ops(&server, "steward", &owner_pw, "sales", "write", "owned");
    for (operation, outcome) in done.as_object().unwrap() {
        assert_eq!(outcome, "ok", "owner: {operation} failed: {outcome}");
    }
    assert_eq!(done.as_object().unwrap().len(), 19, "{done}");
    let other = ops_on(server.pg_port, "steward", &owner_pw, "hr", "read", "shared");
    assert!(
        other["attach"]
            .as_str()
            .unwrap()
            .contains("permission denied for database"),
        "{other}"
    );
    // Altering DuckLake's own tables (what DuckLake's migration does): the owner only.
    let alter = "ALTER TABLE ducklake_metadata SET (autovacuum_enabled = true)";
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let owner = connect_as(&server, "steward", &owner_pw).await.unwrap();
        owner.batch_execute(alter).await.unwrap();
        let table_owner: String = owner
            .query_one(
                "SELECT tableowner::text FROM pg_tables WHERE tablename = 'ducklake_metadata'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(table_owner, "sales_owner");
        let writer = connect_as(&server, "pipeline", &writer_pw).await.unwrap();
        let err = writer.batch_execute(alter).await.unwrap_err();
        let msg = err
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(
            msg.contains("must be owner") || msg.contains("may not run ALTER TABLE"),
            "writer: {msg}"
        );
    });
    let list = cli(
        &server,
        &["user", "list", "--lake", "sales", "--format", "json"],
        None,
    );
    let users: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        users,
        serde_json::json!([
            {"name": "pipeline", "lake": "sales", "role": "writer"},
            {"name": "steward", "lake": "sales", "role": "owner"},
        ]),
        "the admin, a member of every owner role, is not listed"
    );
}

#[test]
fn users_reach_only_their_lake_and_never_postgres_itself() {
    let (_dir, server) = start();
    let writer_pw = create_user(&server, "loader", "sales", "writer");
    let reader_pw = create_user(&server, "viewer", "sales", "reader");

    // The other lake: CONNECT is the lake's own roles' only.
    for (user, pw) in [("loader", &writer_pw), ("viewer", &reader_pw)] {
        let other = ops_on(server.pg_port, user, pw, "hr", "read", "shared");
        let attach = other["attach"].as_str().unwrap();
        assert!(
            attach.contains("permission denied for database"),
            "{user}: {attach}"
        );
    }

    // PostgreSQL itself: no role, database or superuser powers.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = connect_as(&server, "loader", &writer_pw).await.unwrap();
        let row = client
            .query_one(
                "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = session_user",
                &[],
            )
            .await
            .unwrap();
        assert_eq!((row.get(0), row.get(1), row.get(2)), (false, false, false));
        for sql in ["CREATE ROLE intruder", "CREATE DATABASE intruder", "DROP DATABASE hr"] {
            let err = client.batch_execute(sql).await.unwrap_err();
            let msg = err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
            assert!(
                msg.contains("permission denied") || msg.contains("must be owner"),
                "{sql}: {msg}"
            );
        }
    });

    // list, rotate (the old password stops working, the new one works), drop.
    let list = cli(&server, &["user", "list", "--format", "json"], None);
    let users: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        users,
        serde_json::json!([
            {"name": "loader", "lake": "sales", "role": "writer"},
            {"name": "viewer", "lake": "sales", "role": "reader"},
        ])
    );
    let rotated = cli(
        &server,
        &[
            "user",
            "rotate",
            "viewer",
            "--password-stdin",
            "--format",
            "json",
        ],
        Some("a-brand-new-viewer-pw\n"),
    );
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let can = |user: &str, pw: &str| can_log_in(&server, user, pw);
    assert!(can("viewer", "a-brand-new-viewer-pw"));
    assert!(!can("viewer", &reader_pw));
    let dropped = cli(&server, &["user", "drop", "loader"], None);
    assert!(dropped.status.success());
    assert!(!can("loader", &writer_pw));
}

async fn connect_as(
    server: &Server,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    common::connect(server.pg_port, user, password, "sales").await
}

fn can_log_in(server: &Server, user: &str, password: &str) -> bool {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(connect_as(server, user, password))
        .is_ok()
}

#[test]
fn user_command_mistakes_are_one_line_naming_the_fix() {
    let (_dir, server) = start();
    create_user(&server, "viewer", "sales", "reader");
    // Mistakes are one line and exit 2 (usage) or 1 (state).
    for (command, stdin, code, needle) in [
        (
            "user create Bad-Name --lake sales --role reader",
            None,
            2,
            "is not a valid user name",
        ),
        (
            "user create admin --lake sales --role writer",
            None,
            2,
            "is not a valid user name",
        ),
        (
            "user create shorty --lake sales --role reader --password-stdin",
            Some("short\n"),
            2,
            "is too weak (5 characters)",
        ),
        (
            "user create viewer --lake sales --role reader",
            None,
            1,
            "user `viewer` already exists",
        ),
        (
            "user create someone --lake nope --role reader",
            None,
            2,
            "no lake named `nope`",
        ),
        ("user rotate nobody", None, 1, "no user named `nobody`"),
    ] {
        let args: Vec<&str> = command.split_whitespace().collect();
        let out = cli(&server, &args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(error_line(&stderr).contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn user_commands_without_a_running_server_say_so() {
    let dir = home();
    let out = run_cli(dir.path(), &[], &["user", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&String::from_utf8_lossy(&out.stderr));
    assert!(
        line.contains("the server's PostgreSQL is not reachable at"),
        "{line}"
    );
}

/// The yardstick that least privilege breaks nothing DuckLake's clients do: every DuckLake
/// feature area run as a writer (`python/writer_workload.py`: schemas, inlined and Parquet
/// inserts, updates, deletes, merge, schema evolution, views, macros, comments, variant and
/// nested types, partitioning, sorting, time travel, change feeds, commit messages, registering
/// files, the options a writer may set, two writers committing at once), with the owner-only
/// options and DuckLake's own conflicts refused, and maintenance by the owner in between.
/// (DuckLake's sqllogictest suite needs DuckDB's C++ test runner, which no registry package
/// ships, so this workload stands in for it; docs/security.md.)
#[test]
fn a_writer_passes_every_ducklake_feature_area_and_owner_only_options_are_refused() {
    let (_dir, server) = start();
    let writer = create_user(&server, "pipeline_one", "sales", "writer");
    let writer2 = create_user(&server, "pipeline_two", "sales", "writer");
    let owner = create_user(&server, "steward_one", "sales", "owner");
    let data_path = format!("{}/data/sales/", server.home.display());
    let report = common::client_script(
        "writer_workload.py",
        &[
            &server.pooler_port.to_string(),
            "sales",
            &data_path,
            &format!("pipeline_one:{writer}"),
            &format!("pipeline_two:{writer2}"),
            &format!("steward_one:{owner}"),
        ],
    );
    eprintln!("writer workload: {report}");
    assert_eq!(report["failed"], serde_json::json!([]), "{report}");
    assert_eq!(report["unexpected"], serde_json::json!([]), "{report}");
    let areas = report["areas"].as_object().unwrap();
    assert!(areas.len() >= 14, "{report}");
    assert!(report["steps"].as_u64().unwrap() >= 120, "{report}");
}
