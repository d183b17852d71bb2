//! The supervised connection pooler (`[pooler]`), against a real server, Debian's PgBouncer and
//! the real DuckDB client: a writer and a reader work through it; it looks users up live (a
//! rotated password works at once, the old one no longer does); it lets in only the login
//! roles of the lake a client names — never the server's own roles, the pooler's lookup role or
//! a user of another lake; a reader's writes are refused through it; killed, it is restarted
//! and clients connect again; it stops before PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{home, run_cli, Server};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const ADMIN_PASSWORD: &str = "admin-password-pooler-1";

struct Pooled {
    _dir: tempfile::TempDir,
    server: Server,
    port: u16,
}

/// A server with two lakes, `sales` and `hr`, and the pooler on a free port.
fn start() -> Pooled {
    let dir = home();
    let config = dir.path().join("catalog.toml");
    std::fs::write(
        &config,
        format!(
            "[[lakes]]\nname = \"sales\"\ndata_path = \"{0}/data/sales\"\n\n[[lakes]]\nname = \"hr\"\ndata_path = \"{0}/data/hr\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let port = common::free_port();
    let port_text = port.to_string();
    let mut server = Server::spawn(
        dir.path(),
        &[
            ("DUCKLAKE_CATALOG_CONFIG", config.to_str().unwrap()),
            ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("DUCKLAKE_CATALOG_POOLER__ENABLED", "true"),
            ("DUCKLAKE_CATALOG_POOLER__PORT", &port_text),
        ],
    );
    server.wait_ready(Duration::from_mins(2));
    Pooled {
        _dir: dir,
        server,
        port,
    }
}

fn cli(p: &Pooled, args: &[&str]) -> std::process::Output {
    let config = p.server.home.join("catalog.toml");
    let pg_port = p.server.pg_port.to_string();
    let pooler_port = p.port.to_string();
    let env = [
        ("DUCKLAKE_CATALOG_CONFIG", config.to_str().unwrap()),
        ("DUCKLAKE_CATALOG_POSTGRES__PORT", pg_port.as_str()),
        ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("DUCKLAKE_CATALOG_POOLER__ENABLED", "true"),
        ("DUCKLAKE_CATALOG_POOLER__PORT", pooler_port.as_str()),
    ];
    run_cli(&p.server.home, &env, args)
}

fn json(p: &Pooled, args: &[&str]) -> Value {
    let out = cli(p, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `user create` and the password it printed.
fn create_user(p: &Pooled, name: &str, lake: &str, role: &str) -> String {
    let v = json(
        p,
        &[
            "user", "create", name, "--lake", lake, "--role", role, "--format", "json",
        ],
    );
    v["password"].as_str().unwrap().to_owned()
}

fn refused(r: Result<tokio_postgres::Client, tokio_postgres::Error>, who: &str) -> String {
    match r {
        Ok(_) => panic!("{who} logged in through the pooler"),
        Err(e) => format!("{e:?}"),
    }
}

fn pooler_status(server: &Server) -> Value {
    server.get("/readyz").expect("readyz answers").1["pooler"].clone()
}

#[test]
fn lake_users_work_through_the_pooler_and_nobody_else_gets_in() {
    let mut p = start();
    let status = pooler_status(&p.server);
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["port"], p.port);

    // `connect` hands out the pooled port.
    let attach = json(&p, &["connect", "--lake", "sales", "--format", "json"]);
    assert!(
        attach.to_string().contains(&format!("port={}", p.port)),
        "{attach}"
    );

    // The real DuckDB client, as a writer and a reader, through the pooler.
    let writer_pw = create_user(&p, "pipeline", "sales", "writer");
    let reader_pw = create_user(&p, "analyst", "sales", "reader");
    let hr_pw = create_user(&p, "payroll", "hr", "writer");
    let port = p.port.to_string();
    let wrote = common::client_script(
        "lake_rows.py",
        &["pipeline", &writer_pw, &port, "sales", "write"],
    );
    assert_eq!(wrote["rows"], 1003, "{wrote}");
    let read = common::client_script(
        "lake_rows.py",
        &["analyst", &reader_pw, &port, "sales", "read"],
    );
    assert_eq!(read["rows"], 1003, "{read}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(only_the_lakes_own_users_get_in(p.port, &reader_pw, &hr_pw));

    a_created_lake_is_pooled_once_ready(&mut p, &rt);

    // A rotation takes effect at once, while a pooled session of the user is open.
    let open = rt
        .block_on(common::connect(p.port, "pipeline", &writer_pw, "sales"))
        .unwrap();
    let new_pw = json(&p, &["user", "rotate", "pipeline", "--format", "json"])["password"]
        .as_str()
        .unwrap()
        .to_owned();
    rt.block_on(async {
        refused(
            common::connect(p.port, "pipeline", &writer_pw, "sales").await,
            "the old password",
        );
        let again = common::connect(p.port, "pipeline", &new_pw, "sales")
            .await
            .unwrap();
        again.simple_query("SELECT 1").await.unwrap();
        open.simple_query("SELECT 1").await.unwrap();
    });

    // Killed, the pooler is started again and clients connect again.
    let pid = i32::try_from(pooler_status(&p.server)["pid"].as_i64().unwrap()).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let back = p.server.wait_for(Duration::from_mins(1), |_, body| {
        body["pooler"]["state"] == "running"
            && body["pooler"]["pid"].as_i64() != Some(i64::from(pid))
    });
    assert_eq!(back["pooler"]["restarts"], 1, "{back}");
    let read = common::client_script(
        "lake_rows.py",
        &["analyst", &reader_pw, &port, "sales", "read"],
    );
    assert_eq!(read["rows"], 1003);

    // The pooler stops before PostgreSQL, and with the server.
    let started = Instant::now();
    assert!(p.server.stop().success());
    assert!(started.elapsed() < Duration::from_secs(30));
    let logs = p.server.logs();
    let pooler_stopped = logs
        .find("the connection pooler stopped")
        .expect("pooler stop logged");
    let postgres_stopped = logs
        .rfind("postgres stopped")
        .expect("postgres stop logged");
    assert!(pooler_stopped < postgres_stopped, "pooler first");
    assert!(std::net::TcpStream::connect(("127.0.0.1", p.port)).is_err());
}

/// Attacks through the pooler: a reader's write, other lakes' users, the server's roles, the
/// lookup role and the superuser (with a wrong and an empty password), non-lake databases.
async fn only_the_lakes_own_users_get_in(port: u16, reader_pw: &str, hr_pw: &str) {
    // A reader's write is refused by PostgreSQL through the pooler too.
    let reader = common::connect(port, "analyst", reader_pw, "sales")
        .await
        .unwrap();
    let e = reader
        .batch_execute("DELETE FROM public.ducklake_snapshot")
        .await
        .unwrap_err();
    assert!(common::refused_by_permission(&format!("{e:?}")), "{e:?}");
    // Only the lake's own users: not another lake's, not the server's roles, not the
    // pooler's lookup role, not the superuser.
    refused(
        common::connect(port, "payroll", hr_pw, "sales").await,
        "hr's user in sales",
    );
    assert!(common::connect(port, "payroll", hr_pw, "hr").await.is_ok());
    for role in [
        "sales_server",
        "ducklake_pooler",
        "ducklake_supervisor",
        "postgres",
    ] {
        refused(
            common::connect(port, role, "anything-at-all-1", "sales").await,
            role,
        );
        // PgBouncer keeps its lookup role with an empty password: never a way in.
        refused(common::connect(port, role, "", "sales").await, role);
    }
    // The admin is the lake's owner: it gets in.
    assert!(common::connect(port, "admin", ADMIN_PASSWORD, "sales")
        .await
        .is_ok());
    // Only lake databases are pooled, and any other name is refused at once.
    let began = Instant::now();
    for db in ["postgres", "template1", "nosuchdb"] {
        let e = refused(common::connect(port, "admin", ADMIN_PASSWORD, db).await, db);
        // PgBouncer answers as for a wrong password: a database's existence is not told.
        assert!(
            e.contains("SASL authentication failed") || e.contains("no such database"),
            "{e}"
        );
    }
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
}

/// A lake created while the pooler runs is pooled as soon as it is ready.
fn a_created_lake_is_pooled_once_ready(p: &mut Pooled, rt: &tokio::runtime::Runtime) {
    let data = p.server.home.join("data/events");
    let out = cli(
        p,
        &[
            "lake",
            "create",
            "events",
            "--data-path",
            data.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.server.wait_for(Duration::from_secs(30), |_, body| {
        body["lakes"]["events"]["state"] == "ready"
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    rt.block_on(async {
        loop {
            match common::connect(p.port, "admin", ADMIN_PASSWORD, "events").await {
                Ok(c) => {
                    c.simple_query("SELECT 1").await.unwrap();
                    break;
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the new lake is not pooled: {e:?}"),
            }
        }
    });
}
