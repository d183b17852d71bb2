//! External PostgreSQL mode (`postgres.url`): the server runs no PostgreSQL of its own and
//! administers a separate PostgreSQL 15 cluster shaped like Amazon RDS — TLS required for TCP
//! logins (`hostssl` only), SCRAM, and an admin login that is not a superuser (`CREATEDB
//! CREATEROLE`, member of `pg_monitor` and `pg_signal_backend`, as RDS's master user is).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{error_line, free_port, home, run_cli, Server};
use serde_json::Value;

const ADMIN: &str = "catalog_admin";
const ADMIN_PASSWORD: &str = "external-admin-Pw-0123";

/// A PostgreSQL 15 cluster the way RDS looks to its master user; stopped on drop.
struct RdsLike {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl RdsLike {
    fn start(preload_statements: bool) -> RdsLike {
        let bin = PathBuf::from(
            std::env::var("DUCKLAKE_TEST_PG_BIN")
                .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        let dir = tempfile::Builder::new().prefix("rds-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pgdata = dir.path().join("pgdata");
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        // A self-signed certificate, as a managed database presents one clients do not know.
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pwfile = dir.path().join("master.pw");
        std::fs::write(&pwfile, "master-only-in-this-test").unwrap();
        for p in [dir.path(), &cert, &key, &pwfile] {
            chown_to_postgres(p);
        }
        let port = free_port();
        run_as_postgres(
            Command::new(bin.join("initdb"))
                .arg("-D")
                .arg(&pgdata)
                .args([
                    "-U",
                    "master",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .env("LC_ALL", "C"),
        );
        // TCP only over TLS, like RDS with rds.force_ssl = 1.
        std::fs::write(
            pgdata.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhost all all 0.0.0.0/0 reject\n",
        )
        .unwrap();
        let preload = if preload_statements {
            " -c shared_preload_libraries=pg_stat_statements"
        } else {
            ""
        };
        run_as_postgres(
            Command::new(bin.join("pg_ctl"))
                .arg("-D")
                .arg(&pgdata)
                .arg("-l")
                .arg(dir.path().join("postgres.log"))
                .arg("-o")
                .arg(format!(
                    "-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c lc_messages=C -c idle_in_transaction_session_timeout=600000 -c max_connections=200 -c log_statement=all{preload}",
                    cert.display(),
                    key.display(),
                    sock = dir.path().display(),
                ))
                .args(["-w", "start"]),
        );
        let rds = RdsLike { dir, port, bin };
        if preload_statements {
            // What an RDS DBA does once (the extension is not trusted: its admin cannot).
            rds.psql("CREATE EXTENSION pg_stat_statements");
        }
        rds.psql(&format!(
            "CREATE ROLE {ADMIN} LOGIN CREATEDB CREATEROLE PASSWORD '{ADMIN_PASSWORD}';
             GRANT pg_monitor, pg_signal_backend TO {ADMIN};"
        ));
        if preload_statements {
            rds.psql("SELECT pg_stat_statements_reset()");
        }
        rds
    }

    /// Runs `sql` as the cluster's superuser in `postgres` (the test plays AWS here, never the
    /// server).
    fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    fn psql_in(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "master",
                "-d",
                db,
            ])
            .arg("-h")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            // The test's own statements (the admin's password) stay out of the log it checks.
            .env("PGOPTIONS", "-c log_statement=none")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn url(&self, admin: &str) -> String {
        format!(
            "postgres://{admin}@127.0.0.1:{}/postgres?sslmode=require",
            self.port
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for RdsLike {
    fn drop(&mut self) {
        let mut stop = Command::new(self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.path().join("pgdata"))
            .args(["-m", "immediate", "-w", "stop"]);
        as_postgres(&mut stop);
        let _ = stop.output();
    }
}

fn postgres_ids() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("an OS user postgres");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

fn chown_to_postgres(p: &Path) {
    if let Some((uid, gid)) = postgres_ids() {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
}

fn as_postgres(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    if let Some((uid, gid)) = postgres_ids() {
        cmd.uid(uid).gid(gid);
    }
}

fn run_as_postgres(cmd: &mut Command) {
    as_postgres(cmd);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        cmd.get_program().display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The environment pointing the server (and its commands) at `rds` as `admin`, with one lake.
fn external_env(rds: &RdsLike, admin: &str, home: &Path) -> Vec<(String, String)> {
    vec![
        ("DUCKLAKE_CATALOG_POSTGRES__URL".into(), rds.url(admin)),
        (
            "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD".into(),
            ADMIN_PASSWORD.into(),
        ),
        ("DUCKLAKE_CATALOG_LAKE_NAME".into(), "sales".into()),
        (
            "DUCKLAKE_CATALOG_DATA_PATH".into(),
            format!("{}/data/sales/", home.display()),
        ),
    ]
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn cli(home: &Path, env: &[(String, String)], args: &[&str]) -> std::process::Output {
    run_cli(home, &borrowed(env), args)
}

fn ok_json(out: &std::process::Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// As the admin: a Parquet table `shared` and an inlined one `small` in lake `sales`.
fn seed(rds: &RdsLike) {
    common::seed_shared_and_small(&format!(
        "host=127.0.0.1 port={} user={ADMIN} password={ADMIN_PASSWORD} dbname=sales sslmode=require",
        rds.port
    ));
}

/// `user create` through the admin login; the password it printed.
fn create_user(
    home: &Path,
    env: &[(String, String)],
    name: &str,
    lake: &str,
    role: &str,
) -> String {
    let created = ok_json(
        &cli(
            home,
            env,
            &[
                "user", "create", name, "--lake", lake, "--role", role, "--format", "json",
            ],
        ),
        &format!("user create {name}"),
    );
    created["password"].as_str().unwrap().to_owned()
}

fn ops(port: u16, user: &str, password: &str, mode: &str, table: &str) -> Value {
    common::client_script(
        "lake_ops.py",
        &[user, password, &port.to_string(), "sales", mode, table],
    )
}

#[test]
fn serve_administers_an_external_postgresql_as_a_non_superuser_admin() {
    let rds = RdsLike::start(true);
    let dir = home();
    let env = external_env(&rds, ADMIN, dir.path());
    let mut server = Server::spawn(dir.path(), &borrowed(&env));
    let ready = server.wait_ready(Duration::from_mins(2));
    assert_eq!(ready["postgres"]["state"], "external", "{ready}");
    assert!(
        !dir.path().join("pgdata").exists(),
        "the server made a PostgreSQL of its own"
    );
    // The admin the server used is still no superuser, and the lake is a database it owns.
    assert_eq!(
        rds.psql(&format!(
            "SELECT rolsuper FROM pg_roles WHERE rolname = '{ADMIN}'"
        )),
        "f"
    );
    assert_eq!(
        rds.psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'sales'"),
        ADMIN
    );

    let (writer_pw, reader_pw) = users_write_and_read(&rds, dir.path(), &env);
    maintenance_verify_and_inspection(dir.path(), &env);
    connect_and_doctor(&rds, dir.path(), &env);
    lake_and_users_dropped(&rds, dir.path(), &env);
    no_password_in_clear(&rds, &[&writer_pw, &reader_pw, ADMIN_PASSWORD]);
    assert_eq!(server.stop().code(), Some(0), "{}", server.logs());
}

/// Users: a writer writes every kind of operation, a reader reads and every write of its is
/// refused by PostgreSQL. Their passwords.
fn users_write_and_read(rds: &RdsLike, home: &Path, env: &[(String, String)]) -> (String, String) {
    seed(rds);
    let writer_pw = create_user(home, env, "pipeline", "sales", "writer");
    let reader_pw = create_user(home, env, "analyst", "sales", "reader");
    let done = ops(rds.port, "pipeline", &writer_pw, "write", "events");
    for (operation, outcome) in done.as_object().unwrap() {
        let text = outcome.as_str().unwrap();
        if [
            "flush_inlined_data",
            "merge_adjacent_files",
            "expire_snapshots",
            "cleanup_old_files",
            "checkpoint",
        ]
        .contains(&operation.as_str())
        {
            continue; // owner-only maintenance: refused or a no-op, as with the supervised one
        }
        assert_eq!(text, "ok", "writer: {operation}: {text}");
    }
    let read = ops(rds.port, "analyst", &reader_pw, "read", "events");
    for (operation, outcome) in read.as_object().unwrap() {
        assert_eq!(outcome, "ok", "reader: {operation}: {outcome}");
    }
    let catalog = || {
        rds.psql_in(
            "sales",
            "SELECT (SELECT count(*) FROM ducklake_snapshot) || ',' || (SELECT max(snapshot_id) FROM ducklake_snapshot) || ',' || (SELECT count(*) FROM ducklake_data_file) || ',' || (SELECT count(*) FROM ducklake_table)",
        )
    };
    let before = catalog();
    let refused = ops(rds.port, "analyst", &reader_pw, "write-attempts", "shared");
    for (operation, outcome) in refused.as_object().unwrap() {
        let text = outcome.as_str().unwrap();
        if operation != "attach" {
            assert!(
                common::refused_by_permission(text),
                "reader: {operation} was not refused: {text}"
            );
        }
    }
    assert_eq!(
        catalog(),
        before,
        "a reader's refused write changed the catalog"
    );

    (writer_pw, reader_pw)
}

/// A maintenance run, verify and inspection, all through the admin login.
fn maintenance_verify_and_inspection(home: &Path, env: &[(String, String)]) {
    // A maintenance run, verify and inspection, all through the admin login.
    let report = ok_json(
        &cli(
            home,
            env,
            &["maintain", "--lake", "sales", "--format", "json"],
        ),
        "maintain",
    );
    assert!(report["error"].is_null(), "{report}");
    assert!(
        report["rows_flushed"].as_i64().unwrap() > 0,
        "the writer's inlined rows: {report}"
    );
    let verified = ok_json(
        &cli(
            home,
            env,
            &["verify", "--lake", "sales", "--format", "json"],
        ),
        "verify",
    );
    assert_eq!(
        verified["problems"].as_array().map(Vec::len),
        Some(0),
        "{verified}"
    );
    assert!(
        verified["files_checked"].as_u64().unwrap() > 0,
        "{verified}"
    );
    let tables = ok_json(
        &cli(
            home,
            env,
            &["tables", "--lake", "sales", "--format", "json"],
        ),
        "tables",
    );
    assert!(tables.to_string().contains("events"), "{tables}");
    let usage = ok_json(
        &cli(home, env, &["usage", "--lake", "sales", "--format", "json"]),
        "usage",
    );
    assert!(usage.to_string().contains("events"), "{usage}");
}

/// `connect` names the external host and TLS; `doctor` passes with what RDS's master user has.
fn connect_and_doctor(rds: &RdsLike, home: &Path, env: &[(String, String)]) {
    // connect prints the external host and TLS.
    let connect = cli(home, env, &["connect", "--lake", "sales"]);
    let shown = String::from_utf8_lossy(&connect.stdout);
    assert!(
        shown.contains(&format!("port={}", rds.port)) && shown.contains("sslmode=require"),
        "{shown}"
    );

    // doctor: every check passes against an admin with what RDS's master user has.
    let doctor = cli(home, env, &["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("admin privileges") && text.contains("external 127.0.0.1"),
        "{text}"
    );
    assert!(
        !text.contains("✗ postgres") && !text.contains("✗ admin privileges"),
        "{text}"
    );
}

/// A lake by command, then dropped with its users; a user dropped.
fn lake_and_users_dropped(rds: &RdsLike, home: &Path, env: &[(String, String)]) {
    // A lake by command, then dropped with its users: the admin ends their sessions and drops
    // their roles without being a superuser.
    let extra = format!("{}/data/extra/", home.display());
    ok_json(
        &cli(
            home,
            env,
            &[
                "lake",
                "create",
                "extra",
                "--data-path",
                &extra,
                "--format",
                "json",
            ],
        ),
        "lake create",
    );
    create_user(home, env, "tempuser", "extra", "writer");
    let dropped = cli(home, env, &["lake", "drop", "extra", "--yes"]);
    assert!(
        dropped.status.success(),
        "{}",
        String::from_utf8_lossy(&dropped.stderr)
    );
    assert_eq!(
        rds.psql(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'extra\\_%' OR rolname = 'tempuser'"
        ),
        "0"
    );
    let gone = cli(home, env, &["user", "drop", "analyst"]);
    assert!(
        gone.status.success(),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

/// No password reached the external PostgreSQL in clear: its log (which records every
/// statement here) and pg_stat_statements.
fn no_password_in_clear(rds: &RdsLike, secrets: &[&str]) {
    // No user's password reached the external PostgreSQL in clear (its log records every
    // statement here), nor pg_stat_statements.
    let log = rds.log();
    assert!(
        log.contains("CREATE ROLE"),
        "the test cluster logs statements"
    );
    let statements = rds.psql("SELECT string_agg(query, ' ') FROM pg_stat_statements");
    for secret in secrets {
        let at = |text: &str| {
            text.find(secret)
                .map(|i| text[i.saturating_sub(300)..i].to_owned())
        };
        assert_eq!(at(&log), None, "a password is in PostgreSQL's log");
        assert_eq!(at(&statements), None, "a password is in pg_stat_statements");
    }
}

#[test]
fn an_admin_without_createrole_is_named_by_doctor_and_serve_creates_nothing() {
    let rds = RdsLike::start(false);
    rds.psql(&format!(
        "CREATE ROLE weak_admin LOGIN CREATEDB PASSWORD '{ADMIN_PASSWORD}'"
    ));
    let dir = home();
    let env = external_env(&rds, "weak_admin", dir.path());
    let doctor = cli(dir.path(), &env, &["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success(), "{text}");
    assert!(
        text.contains("✗ admin privileges")
            && text.contains("CREATEROLE")
            && text.contains("ALTER ROLE \"weak_admin\" CREATEROLE")
            && text.contains("GRANT pg_signal_backend TO \"weak_admin\"")
            && text.contains("GRANT pg_monitor TO \"weak_admin\""),
        "{text}"
    );
    assert!(text.contains("- pg_stat_statements"), "{text}");

    let (code, stderr) = common::serve_fails(dir.path(), &borrowed(&env));
    assert_eq!(code, 1, "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("weak_admin")
            && line.contains("lacks CREATEROLE")
            && line.contains("ALTER ROLE weak_admin CREATEROLE"),
        "{line}"
    );
    assert_eq!(
        rds.psql("SELECT count(*) FROM pg_database WHERE datname IN ('sales', 'ducklake_catalog')"),
        "0",
        "a refused start created a database"
    );
}

#[test]
fn external_mode_mistakes_are_one_line_exit_2_before_anything_is_made() {
    let dir = home();
    for (env, says) in [
        (
            vec![
                (
                    "DUCKLAKE_CATALOG_POSTGRES__URL",
                    "postgres://a:secret@db.example.com/postgres",
                ),
                ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
            ],
            "holds a password",
        ),
        (
            vec![(
                "DUCKLAKE_CATALOG_POSTGRES__URL",
                "postgres://a@db.example.com/postgres",
            )],
            "postgres.admin_password",
        ),
        (
            vec![
                (
                    "DUCKLAKE_CATALOG_POSTGRES__URL",
                    "postgres://a@db.example.com/postgres?sslmode=disable",
                ),
                ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
            ],
            "sslmode=require or verify-full",
        ),
        (
            vec![
                (
                    "DUCKLAKE_CATALOG_POSTGRES__URL",
                    "postgres://a@db.example.com/postgres",
                ),
                ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
                ("DUCKLAKE_CATALOG_BACKUP__TARGET", "s3://bucket/backups/"),
            ],
            "RDS/Aurora automated backups",
        ),
    ] {
        let (code, stderr) = common::serve_fails(dir.path(), &env);
        assert_eq!(code, 2, "{stderr}");
        let line = error_line(&stderr);
        assert!(line.contains(says), "{line}");
        assert!(!line.contains("secret@"), "{line}");
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| {
            let name = e.unwrap().file_name();
            name.to_string_lossy().starts_with("serve-")
        }),
        "a refused configuration left files in the home"
    );
}
