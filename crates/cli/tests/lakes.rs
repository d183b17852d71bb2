//! Lakes as a product, against a real server and real DuckDB clients: `lake create` serves a
//! lake at once and after restarts, `lake list`/`show` report what the catalog holds, `lake drop`
//! removes the catalog, users and (on request) the data, `lake migrate` upgrades a catalog an
//! older DuckDB created, and the tuning's indexes serve DuckLake's query shapes.

mod common;

use std::time::Duration;

use common::{client_script, client_script_with, error_line, home, older_client, run_cli, Server};
use serde_json::Value;

const ADMIN_PASSWORD: &str = "admin-password-lakes-1";

/// A server with one configured lake, `sales`, on local disk.
fn start() -> (tempfile::TempDir, Server) {
    let dir = home();
    let config = dir.path().join("catalog.toml");
    std::fs::write(
        &config,
        format!(
            "[[lakes]]\nname = \"sales\"\ndata_path = \"{}/data/sales\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let env = env_for(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(dir.path(), &env);
    (dir, server)
}

fn env_for(home: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "DUCKLAKE_CATALOG_CONFIG",
            home.join("catalog.toml").to_string_lossy().into_owned(),
        ),
        (
            "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD",
            ADMIN_PASSWORD.into(),
        ),
    ]
}

fn restart(server: &mut Server) {
    assert!(server.stop().success());
    let env = env_for(&server.home);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    *server = Server::spawn_on(&server.home, server.pg_port, server.http_port, &env);
    server.wait_ready(Duration::from_mins(2));
}

fn cli(server: &Server, args: &[&str]) -> std::process::Output {
    let env = env_for(&server.home);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let port = server.pg_port.to_string();
    env.push(("DUCKLAKE_CATALOG_POSTGRES__PORT", &port));
    run_cli(&server.home, &env, args)
}

fn ok(server: &Server, args: &[&str]) -> String {
    let out = cli(server, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(server: &Server, args: &[&str]) -> Value {
    serde_json::from_str(&ok(server, args)).unwrap()
}

/// Exit code and the one error line of a failing command.
fn fails(server: &Server, args: &[&str]) -> (i32, String) {
    let out = cli(server, args);
    assert!(!out.status.success(), "{args:?} succeeded");
    (
        out.status.code().unwrap(),
        error_line(&String::from_utf8_lossy(&out.stderr)),
    )
}

fn data_path(server: &Server, lake: &str) -> String {
    format!("{}/data/{lake}/", server.home.display())
}

fn listed<'a>(list: &'a Value, lake: &str) -> Option<&'a Value> {
    list.as_array().unwrap().iter().find(|l| l["name"] == lake)
}

fn write_rows(server: &Server, user: &str, password: &str, lake: &str) -> Value {
    client_script(
        "lake_rows.py",
        &[
            user,
            password,
            &server.pooler_port.to_string(),
            lake,
            "write",
        ],
    )
}

fn wait_lake(server: &mut Server, lake: &str, present: bool) -> Value {
    server.wait_for(Duration::from_secs(30), |_, body| {
        body["lakes"]
            .get(lake)
            .is_some_and(|l| l["state"] == "ready")
            == present
    })
}

#[test]
fn a_lake_created_by_command_is_served_listed_and_kept_across_restarts() {
    let (_dir, mut server) = start();
    let created = json(
        &server,
        &[
            "lake",
            "create",
            "events",
            "--data-path",
            &data_path(&server, "events"),
            "--format",
            "json",
        ],
    );
    assert_eq!(created["spec_version"], "1.0");
    let ready = wait_lake(&mut server, "events", true);
    assert_eq!(ready["lakes"]["events"]["spec_version"], "1.0");

    let wrote = write_rows(&server, "admin", ADMIN_PASSWORD, "events");
    assert_eq!(wrote["rows"], 1003);
    let list = json(&server, &["lake", "list", "--format", "json"]);
    let events = listed(&list, "events").expect("events is listed");
    assert_eq!(events["origin"], "command");
    assert_eq!(events["data_path"], data_path(&server, "events"));
    assert_eq!(events["spec_version"], "1.0");
    assert_eq!(events["clients"], "DuckDB 1.5.2 and newer");
    assert_eq!(events["tables"], 1);
    assert!(events["data_files"].as_i64().unwrap() >= 1, "{events}");
    assert!(events["bytes"].as_i64().unwrap() > 0, "{events}");
    assert!(events["snapshots"].as_i64().unwrap() >= 3, "{events}");
    assert!(events["last_commit"].as_str().unwrap().ends_with('Z'));
    assert_eq!(listed(&list, "sales").unwrap()["origin"], "config");
    let text = ok(&server, &["lake", "list"]);
    assert!(text.lines().next().unwrap().starts_with("lake"), "{text}");
    assert!(
        text.contains("events") && text.contains("DuckDB 1.5.2 and newer"),
        "{text}"
    );

    // Commands given --lake find it: users, inspection, connect.
    let user = json(
        &server,
        &[
            "user", "create", "ana", "--lake", "events", "--role", "reader", "--format", "json",
        ],
    );
    let read = client_script(
        "lake_rows.py",
        &[
            "ana",
            user["password"].as_str().unwrap(),
            &server.pooler_port.to_string(),
            "events",
            "read",
        ],
    );
    assert_eq!(read["rows"], 1003);
    let tables = json(&server, &["tables", "--lake", "events", "--format", "json"]);
    assert_eq!(tables[0]["name"], "events");
    assert!(ok(&server, &["connect", "--lake", "events"]).contains("dbname=events"));

    let show = json(&server, &["lake", "show", "events", "--format", "json"]);
    assert_eq!(show["users"][0]["name"], "ana");
    assert_eq!(
        show["indexes"].as_array().unwrap().len(),
        catalog_server::tuning::INDEXES.len(),
        "{show}"
    );
    assert_eq!(show["missing_indexes"], serde_json::json!([]));
    assert!(show["attach"].as_str().unwrap().contains("dbname=events"));

    restart(&mut server);
    let ready = wait_lake(&mut server, "events", true);
    assert_eq!(ready["lakes"]["sales"]["state"], "ready");
    let list = json(&server, &["lake", "list", "--format", "json"]);
    assert_eq!(listed(&list, "events").unwrap()["tables"], 1);
    let read = write_rows(&server, "admin", ADMIN_PASSWORD, "events");
    assert_eq!(
        read["rows"], 2006,
        "the data written before the restart is there"
    );
    assert!(server.stop().success());
}

#[test]
fn lake_command_mistakes_are_one_line_naming_the_fix() {
    let (_dir, server) = start();
    let sales = data_path(&server, "sales");
    let inside = format!("{sales}nested/");
    let cases: &[(&[&str], &str)] = &[
        (
            &["lake", "create", "Bad-Name", "--data-path", "/tmp/x"],
            "is not a valid lake name",
        ),
        (
            &["lake", "create", "postgres", "--data-path", "/tmp/x"],
            "is not a valid lake name",
        ),
        (
            &["lake", "create", "sales", "--data-path", "/tmp/other"],
            "lake `sales` already exists",
        ),
        (
            &["lake", "create", "inner", "--data-path", &inside],
            "overlaps lake `sales`'s data path",
        ),
        (
            &["lake", "create", "rel", "--data-path", "relative/dir"],
            "--data-path",
        ),
        (
            &["lake", "drop", "sales", "--yes"],
            "is in the configuration",
        ),
        (&["lake", "drop", "nope", "--yes"], "no lake named `nope`"),
        (
            &["lake", "show", "nope"],
            "no lake named `nope`; lakes: sales",
        ),
        (&["lake", "migrate", "nope"], "no lake named `nope`"),
    ];
    for (args, expected) in cases {
        let (code, line) = fails(&server, args);
        assert_eq!(code, 2, "{args:?}: {line}");
        assert!(line.contains(expected), "{args:?}: {line}");
    }
    ok(
        &server,
        &[
            "lake",
            "create",
            "scratch",
            "--data-path",
            &data_path(&server, "scratch"),
        ],
    );
    let (code, line) = fails(&server, &["lake", "drop", "scratch"]);
    assert_eq!(code, 2);
    assert!(
        line.contains("run again with --yes") && line.contains("are kept"),
        "{line}"
    );
    let list = json(&server, &["lake", "list", "--format", "json"]);
    assert!(
        listed(&list, "scratch").is_some(),
        "nothing is dropped without --yes"
    );

    let mut server = server;
    let home = server.home.clone();
    assert!(server.stop().success());
    let env = env_for(&home);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run_cli(&home, &env, &["lake", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&String::from_utf8_lossy(&out.stderr));
    assert!(
        line.contains("not reachable") && line.contains("beside a running"),
        "{line}"
    );
}

#[test]
fn dropping_a_lake_removes_its_catalog_and_users_and_on_request_its_objects() {
    let (_dir, mut server) = start();
    let path = data_path(&server, "tmp");
    ok(&server, &["lake", "create", "tmp", "--data-path", &path]);
    wait_lake(&mut server, "tmp", true);
    write_rows(&server, "admin", ADMIN_PASSWORD, "tmp");
    let bob = json(
        &server,
        &[
            "user", "create", "bob", "--lake", "tmp", "--role", "writer", "--format", "json",
        ],
    );
    let parquet_files = walk(std::path::Path::new(&path));
    assert!(!parquet_files.is_empty());

    let out = ok(&server, &["lake", "drop", "tmp", "--delete-data", "--yes"]);
    assert!(
        out.contains(&format!("deleted {} objects", parquet_files.len())) && out.contains("bob"),
        "{out}"
    );
    assert!(
        !std::path::Path::new(&path).exists(),
        "the data path is gone"
    );
    wait_lake(&mut server, "tmp", false);
    let list = json(&server, &["lake", "list", "--format", "json"]);
    assert!(listed(&list, "tmp").is_none());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        assert!(common::admin_client(&server, ADMIN_PASSWORD, "tmp")
            .await
            .is_err());
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(server.pg_port)
            .user("bob")
            .password(bob["password"].as_str().unwrap())
            .dbname("postgres");
        assert!(
            cfg.connect(tokio_postgres::NoTls).await.is_err(),
            "bob is gone"
        );
    });

    // Without --delete-data the objects stay, and the same name and path can be used again.
    ok(&server, &["lake", "create", "tmp", "--data-path", &path]);
    write_rows(&server, "admin", ADMIN_PASSWORD, "tmp");
    let out = ok(&server, &["lake", "drop", "tmp", "--yes"]);
    assert!(out.contains("are kept"), "{out}");
    assert!(!walk(std::path::Path::new(&path)).is_empty());
    assert!(server.stop().success());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A superuser session over the server's socket (the tests run as the server's OS user).
async fn supervisor(server: &Server, db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host_path(server.home.join("run"))
        .port(server.pg_port)
        .user("ducklake_supervisor")
        .dbname(db)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// The guard's triggers of a lake, by table, with their oids and whether they are enabled.
async fn guard_triggers(client: &tokio_postgres::Client) -> Vec<(String, u32, String)> {
    client
        .query(
            "SELECT c.relname::text, g.oid, g.tgenabled::text FROM pg_trigger g
             JOIN pg_class c ON c.oid = g.tgrelid
             WHERE g.tgname = 'ducklake_guard' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Every bring-up and `lake migrate` runs the guard again while clients work. Replacing a row
/// trigger takes an ACCESS EXCLUSIVE lock: done table after table inside a client's
/// transaction it made clients deadlock (a CI run saw "deadlock detected" in a DuckDB commit).
/// A guarded lake's triggers are left as they are, so the guard waits on nobody; a tampered
/// one is replaced.
#[test]
fn the_guard_runs_again_beside_an_open_client_transaction_and_repairs_only_what_changed() {
    let (_dir, mut server) = start();
    wait_lake(&mut server, "sales", true);
    write_rows(&server, "admin", ADMIN_PASSWORD, "sales");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let su = rt.block_on(supervisor(&server, "sales"));
    let before = rt.block_on(guard_triggers(&su));
    assert!(before.len() > 10, "{before:?}");
    let client = rt.block_on(async {
        let client = common::admin_client(&server, ADMIN_PASSWORD, "sales")
            .await
            .unwrap();
        client.batch_execute("BEGIN").await.unwrap();
        let tables: Vec<String> = client
            .query(
                "SELECT relname::text FROM pg_class
                 WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for table in tables {
            client
                .batch_execute(&format!("SELECT count(*) FROM public.\"{table}\""))
                .await
                .unwrap();
        }
        client
    });
    std::thread::scope(|scope| {
        let migrate = scope.spawn(|| cli(&server, &["lake", "migrate", "sales"]));
        let deadline = std::time::Instant::now() + Duration::from_mins(1);
        while !migrate.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let finished = migrate.is_finished();
        rt.block_on(client.batch_execute("ROLLBACK")).unwrap();
        let out = migrate.join().unwrap();
        assert!(
            finished,
            "lake migrate waited on a client's open transaction: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    assert_eq!(
        rt.block_on(guard_triggers(&su)),
        before,
        "no trigger of a guarded lake is replaced"
    );

    rt.block_on(
        su.batch_execute("ALTER TABLE public.ducklake_snapshot DISABLE TRIGGER ducklake_guard"),
    )
    .unwrap();
    ok(&server, &["lake", "migrate", "sales"]);
    let after = rt.block_on(guard_triggers(&su));
    assert!(
        after.iter().all(|(_, _, enabled)| enabled == "O"),
        "{after:?}"
    );
    let replaced: Vec<&str> = after
        .iter()
        .filter(|t| !before.contains(t))
        .map(|(table, _, _)| table.as_str())
        .collect();
    assert_eq!(replaced, ["ducklake_snapshot"], "only the tampered trigger");
    assert!(server.stop().success());
}

#[test]
fn migrate_upgrades_a_catalog_an_older_duckdb_created() {
    let (_dir, mut server) = start();
    let old = catalog_server::versions::TOO_OLD_CLIENT_VERSION;
    let (venv, extensions) = older_client(old);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        supervisor(&server, "postgres")
            .await
            .batch_execute("CREATE DATABASE legacy OWNER admin")
            .await
            .unwrap();
    });
    let path = data_path(&server, "legacy");
    std::fs::create_dir_all(&path).unwrap();
    let wrote = client_script_with(
        &venv,
        &extensions,
        "lake_rows.py",
        &[
            "admin",
            ADMIN_PASSWORD,
            // Not a lake yet: the pooler does not serve it, the direct path reaches it.
            &server.pg_port.to_string(),
            "legacy",
            "write",
            &path,
        ],
    );
    assert_eq!(wrote["duckdb"], old);

    let created = json(
        &server,
        &[
            "lake",
            "create",
            "legacy",
            "--data-path",
            &path,
            "--format",
            "json",
        ],
    );
    assert_eq!(
        created["spec_version"], "0.4",
        "the existing catalog is adopted as it is"
    );
    let list = json(&server, &["lake", "list", "--format", "json"]);
    let legacy = listed(&list, "legacy").unwrap();
    assert_eq!(legacy["spec_version"], "0.4");
    assert_eq!(legacy["clients"], "DuckDB 1.5.0-1.5.1");
    assert!(
        legacy["note"]
            .as_str()
            .unwrap()
            .contains("lake migrate legacy"),
        "{legacy}"
    );

    let out = ok(&server, &["lake", "migrate", "legacy"]);
    assert!(out.contains("from DuckLake spec 0.4 to 1.0"), "{out}");
    let list = json(&server, &["lake", "list", "--format", "json"]);
    let legacy = listed(&list, "legacy").unwrap();
    assert_eq!(legacy["spec_version"], "1.0");
    assert_eq!(legacy["clients"], "DuckDB 1.5.2 and newer");
    assert_eq!(legacy["tables"], 1);
    // Today's client reads what the old one wrote, and writes on.
    let now = write_rows(&server, "admin", ADMIN_PASSWORD, "legacy");
    assert_eq!(now["rows"], 2006);

    let again = json(&server, &["lake", "migrate", "legacy", "--format", "json"]);
    assert_eq!(again["from"], "1.0");
    assert_eq!(
        again["tuning"]["created"],
        serde_json::json!([]),
        "idempotent"
    );
    wait_lake(&mut server, "legacy", true);
    assert!(server.stop().success());
}

#[test]
fn the_catalog_is_tuned_for_ducklakes_queries_and_nothing_of_ducklakes_changes() {
    let (_dir, mut server) = start();
    write_rows(&server, "admin", ADMIN_PASSWORD, "sales");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = supervisor(&server, "sales").await;
        // Each index serves the query shape DuckLake sends (seq scans off: the tables are tiny).
        db.batch_execute("SET enable_seqscan = off").await.unwrap();
        let shapes = [
            ("SELECT data_file_id, min_value FROM ducklake_file_column_stats WHERE column_id = 1 AND table_id = 2", "ducklake_catalog_file_column_stats_table_column"),
            ("SELECT * FROM ducklake_data_file WHERE table_id = 2 AND 5 >= begin_snapshot AND (5 < end_snapshot OR end_snapshot IS NULL)", "ducklake_catalog_data_file_table_snapshot"),
            ("SELECT * FROM ducklake_delete_file WHERE table_id = 2 AND 5 >= begin_snapshot", "ducklake_catalog_delete_file_table_snapshot"),
            ("SELECT * FROM ducklake_column WHERE table_id = 2 AND begin_snapshot <= 5", "ducklake_catalog_column_table"),
        ];
        for (query, index) in shapes {
            let plan: Vec<String> = db
                .query(&format!("EXPLAIN {query}"), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(plan.join("\n").contains(index), "{query}:\n{}", plan.join("\n"));
        }
        // The tuning adds indexes only: every other index is one of DuckLake's primary keys.
        let others: Vec<String> = db
            .query(
                "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
                 WHERE n.nspname = 'public' AND NOT i.indisprimary AND c.relname NOT LIKE 'ducklake_catalog_%'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(others.is_empty(), "{others:?}");
        let params: Vec<String> = db
            .query(
                "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE relname = 'ducklake_table_column_stats'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(params[0].contains("autovacuum_vacuum_scale_factor=0"), "{params:?}");

        let setting = |name: &'static str| {
            let db = &db;
            async move {
                db.query_one(&format!("SHOW {name}"), &[])
                    .await
                    .unwrap()
                    .get::<_, String>(0)
            }
        };
        assert_eq!(setting("jit").await, "off");
        assert_eq!(setting("idle_in_transaction_session_timeout").await, "10min");
        assert!(setting("shared_preload_libraries").await.contains("pg_stat_statements"));
        let expected = catalog_server::postgres::sizing::connections_for_memory(catalog_server::postgres::sizing::memory_limit());
        assert_eq!(setting("max_connections").await, expected.to_string());
        // What the client ran is recorded, per statement.
        let recorded: i64 = supervisor(&server, "postgres")
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                 WHERE d.datname = 'sales' AND s.query LIKE '%ducklake_snapshot%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(recorded > 0);
    });
    // Re-applying is a no-op and the catalog still works for clients.
    let again = json(&server, &["lake", "migrate", "sales", "--format", "json"]);
    assert_eq!(again["tuning"]["created"], serde_json::json!([]));
    assert_eq!(
        write_rows(&server, "admin", ADMIN_PASSWORD, "sales")["rows"],
        2006
    );
    assert!(server.stop().success());
}
