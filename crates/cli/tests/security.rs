//! Adversarial regression suite: everyone holding a lake user's credentials — reader, writer or
//! owner — is hostile. They create functions, views, triggers, rules, policies and tables wherever
//! PostgreSQL lets them, and write catalog rows the server later reads; each case then triggers
//! what the server does with them (maintenance, inspection, listing, bring-up) and asserts the
//! attack failed AND nothing changed: no role gained superuser, role creation, database creation,
//! a membership or a setting; a planted function never ran where it must not (its `RAISE LOG`
//! line, its sequence, its row, its marker file); files outside a lake's data path are still
//! there; the catalog's rows are unchanged; passwords never appear in clear.
//!
//! Black-box: the real `ducklake-catalog` binary through `tests/common`, SQL as each user over
//! TCP with `tokio_postgres`, real DuckDB clients (`tests/python/security_rows.py`, `garbage.py`,
//! `lake_rows.py`). One server per threat family; every family runs all its cases, collects the
//! failures and reports them together (`security: N cases in <family>` on stderr).

#![allow(clippy::too_many_lines)]
// A long adversarial script: short names for the lab and the findings, and plain string
// building read better here than the pedantic alternatives.
#![allow(
    clippy::many_single_char_names,
    clippy::format_push_string,
    clippy::map_unwrap_or,
    clippy::type_complexity,
    clippy::case_sensitive_file_extension_comparisons
)]

mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{error_line, extensions, home, postgres_running, serve_fails, venv, Server};
use serde_json::Value;

const ADMIN_PASSWORD: &str = "admin-password-security-1";
/// The internal superuser (peer authentication over the Unix socket only).
const SUPERVISOR: &str = "ducklake_supervisor";

// ---------------------------------------------------------------------------------------------
// Findings: many cases per family, every failure reported at the end.
// ---------------------------------------------------------------------------------------------

struct Findings {
    family: &'static str,
    cases: usize,
    failures: Vec<String>,
}

impl Findings {
    fn new(family: &'static str) -> Self {
        Findings {
            family,
            cases: 0,
            failures: Vec::new(),
        }
    }

    fn check(&mut self, case: &str, outcome: Result<(), String>) {
        self.cases += 1;
        if let Err(why) = outcome {
            eprintln!("security: {}: FAILED {case}: {why}", self.family);
            self.failures.push(format!("{case}: {why}"));
        }
    }

    fn finish(self) {
        eprintln!("security: {} cases in {}", self.cases, self.family);
        assert!(
            self.failures.is_empty(),
            "{}: {} of {} cases failed:\n  {}",
            self.family,
            self.failures.len(),
            self.cases,
            self.failures.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------------

/// PostgreSQL's message (and SQLSTATE) for a failed statement, else the client's error.
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// A SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier, always quoted.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.len() > 600 {
        let mut end = 600;
        while !joined.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &joined[..end])
    } else {
        joined
    }
}

/// A command either succeeded or failed with exactly one `ducklake-catalog: error:` line —
/// never a signal, a panic or a multi-line dump.
fn tolerable(out: &Output) -> Result<(), String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("panicked") {
        return Err(format!("panicked: {}", one_line(&stderr)));
    }
    if let Some(sig) = out.status.signal() {
        return Err(format!("killed by signal {sig}: {}", one_line(&stderr)));
    }
    match out.status.code() {
        Some(0) => Ok(()),
        Some(code) => {
            let lines = stderr
                .lines()
                .filter(|l| l.starts_with("ducklake-catalog: error:"))
                .count();
            if lines == 1 {
                Ok(())
            } else {
                Err(format!(
                    "exit {code} without exactly one error line: {}",
                    one_line(&stderr)
                ))
            }
        }
        None => Err(format!("no exit code: {:?}", out.status)),
    }
}

/// A command was refused with exit 2 and exactly one error line.
fn refused_with_2(out: &Output) -> Result<String, String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ducklake-catalog: error:"))
        .collect();
    if out.status.code() != Some(2) || lines.len() != 1 {
        return Err(format!(
            "expected exit 2 and one error line, got {:?}: {}",
            out.status.code(),
            one_line(&stderr)
        ));
    }
    Ok(lines[0].to_owned())
}

/// Both outcomes must hold; every reason is kept.
fn both(a: Result<(), String>, b: Result<(), String>) -> Result<(), String> {
    match (a, b) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(x), Err(y)) => Err(format!("{x}; {y}")),
    }
}

/// A string no other part of the system could produce by chance.
fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("Sx{tag}{:x}q{}", nanos, std::process::id())
}

/// Runs a DuckDB client script from tests/python; the JSON it printed, or why it failed.
fn python(name: &str, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(venv().join("bin/python"))
        .arg(
            Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
                .join("tests/python")
                .join(name),
        )
        .args(args)
        .env("DLC_EXTENSIONS", extensions())
        .output()
        .map_err(|e| format!("run {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{name} failed: {}",
            one_line(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{name} printed no JSON: {e}"))
}

/// Every regular file under `dir` (no symlinks followed).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() || haystack.len() < needle.len() {
        return needle.is_empty();
    }
    let first = needle[0];
    let last_start = haystack.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match haystack[i..=last_start].iter().position(|&b| b == first) {
            None => return false,
            Some(p) => {
                let at = i + p;
                if &haystack[at..at + needle.len()] == needle {
                    return true;
                }
                i = at + 1;
            }
        }
    }
    false
}

/// TOML for lakes on local disk under `home/data/<name>`, each with optional own
/// `[lakes.maintenance]` lines.
fn lakes_toml(home: &Path, lakes: &[(&str, Option<&str>)]) -> String {
    let mut s = String::new();
    for (name, maintenance) in lakes {
        s.push_str(&format!(
            "\n[[lakes]]\nname = \"{name}\"\ndata_path = \"{}/data/{name}\"\n",
            home.display()
        ));
        if let Some(m) = maintenance {
            s.push_str(&format!("\n[lakes.maintenance]\n{m}\n"));
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The lab: one server, its users, and what must not change.
// ---------------------------------------------------------------------------------------------

/// The privileges that must never change behind the server's back: role attributes, role
/// memberships, settings of roles that are not login users (users may change their own), and
/// the set of roles (a lake's `<lake>_server` role and its memberships in `<lake>_owner` and
/// `ducklake_servers` may appear when the server first needs them; their attributes count).
const PRIVILEGES_SQL: &str = "
SELECT 'attr ' || rolname || ': ' || concat_ws(',',
         CASE WHEN rolsuper THEN 'superuser' END, CASE WHEN rolcreaterole THEN 'createrole' END,
         CASE WHEN rolcreatedb THEN 'createdb' END, CASE WHEN rolreplication THEN 'replication' END,
         CASE WHEN rolbypassrls THEN 'bypassrls' END)
  FROM pg_catalog.pg_roles
 WHERE rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls
UNION ALL
SELECT 'member ' || m.rolname || ' of ' || r.rolname
       || CASE WHEN a.admin_option THEN ' with admin option' ELSE '' END
  FROM pg_catalog.pg_auth_members a
  JOIN pg_catalog.pg_roles r ON r.oid = a.roleid
  JOIN pg_catalog.pg_roles m ON m.oid = a.member
 WHERE NOT (m.rolname ~ '_server$' AND (r.rolname ~ '_owner$' OR r.rolname = 'ducklake_servers'))
UNION ALL
SELECT 'setting ' || coalesce(r.rolname::text, '(every role)') || ' in '
       || coalesce(d.datname::text, '(every database)') || ': ' || c
  FROM pg_catalog.pg_db_role_setting s
  LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
  LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
  CROSS JOIN LATERAL pg_catalog.unnest(s.setconfig) AS c
 WHERE r.oid IS NULL OR NOT r.rolcanlogin OR r.rolname = 'admin'
UNION ALL
SELECT 'role ' || rolname FROM pg_catalog.pg_roles
 WHERE rolname !~ '^pg_' AND rolname !~ '_server$' AND rolname <> 'ducklake_servers'
";

/// The evil function a hostile user plants: every way up it can think of, each attempted on
/// its own (an exception block each), and three ways to tell it ran at all — a `RAISE LOG`
/// line in the server's log (survives rollbacks and read-only transactions), a sequence
/// (non-transactional) and a row. `@USER@`, `@LAKE@` and `@DIR@` are replaced.
const EVIL_SQL: &str = r"
CREATE TABLE IF NOT EXISTS public.pwned (note text);
GRANT ALL ON public.pwned TO PUBLIC;
CREATE OR REPLACE FUNCTION public.evil(tag text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $evil$
BEGIN
  RAISE LOG '%', 'dlc-evil' || '-ran:' || tag || ' as ' || current_user || ' session ' || session_user;
  BEGIN EXECUTE format('SELECT pg_catalog.nextval(%L)', 'public.seq_' || tag); EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN INSERT INTO public.pwned VALUES (tag || ' as ' || current_user); EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE 'ALTER ROLE @USER@ SUPERUSER CREATEROLE CREATEDB REPLICATION BYPASSRLS'; EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE 'ALTER ROLE @LAKE@_writer SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE 'ALTER ROLE @LAKE@_owner SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE 'ALTER ROLE @LAKE@_server SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE 'ALTER ROLE admin SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE 'CREATE ROLE dlc_intruder LOGIN SUPERUSER PASSWORD ''dlc-intruder-password'''; EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE 'GRANT pg_execute_server_program, pg_read_server_files, pg_write_server_files TO @USER@'; EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE 'GRANT @LAKE@_owner TO @USER@'; EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE 'GRANT @LAKE@_server TO @USER@'; EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'touch @DIR@/' || tag || '.program'); EXCEPTION WHEN OTHERS THEN NULL; END;
  BEGIN EXECUTE format('COPY (SELECT 1) TO %L', '@DIR@/' || tag || '.file'); EXCEPTION WHEN OTHERS THEN NULL; END;
  RETURN true;
END
$evil$;
CREATE OR REPLACE FUNCTION public.evil_trg() RETURNS trigger
LANGUAGE plpgsql AS $trg$
BEGIN
  PERFORM public.evil(TG_ARGV[0]);
  IF TG_LEVEL = 'ROW' THEN
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
  END IF;
  RETURN NULL;
END
$trg$;
";

struct Lab {
    // Dropped first: the server stops before its home is removed.
    server: Server,
    rt: tokio::runtime::Runtime,
    env: Vec<(String, String)>,
    /// World-writable folder where `COPY … TO PROGRAM 'touch …'` would leave markers.
    markers: tempfile::TempDir,
    seen_markers: BTreeSet<String>,
    /// Login users this lab created: name, password, database.
    users: Vec<(String, String, String)>,
    /// The database the admin's checks run in.
    check_db: String,
    baseline: BTreeSet<String>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// A server with `toml` (given the home) as its configuration and `extra` environment.
    fn start(toml: &dyn Fn(&Path) -> String, extra: &[(&str, &str)], check_db: &str) -> Lab {
        match Lab::start_or_exit(toml, extra, check_db) {
            Ok(lab) => lab,
            Err((code, stderr)) => panic!("serve exited ({code:?}) before it was ready:\n{stderr}"),
        }
    }

    /// Like [`Lab::start`], but a server that exits instead of becoming ready is an answer:
    /// its exit code and output.
    fn start_or_exit(
        toml: &dyn Fn(&Path) -> String,
        extra: &[(&str, &str)],
        check_db: &str,
    ) -> Result<Lab, (Option<i32>, String)> {
        let dir = home();
        let config = dir.path().join("catalog.toml");
        std::fs::write(&config, toml(dir.path())).unwrap();
        let mut env = vec![
            (
                "DUCKLAKE_CATALOG_CONFIG".to_owned(),
                config.to_string_lossy().into_owned(),
            ),
            (
                "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD".to_owned(),
                ADMIN_PASSWORD.to_owned(),
            ),
        ];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut server = {
            let pairs: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Server::spawn(dir.path(), &pairs)
        };
        let deadline = Instant::now() + Duration::from_mins(2);
        loop {
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                server.child = None;
                return Err((status.code(), server.logs()));
            }
            if server.get("/readyz").is_some_and(|(code, _)| code == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "serve was not ready within 2 minutes:\n{}",
                server.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let markers = tempfile::Builder::new()
            .prefix("dlc-sec-marks-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(markers.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut lab = Lab {
            server,
            rt: tokio::runtime::Runtime::new().unwrap(),
            env,
            markers,
            seen_markers: BTreeSet::new(),
            users: Vec::new(),
            check_db: check_db.to_owned(),
            baseline: BTreeSet::new(),
            dir,
        };
        lab.rebaseline();
        Ok(lab)
    }

    fn home(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the binary beside the server (same home, config and port), stdin optional.
    fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = common::base_command(
            &self.server.home,
            self.server.pg_port,
            self.server.http_port,
        );
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.env(
            "DUCKLAKE_CATALOG_POSTGRES__PORT",
            self.server.pg_port.to_string(),
        );
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        match stdin {
            None => cmd.stdin(Stdio::null()).output().unwrap(),
            Some(input) => {
                let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
                let mut pipe = child.stdin.take().unwrap();
                let _ = pipe.write_all(input.as_bytes());
                drop(pipe);
                child.wait_with_output().unwrap()
            }
        }
    }

    /// A command that must succeed during setup; its stdout.
    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args, None);
        assert!(
            out.status.success(),
            "setup: {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `user create` (setup; the privilege baseline follows it); the password.
    fn create_user(&mut self, name: &str, lake: &str, role: &str) -> String {
        let out = self.cli(
            &[
                "user", "create", name, "--lake", lake, "--role", role, "--format", "json",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "setup: user create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let password = v["password"].as_str().unwrap().to_owned();
        self.users
            .push((name.to_owned(), password.clone(), lake.to_owned()));
        self.rebaseline();
        password
    }

    /// The server's own superuser over its Unix socket (peer authentication maps the OS user
    /// the tests run as), to read what only a superuser sees.
    fn supervisor(&self, db: &str) -> Result<tokio_postgres::Client, String> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(self.home().join("run")).user(SUPERVISOR);
        self.open(cfg, db)
    }

    /// Connects as `user` over TCP, as a DuckDB client would.
    fn connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, String> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1").user(user).password(password);
        self.open(cfg, db)
    }

    /// A session to `db` on the server's port with `cfg`'s host and login.
    fn open(
        &self,
        mut cfg: tokio_postgres::Config,
        db: &str,
    ) -> Result<tokio_postgres::Client, String> {
        cfg.port(self.server.pg_port)
            .dbname(db)
            .connect_timeout(Duration::from_secs(30));
        self.rt.block_on(async move {
            let (client, conn) = cfg
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| pg_error(&e))?;
            tokio::spawn(conn);
            Ok(client)
        })
    }

    /// The admin in `db`, with a search_path no user can plant anything in.
    fn admin(&self, db: &str) -> tokio_postgres::Client {
        let client = self
            .connect("admin", ADMIN_PASSWORD, db)
            .unwrap_or_else(|e| panic!("the admin cannot connect to {db}: {e}"));
        self.exec(&client, "SET search_path = pg_catalog, pg_temp")
            .unwrap();
        client
    }

    fn exec(&self, client: &tokio_postgres::Client, sql: &str) -> Result<(), String> {
        self.rt
            .block_on(client.batch_execute(sql))
            .map_err(|e| pg_error(&e))
    }

    /// The first column of every row, as text (cast in the query).
    fn texts(&self, client: &tokio_postgres::Client, sql: &str) -> Result<Vec<String>, String> {
        let rows = self
            .rt
            .block_on(client.query(sql, &[]))
            .map_err(|e| pg_error(&e))?;
        Ok(rows
            .iter()
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
            .collect())
    }

    fn text(&self, client: &tokio_postgres::Client, sql: &str) -> Result<String, String> {
        self.texts(client, sql)?
            .into_iter()
            .next()
            .ok_or_else(|| format!("no row from {sql}"))
    }

    /// Connects as a user, runs `setup` statements (each on its own; a refused one is noted, not
    /// fatal: a plant PostgreSQL refuses is an attack that already failed).
    fn plant(&self, client: &tokio_postgres::Client, sql: &str, what: &str) -> bool {
        match self.exec(client, sql) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("security: plant `{what}` was refused (the attack stops there): {e}");
                false
            }
        }
    }

    /// The evil function of [`EVIL_SQL`] in `user`'s session, plus a sequence per tag.
    fn plant_evil(&self, client: &tokio_postgres::Client, user: &str, lake: &str, tags: &[&str]) {
        let sql = EVIL_SQL
            .replace("@USER@", &ident(user))
            .replace("@LAKE@", lake)
            .replace("@DIR@", &self.markers.path().to_string_lossy());
        self.plant(client, &sql, "the evil function");
        for tag in tags {
            self.plant(
                client,
                &format!(
                    "CREATE SEQUENCE IF NOT EXISTS public.seq_{tag}; GRANT ALL ON SEQUENCE public.seq_{tag} TO PUBLIC"
                ),
                &format!("sequence of {tag}"),
            );
        }
    }

    fn privileges(&self) -> BTreeSet<String> {
        let admin = self.admin(&self.check_db);
        self.texts(&admin, PRIVILEGES_SQL)
            .unwrap()
            .into_iter()
            .collect()
    }

    fn rebaseline(&mut self) {
        self.baseline = self.privileges();
    }

    /// No role attribute, membership, non-user setting or role changed since the baseline; a
    /// change is undone (as far as a role that became superuser can) and becomes the baseline.
    fn no_escalation(&mut self) -> Result<(), String> {
        let now = self.privileges();
        let gained: Vec<String> = now.difference(&self.baseline).cloned().collect();
        let lost: Vec<String> = self.baseline.difference(&now).cloned().collect();
        if gained.is_empty() && lost.is_empty() {
            return Ok(());
        }
        self.undo(&gained);
        self.rebaseline();
        Err(format!(
            "privileges changed: gained [{}], lost [{}]",
            gained.join("; "),
            lost.join("; ")
        ))
    }

    /// Best effort: a user that became superuser (or a member of one) reverts what was gained,
    /// so later cases are judged on their own.
    fn undo(&self, gained: &[String]) {
        let mut fixes = Vec::new();
        for g in gained {
            if let Some(rest) = g.strip_prefix("attr ") {
                let role = rest.split(": ").next().unwrap_or_default();
                if role != SUPERVISOR {
                    fixes.push(format!(
                        "ALTER ROLE {} NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS",
                        ident(role)
                    ));
                }
            } else if let Some(rest) = g.strip_prefix("member ") {
                let rest = rest.trim_end_matches(" with admin option");
                if let Some((member, role)) = rest.split_once(" of ") {
                    fixes.push(format!("REVOKE {} FROM {}", ident(role), ident(member)));
                }
            } else if let Some(role) = g.strip_prefix("role ") {
                fixes.push(format!("DROP ROLE IF EXISTS {}", ident(role)));
            }
        }
        if fixes.is_empty() {
            return;
        }
        for (user, password, db) in &self.users {
            let Ok(client) = self.connect(user, password, db) else {
                continue;
            };
            let _ = self.exec(&client, "RESET ROLE");
            for fix in &fixes {
                let _ = self.exec(&client, fix);
            }
        }
    }

    /// Marker files planted functions left (each reported once).
    fn new_markers(&mut self) -> Vec<String> {
        let mut fresh = Vec::new();
        for entry in std::fs::read_dir(self.markers.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if self.seen_markers.insert(name.clone()) {
                fresh.push(name);
            }
        }
        fresh
    }

    /// No escalation and no marker file: what every case checks at least.
    fn unharmed(&mut self) -> Result<(), String> {
        let mut why = Vec::new();
        if let Err(e) = self.no_escalation() {
            why.push(e);
        }
        let markers = self.new_markers();
        if !markers.is_empty() {
            why.push(format!(
                "a planted function wrote files as the server: {}",
                markers.join(", ")
            ));
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }

    /// Evidence that the function planted with `tag` in `db` ran at all.
    fn ran(&self, db: &str, tag: &str) -> Vec<String> {
        let mut evidence = Vec::new();
        let line = format!("dlc-evil-ran:{tag} as ");
        if let Some(at) = self.server.logs().find(&line) {
            let logs = self.server.logs();
            let end = logs[at..].find('"').map_or(logs.len(), |e| at + e);
            evidence.push(format!("the server log has `{}`", &logs[at..end]));
        }
        let admin = self.admin(db);
        if let Ok(called) = self.text(
            &admin,
            &format!("SELECT is_called::text FROM public.seq_{tag}"),
        ) {
            if called == "true" {
                evidence.push(format!("sequence seq_{tag} advanced"));
            }
        }
        if let Ok(rows) = self.rt.block_on(admin.query(
            "SELECT note FROM public.pwned WHERE pg_catalog.starts_with(note, $1)",
            &[&format!("{tag} as ")],
        )) {
            for r in rows {
                evidence.push(format!("pwned row `{}`", r.get::<_, String>(0)));
            }
        }
        for entry in std::fs::read_dir(self.markers.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{tag}.")) {
                evidence.push(format!("marker file {name}"));
            }
        }
        evidence
    }

    fn never_ran(&self, db: &str, tags: &[&str]) -> Result<(), String> {
        let mut all = Vec::new();
        for tag in tags {
            let ev = self.ran(db, tag);
            if !ev.is_empty() {
                all.push(format!("{tag} ran ({})", ev.join(", ")));
            }
        }
        if all.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the server evaluated objects it must skip: {}",
                all.join("; ")
            ))
        }
    }

    /// The server's `/readyz` is 200, its PostgreSQL is the same process and still running.
    fn still_serving(&mut self, pg_pid: i32) -> Result<(), String> {
        if let Some(status) = self.server.child.as_mut().unwrap().try_wait().unwrap() {
            return Err(format!("serve exited: {status}"));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.server.get("/readyz") {
                Some((200, body)) => {
                    let pid = body["postgres"]["pid"].as_i64().unwrap_or_default();
                    if pid != i64::from(pg_pid) {
                        return Err(format!("PostgreSQL was restarted: pid {pg_pid} → {pid}"));
                    }
                    if !postgres_running(&self.home().join("pgdata")) {
                        return Err("PostgreSQL is not running".into());
                    }
                    return Ok(());
                }
                other if Instant::now() > deadline => {
                    return Err(format!("/readyz is not 200: {other:?}"));
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// Stops the server and starts it again on the same ports; waits until `lake` is ready.
    fn restart(&mut self, lake: &str) -> Result<(), String> {
        let status = self.server.stop();
        let stopped = if status.success() {
            Ok(())
        } else {
            Err(format!("serve stopped with {status}"))
        };
        let (pg, http) = (self.server.pg_port, self.server.http_port);
        let env: Vec<(String, String)> = self.env.clone();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.server = Server::spawn_on(self.dir.path(), pg, http, &pairs);
        let deadline = Instant::now() + Duration::from_mins(2);
        loop {
            if let Some(status) = self.server.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!(
                    "serve exited ({status}) after the restart: {}",
                    one_line(&self.server.logs())
                ));
            }
            if let Some((_, body)) = self.server.get("/readyz") {
                if body["lakes"][lake]["state"] == "ready" {
                    return stopped;
                }
            }
            if Instant::now() > deadline {
                return Err(format!("lake {lake} not ready 2 min after the restart"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Lake names `lake list --format json` shows.
    fn lake_names(&self) -> Result<Vec<String>, String> {
        let out = self.cli(&["lake", "list", "--format", "json"], None);
        if !out.status.success() {
            return Err(format!(
                "lake list failed: {}",
                one_line(&String::from_utf8_lossy(&out.stderr))
            ));
        }
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn database_exists(&self, name: &str) -> bool {
        let admin = self.admin(&self.check_db);
        self.rt
            .block_on(admin.query_one(
                "SELECT count(*) FROM pg_catalog.pg_database WHERE datname::text = $1::text",
                &[&name],
            ))
            .map(|r| r.get::<_, i64>(0) > 0)
            .unwrap_or(true)
    }
}

/// The table id of the live DuckLake table `name` and its inlined-data tables.
fn ducklake_table(lab: &Lab, db: &str, name: &str) -> Option<(i64, Vec<String>)> {
    let admin = lab.admin(db);
    let id: i64 = lab
        .rt
        .block_on(admin.query_opt(
            "SELECT table_id FROM public.ducklake_table WHERE table_name = $1 AND end_snapshot IS NULL",
            &[&name],
        ))
        .ok()
        .flatten()?
        .get(0);
    let inlined = lab
        .rt
        .block_on(admin.query(
            "SELECT table_name::text FROM public.ducklake_inlined_data_tables WHERE table_id = $1",
            &[&id],
        ))
        .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
        .unwrap_or_default();
    Some((id, inlined))
}

/// A view shaped like an inlined-data table whose rows exist only if `public.evil(tag)` ran.
fn evil_view(name: &str, tag: &str) -> String {
    format!(
        "CREATE VIEW public.{} AS SELECT 1::bigint AS row_id, 1::bigint AS begin_snapshot, NULL::bigint AS end_snapshot, 1::bigint AS id, 'evil'::varchar AS name WHERE public.evil('{tag}')",
        ident(name)
    )
}

fn register_inlined(table_id: i64, name: &str, schema_version: i64) -> String {
    format!(
        "INSERT INTO public.ducklake_inlined_data_tables (table_id, table_name, schema_version) VALUES ({table_id}, {}, {schema_version})",
        lit(name)
    )
}

/// Functions and operators that would shadow what a careless server calls if `public` were on
/// its search_path: more exact overloads of pg_catalog's (`varchar` where pg_catalog takes
/// `text`), and same-signature copies. One statement a line; `@TAG@` is replaced.
const SEARCH_PATH_SQL: &str = r"
CREATE FUNCTION public.quote_ident(character varying) RETURNS text LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN pg_catalog.quote_ident($1::text); END$f$
CREATE FUNCTION public.quote_literal(character varying) RETURNS text LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN pg_catalog.quote_literal($1::text); END$f$
CREATE FUNCTION public.to_regclass(character varying) RETURNS regclass LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN pg_catalog.to_regclass($1::text); END$f$
CREATE FUNCTION public.lower(character varying) RETURNS text LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN pg_catalog.lower($1::text); END$f$
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN pg_catalog.now(); END$f$
CREATE FUNCTION public.pg_sleep(double precision) RETURNS void LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); END$f$
CREATE FUNCTION public.pg_sleep(integer) RETURNS void LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); END$f$
CREATE FUNCTION public.pg_try_advisory_lock(integer) RETURNS boolean LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN pg_catalog.pg_try_advisory_lock($1::bigint); END$f$
CREATE FUNCTION public.pg_try_advisory_lock(bigint) RETURNS boolean LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN pg_catalog.pg_try_advisory_lock($1); END$f$
CREATE FUNCTION public.pg_advisory_unlock(bigint) RETURNS boolean LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN pg_catalog.pg_advisory_unlock($1); END$f$
CREATE FUNCTION public.dlc_eq_varchar(character varying, character varying) RETURNS boolean LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN $1::text OPERATOR(pg_catalog.=) $2::text; END$f$
CREATE OPERATOR public.= (LEFTARG = character varying, RIGHTARG = character varying, FUNCTION = public.dlc_eq_varchar)
CREATE FUNCTION public.dlc_eq_int8(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN $1 OPERATOR(pg_catalog.=) $2; END$f$
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.dlc_eq_int8)
CREATE FUNCTION public.dlc_eq_int84(bigint, integer) RETURNS boolean LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN $1 OPERATOR(pg_catalog.=) $2; END$f$
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = public.dlc_eq_int84)
CREATE FUNCTION public.dlc_eq_name_text(name, text) RETURNS boolean LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN $1 OPERATOR(pg_catalog.=) $2; END$f$
CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = text, FUNCTION = public.dlc_eq_name_text)
CREATE FUNCTION public.dlc_cat_varchar(text, character varying) RETURNS text LANGUAGE plpgsql AS $f$BEGIN PERFORM public.evil('@TAG@'); RETURN $1 OPERATOR(pg_catalog.||) $2::text; END$f$
CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = character varying, FUNCTION = public.dlc_cat_varchar)
";

impl Lab {
    /// Each line of `sql` as its own statement (one refused line does not roll back the rest).
    fn plant_lines(&self, client: &tokio_postgres::Client, sql: &str, what: &str) {
        for line in sql.lines().map(str::trim).filter(|l| !l.is_empty()) {
            self.plant(client, line, what);
        }
    }

    /// Triggers of every kind on `table` (a table the planting role owns) calling
    /// `public.evil(tag)`; `ENABLE ALWAYS` so `session_replication_role` does not skip them.
    fn plant_triggers(&self, client: &tokio_postgres::Client, table: &str, tag: &str) {
        let t = format!("public.{}", ident(table));
        for sql in [
            format!("CREATE TRIGGER dlc_{tag}_br BEFORE INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION public.evil_trg('{tag}')"),
            format!("CREATE TRIGGER dlc_{tag}_ar AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION public.evil_trg('{tag}')"),
            format!("CREATE TRIGGER dlc_{tag}_bs BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION public.evil_trg('{tag}')"),
            format!("CREATE TRIGGER dlc_{tag}_as AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION public.evil_trg('{tag}')"),
            format!("ALTER TABLE {t} ENABLE ALWAYS TRIGGER dlc_{tag}_br"),
            format!("ALTER TABLE {t} ENABLE ALWAYS TRIGGER dlc_{tag}_ar"),
            format!("ALTER TABLE {t} ENABLE ALWAYS TRIGGER dlc_{tag}_bs"),
            format!("ALTER TABLE {t} ENABLE ALWAYS TRIGGER dlc_{tag}_as"),
        ] {
            self.plant(client, &sql, &format!("trigger on {table}"));
        }
    }

    /// `DO ALSO` rules on `table` calling `public.evil(tag)`, for each of `events`
    /// (`DELETE`, `UPDATE`, `INSERT`).
    fn plant_rules(
        &self,
        client: &tokio_postgres::Client,
        table: &str,
        tag: &str,
        events: &[&str],
    ) {
        let t = format!("public.{}", ident(table));
        for event in events {
            let kind = event.to_ascii_lowercase();
            self.plant(
                client,
                &format!("CREATE RULE dlc_{tag}_{kind} AS ON {event} TO {t} DO ALSO SELECT public.evil('{tag}')"),
                &format!("rule on {table}"),
            );
        }
    }

    /// Runs `args` as a case: exit 0 or one error line, and nothing escalated.
    fn command_case(&mut self, f: &mut Findings, args: &[&str]) {
        let out = self.cli(args, None);
        let outcome = both(tolerable(&out), self.unharmed());
        f.check(&format!("`{}` is harmless", args.join(" ")), outcome);
    }

    /// Waits until `n` scheduled jobs of `lake` finished after now.
    fn wait_scheduled_jobs(&self, lake: &str, n: usize, timeout: Duration) -> Result<(), String> {
        let started = |body: &Value| {
            body["maintenance"][lake]["last"]["started_at"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let first = self
            .server
            .get("/readyz")
            .map(|(_, b)| started(&b))
            .unwrap_or_default();
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<String> = Vec::new();
        loop {
            if let Some((_, body)) = self.server.get("/readyz") {
                let s = started(&body);
                if !s.is_empty() && s != first && !seen.contains(&s) {
                    seen.push(s);
                }
            }
            if seen.len() >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} scheduled jobs of lake {lake} finished within {timeout:?}",
                    seen.len()
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// No role but the internal superuser has superuser, role or database creation rights.
    fn no_privileged_roles(&self) -> Result<(), String> {
        let admin = self.admin(&self.check_db);
        let roles = self.texts(
            &admin,
            &format!(
                "SELECT rolname::text FROM pg_catalog.pg_roles WHERE (rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls) AND rolname <> {}",
                lit(SUPERVISOR)
            ),
        )?;
        if roles.is_empty() {
            Ok(())
        } else {
            Err(format!("privileged roles: {}", roles.join(", ")))
        }
    }
}

/// Names a hostile writer registers as inlined-data tables: qualified, quoted, injected,
/// padded, upper-cased, non-decimal, traversing. None may be read, dropped or interpolated.
const ODD_NAMES: &[&str] = &[
    "x",
    "public.x",
    "pg_catalog.pg_authid",
    "\"; DROP TABLE public.ducklake_snapshot; --",
    "ducklake_inlined_data_1_1\"; DROP TABLE public.ducklake_snapshot; --",
    "ducklake_inlined_data_424250_1; SELECT public.evil('odd_inj')",
    "ducklake_inlined_data_424250_1\" WHERE public.evil('odd_inj') --",
    "ducklake_inlined_data_424251_1 ",
    " ducklake_inlined_data_424251_1",
    "DUCKLAKE_INLINED_DATA_424252_1",
    "ducklake_inlined_data_0x1_1",
    "ducklake_inlined_data_-1_1",
    "ducklake_inlined_data_424253_1.x",
    "../../../etc/passwd",
    "",
];

/// The views backing [`ODD_NAMES`] that exist as relations, with their tags.
const ODD_VIEWS: &[(&str, &str)] = &[
    ("x", "odd_x"),
    ("public.x", "odd_quoted"),
    ("ducklake_inlined_data_424251_1 ", "odd_space"),
    ("DUCKLAKE_INLINED_DATA_424252_1", "odd_upper"),
    ("ducklake_inlined_data_0x1_1", "odd_hex"),
    ("ducklake_inlined_data_-1_1", "odd_neg"),
];

/// Plants the odd names (views where a relation can exist) with tags prefixed `prefix`; the
/// tags planted.
fn plant_odd_names(lab: &Lab, client: &tokio_postgres::Client, prefix: &str) -> Vec<String> {
    let mut tags = vec![format!("{prefix}odd_inj")];
    for (name, tag) in ODD_VIEWS {
        let tag = format!("{prefix}{tag}");
        lab.plant(client, &evil_view(name, &tag), &format!("view {name:?}"));
        tags.push(tag);
    }
    for (i, name) in ODD_NAMES.iter().enumerate() {
        let name = name.replace("odd_inj", &format!("{prefix}odd_inj"));
        let id = 424_300 + i64::try_from(i).unwrap();
        lab.plant(
            client,
            &register_inlined(id, &name, 1),
            &format!("register {name:?}"),
        );
    }
    tags
}

fn catalog_tables_intact(lab: &Lab, db: &str, snapshots_before: i64) -> Result<(), String> {
    let admin = lab.admin(db);
    let n: i64 = lab
        .rt
        .block_on(admin.query_one("SELECT count(*) FROM public.ducklake_snapshot", &[]))
        .map_err(|e| format!("ducklake_snapshot is gone: {}", pg_error(&e)))?
        .get(0);
    if n < snapshots_before {
        return Err(format!(
            "ducklake_snapshot lost rows: {snapshots_before} → {n}"
        ));
    }
    Ok(())
}

fn snapshot_count(lab: &Lab, db: &str) -> i64 {
    let admin = lab.admin(db);
    lab.rt
        .block_on(admin.query_one("SELECT count(*) FROM public.ducklake_snapshot", &[]))
        .unwrap()
        .get(0)
}

// ---------------------------------------------------------------------------------------------
// 1. Writer → superuser through what the server reads.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_writers_planted_objects_never_run_as_superuser_in_maintenance_inspection_or_listing() {
    let mut f = Findings::new("writer → superuser via maintenance, inspection and listing");
    let mut lab = Lab::start(
        &|h: &Path| {
            format!(
                "[maintenance]\ninterval = \"2s\"\n{}",
                lakes_toml(h, &[("sales", None), ("hr", Some("enabled = false"))])
            )
        },
        &[],
        "hr",
    );
    let port = lab.server.pooler_port.to_string();

    // Phase A, lake hr (no schedule): every plant, then every command that reads the catalog.
    let eve_pw = lab.create_user("eve", "hr", "writer");
    for table in ["events", "events_rls", "events_trg"] {
        let made = python("security_rows.py", &["eve", &eve_pw, &port, "hr", table]);
        assert!(
            matches!(&made, Ok(v) if v["rows"] == 3),
            "setup: eve writes {table}: {made:?}"
        );
    }
    let (events_id, _) = ducklake_table(&lab, "hr", "events").expect("events exists");
    let (_, rls_inlined) = ducklake_table(&lab, "hr", "events_rls").expect("events_rls exists");
    let (_, trg_inlined) = ducklake_table(&lab, "hr", "events_trg").expect("events_trg exists");
    assert!(
        !rls_inlined.is_empty() && !trg_inlined.is_empty(),
        "setup: DuckLake inlined the rows"
    );
    let hr_snapshots = snapshot_count(&lab, "hr");

    let eve = lab.connect("eve", &eve_pw, "hr").unwrap();
    let mut never: Vec<String> = ["view", "rls", "rls_live", "sp"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let reads_only = ["view_live"];
    let escalation_only = ["trg_live", "rule_live"];
    let mut all_tags: Vec<String> = never.clone();
    all_tags.extend(
        reads_only
            .iter()
            .chain(&escalation_only)
            .map(|s| (*s).to_owned()),
    );
    all_tags.extend(ODD_VIEWS.iter().map(|(_, t)| (*t).to_owned()));
    all_tags.push("odd_inj".into());
    let tag_refs: Vec<&str> = all_tags.iter().map(String::as_str).collect();
    lab.plant_evil(&eve, "eve", "hr", &tag_refs);

    // A view with a matching name, registered for a table that does not exist.
    let view = "ducklake_inlined_data_424242_1";
    lab.plant(&eve, &evil_view(view, "view"), "view");
    lab.plant(
        &eve,
        &register_inlined(424_242, view, 1),
        "register the view",
    );
    // A view registered for a live table (what `usage` and `lake list` count).
    let live_view = format!("ducklake_inlined_data_{events_id}_0");
    lab.plant(&eve, &evil_view(&live_view, "view_live"), "live view");
    lab.plant(
        &eve,
        &register_inlined(events_id, &live_view, 0),
        "register the live view",
    );
    // A real table with a matching name whose forced row level security calls the function.
    let rls = "ducklake_inlined_data_424243_1";
    lab.plant(
        &eve,
        &format!(
            "CREATE TABLE public.{rls} (row_id bigint, begin_snapshot bigint, end_snapshot bigint, id bigint, name varchar);
             INSERT INTO public.{rls} VALUES (1, 1, NULL, 1, 'x');
             ALTER TABLE public.{rls} ENABLE ROW LEVEL SECURITY;
             ALTER TABLE public.{rls} FORCE ROW LEVEL SECURITY;
             CREATE POLICY dlc_evil ON public.{rls} USING (public.evil('rls'))"
        ),
        "row level security table",
    );
    lab.plant(
        &eve,
        &register_inlined(424_243, rls, 1),
        "register the RLS table",
    );
    // The same on DuckLake's own inlined-data table of a live table.
    for t in &rls_inlined {
        lab.plant(
            &eve,
            &format!(
                "ALTER TABLE public.{0} ENABLE ROW LEVEL SECURITY; ALTER TABLE public.{0} FORCE ROW LEVEL SECURITY;
                 CREATE POLICY dlc_evil ON public.{0} USING (public.evil('rls_live'))",
                ident(t)
            ),
            "policy on a live inlined table",
        );
    }
    // Triggers and rules on a live inlined-data table: they may fire when the server flushes
    // it (as the server's unprivileged role), never as a superuser.
    for t in &trg_inlined {
        lab.plant_triggers(&eve, t, "trg_live");
        lab.plant_rules(&eve, t, "rule_live", &["DELETE", "UPDATE"]);
    }
    // Odd names, and the search_path plants.
    let odd_tags = plant_odd_names(&lab, &eve, "");
    never.extend(odd_tags);
    lab.plant_lines(
        &eve,
        &SEARCH_PATH_SQL.replace("@TAG@", "sp"),
        "search_path shadowing",
    );
    drop(eve);
    f.check("planting changed no privilege", lab.unharmed());

    let read_commands: &[&[&str]] = &[
        &["usage", "--lake", "hr"],
        &["usage", "--lake", "hr", "--format", "json"],
        &["lake", "list"],
        &["lake", "list", "--format", "json"],
        &["lake", "show", "hr"],
        &["lake", "show", "hr", "--format", "json"],
        &["tables", "--lake", "hr"],
        &["snapshots", "--lake", "hr"],
        &["files", "--lake", "hr", "--table", "events"],
        &["user", "list", "--lake", "hr"],
        &["verify", "--lake", "hr"],
        &["orphans", "--lake", "hr"],
        &["maintain", "--lake", "hr", "--dry-run"],
        &["maintain", "--lake", "hr", "--dry-run", "--format", "json"],
    ];
    for args in read_commands {
        lab.command_case(&mut f, args);
    }
    let mut read_tags: Vec<&str> = never.iter().map(String::as_str).collect();
    read_tags.extend(reads_only);
    f.check(
        "inspection, listing and dry runs evaluate no planted view, policy or function",
        lab.never_ran("hr", &read_tags),
    );
    f.check(
        "no plant dropped or emptied a catalog table (reads)",
        catalog_tables_intact(&lab, "hr", hr_snapshots),
    );

    // The real job: flush, expire, merge, cleanup, garbage — and a migration.
    for args in [
        &["maintain", "--lake", "hr"][..],
        &["maintain", "--lake", "hr", "--format", "json"][..],
        &["lake", "migrate", "hr"][..],
    ] {
        lab.command_case(&mut f, args);
    }
    let never_refs: Vec<&str> = never.iter().map(String::as_str).collect();
    f.check(
        "maintenance and migration evaluate no planted view, policy, shadowing function or odd name",
        lab.never_ran("hr", &never_refs),
    );
    f.check(
        "no plant dropped or emptied a catalog table (maintenance)",
        catalog_tables_intact(&lab, "hr", hr_snapshots),
    );
    // A bring-up of the lake's privileges (user create grants again) over the plants.
    let before = lab.privileges();
    let out = lab.cli(
        &["user", "create", "eve2", "--lake", "hr", "--role", "reader"],
        None,
    );
    let after = lab.privileges();
    let gained: BTreeSet<String> = after.difference(&before).cloned().collect();
    let expected: BTreeSet<String> = ["role eve2", "member eve2 of hr_reader"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    f.check(
        "granting over the plants (user create) grants nothing else",
        tolerable(&out).and_then(|()| {
            if out.status.success() && gained != expected {
                Err(format!("gained {gained:?}"))
            } else {
                Ok(())
            }
        }),
    );
    lab.rebaseline();
    f.check(
        "granting over the plants evaluates nothing",
        lab.never_ran("hr", &never_refs),
    );

    // Phase B, lake sales: the scheduled job meets the plants.
    let mallory_pw = lab.create_user("mallory", "sales", "writer");
    let made = python(
        "security_rows.py",
        &["mallory", &mallory_pw, &port, "sales", "orders"],
    );
    assert!(matches!(&made, Ok(v) if v["rows"] == 3), "setup: {made:?}");
    let sales_snapshots = snapshot_count(&lab, "sales");
    let mallory = lab.connect("mallory", &mallory_pw, "sales").unwrap();
    let mut sales_tags: Vec<String> = vec!["s_view".into(), "s_rls".into(), "s_sp".into()];
    sales_tags.extend(ODD_VIEWS.iter().map(|(_, t)| format!("s_{t}")));
    sales_tags.push("s_odd_inj".into());
    let sales_refs: Vec<&str> = sales_tags.iter().map(String::as_str).collect();
    lab.plant_evil(&mallory, "mallory", "sales", &sales_refs);
    lab.plant(&mallory, &evil_view(view, "s_view"), "view");
    lab.plant(
        &mallory,
        &register_inlined(424_242, view, 1),
        "register the view",
    );
    lab.plant(
        &mallory,
        &format!(
            "CREATE TABLE public.{rls} (row_id bigint, begin_snapshot bigint, end_snapshot bigint, id bigint, name varchar);
             INSERT INTO public.{rls} VALUES (1, 1, NULL, 1, 'x');
             ALTER TABLE public.{rls} ENABLE ROW LEVEL SECURITY;
             ALTER TABLE public.{rls} FORCE ROW LEVEL SECURITY;
             CREATE POLICY dlc_evil ON public.{rls} USING (public.evil('s_rls'))"
        ),
        "row level security table",
    );
    lab.plant(
        &mallory,
        &register_inlined(424_243, rls, 1),
        "register the RLS table",
    );
    plant_odd_names(&lab, &mallory, "s_");
    lab.plant_lines(
        &mallory,
        &SEARCH_PATH_SQL.replace("@TAG@", "s_sp"),
        "search_path shadowing",
    );
    drop(mallory);
    f.check("planting in sales changed no privilege", lab.unharmed());
    let waited = lab.wait_scheduled_jobs("sales", 3, Duration::from_mins(1));
    f.check("the scheduled job keeps running over the plants", waited);
    f.check("the scheduled job escalates nothing", lab.unharmed());
    lab.check_db = "sales".into();
    f.check(
        "the scheduled job evaluates no planted object",
        lab.never_ran("sales", &sales_refs),
    );
    for args in [
        &["maintain", "--lake", "sales"][..],
        &["usage", "--lake", "sales"][..],
        &["lake", "show", "sales"][..],
        &["lake", "list"][..],
    ] {
        lab.command_case(&mut f, args);
    }
    f.check(
        "commands on sales evaluate no planted object",
        lab.never_ran("sales", &sales_refs),
    );
    f.check(
        "no plant dropped or emptied sales' catalog",
        catalog_tables_intact(&lab, "sales", sales_snapshots),
    );
    let pg_pid = lab.server.postgres_pid();
    f.check("the server is still serving", lab.still_serving(pg_pid));
    f.check(
        "no lake role or user holds superuser, createrole, createdb, replication or bypassrls",
        lab.no_privileged_roles(),
    );
    f.check(
        "no planted function left a file as the server",
        if std::fs::read_dir(lab.markers.path())
            .unwrap()
            .next()
            .is_none()
        {
            Ok(())
        } else {
            Err("marker files exist".into())
        },
    );
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. Owner → superuser through triggers, rules and views on DuckLake's own tables.
// ---------------------------------------------------------------------------------------------

/// DuckLake tables an owner hooks: those the catalog garbage removes rows from, and those
/// every commit writes.
const HOOKED_TABLES: &[&str] = &[
    "ducklake_table_stats",
    "ducklake_table_column_stats",
    "ducklake_file_column_stats",
    "ducklake_files_scheduled_for_deletion",
    "ducklake_inlined_data_tables",
    "ducklake_data_file",
    "ducklake_delete_file",
    "ducklake_snapshot",
    "ducklake_snapshot_changes",
    "ducklake_table",
];

#[test]
fn an_owners_triggers_rules_and_views_on_catalog_tables_never_run_as_superuser() {
    let mut f = Findings::new("owner → superuser via triggers, rules and views on the catalog");
    let mut lab = Lab::start(
        &|h: &Path| {
            format!(
                "[maintenance]\nenabled = false\n{}",
                lakes_toml(h, &[("sales", None)])
            )
        },
        &[],
        "sales",
    );
    let port = lab.server.pooler_port.to_string();
    let steward_pw = lab.create_user("steward", "sales", "owner");
    let steward = lab.connect("steward", &steward_pw, "sales").unwrap();
    lab.plant_evil(&steward, "steward", "sales", &["otrg", "orule"]);
    for table in HOOKED_TABLES {
        lab.plant_triggers(&steward, table, "otrg");
    }
    for table in &HOOKED_TABLES[..4] {
        lab.plant_rules(&steward, table, "orule", &["DELETE"]);
    }
    f.check("hooking the catalog changed no privilege", lab.unharmed());

    // Garbage made by a real client (the triggers fire for the owner's own commits: as the
    // owner, which is no escalation).
    if let Err(e) = python(
        "garbage.py",
        &["steward", &steward_pw, &port, "sales", "make"],
    ) {
        eprintln!("security: the owner's own client failed over its triggers (not a finding): {e}");
    }
    f.check(
        "the owner's own commits through its triggers escalate nothing",
        lab.unharmed(),
    );
    for args in [
        &["maintain", "--lake", "sales", "--dry-run"][..],
        &["maintain", "--lake", "sales"][..],
        &["maintain", "--lake", "sales", "--format", "json"][..],
        &["usage", "--lake", "sales"][..],
        &["lake", "list"][..],
        &["lake", "show", "sales"][..],
        &["lake", "migrate", "sales"][..],
        &["snapshots", "--lake", "sales"][..],
    ] {
        lab.command_case(&mut f, args);
    }
    drop(steward);

    // A lake whose owner replaced DuckLake's tables with views calling the function.
    let brk_path = format!("{}/data/brk/", lab.home().display());
    lab.cli_ok(&["lake", "create", "brk", "--data-path", &brk_path]);
    lab.rebaseline();
    let saboteur_pw = lab.create_user("saboteur", "brk", "owner");
    let made = python(
        "security_rows.py",
        &["saboteur", &saboteur_pw, &port, "brk", "t"],
    );
    assert!(matches!(&made, Ok(v) if v["rows"] == 3), "setup: {made:?}");
    let saboteur = lab.connect("saboteur", &saboteur_pw, "brk").unwrap();
    lab.plant_evil(&saboteur, "saboteur", "brk", &["ometa", "osnap", "otable"]);
    for (table, tag) in [
        ("ducklake_metadata", "ometa"),
        ("ducklake_snapshot", "osnap"),
    ] {
        lab.plant(
            &saboteur,
            &format!(
                "CREATE TABLE public.{table}_copy AS SELECT * FROM public.{table};
                 DROP TABLE public.{table};
                 CREATE VIEW public.{table} AS SELECT * FROM public.{table}_copy WHERE public.evil('{tag}')"
            ),
            &format!("replace {table} with a view"),
        );
    }
    f.check(
        "replacing catalog tables changed no privilege",
        lab.unharmed(),
    );
    for args in [
        &["lake", "list"][..],
        &["lake", "list", "--format", "json"][..],
        &["lake", "show", "brk"][..],
        &["snapshots", "--lake", "brk"][..],
        &["tables", "--lake", "brk"][..],
        &["usage", "--lake", "brk"][..],
        &["verify", "--lake", "brk"][..],
        &["orphans", "--lake", "brk"][..],
        &["maintain", "--lake", "brk", "--dry-run"][..],
        &["maintain", "--lake", "brk"][..],
        &["lake", "migrate", "brk"][..],
        &["user", "list", "--lake", "brk"][..],
    ] {
        lab.command_case(&mut f, args);
    }

    // A failing statement is reported with PostgreSQL's own message, not a bare `db error`.
    let renamed = [
        "ALTER TABLE public.ducklake_table RENAME TO ducklake_table_moved",
        "ALTER TABLE public.ducklake_table RENAME COLUMN table_name TO dlc_moved",
        "ALTER TABLE public.ducklake_table DROP COLUMN table_name",
    ]
    .iter()
    .any(|sql| lab.plant(&saboteur, sql, "break ducklake_table"));
    if renamed {
        let out = lab.cli(&["tables", "--lake", "brk"], None);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        f.check(
            "a failing SQL statement's error shows PostgreSQL's message",
            tolerable(&out).and_then(|()| {
                let line = stderr
                    .lines()
                    .find(|l| l.starts_with("ducklake-catalog: error:"))
                    .unwrap_or_default();
                if out.status.success() {
                    Err("`tables` succeeded without ducklake_table".into())
                } else if line.trim_end().ends_with("db error")
                    || !(line.contains("does not exist")
                        || line.contains("ducklake_table")
                        || line.contains("table_name"))
                {
                    Err(format!("error line lacks PostgreSQL's message: {line}"))
                } else {
                    Ok(())
                }
            }),
        );
    } else {
        eprintln!("security: the owner may not break DuckLake's tables, so no SQL error to show");
    }
    drop(saboteur);

    // Bring-up after a restart reads every lake's metadata.
    let restarted = lab.restart("sales");
    f.check("the server restarts over a sabotaged lake", restarted);
    std::thread::sleep(Duration::from_secs(4));
    f.check("bring-up over the views escalates nothing", lab.unharmed());
    lab.command_case(&mut f, &["lake", "list"]);
    f.check(
        "the server survived the sabotaged lake",
        match lab.server.child.as_mut().unwrap().try_wait().unwrap() {
            None => Ok(()),
            Some(status) => Err(format!("serve exited: {status}")),
        },
    );
    f.check(
        "no lake role or user holds superuser, createrole, createdb, replication or bypassrls",
        lab.no_privileged_roles(),
    );
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Role-name collisions.
// ---------------------------------------------------------------------------------------------

#[test]
fn user_names_shaped_like_group_roles_are_refused_and_lake_drop_keeps_other_roles() {
    let mut f = Findings::new("role-name collisions");
    let mut lab = Lab::start(
        &|h: &Path| {
            format!(
                "[maintenance]\nenabled = false\n{}",
                lakes_toml(h, &[("sales", None)])
            )
        },
        &[],
        "sales",
    );
    let refused_names = [
        "bi_owner",
        "bi_reader",
        "bi_writer",
        "bi_server",
        "sales_owner",
        "sales_reader",
        "sales_writer",
        "sales_server",
        "lakehouse_owner",
        "x_server",
        "admin",
        "postgres",
        "ducklake_supervisor",
        "pg_monitor",
        "pg_x",
    ];
    for name in refused_names {
        for role in ["reader", "writer", "owner"] {
            let out = lab.cli(
                &["user", "create", name, "--lake", "sales", "--role", role],
                None,
            );
            f.check(
                &format!("user create {name} --role {role} is refused with exit 2"),
                refused_with_2(&out).map(|_| ()),
            );
        }
    }
    f.check(
        "refused names created no role and no membership",
        lab.unharmed(),
    );

    // lake drop removes the lake's own roles only: a user of another lake whose name starts
    // with the dropped lake's name stays, and so do that lake's groups.
    let bi_analyst_pw = lab.create_user("bi_analyst", "sales", "reader");
    let bi_ops_pw = lab.create_user("bi_server_ops", "sales", "writer");
    let bi_path = format!("{}/data/bi/", lab.home().display());
    lab.cli_ok(&["lake", "create", "bi", "--data-path", &bi_path]);
    lab.rebaseline();
    lab.create_user("bi_loader", "bi", "writer");
    let out = lab.cli(&["lake", "drop", "bi", "--yes"], None);
    f.check(
        "lake drop bi succeeds",
        if out.status.success() {
            Ok(())
        } else {
            Err(one_line(&String::from_utf8_lossy(&out.stderr)))
        },
    );
    let admin = lab.admin("sales");
    let left = lab
        .texts(
            &admin,
            "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname IN ('bi_analyst', 'bi_server_ops', 'sales_reader', 'sales_writer', 'sales_owner') ORDER BY 1",
        )
        .unwrap();
    f.check(
        "lake drop keeps roles that are not the dropped lake's",
        if left
            == [
                "bi_analyst",
                "bi_server_ops",
                "sales_owner",
                "sales_reader",
                "sales_writer",
            ]
        {
            Ok(())
        } else {
            Err(format!("left: {left:?}"))
        },
    );
    let memberships = lab
        .texts(
            &admin,
            "SELECT m.rolname || ' of ' || r.rolname FROM pg_catalog.pg_auth_members a JOIN pg_catalog.pg_roles r ON r.oid = a.roleid JOIN pg_catalog.pg_roles m ON m.oid = a.member WHERE m.rolname IN ('bi_analyst', 'bi_server_ops') ORDER BY 1",
        )
        .unwrap();
    f.check(
        "lake drop keeps other lakes' users' memberships",
        if memberships
            == [
                "bi_analyst of sales_reader",
                "bi_server_ops of sales_writer",
            ]
        {
            Ok(())
        } else {
            Err(format!("memberships: {memberships:?}"))
        },
    );
    f.check(
        "other lakes' users still log in after lake drop",
        lab.connect("bi_analyst", &bi_analyst_pw, "sales")
            .and_then(|_| lab.connect("bi_server_ops", &bi_ops_pw, "sales"))
            .map(|_| ()),
    );
    let bi_groups = lab
        .texts(
            &admin,
            "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname IN ('bi_reader', 'bi_writer', 'bi_owner', 'bi_server', 'bi_loader')",
        )
        .unwrap();
    f.check(
        "lake drop removes the dropped lake's own roles and users",
        if bi_groups.is_empty() {
            Ok(())
        } else {
            Err(format!("left behind: {bi_groups:?}"))
        },
    );
    f.check(
        "no lake role or user holds superuser, createrole, createdb, replication or bypassrls",
        lab.no_privileged_roles(),
    );
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 4. Data paths: never over server state, another lake or the backups; nothing outside a
//    lake's path is ever deleted.
// ---------------------------------------------------------------------------------------------

fn age(path: &Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_hours(48))
        .unwrap();
}

fn all_exist(paths: &[PathBuf]) -> Result<(), String> {
    let gone: Vec<String> = paths
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if gone.is_empty() {
        Ok(())
    } else {
        Err(format!("deleted: {}", gone.join(", ")))
    }
}

#[test]
fn data_paths_over_server_state_other_lakes_or_backups_are_refused_and_nothing_outside_is_deleted()
{
    let mut f = Findings::new("data paths");
    let backups = tempfile::Builder::new()
        .prefix("dlc-sec-backups-")
        .tempdir()
        .unwrap();
    let outside = tempfile::Builder::new()
        .prefix("dlc-sec-outside-")
        .tempdir()
        .unwrap();
    let target = format!("{}/target/", backups.path().display());
    let mut lab = Lab::start(
        &|h: &Path| {
            format!(
                "[maintenance]\nenabled = false\n{}",
                lakes_toml(h, &[("sales", None)])
            )
        },
        &[("DUCKLAKE_CATALOG_BACKUP__TARGET", target.as_str())],
        "sales",
    );
    let h = lab.home().display().to_string();
    let o = outside.path().display().to_string();
    let b = backups.path().display().to_string();
    std::os::unix::fs::symlink(lab.home().join("pgdata"), outside.path().join("to-pgdata"))
        .unwrap();
    std::os::unix::fs::symlink(
        lab.home().join("data/sales"),
        outside.path().join("to-sales"),
    )
    .unwrap();
    std::os::unix::fs::symlink(lab.home(), outside.path().join("to-home")).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("the home", format!("{h}/")),
        ("the home without a trailing slash", h.clone()),
        ("pgdata", format!("{h}/pgdata/")),
        ("a folder in pgdata", format!("{h}/pgdata/base/")),
        ("the socket folder", format!("{h}/run/")),
        ("the secrets folder", format!("{h}/secrets/")),
        ("pgdata spelled with //", format!("{h}//pgdata/")),
        ("pgdata spelled with /./", format!("{h}/./pgdata/")),
        ("the root", "/".to_owned()),
        ("a parent of another lake's path", format!("{h}/data/")),
        ("another lake's path", format!("{h}/data/sales/")),
        (
            "a child of another lake's path",
            format!("{h}/data/sales/inner/"),
        ),
        (
            "a child of another lake's path spelled with //",
            format!("{h}/data//sales/inner/"),
        ),
        ("the backup target", target.clone()),
        ("inside the backup target", format!("{target}lake/")),
        ("a parent of the backup target", format!("{b}/")),
        ("a symlink to pgdata", format!("{o}/to-pgdata/")),
        ("a symlink to another lake's path", format!("{o}/to-sales/")),
        (
            "the socket folder through a symlink to the home",
            format!("{o}/to-home/run/"),
        ),
    ];
    for (i, (what, path)) in cases.iter().enumerate() {
        let name = format!("x{i}");
        let out = lab.cli(&["lake", "create", &name, "--data-path", path], None);
        let mut outcome = refused_with_2(&out).map(|_| ());
        match lab.lake_names() {
            Ok(names) if names.contains(&name) => {
                outcome = Err(format!("lake {name} on {path} was created"));
                let _ = lab.cli(&["lake", "drop", &name, "--yes"], None);
            }
            Ok(_) => {}
            Err(e) => outcome = Err(e),
        }
        if lab.database_exists(&name) {
            outcome = Err(format!("database {name} was left behind"));
        }
        f.check(
            &format!("lake create on {what} ({path}) is refused"),
            outcome,
        );
    }
    let okay = lab.cli(
        &[
            "lake",
            "create",
            "okay",
            "--data-path",
            &format!("{h}/data/okay/"),
        ],
        None,
    );
    f.check(
        "a lake on a path of its own is still created (control)",
        if okay.status.success() {
            Ok(())
        } else {
            Err(one_line(&String::from_utf8_lossy(&okay.stderr)))
        },
    );

    // Files a lake's gc and maintenance must never reach.
    lab.cli_ok(&[
        "lake",
        "create",
        "other",
        "--data-path",
        &format!("{h}/data/other/"),
    ]);
    lab.rebaseline();
    let wanda_pw = lab.create_user("wanda", "sales", "writer");
    let port = lab.server.pooler_port.to_string();
    let wrote = python(
        "lake_rows.py",
        &["wanda", &wanda_pw, &port, "sales", "write"],
    );
    assert!(
        matches!(&wrote, Ok(v) if v["rows"] == 1003),
        "setup: {wrote:?}"
    );
    let sales_dir = lab.home().join("data/sales");
    let other_orphan = lab.home().join("data/other/old-orphan.parquet");
    let victim = outside.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    let victim_old = victim.join("old.parquet");
    let victim_linked = victim.join("linked.parquet");
    let canary_abs = victim.join("canary-abs.parquet");
    for p in [&other_orphan, &victim_old, &victim_linked, &canary_abs] {
        std::fs::write(p, b"PAR1 not this lake's").unwrap();
        age(p);
    }
    for (link, to) in [
        ("link-pgdata", lab.home().join("pgdata")),
        ("link-other", lab.home().join("data/other")),
        ("link-victim", victim.clone()),
        ("link-file.parquet", victim_linked.clone()),
    ] {
        std::os::unix::fs::symlink(&to, sales_dir.join(link)).unwrap();
    }
    let precious = vec![
        lab.home().join("pgdata/PG_VERSION"),
        lab.home().join("pgdata/postgresql.conf"),
        lab.home().join("catalog.toml"),
        other_orphan.clone(),
        victim_old.clone(),
        victim_linked.clone(),
        canary_abs.clone(),
    ];
    let own_files: Vec<PathBuf> = files_under(&sales_dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(!own_files.is_empty(), "setup: wanda wrote Parquet files");
    let pg_pid = lab.server.postgres_pid();

    lab.command_case(&mut f, &["orphans", "--lake", "sales"]);
    lab.command_case(
        &mut f,
        &["gc", "--lake", "sales", "--older-than", "0s", "--yes"],
    );
    f.check(
        "gc deletes nothing outside the lake's path, through symlinks or not",
        all_exist(&precious),
    );
    f.check(
        "gc deletes no file the catalog names",
        all_exist(&own_files),
    );

    // A writer schedules files outside the lake for deletion; the job's cleanup must not
    // delete them.
    let wanda = lab.connect("wanda", &wanda_pw, "sales").unwrap();
    let rows = [
        (canary_abs.display().to_string(), false),
        ("../other/old-orphan.parquet".to_owned(), true),
        ("../../pgdata/PG_VERSION".to_owned(), true),
        (format!("{h}/catalog.toml"), false),
        ("link-victim/old.parquet".to_owned(), true),
        ("link-pgdata/postgresql.conf".to_owned(), true),
    ];
    for (i, (path, relative)) in rows.iter().enumerate() {
        lab.plant(
            &wanda,
            &format!(
                "INSERT INTO public.ducklake_files_scheduled_for_deletion (data_file_id, path, path_is_relative, schedule_start) VALUES ({}, {}, {relative}, '2000-01-01 00:00:00+00')",
                990_001 + i,
                lit(path)
            ),
            "schedule a foreign file for deletion",
        );
    }
    drop(wanda);
    lab.command_case(&mut f, &["maintain", "--lake", "sales", "--dry-run"]);
    lab.command_case(&mut f, &["maintain", "--lake", "sales"]);
    f.check(
        "maintenance never deletes a file outside the lake's path that a writer scheduled",
        all_exist(&precious),
    );
    f.check("the server is still serving", lab.still_serving(pg_pid));
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 5. A missing parquet extension: a clean failure, never a crash.
// ---------------------------------------------------------------------------------------------

#[test]
fn maintenance_without_the_parquet_extension_fails_cleanly_and_never_crashes_the_server() {
    let mut f = Findings::new("maintenance without the parquet extension");
    let stripped = tempfile::Builder::new()
        .prefix("dlc-sec-ext-")
        .tempdir()
        .unwrap();
    let source = extensions();
    let mut todo = vec![source.clone()];
    let mut copied = Vec::new();
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("parquet.") {
                    continue;
                }
                let to = stripped.path().join(path.strip_prefix(&source).unwrap());
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&path, &to).unwrap();
                copied.push(name);
            }
        }
    }
    assert!(
        copied.iter().any(|n| n.starts_with("ducklake."))
            && copied.iter().any(|n| n.starts_with("postgres_scanner.")),
        "setup: copied {copied:?}"
    );
    let ext = stripped.path().to_string_lossy().into_owned();
    let started = Lab::start_or_exit(
        &|h: &Path| {
            format!(
                "[maintenance]\ninterval = \"2s\"\n{}",
                lakes_toml(h, &[("sales", None)])
            )
        },
        &[("DUCKLAKE_CATALOG_DUCKDB__EXTENSION_DIRECTORY", ext.as_str())],
        "sales",
    );
    let mut lab = match started {
        Ok(lab) => lab,
        Err((code, out)) => {
            // Refusing to start is an accepted answer: exit 2, one line naming parquet.
            let lines: Vec<&str> = out
                .lines()
                .filter(|l| l.starts_with("ducklake-catalog: error:"))
                .collect();
            f.check(
                "serve refuses to start without parquet: exit 2, one line naming it",
                if code == Some(2) && lines.len() == 1 && lines[0].contains("parquet") {
                    Ok(())
                } else {
                    Err(format!("exit {code:?}: {}", one_line(&out)))
                },
            );
            f.finish();
            return;
        }
    };
    let wendy_pw = lab.create_user("wendy", "sales", "writer");
    let port = lab.server.pooler_port.to_string();
    let wrote = python(
        "lake_rows.py",
        &["wendy", &wendy_pw, &port, "sales", "write"],
    );
    assert!(
        matches!(&wrote, Ok(v) if v["rows"] == 1003),
        "setup: {wrote:?}"
    );
    let pg_pid = lab.server.postgres_pid();
    for args in [
        &["maintain", "--lake", "sales"][..],
        &["maintain", "--lake", "sales", "--format", "json"][..],
        &["maintain", "--lake", "sales", "--dry-run"][..],
    ] {
        let out = lab.cli(args, None);
        f.check(
            &format!(
                "`{}` exits without a signal and with at most one error line",
                args.join(" ")
            ),
            tolerable(&out),
        );
        f.check(
            &format!("the server still serves after `{}`", args.join(" ")),
            lab.still_serving(pg_pid),
        );
    }
    std::thread::sleep(Duration::from_secs(6));
    f.check(
        "the scheduled job without parquet leaves the server serving",
        lab.still_serving(pg_pid),
    );
    f.check(
        "the scheduled job reports its outcome",
        match lab.server.get("/readyz") {
            Some((_, body)) if body["maintenance"]["sales"]["last"]["outcome"].is_string() => {
                Ok(())
            }
            other => Err(format!("no job outcome on /readyz: {other:?}")),
        },
    );
    f.check(
        "nothing panicked in the server",
        if lab.server.logs().contains("panicked") {
            Err("the server log has a panic".into())
        } else {
            Ok(())
        },
    );
    let read = python(
        "lake_rows.py",
        &["wendy", &wendy_pw, &port, "sales", "read"],
    );
    f.check(
        "the lake still reads",
        match read {
            Ok(v) if v["rows"] == 1003 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 6. Writers cannot rewrite or break the lake's catalog, nor reach past their role.
// ---------------------------------------------------------------------------------------------

/// What the catalog is: every DuckLake relation's rows (count and digest) and structure
/// (kind, owner, RLS, grants, columns, triggers, rules, policies), schemas, databases, default
/// privileges, extensions and large objects.
const STRUCTURE_SQL: &str = "
SELECT 'rel ' || c.relname || ' kind ' || c.relkind::text || ' owner ' || pg_catalog.pg_get_userbyid(c.relowner)
       || ' rls ' || c.relrowsecurity::text || '/' || c.relforcerowsecurity::text || ' acl ' || coalesce(c.relacl::text, '-')
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relname ~ '^ducklake_' AND c.relname !~ '^ducklake_inlined_data_[0-9]'
UNION ALL
SELECT 'col ' || c.relname || '.' || a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relname ~ '^ducklake_' AND c.relname !~ '^ducklake_inlined_data_[0-9]'
   AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'trigger ' || c.relname || '.' || t.tgname
  FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND NOT t.tgisinternal
UNION ALL
SELECT 'rule ' || tablename || '.' || rulename FROM pg_catalog.pg_rules WHERE schemaname = 'public'
UNION ALL
SELECT 'policy ' || tablename || '.' || policyname FROM pg_catalog.pg_policies WHERE schemaname = 'public'
UNION ALL
SELECT 'schema ' || nspname || ' owner ' || pg_catalog.pg_get_userbyid(nspowner) || ' acl ' || coalesce(nspacl::text, '-')
  FROM pg_catalog.pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'
UNION ALL
SELECT 'database ' || datname || ' owner ' || pg_catalog.pg_get_userbyid(datdba) || ' acl ' || coalesce(datacl::text, '-')
  FROM pg_catalog.pg_database
UNION ALL
SELECT 'defacl ' || pg_catalog.pg_get_userbyid(defaclrole) || ' ' || defaclobjtype::text || ' ' || coalesce(defaclacl::text, '-')
  FROM pg_catalog.pg_default_acl
UNION ALL
SELECT 'extension ' || extname FROM pg_catalog.pg_extension
UNION ALL
SELECT 'large objects ' || count(*)::text FROM pg_catalog.pg_largeobject_metadata
";

/// DuckLake's own tables in `db` (not the inlined-data tables writers create).
fn catalog_tables(lab: &Lab, db: &str) -> Vec<String> {
    let admin = lab.admin(db);
    lab.texts(
        &admin,
        "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relname ~ '^ducklake_'
            AND c.relname !~ '^ducklake_inlined_data_[0-9]' ORDER BY 1",
    )
    .unwrap()
}

fn catalog_fingerprint(lab: &Lab, db: &str) -> BTreeSet<String> {
    let admin = lab.admin(db);
    let mut out: BTreeSet<String> = lab
        .texts(&admin, STRUCTURE_SQL)
        .unwrap()
        .into_iter()
        .collect();
    for t in catalog_tables(lab, db) {
        let fp = lab
            .text(
                &admin,
                &format!(
                    "SELECT count(*)::text || ' rows, md5 ' || coalesce(pg_catalog.md5(string_agg(x::text, '|' ORDER BY x::text)), '-') FROM public.{} x",
                    ident(&t)
                ),
            )
            .unwrap_or_else(|e| format!("unreadable: {e}"));
        out.insert(format!("rows {t}: {fp}"));
    }
    out
}

fn fingerprint_diff(before: &BTreeSet<String>, after: &BTreeSet<String>) -> Result<(), String> {
    if before == after {
        return Ok(());
    }
    let gone: Vec<&String> = before.difference(after).collect();
    let new: Vec<&String> = after.difference(before).collect();
    Err(format!("the catalog changed: was {gone:?}, now {new:?}"))
}

impl Lab {
    /// A setting as the session sees it (`SHOW`, over the simple protocol).
    fn show(&self, client: &tokio_postgres::Client, name: &str) -> Result<String, String> {
        let messages = self
            .rt
            .block_on(client.simple_query(&format!("SHOW {name}")))
            .map_err(|e| pg_error(&e))?;
        messages
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .ok_or_else(|| format!("SHOW {name} returned no row"))
    }

    /// `sql` in a fresh session of `user` must fail; returns PostgreSQL's refusal.
    fn refused(&self, user: &str, password: &str, db: &str, sql: &str) -> Result<String, String> {
        let client = self.connect(user, password, db)?;
        match self.exec(&client, sql) {
            Ok(()) => Err(format!("`{sql}` succeeded")),
            Err(e) => Ok(e),
        }
    }
}

#[test]
fn writers_cannot_rewrite_break_or_escape_the_lakes_catalog() {
    let mut f = Findings::new("writers against the catalog and their role");
    let mut lab = Lab::start(
        &|h: &Path| {
            format!(
                "[maintenance]\nenabled = false\n{}",
                lakes_toml(h, &[("sales", None), ("hr", None)])
            )
        },
        &[],
        "sales",
    );
    let wally_pw = lab.create_user("wally", "sales", "writer");
    let rita_pw = lab.create_user("rita", "sales", "reader");
    let port = lab.server.pooler_port.to_string();
    let wrote = python(
        "lake_rows.py",
        &["wally", &wally_pw, &port, "sales", "write"],
    );
    assert!(
        matches!(&wrote, Ok(v) if v["rows"] == 1003),
        "setup: {wrote:?}"
    );
    let marks = lab.markers.path().display().to_string();
    {
        let wally = lab.connect("wally", &wally_pw, "sales").unwrap();
        // Helpers for the attempts below; a refused one makes its attempts fail earlier.
        lab.plant_lines(
            &wally,
            "CREATE TABLE public.w_copy (t text)
             CREATE FUNCTION public.w_noop() RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN RETURN NULL; END$f$
             CREATE FUNCTION public.w_sd() RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $f$BEGIN EXECUTE 'ALTER ROLE wally SUPERUSER'; EXECUTE 'GRANT sales_owner TO wally'; END$f$",
            "a writer's helper objects",
        );
    }
    lab.rebaseline();
    let metadata_before = {
        let admin = lab.admin("sales");
        lab.texts(
            &admin,
            "SELECT key || '=' || value FROM public.ducklake_metadata ORDER BY 1",
        )
        .unwrap()
    };

    // The lake's identity and history.
    let identity = [
        "UPDATE public.ducklake_metadata SET value = '/attacker/' WHERE key = 'data_path'",
        "UPDATE public.ducklake_metadata SET value = '0.1' WHERE key = 'version'",
        "DELETE FROM public.ducklake_metadata",
        "DELETE FROM public.ducklake_data_file",
        "DELETE FROM public.ducklake_table",
        "DELETE FROM public.ducklake_snapshot",
        "DELETE FROM public.ducklake_schema",
    ];
    for sql in identity {
        let before = catalog_fingerprint(&lab, "sales");
        let outcome = lab.refused("wally", &wally_pw, "sales", sql).map(|_| ());
        let after = catalog_fingerprint(&lab, "sales");
        f.check(
            &format!("a writer's `{sql}` fails and changes nothing"),
            outcome.and_then(|()| fingerprint_diff(&before, &after)),
        );
    }

    // Every catalog table: no DDL, no triggers, no truncation.
    let tables = catalog_tables(&lab, "sales");
    assert!(tables.len() >= 10, "setup: DuckLake's tables: {tables:?}");
    for t in &tables {
        let q = format!("public.{}", ident(t));
        let attempts = [
            format!("ALTER TABLE {q} ADD COLUMN dlc_evil integer"),
            format!("ALTER TABLE {q} DISABLE TRIGGER ALL"),
            format!("ALTER TABLE {q} OWNER TO sales_writer"),
            format!("ALTER TABLE {q} ENABLE ROW LEVEL SECURITY"),
            format!("CREATE TRIGGER dlc_w AFTER INSERT ON {q} FOR EACH STATEMENT EXECUTE FUNCTION public.w_noop()"),
            format!("CREATE RULE dlc_w AS ON INSERT TO {q} DO ALSO NOTHING"),
            format!("CREATE POLICY dlc_w ON {q} USING (false)"),
            format!("CREATE INDEX dlc_w ON {q} ((1))"),
            format!("GRANT ALL ON {q} TO sales_reader"),
            format!("TRUNCATE {q}"),
            format!("DROP TABLE {q}"),
        ];
        let before = catalog_fingerprint(&lab, "sales");
        let mut outcome = Ok(());
        for sql in &attempts {
            if let Err(e) = lab.refused("wally", &wally_pw, "sales", sql) {
                if sql.starts_with("GRANT") {
                    continue; // PostgreSQL only warns; the fingerprint (acl) decides
                }
                outcome = Err(e);
            }
        }
        let after = catalog_fingerprint(&lab, "sales");
        f.check(
            &format!("a writer can neither alter, hook, grant, truncate nor drop {t}"),
            outcome.and_then(|()| fingerprint_diff(&before, &after)),
        );
    }
    let metadata_after = {
        let admin = lab.admin("sales");
        lab.texts(
            &admin,
            "SELECT key || '=' || value FROM public.ducklake_metadata ORDER BY 1",
        )
        .unwrap()
    };
    f.check(
        "the lake's metadata (data path, version) is unchanged",
        if metadata_before == metadata_after {
            Ok(())
        } else {
            Err(format!("{metadata_before:?} → {metadata_after:?}"))
        },
    );

    // Past the role: files, programs, extensions, roles, other lakes, PostgreSQL itself.
    let escapes: Vec<String> = vec![
        format!("COPY (SELECT 1) TO PROGRAM 'touch {marks}/w.program'"),
        format!("COPY (SELECT 1) TO '{marks}/w.file'"),
        format!("COPY public.ducklake_metadata TO '{marks}/meta.file'"),
        "COPY public.w_copy FROM '/etc/hostname'".into(),
        "COPY public.w_copy FROM PROGRAM 'id'".into(),
        "SELECT pg_catalog.pg_read_file('/etc/hostname')".into(),
        "SELECT pg_catalog.pg_read_binary_file('/etc/hostname')".into(),
        "SELECT pg_catalog.pg_ls_dir('.')".into(),
        "SELECT pg_catalog.pg_stat_file('postgresql.conf')".into(),
        "SELECT pg_catalog.lo_import('/etc/hostname')".into(),
        "SELECT pg_catalog.pg_reload_conf()".into(),
        "SELECT pg_catalog.pg_rotate_logfile()".into(),
        "SELECT pg_catalog.set_config('log_statement', 'none', false)".into(),
        "SET log_statement = 'none'".into(),
        "SET session_replication_role = replica".into(),
        "LOAD 'auth_delay'".into(),
        "CREATE EXTENSION dblink".into(),
        "CREATE EXTENSION postgres_fdw".into(),
        "CREATE EXTENSION pgcrypto".into(),
        "CREATE EXTENSION plpython3u".into(),
        "SELECT public.dblink('dbname=hr user=admin', 'SELECT 1')".into(),
        "CREATE FUNCTION public.w_c() RETURNS integer LANGUAGE c AS '/bin/true', 'main'".into(),
        "CREATE OR REPLACE FUNCTION pg_catalog.dlc_w() RETURNS integer LANGUAGE sql AS 'SELECT 1'".into(),
        "CREATE SCHEMA w_evil".into(),
        "CREATE ROLE w_evil".into(),
        "CREATE DATABASE w_evil".into(),
        "CREATE PUBLICATION w_pub FOR ALL TABLES".into(),
        "ALTER ROLE wally SUPERUSER".into(),
        "ALTER ROLE wally CREATEROLE".into(),
        "ALTER ROLE wally CREATEDB".into(),
        "ALTER ROLE wally BYPASSRLS".into(),
        "ALTER ROLE wally REPLICATION".into(),
        "ALTER ROLE wally CONNECTION LIMIT -1".into(),
        "RESET ROLE; ALTER ROLE wally SUPERUSER".into(),
        "RESET ROLE; ALTER ROLE wally CONNECTION LIMIT -1".into(),
        "ALTER ROLE sales_server SET row_security = on".into(),
        "ALTER ROLE sales_server SET search_path = public".into(),
        "ALTER ROLE admin SET search_path = public".into(),
        "ALTER DATABASE sales SET search_path = public".into(),
        "ALTER DATABASE sales OWNER TO sales_writer".into(),
        "ALTER SCHEMA public OWNER TO sales_writer".into(),
        "DROP SCHEMA public CASCADE".into(),
        "GRANT sales_owner TO wally".into(),
        "GRANT sales_server TO wally".into(),
        "GRANT sales_writer TO rita".into(),
        "GRANT pg_read_server_files TO wally".into(),
        "SET ROLE sales_owner".into(),
        "SET ROLE sales_server".into(),
        "SET ROLE admin".into(),
        "SET ROLE ducklake_supervisor".into(),
        "SET ROLE hr_writer".into(),
        "SET SESSION AUTHORIZATION admin".into(),
        "ALTER DEFAULT PRIVILEGES FOR ROLE sales_owner IN SCHEMA public GRANT ALL ON TABLES TO sales_reader".into(),
        "ALTER DEFAULT PRIVILEGES FOR ROLE admin IN SCHEMA public GRANT ALL ON TABLES TO sales_writer".into(),
        "ALTER DEFAULT PRIVILEGES FOR ROLE sales_server IN SCHEMA public GRANT ALL ON TABLES TO sales_writer".into(),
        "REASSIGN OWNED BY sales_owner TO sales_writer".into(),
        "DROP OWNED BY sales_owner".into(),
        "SELECT public.w_sd()".into(),
        "ALTER FUNCTION public.w_sd() OWNER TO sales_owner".into(),
    ];
    let before = catalog_fingerprint(&lab, "sales");
    for sql in &escapes {
        let outcome = lab.refused("wally", &wally_pw, "sales", sql).map(|_| ());
        let harm = lab.unharmed();
        f.check(&format!("a writer's `{sql}` fails"), both(outcome, harm));
    }
    // What PostgreSQL 15 lets any member do and that reaches nobody: a GRANT without the grant
    // option is a warning that grants nothing; settings of the (NOLOGIN) group role apply to no
    // session (PostgreSQL applies only the login role's), and the server resets them at every
    // bring-up.
    {
        let c = lab.connect("wally", &wally_pw, "sales").unwrap();
        let _ = lab
            .rt
            .block_on(c.batch_execute("GRANT CREATE ON DATABASE sales TO wally"));
        f.check(
            "a writer's `GRANT CREATE ON DATABASE sales TO wally` grants nothing",
            lab.unharmed(),
        );
        let _ = lab.rt.block_on(
            c.batch_execute("ALTER ROLE sales_writer SET search_path = public, pg_catalog"),
        );
        let fresh = lab.connect("wally", &wally_pw, "sales").unwrap();
        let path = lab.text(&fresh, "SHOW search_path").unwrap_or_default();
        f.check(
            "settings a writer puts on its group role reach no session",
            if path.starts_with("public") {
                Err(format!("a new writer session has search_path {path}"))
            } else {
                Ok(())
            },
        );
        let _ = lab
            .rt
            .block_on(c.batch_execute("ALTER ROLE sales_writer RESET ALL"));
    }
    // A reader cannot reach past its role either.
    for sql in [
        "SET ROLE sales_writer",
        "SET ROLE sales_owner",
        "GRANT sales_writer TO rita",
        "RESET ROLE; ALTER ROLE rita SET role = 'sales_writer'",
    ] {
        let outcome = match lab.refused("rita", &rita_pw, "sales", sql) {
            Ok(_) => Ok(()),
            // ALTER ROLE self SET role = … is stored with a NOTICE; it must not take effect.
            Err(e) if sql.contains("SET role") => lab
                .connect("rita", &rita_pw, "sales")
                .and_then(|c| lab.text(&c, "SELECT current_user::text"))
                .and_then(|who| {
                    if ["sales_writer", "sales_owner", "sales_server", "admin"]
                        .contains(&who.as_str())
                    {
                        Err(format!("{e}, and new sessions run as {who}"))
                    } else {
                        Ok(())
                    }
                }),
            Err(e) => Err(e),
        };
        let harm = lab.unharmed();
        f.check(&format!("a reader's `{sql}` fails"), both(outcome, harm));
    }
    let after = catalog_fingerprint(&lab, "sales");
    f.check(
        "attempts past the role changed nothing in the catalog",
        fingerprint_diff(&before, &after),
    );
    f.check(
        "no attempt left a file",
        if std::fs::read_dir(lab.markers.path())
            .unwrap()
            .next()
            .is_none()
        {
            Ok(())
        } else {
            Err("files were written as the server's OS user".into())
        },
    );
    for db in ["hr", "postgres", "template1", "template0"] {
        f.check(
            &format!("a writer cannot connect to {db}"),
            match lab.connect("wally", &wally_pw, db) {
                Ok(_) => Err("connected".into()),
                Err(_) => Ok(()),
            },
        );
    }
    f.check(
        "no lake role or user holds superuser, createrole, createdb, replication or bypassrls",
        lab.no_privileged_roles(),
    );
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 7. Passwords never in clear: not in the log, not in pg_stat_statements, not in any file.
// ---------------------------------------------------------------------------------------------

#[test]
fn passwords_never_reach_the_log_statistics_or_any_file_in_clear() {
    let mut f = Findings::new("passwords in clear");
    let mut lab = Lab::start(
        &|h: &Path| {
            format!(
                "[maintenance]\nenabled = false\n\n[postgres.settings]\nlog_statement = \"all\"\nlog_min_duration_statement = \"0\"\nlog_connections = \"on\"\n{}",
                lakes_toml(h, &[("sales", None)])
            )
        },
        &[],
        "sales",
    );
    // (how it was set, the password)
    let mut secrets: Vec<(String, String)> = Vec::new();
    let json_password = |out: &Output| -> String {
        assert!(
            out.status.success(),
            "setup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["password"].as_str().unwrap_or_default().to_owned()
    };

    let p = unique("create");
    let out = lab.cli(
        &[
            "user",
            "create",
            "pia",
            "--lake",
            "sales",
            "--role",
            "reader",
            "--password-stdin",
            "--format",
            "json",
        ],
        Some(format!("{p}\n").as_str()),
    );
    json_password(&out);
    secrets.push(("user create --password-stdin".into(), p));
    let p = unique("rotate");
    let out = lab.cli(
        &[
            "user",
            "rotate",
            "pia",
            "--password-stdin",
            "--format",
            "json",
        ],
        Some(format!("{p}\n").as_str()),
    );
    json_password(&out);
    secrets.push(("user rotate --password-stdin".into(), p));
    let out = lab.cli(&["user", "rotate", "pia", "--format", "json"], None);
    let pia_pw = json_password(&out);
    secrets.push(("user rotate (generated)".into(), pia_pw.clone()));
    let out = lab.cli(
        &[
            "user", "create", "quinn", "--lake", "sales", "--role", "writer", "--format", "json",
        ],
        None,
    );
    let quinn_pw = json_password(&out);
    secrets.push(("user create (generated)".into(), quinn_pw.clone()));
    let p = unique("owner");
    let out = lab.cli(
        &[
            "user",
            "create",
            "ruth",
            "--lake",
            "sales",
            "--role",
            "owner",
            "--password-stdin",
            "--format",
            "json",
        ],
        Some(format!("{p}\n").as_str()),
    );
    json_password(&out);
    let ruth_pw = p.clone();
    secrets.push(("user create --role owner --password-stdin".into(), p));

    // Users change their own passwords over SQL, simple and extended protocol, and fail to.
    let own: Vec<(&str, String, String, bool)> = vec![
        // (user, current password, statement template with @PW@, extended protocol)
        (
            "pia",
            pia_pw.clone(),
            "ALTER ROLE pia PASSWORD '@PW@'".into(),
            false,
        ),
        (
            "pia",
            pia_pw.clone(),
            "ALTER USER pia WITH ENCRYPTED PASSWORD '@PW@'".into(),
            true,
        ),
        (
            "pia",
            pia_pw.clone(),
            "ALTER ROLE pia PASSWORD '@PW@' VALID UNTIL 'not a time'".into(),
            false,
        ),
        (
            "quinn",
            quinn_pw.clone(),
            "RESET ROLE; ALTER ROLE quinn PASSWORD '@PW@'".into(),
            false,
        ),
        (
            "ruth",
            ruth_pw.clone(),
            "RESET ROLE; ALTER ROLE ruth PASSWORD '@PW@'".into(),
            false,
        ),
    ];
    for (i, (user, current, template, extended)) in own.iter().enumerate() {
        let p = unique(&format!("self{i}"));
        let sql = template.replace("@PW@", &p);
        // The password may change or not; either way it must not be written down in clear.
        // Each statement uses the password the user had at the start (a changed one is
        // tried too).
        let client = lab.connect(user, current, "sales").or_else(|_| {
            let latest = secrets
                .iter()
                .rev()
                .find(|(how, _)| how.starts_with(&format!("{user}: ")))
                .map(|(_, pw)| pw.clone())
                .unwrap_or_default();
            lab.connect(user, &latest, "sales")
        });
        match client {
            Ok(c) => {
                let _ = if *extended {
                    lab.rt
                        .block_on(c.execute(sql.as_str(), &[]))
                        .map(|_| ())
                        .map_err(|e| pg_error(&e))
                } else {
                    lab.exec(&c, &sql)
                };
            }
            Err(e) => eprintln!("security: {user} could not log in for `{template}`: {e}"),
        }
        secrets.push((format!("{user}: {template}"), p));
    }

    // Let the log catch up, then look everywhere.
    std::thread::sleep(Duration::from_secs(2));
    let log = lab.server.logs();
    for (how, pw) in &secrets {
        f.check(
            &format!("the server log never holds the password set by {how}"),
            if log.contains(pw.as_str()) {
                Err("found in clear".into())
            } else {
                Ok(())
            },
        );
    }
    // Every database's statements, as only a superuser sees their text (the extension lives in
    // `postgres`; its view covers the whole cluster).
    let recorded = lab
        .supervisor("postgres")
        .and_then(|c| lab.texts(&c, "SELECT query FROM public.pg_stat_statements"));
    match recorded {
        Ok(queries) => {
            f.check(
                "pg_stat_statements recorded the statements of the attempts",
                if queries.len() > 10 {
                    Ok(())
                } else {
                    Err(format!("only {} statements", queries.len()))
                },
            );
            for (how, pw) in &secrets {
                f.check(
                    &format!("pg_stat_statements never holds the password set by {how}"),
                    if queries.iter().any(|q| q.contains(pw.as_str())) {
                        Err("found in clear".into())
                    } else {
                        Ok(())
                    },
                );
            }
        }
        Err(e) => f.check("pg_stat_statements is readable by the superuser", Err(e)),
    }
    let status = lab.server.stop();
    f.check(
        "serve stops cleanly",
        if status.success() {
            Ok(())
        } else {
            Err(format!("{status}"))
        },
    );
    // Every file of the home (PostgreSQL's data, WAL, statistics, logs, secrets): the
    // passwords are random, so any hit is the password in clear.
    let files = files_under(lab.home());
    let mut hits: Vec<(String, String)> = Vec::new();
    for file in &files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        for (how, pw) in &secrets {
            if contains_bytes(&bytes, pw.as_bytes()) {
                hits.push((how.clone(), file.display().to_string()));
            }
        }
    }
    for (how, _) in &secrets {
        let found: Vec<&str> = hits
            .iter()
            .filter(|(h, _)| h == how)
            .map(|(_, file)| file.as_str())
            .collect();
        f.check(
            &format!("no file under the home holds the password set by {how}"),
            if found.is_empty() {
                Ok(())
            } else {
                Err(format!("found in {}", found.join(", ")))
            },
        );
    }
    assert!(
        files.len() > 10,
        "the home was searched: {} files",
        files.len()
    );
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 8. A second `serve` on the same home is refused before it touches anything.
// ---------------------------------------------------------------------------------------------

fn file_state(paths: &[PathBuf]) -> Vec<(String, Option<(SystemTime, Vec<u8>)>)> {
    paths
        .iter()
        .map(|p| {
            let state = std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, std::fs::read(p).ok()?)));
            (p.display().to_string(), state)
        })
        .collect()
}

#[test]
fn a_second_serve_on_the_same_home_is_refused_before_touching_anything() {
    let mut f = Findings::new("a second serve on the same home");
    let mut lab = Lab::start(
        &|h: &Path| {
            format!(
                "[maintenance]\nenabled = false\n{}",
                lakes_toml(h, &[("sales", None)])
            )
        },
        &[],
        "sales",
    );
    let pgdata = lab.home().join("pgdata");
    let mut watched: Vec<PathBuf> = [
        "postgresql.conf",
        "postgresql.auto.conf",
        "pg_hba.conf",
        "pg_ident.conf",
        "postmaster.pid",
        "postmaster.opts",
        "PG_VERSION",
    ]
    .iter()
    .map(|n| pgdata.join(n))
    .collect();
    for dir in [
        pgdata.clone(),
        lab.home().join("secrets"),
        lab.home().join("run"),
    ] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let tls = [".crt", ".key", ".pem"].iter().any(|s| name.ends_with(s));
            if p.is_file() && (tls || dir != pgdata) && !watched.contains(&p) {
                watched.push(p);
            }
        }
    }
    let before = file_state(&watched);
    let pg_pid = lab.server.postgres_pid();
    std::thread::sleep(Duration::from_millis(1100)); // a rewrite would show in the mtime
    let env: Vec<(&str, &str)> = lab
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (code, stderr) = serve_fails(lab.home(), &env);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ducklake-catalog: error:"))
        .collect();
    f.check(
        "the second serve exits non-zero with one error line",
        if code != 0 && lines.len() == 1 {
            Ok(())
        } else {
            Err(format!("exit {code}: {}", one_line(&stderr)))
        },
    );
    let after = file_state(&watched);
    for ((path, was), (_, now)) in before.iter().zip(&after) {
        f.check(
            &format!("the second serve leaves {path} untouched"),
            if was == now {
                Ok(())
            } else {
                Err("content or mtime changed".into())
            },
        );
    }
    f.check(
        "the first server keeps serving with the same PostgreSQL",
        lab.still_serving(pg_pid),
    );
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 9 and 10. Lake users are limited: connections, large objects, temporary and other objects,
// catalog writes, timeouts, weak passwords, other databases, failed logins; lake names that
// cannot carry their roles are refused.
// ---------------------------------------------------------------------------------------------

#[test]
fn lake_users_are_limited_throttled_and_reach_nothing_but_their_lake() {
    let mut f = Findings::new("limits of lake users");
    let mut lab = Lab::start(
        &|h: &Path| {
            format!(
                "[maintenance]\nenabled = false\n{}",
                lakes_toml(h, &[("sales", None), ("hr", None)])
            )
        },
        &[("DUCKLAKE_CATALOG_POSTGRES__MAX_CONNECTIONS", "100")],
        "sales",
    );
    let rita_pw = lab.create_user("rita", "sales", "reader");
    let wally_pw = lab.create_user("wally", "sales", "writer");
    let olga_pw = lab.create_user("olga", "sales", "owner");
    let port = lab.server.pooler_port.to_string();
    let wrote = python(
        "lake_rows.py",
        &["wally", &wally_pw, &port, "sales", "write"],
    );
    assert!(
        matches!(&wrote, Ok(v) if v["rows"] == 1003),
        "setup: {wrote:?}"
    );

    // What a reader cannot do.
    let before = catalog_fingerprint(&lab, "sales");
    let mut reader_sql: Vec<String> = [
        "SELECT pg_catalog.lo_from_bytea(0, 'x')",
        "SELECT pg_catalog.lo_create(0)",
        "SELECT pg_catalog.lo_creat(-1)",
        "SELECT pg_catalog.lo_import('/etc/hostname')",
        "CREATE TEMP TABLE r_tmp (x integer)",
        "CREATE TEMPORARY VIEW r_tmpv AS SELECT 1",
        "CREATE TABLE public.r_t (x integer)",
        "CREATE TABLE r_t2 (x integer)",
        "CREATE FUNCTION public.r_f() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
        "CREATE FUNCTION pg_temp.r_f() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
        "CREATE VIEW public.r_v AS SELECT 1",
        "CREATE SEQUENCE public.r_s",
        "CREATE TYPE public.r_ty AS (x integer)",
        "CREATE SCHEMA r_schema",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let admin = lab.admin("sales");
    for t in catalog_tables(&lab, "sales") {
        let q = format!("public.{}", ident(&t));
        let first_column = lab
            .text(
                &admin,
                &format!(
                    "SELECT attname::text FROM pg_catalog.pg_attribute WHERE attrelid = {}::regclass AND attnum = 1",
                    lit(&q)
                ),
            )
            .unwrap();
        let c = ident(&first_column);
        reader_sql.push(format!("INSERT INTO {q} SELECT * FROM {q} LIMIT 0"));
        reader_sql.push(format!("UPDATE {q} SET {c} = {c} WHERE false"));
        reader_sql.push(format!("DELETE FROM {q} WHERE false"));
        reader_sql.push(format!("TRUNCATE {q}"));
    }
    drop(admin);
    for sql in &reader_sql {
        f.check(
            &format!("a reader's `{sql}` fails"),
            lab.refused("rita", &rita_pw, "sales", sql).map(|_| ()),
        );
    }
    let after = catalog_fingerprint(&lab, "sales");
    f.check(
        "a reader's attempts change nothing (catalog, large objects)",
        fingerprint_diff(&before, &after),
    );
    f.check("a reader's attempts escalate nothing", lab.unharmed());

    // Every user's sessions have a statement timeout and a temporary-file limit.
    for (user, pw) in [("rita", &rita_pw), ("wally", &wally_pw), ("olga", &olga_pw)] {
        let session = lab.connect(user, pw, "sales");
        for (check, setting, unlimited) in [
            ("temp_file_limit is set", "temp_file_limit", "-1"),
            ("statement_timeout is not 0", "statement_timeout", "0"),
        ] {
            f.check(
                &format!("{user}'s {check}"),
                session
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|c| lab.show(c, setting))
                    .and_then(|v| {
                        if v == unlimited {
                            Err(format!("{setting} is {unlimited} (unlimited)"))
                        } else {
                            Ok(())
                        }
                    }),
            );
        }
    }

    // A weak password of one's own is refused; the old one still works.
    for weak in ["x", "short-pw", "aaaaaaaaaaa"] {
        let sql = format!("ALTER ROLE rita PASSWORD {}", lit(weak));
        let outcome = lab.refused("rita", &rita_pw, "sales", &sql).map(|_| ());
        let still = lab.connect("rita", &rita_pw, "sales").map(|_| ());
        f.check(
            &format!(
                "a user's own weak password ({} characters) is refused",
                weak.len()
            ),
            both(outcome, still),
        );
    }

    // No database but their lake's.
    for (user, pw) in [("rita", &rita_pw), ("wally", &wally_pw), ("olga", &olga_pw)] {
        for db in ["postgres", "template1", "template0", "hr"] {
            f.check(
                &format!("{user} cannot connect to {db}"),
                match lab.connect(user, pw, db) {
                    Ok(_) => Err("connected".into()),
                    Err(_) => Ok(()),
                },
            );
        }
    }

    // Lake names whose roles would not fit (or are reserved) are refused, leaving nothing.
    let h = lab.home().display().to_string();
    for name in [
        "pg_x".to_owned(),
        "a".repeat(57),
        "a".repeat(60),
        "b".repeat(64),
    ] {
        let out = lab.cli(
            &[
                "lake",
                "create",
                &name,
                "--data-path",
                &format!("{h}/data/{}/", &name[..4]),
            ],
            None,
        );
        let mut outcome = refused_with_2(&out).map(|_| ());
        if lab.lake_names().is_ok_and(|names| names.contains(&name)) {
            outcome = Err("the lake was created".into());
        }
        if lab.database_exists(&name) {
            outcome = Err("a database was left behind".into());
        }
        f.check(
            &format!(
                "lake create of a {}-character name `{}…` is refused",
                name.len(),
                &name[..4]
            ),
            outcome,
        );
    }

    // Failed logins are throttled.
    let started = Instant::now();
    let mut refused = 0;
    let mut attempts = 0;
    while attempts < 20 && started.elapsed() < Duration::from_mins(2) {
        attempts += 1;
        if lab
            .connect("rita", &format!("wrong-password-{attempts}-x"), "sales")
            .is_err()
        {
            refused += 1;
        }
    }
    let took = started.elapsed();
    f.check(
        "20 failed logins in a row take at least 2 s (throttled)",
        if refused != attempts {
            Err(format!(
                "{} of {attempts} bad passwords were accepted",
                attempts - refused
            ))
        } else if took < Duration::from_secs(2) {
            Err(format!("{attempts} failed logins took only {took:?}"))
        } else {
            Ok(())
        },
    );
    f.check(
        "the admin still logs in after a user's failed logins",
        lab.connect("admin", ADMIN_PASSWORD, "sales").map(|_| ()),
    );

    // A per-user connection limit: the reader hits it, the admin still gets in.
    let mut held = Vec::new();
    let mut refusal = None;
    for _ in 0..100 {
        match lab.connect("rita", &rita_pw, "sales") {
            Ok(c) => held.push(c),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let admin_in = lab.connect("admin", ADMIN_PASSWORD, "sales").map(|_| ());
    f.check(
        "a reader's connections hit a per-user limit while the admin can still connect",
        match (&refusal, admin_in) {
            (None, _) => Err(format!("{} connections and no limit", held.len())),
            (Some(e), Err(admin)) => Err(format!(
                "the reader's {} connections ended in `{e}` and locked the admin out: {admin}",
                held.len()
            )),
            (Some(_), Ok(())) => Ok(()),
        },
    );
    drop(held);
    f.check(
        "no lake role or user holds superuser, createrole, createdb, replication or bypassrls",
        lab.no_privileged_roles(),
    );
    f.finish();
}

// ---------------------------------------------------------------------------------------------
// 10. Configuration that would overflow, inject or overlap exits 2 naming the key, before
//     anything is created in the home.
// ---------------------------------------------------------------------------------------------

/// Nothing in `home` but the harness's own `serve-*.log`.
fn home_untouched(home: &Path) -> Result<(), String> {
    let extra: Vec<String> = std::fs::read_dir(home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !(n.starts_with("serve-") && n.ends_with(".log")))
        .collect();
    if extra.is_empty() {
        Ok(())
    } else {
        Err(format!("created in the home: {extra:?}"))
    }
}

/// What is configured, its environment, its TOML (`@HOME@` is the home) and the key the error
/// must name.
type ConfigCase = (
    &'static str,
    Vec<(String, String)>,
    Option<String>,
    &'static str,
);

#[test]
fn bad_configuration_exits_2_naming_the_key_before_creating_anything() {
    let mut f = Findings::new("configuration refusals");
    let configs = tempfile::Builder::new()
        .prefix("dlc-sec-conf-")
        .tempdir()
        .unwrap();
    let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
    let long_name = "a".repeat(60);
    // (what, environment, TOML given the home (`@HOME@`), the key the error names)
    let cases: Vec<ConfigCase> = vec![
        (
            "postgres.start_timeout_secs = i64::MAX",
            env("DUCKLAKE_CATALOG_POSTGRES__START_TIMEOUT_SECS", "9223372036854775807"),
            None,
            "postgres.start_timeout_secs",
        ),
        (
            "postgres.stop_timeout_secs = u64::MAX",
            env("DUCKLAKE_CATALOG_POSTGRES__STOP_TIMEOUT_SECS", "18446744073709551615"),
            None,
            "postgres.stop_timeout_secs",
        ),
        (
            "maintenance.interval = 400000000000y",
            env("DUCKLAKE_CATALOG_MAINTENANCE__INTERVAL", "400000000000y"),
            None,
            "maintenance.interval",
        ),
        (
            "maintenance.max_runtime = 400000000000y",
            env("DUCKLAKE_CATALOG_MAINTENANCE__MAX_RUNTIME", "400000000000y"),
            None,
            "maintenance.max_runtime",
        ),
        (
            "a postgres.settings value with a newline",
            env(
                "DUCKLAKE_CATALOG_POSTGRES__SETTINGS__APPLICATION_NAME",
                "x\nshared_preload_libraries = 'dlc_evil'",
            ),
            None,
            "postgres.settings.application_name",
        ),
        (
            "nested lake data paths",
            Vec::new(),
            Some(format!(
                "[[lakes]]\nname = \"outer\"\ndata_path = \"{0}/data/outer\"\n\n[[lakes]]\nname = \"inner\"\ndata_path = \"{0}/data/outer/inner\"\n",
                configs.path().display()
            )),
            "data_path",
        ),
        (
            "a lake on pgdata",
            Vec::new(),
            Some("[[lakes]]\nname = \"x\"\ndata_path = \"@HOME@/pgdata\"\n".to_owned()),
            "data_path",
        ),
        (
            "a lake on the home",
            Vec::new(),
            Some("[[lakes]]\nname = \"x\"\ndata_path = \"@HOME@\"\n".to_owned()),
            "data_path",
        ),
        (
            "a lake name of 60 characters",
            Vec::new(),
            Some(format!(
                "[[lakes]]\nname = \"{long_name}\"\ndata_path = \"{}/data/long\"\n",
                configs.path().display()
            )),
            "lakes[0].name",
        ),
    ];
    for (i, (what, env, toml, key)) in cases.into_iter().enumerate() {
        let dir = home();
        let mut env = env;
        if let Some(toml) = toml {
            let file = configs.path().join(format!("case-{i}.toml"));
            std::fs::write(
                &file,
                toml.replace("@HOME@", &dir.path().display().to_string()),
            )
            .unwrap();
            env.push((
                "DUCKLAKE_CATALOG_CONFIG".to_owned(),
                file.to_string_lossy().into_owned(),
            ));
        }
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (code, stderr) = serve_fails(dir.path(), &pairs);
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("ducklake-catalog: error:"))
            .collect();
        let named = if code == 2 && lines.len() == 1 && lines[0].contains(key) {
            Ok(())
        } else {
            Err(format!(
                "exit {code}, expected 2 and one line naming `{key}`: {}",
                one_line(&stderr)
            ))
        };
        f.check(
            &format!("{what}: serve exits 2 naming the key, creating nothing"),
            both(named, home_untouched(dir.path())),
        );
    }
    f.finish();
}

/// An owner is hostile too: it owns DuckLake's tables, so it can write any row, disable the
/// guard's triggers on them and rewrite `ducklake_metadata`. None of that may make the server's
/// maintenance delete (or write) a file outside the lake's registered data path: DuckDB runs
/// confined to it, and a catalog that records another data path is refused.
#[test]
fn an_owner_cannot_make_maintenance_touch_files_outside_the_lake() {
    let mut f = Findings::new("owner → server deletes files outside the lake");
    let mut lab = Lab::start(
        &|home| {
            lakes_toml(
                home,
                &[
                    ("sales", Some("enabled = false")),
                    ("hr", Some("enabled = false")),
                ],
            )
        },
        &[],
        "sales",
    );
    let owner_pw = lab.create_user("sal_steward", "sales", "owner");
    let home = lab.home().to_path_buf();
    // Files the server must never delete: another lake's, the server's own, and one elsewhere.
    let outside_dir = tempfile::Builder::new()
        .prefix("dlc-sec-outside-")
        .tempdir()
        .unwrap();
    let victims = [
        home.join("data/hr/victim.parquet"),
        home.join("secrets/victim.parquet"),
        outside_dir.path().join("victim.parquet"),
    ];
    for v in &victims {
        std::fs::create_dir_all(v.parent().unwrap()).unwrap();
        std::fs::write(v, b"victim").unwrap();
        age(v);
    }
    let owner = lab.connect("sal_steward", &owner_pw, "sales").unwrap();
    let attacks: Vec<(String, Vec<String>)> = victims
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let id = 990_000 + i;
            let path = v.display().to_string();
            (
                format!("a scheduled row rewritten to {path}"),
                vec![
                    format!("INSERT INTO public.ducklake_files_scheduled_for_deletion (data_file_id, path, path_is_relative, schedule_start) VALUES ({id}, 'x{i}.parquet', true, '2000-01-01')"),
                    format!("UPDATE public.ducklake_files_scheduled_for_deletion SET path = {}, path_is_relative = false WHERE data_file_id = {id}", lit(&path)),
                ],
            )
        })
        .chain(std::iter::once((
            "the guard trigger disabled, then an outside row".to_owned(),
            vec![
                "ALTER TABLE public.ducklake_files_scheduled_for_deletion DISABLE TRIGGER ducklake_guard".to_owned(),
                format!("INSERT INTO public.ducklake_files_scheduled_for_deletion (data_file_id, path, path_is_relative, schedule_start) VALUES (990100, {}, NULL, '2000-01-01')", lit(&victims[0].display().to_string())),
            ],
        )))
        .collect();
    for (what, sqls) in &attacks {
        let mut planted = true;
        for sql in sqls {
            if let Err(e) = lab.exec(&owner, sql) {
                eprintln!("security: plant `{what}` was refused: {e}");
                planted = false;
                break;
            }
        }
        let out = lab.cli(&["maintain", "--lake", "sales"], None);
        let outcome = both(tolerable(&out), all_exist(&victims));
        f.check(
            &format!(
                "{what}{}: maintenance deletes nothing outside",
                if planted { "" } else { " (refused)" }
            ),
            outcome,
        );
        let _ = lab.exec(
            &owner,
            "DELETE FROM public.ducklake_files_scheduled_for_deletion WHERE data_file_id >= 990000",
        );
    }
    // The catalog's data path rewritten to a parent of everything: maintenance refuses.
    let _ = lab.exec(
        &owner,
        &format!(
            "UPDATE public.ducklake_metadata SET value = {} WHERE key = 'data_path' AND scope IS NULL",
            lit(&format!("{}/", home.display()))
        ),
    );
    let out = lab.cli(&["maintain", "--lake", "sales"], None);
    let refused = if out.status.success() {
        Err("maintain ran on a catalog whose data path was rewritten".to_owned())
    } else {
        let line = error_line(&String::from_utf8_lossy(&out.stderr));
        if line.contains("data path") {
            Ok(())
        } else {
            Err(format!("unexpected error: {line}"))
        }
    };
    f.check(
        "a rewritten data_path makes maintenance refuse, naming it",
        both(refused, all_exist(&victims)),
    );
    f.finish();
}
