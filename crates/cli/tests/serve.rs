//! `serve` against a real PostgreSQL 15 that the product's own supervisor starts, on free
//! loopback ports with a fresh home per test.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{
    admin_client, error_line, free_port, home, postgres_running, run_cli, serve_fails, Server,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn serve_initialises_the_default_lake_and_stops_cleanly_on_sigterm() {
    let dir = home();
    let mut server = Server::start(dir.path(), &[]);
    let (code, body) = server.get("/readyz").unwrap();
    assert_eq!(code, 200, "{body}");
    let lake = &body["lakes"]["lakehouse"];
    assert_eq!(lake["state"], "ready");
    assert_eq!(
        lake["spec_version"],
        catalog_server::versions::DUCKLAKE_SPEC_VERSION
    );
    let data_path = format!("{}/lakes/lakehouse/", dir.path().display());
    assert_eq!(lake["data_path"], data_path.as_str());
    assert_eq!(server.get("/healthz").unwrap().0, 200);

    let password = server.admin_password();
    let pw_mode = std::fs::metadata(dir.path().join("secrets/admin.password"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(pw_mode & 0o777, 0o600);
    rt().block_on(async {
        let client = admin_client(&server, &password, "lakehouse").await.unwrap();
        let row = client
            .query_one(
                "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .unwrap();
        assert!(!row.get::<_, bool>(0), "admin must not be a superuser");
        assert!(!row.get::<_, bool>(1));
        let stored: String = client
            .query_one(
                "SELECT value FROM ducklake_metadata WHERE key = 'data_path'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, data_path);
        let checksums: String = client
            .query_one("SHOW data_checksums", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(checksums, "on");
        let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        assert_eq!(ssl, "on");
        let owner: String = client
            .query_one(
                "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'lakehouse'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(owner, "admin");
        // The internal superuser is not reachable over TCP, whatever the password.
        let su = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(server.pg_port)
            .user(catalog_server::postgres::SUPERUSER)
            .password(password.as_str())
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await;
        assert!(su.is_err(), "superuser login over TCP must be rejected");
        assert!(admin_client(&server, "wrong-password", "lakehouse")
            .await
            .is_err());
    });

    let pgdata = dir.path().join("pgdata");
    assert!(postgres_running(&pgdata));
    let status = server.stop();
    assert!(status.success(), "exit {status}:\n{}", server.logs());
    assert!(
        !postgres_running(&pgdata),
        "postgres outlived the supervisor"
    );
    let logs = server.logs();
    assert!(
        logs.contains("ATTACH 'ducklake:postgres:host=127.0.0.1"),
        "{logs}"
    );
    assert!(logs.contains("stopped cleanly"));
    assert!(
        !logs.contains(&password),
        "the admin password leaked into the logs"
    );
    for line in logs.lines() {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON log line: {line}");
    }
}

#[test]
fn restart_keeps_the_lake_and_applies_a_changed_admin_password() {
    let dir = home();
    let mut server = Server::start(
        dir.path(),
        &[(
            "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD",
            "first-password-1",
        )],
    );
    let (pg, http) = (server.pg_port, server.http_port);
    assert!(server.stop().success());
    let pw_file = dir.path().with_extension("pw");
    std::fs::write(&pw_file, "second-password-2\n").unwrap();
    let mut server = Server::spawn_on(
        dir.path(),
        pg,
        http,
        &[(
            "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD_FILE",
            pw_file.to_str().unwrap(),
        )],
    );
    let body = server.wait_ready(Duration::from_mins(2));
    assert_eq!(body["lakes"]["lakehouse"]["state"], "ready");
    rt().block_on(async {
        assert!(admin_client(&server, "first-password-1", "lakehouse")
            .await
            .is_err());
        let client = admin_client(&server, "second-password-2", "lakehouse")
            .await
            .unwrap();
        let n: i64 = client
            .query_one("SELECT count(*) FROM ducklake_snapshot", &[])
            .await
            .unwrap()
            .get(0);
        assert!(n >= 1);
    });
    let logs = server.logs();
    assert!(!logs.contains("second-password-2") && !logs.contains("first-password-1"));
    assert!(server.stop().success());
}

#[test]
fn a_changed_data_path_is_refused_not_applied() {
    let dir = home();
    let mut server = Server::start(dir.path(), &[]);
    assert!(server.stop().success());
    let other = dir.path().join("elsewhere");
    let (code, stderr) = serve_fails(
        dir.path(),
        &[("DUCKLAKE_CATALOG_DATA_PATH", other.to_str().unwrap())],
    );
    assert_eq!(code, 1, "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("lake `lakehouse` is bound to data path"),
        "{line}"
    );
    assert!(line.contains("elsewhere"), "{line}");
    assert!(!postgres_running(&dir.path().join("pgdata")));
}

#[test]
fn an_unexpected_postgres_exit_is_restarted_and_readiness_recovers() {
    let dir = home();
    let mut server = Server::start(dir.path(), &[]);
    let pid = server.postgres_pid();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    server.wait_for(Duration::from_secs(30), |code, _| code == 503);
    let body = server.wait_for(Duration::from_mins(1), |code, b| {
        code == 200 && b["restarts"] == 1
    });
    assert_ne!(body["postgres"]["pid"].as_i64().unwrap(), i64::from(pid));
    assert!(server.logs().contains("postgres exited unexpectedly"));
    assert!(server.stop().success());
}

#[test]
fn a_stale_postmaster_pid_from_a_crash_is_cleared() {
    let dir = home();
    let mut server = Server::start(dir.path(), &[]);
    let (pg, http) = (server.pg_port, server.http_port);
    assert!(server.stop().success());
    // What a crash leaves: a pid file naming a pid that is no postgres (here: this test).
    let pidfile = dir.path().join("pgdata/postmaster.pid");
    std::fs::write(
        &pidfile,
        format!(
            "{}\n{}\n",
            std::process::id(),
            dir.path().join("pgdata").display()
        ),
    )
    .unwrap();
    let mut server = Server::spawn_on(dir.path(), pg, http, &[]);
    server.wait_ready(Duration::from_mins(2));
    assert!(server.logs().contains("stale postmaster.pid"));
    assert!(server.stop().success());
}

#[test]
fn a_foreign_data_directory_is_refused_and_left_untouched() {
    let dir = home();
    let pgdata = dir.path().join("pgdata");
    std::fs::create_dir_all(&pgdata).unwrap();
    std::fs::write(pgdata.join("precious.txt"), "user data").unwrap();
    let (code, stderr) = serve_fails(dir.path(), &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        error_line(&stderr).contains("not a ducklake-catalog data directory"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(pgdata.join("precious.txt")).unwrap(),
        "user data"
    );

    let dir = home();
    let pgdata = dir.path().join("pgdata");
    std::fs::create_dir_all(&pgdata).unwrap();
    std::fs::write(pgdata.join("PG_VERSION"), "14\n").unwrap();
    let (code, stderr) = serve_fails(dir.path(), &[]);
    assert_eq!(code, 1);
    let line = error_line(&stderr);
    assert!(
        line.contains("PostgreSQL 14 cluster") && line.contains("pg_upgrade"),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(pgdata.join("PG_VERSION")).unwrap(),
        "14\n"
    );
}

#[test]
fn an_unknown_config_key_exits_2_naming_the_key() {
    let dir = home();
    let (code, stderr) = serve_fails(dir.path(), &[("DUCKLAKE_CATALOG_POSTGRES__PROT", "5432")]);
    assert_eq!(code, 2, "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("postgres.prot") && line.contains("DUCKLAKE_CATALOG_POSTGRES__PROT"),
        "{line}"
    );

    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[postgres]\nmax_connections = \"many\"\n").unwrap();
    let (code, stderr) = serve_fails(
        dir.path(),
        &[("DUCKLAKE_CATALOG_CONFIG", file.to_str().unwrap())],
    );
    assert_eq!(code, 2, "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("postgres.max_connections") && line.contains("bad.toml"),
        "{line}"
    );
    assert!(
        !dir.path().join("pgdata").exists(),
        "nothing may be created on a config error"
    );
}

#[test]
fn a_postgres_port_in_use_is_a_one_line_error() {
    let dir = home();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = serve_fails(dir.path(), &[("DUCKLAKE_CATALOG_POSTGRES__PORT", &port)]);
    assert_eq!(code, 1, "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("postgres.port") && line.contains("already in use") && line.contains(&port),
        "{line}"
    );
    assert!(!postgres_running(&dir.path().join("pgdata")));
}

#[test]
fn missing_postgres_binaries_are_a_one_line_error() {
    let dir = home();
    let (code, stderr) = serve_fails(
        dir.path(),
        &[("DUCKLAKE_CATALOG_POSTGRES__BIN_DIR", "/nonexistent/pg/bin")],
    );
    assert_eq!(code, 1, "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("PostgreSQL 15 server binaries not found")
            && line.contains("postgres.bin_dir"),
        "{line}"
    );
}

#[test]
fn health_exits_1_when_nothing_is_ready() {
    let dir = home();
    let url = format!("http://127.0.0.1:{}/readyz", free_port());
    let out = run_cli(
        dir.path(),
        &[],
        &["health", "--url", &url, "--timeout", "2"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(error_line(&stderr).contains("not reachable"), "{stderr}");
}

#[test]
fn health_exits_0_and_connect_prints_the_attach_string_for_a_running_server() {
    let dir = home();
    let server = Server::start(dir.path(), &[]);
    let out = run_cli(dir.path(), &[], &["health", "--url", &server.readyz_url()]);
    assert!(out.status.success(), "{out:?}");
    let port = server.pg_port.to_string();
    let env = [("DUCKLAKE_CATALOG_POSTGRES__PORT", port.as_str())];
    let out = run_cli(dir.path(), &env, &["connect", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Clients are given the pooler's port (on by default), and the settings to SET first.
    assert_eq!(
        v["attach"],
        format!(
            "ATTACH 'ducklake:postgres:host=127.0.0.1 port={} user=admin dbname=lakehouse' AS lakehouse",
            server.pooler_port
        )
    );
    assert_eq!(
        v["settings"],
        serde_json::json!([
            "SET ducklake_max_retry_count = 100",
            "SET pg_pool_acquire_mode = 'wait'",
            "SET pg_pool_max_connections = 16",
            "SET pg_pool_health_check_query = ''"
        ])
    );
    assert!(v.get("password").is_none());
    let password = server.admin_password();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&password));
    let out = run_cli(dir.path(), &env, &["connect", "--show-password"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&password));
    let out = run_cli(dir.path(), &env, &["connect", "--lake", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_show_prints_the_effective_config_with_secrets_redacted() {
    let dir = home();
    let out = run_cli(
        dir.path(),
        &[
            (
                "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD",
                "very-secret-pw",
            ),
            ("DUCKLAKE_CATALOG_S3__SECRET_ACCESS_KEY", "very-secret-key"),
            ("DUCKLAKE_CATALOG_DATA_PATH", "s3://acme-lake/sales"),
        ],
        &["config", "show"],
    );
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains("very-secret"), "{shown}");
    assert!(shown.contains("[redacted]"));
    assert!(
        shown.contains("data_path = \"s3://acme-lake/sales/\""),
        "{shown}"
    );
}

#[test]
fn version_prints_the_pinned_versions() {
    let dir = home();
    let out = run_cli(dir.path(), &[], &["version", "--format", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["duckdb_engine"], catalog_server::versions::DUCKDB_VERSION);
    assert_eq!(
        v["ducklake_spec"],
        catalog_server::versions::DUCKLAKE_SPEC_VERSION
    );
    assert_eq!(v["postgres_major"], 15);
}

#[test]
fn iam_policy_grants_exactly_the_configured_prefixes() {
    let dir = home();
    let env = [
        ("DUCKLAKE_CATALOG_LAKE_NAME", "sales"),
        ("DUCKLAKE_CATALOG_DATA_PATH", "s3://acme-lake/lakes/sales/"),
        (
            "DUCKLAKE_CATALOG_BACKUP__TARGET",
            "s3://acme-backups/catalog/",
        ),
    ];
    let policy = |args: &[&str]| {
        let out = run_cli(dir.path(), &env, &[&["iam-policy"], args].concat());
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let server = policy(&[]);
    let resources: Vec<&str> = server["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Resource"].as_array().unwrap())
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        resources,
        [
            "arn:aws:s3:::acme-backups",
            "arn:aws:s3:::acme-backups/catalog/*",
            "arn:aws:s3:::acme-lake",
            "arn:aws:s3:::acme-lake/lakes/sales/*"
        ]
    );
    let reader = policy(&["--role", "reader", "--lake", "sales"]);
    assert_eq!(
        reader["Statement"][1]["Action"],
        serde_json::json!(["s3:GetObject"])
    );
    assert!(!reader.to_string().contains("acme-backups"));

    let out = run_cli(dir.path(), &env, &["iam-policy", "--lake", "hr"]);
    assert_eq!(out.status.code(), Some(2));
    let line = error_line(&String::from_utf8_lossy(&out.stderr));
    assert!(line.contains("no lake named `hr`"), "{line}");
}

/// `(pid, ppid, state)` of every process, as this (the host's) PID namespace sees them.
fn processes() -> Vec<(i32, i32, char)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let pid = head.split_whitespace().next()?.parse().ok()?;
            let mut f = rest.split_whitespace();
            let state = f.next()?.chars().next()?;
            Some((pid, f.next()?.parse().ok()?, state))
        })
        .collect()
}

fn children_of(pid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, ppid, _)| *ppid == pid)
        .map(|(p, _, _)| p)
        .collect()
}

/// As PID 1 of its own PID namespace (a container's entrypoint), `serve` runs the server as its
/// child, reaps the backends a killed postmaster leaves behind, and passes SIGTERM on to a clean
/// stop with exit code 0.
#[test]
fn as_pid1_it_reaps_orphans_and_forwards_sigterm() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: a new PID namespace (unshare --pid) needs root");
        return;
    }
    let dir = home();
    let (pg_port, http_port) = (free_port(), free_port());
    let base = common::base_command(dir.path(), pg_port, http_port);
    let mut cmd = std::process::Command::new("unshare");
    // --kill-child: if the test fails and drops the server (SIGTERM to unshare), PID 1 gets a
    // SIGTERM too and stops everything cleanly.
    cmd.args(["--pid", "--fork", "--kill-child=SIGTERM"])
        .arg(base.get_program())
        .arg("serve")
        .env_clear();
    for (k, v) in base.get_envs() {
        cmd.env(k, v.unwrap());
    }
    let mut server = Server::spawn_command(cmd, dir.path(), pg_port, http_port);
    let unshare = i32::try_from(server.child.as_ref().unwrap().id()).unwrap();
    server.wait_ready(Duration::from_mins(2));

    let init = children_of(unshare)[0];
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
        "{status}"
    );
    let inner = children_of(init);
    assert_eq!(inner.len(), 1, "init has exactly the server as its child");
    let postmaster = children_of(inner[0])
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .expect("the server runs postgres as its child");
    let backends = children_of(postmaster).len();
    assert!(backends >= 3, "postgres has its auxiliary processes");

    kill(Pid::from_raw(postmaster), Signal::SIGKILL).unwrap();
    server.wait_for(Duration::from_mins(1), |code, b| {
        code == 200 && b["restarts"] == 1
    });
    // The orphaned backends went to PID 1, which must reap them.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let zombies: Vec<_> = processes()
            .into_iter()
            .filter(|(_, ppid, state)| *ppid == init && *state == 'Z')
            .collect();
        if zombies.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "zombies under PID 1: {zombies:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGTERM reaches PID 1 from outside its namespace, as `docker stop` sends it.
    kill(Pid::from_raw(init), Signal::SIGTERM).unwrap();
    let status = server.wait_exit(Duration::from_mins(1));
    assert!(status.success(), "{status}: {}", server.logs());
    assert!(server.logs().contains("stopped cleanly"));
    assert!(!postgres_running(&dir.path().join("pgdata")));
}
