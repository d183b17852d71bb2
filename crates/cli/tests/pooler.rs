//! The supervised connection pooler (`[pooler]`), against a real server, Debian's PgBouncer and
//! the real DuckDB client: a writer and a reader work through it; it looks users up live (a
//! rotated password works at once, the old one no longer does); it lets in only the login
//! roles of the lake a client names — never the server's own roles, the pooler's lookup role or
//! a user of another lake; a reader's writes are refused through it; a user's connection cap
//! holds through it (the user's transactions wait their turn, others' do not) and directly (a
//! one-line refusal); killed, it is restarted and clients connect again; left behind by a
//! killed server, it is stopped by the next one; it stops before PostgreSQL.

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
    let config = common::two_lakes(dir.path());
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

    a_users_cap_holds_through_the_pooler_and_directly(&p, &rt);
    a_pooler_left_behind_is_stopped_by_the_next_server(&mut p);

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

/// `--max-connections 2`: through the pooler, six concurrent transactions of that user run on
/// at most two PostgreSQL connections (the rest wait their turn) while another user is served
/// at once; directly, a third session is refused with PostgreSQL's own one-line message.
fn a_users_cap_holds_through_the_pooler_and_directly(p: &Pooled, rt: &tokio::runtime::Runtime) {
    let out = cli(
        p,
        &[
            "user",
            "create",
            "capped",
            "--lake",
            "sales",
            "--role",
            "writer",
            "--max-connections",
            "2",
            "--format",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pw = serde_json::from_slice::<Value>(&out.stdout).unwrap()["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_pw = create_user(p, "neighbour", "sales", "writer");
    rt.block_on(async {
        let admin = common::admin_client(&p.server, ADMIN_PASSWORD, "sales")
            .await
            .unwrap();
        let mut sessions = Vec::new();
        for _ in 0..6 {
            let c = common::connect(p.port, "capped", &pw, "sales")
                .await
                .unwrap();
            sessions.push(tokio::spawn(async move {
                c.simple_query("SELECT pg_sleep(3)").await.map(|_| ())
            }));
        }
        // While they run: never more than two of its backends, and the neighbour is served.
        let began = Instant::now();
        let neighbour = common::connect(p.port, "neighbour", &other_pw, "sales")
            .await
            .unwrap();
        neighbour.simple_query("SELECT 1").await.unwrap();
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "{:?}",
            began.elapsed()
        );
        let mut most = 0;
        while !sessions.iter().all(tokio::task::JoinHandle::is_finished) {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'capped'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            most = most.max(n);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for s in sessions {
            s.await
                .unwrap()
                .expect("a capped user's transaction waits, then runs");
        }
        assert!((1..=2).contains(&most), "{most} backends for a cap of 2");
        // Directly, each session is a backend (the pooler's idle ones for this user count):
        // by the third at most, one is refused, in PostgreSQL's own one line.
        let mut held = Vec::new();
        let mut refusal = None;
        for _ in 0..3 {
            match common::connect(p.server.pg_port, "capped", &pw, "sales").await {
                Ok(c) => held.push(c),
                Err(e) => {
                    refusal = Some(e);
                    break;
                }
            }
        }
        let e = refusal.expect("a session over the cap is refused");
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        assert_eq!(msg, "too many connections for role \"capped\"", "{e:?}");
    });
}

/// A server killed outright leaves its pooler running (its own process group) on the port; the
/// next server on the same home stops it and starts its own.
fn a_pooler_left_behind_is_stopped_by_the_next_server(p: &mut Pooled) {
    let old = i32::try_from(pooler_status(&p.server)["pid"].as_i64().unwrap()).unwrap();
    p.server.signal(Signal::SIGKILL);
    let _ = p.server.wait_exit(Duration::from_secs(10));
    assert!(
        kill(Pid::from_raw(old), None).is_ok(),
        "the pooler outlived its server"
    );
    // PostgreSQL outlives it too, and the next server refuses to start beside it until it is
    // stopped (its own test): stop it as an operator would, and leave the pooler.
    let pgdata = p.server.home.join("pgdata");
    let postmaster: i32 = std::fs::read_to_string(pgdata.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    kill(Pid::from_raw(postmaster), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::postgres_running(&pgdata) {
        assert!(Instant::now() < deadline, "postgres did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let config = p.server.home.join("catalog.toml");
    let port = p.port.to_string();
    let env = [
        ("DUCKLAKE_CATALOG_CONFIG", config.to_str().unwrap()),
        ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("DUCKLAKE_CATALOG_POOLER__PORT", port.as_str()),
    ];
    let (pg, http) = (p.server.pg_port, p.server.http_port);
    p.server = Server::spawn_on(&p.server.home, pg, http, &env);
    let up = p.server.wait_for(Duration::from_mins(2), |code, body| {
        code == 200 && body["pooler"]["state"] == "running"
    });
    assert_ne!(up["pooler"]["pid"].as_i64(), Some(i64::from(old)), "{up}");
    // Gone, or a zombie its reaper has not collected yet (its parent was the killed server).
    assert!(
        std::fs::read(format!("/proc/{old}/cmdline")).map_or(true, |c| c.is_empty()),
        "the pooler left behind still runs"
    );
    assert!(p
        .server
        .logs()
        .contains("stopping a connection pooler left behind"));
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
