//! The supervised connection pooler: Debian's PgBouncer in transaction mode in front of the
//! supervised PostgreSQL (docs/connections.md).
//!
//! Clients connect to the pooler's port with TLS and SCRAM as they would to PostgreSQL. The
//! pooler keeps no password: it looks each user up with [`AUTH_QUERY`] as [`AUTH_ROLE`], which
//! logs in over PostgreSQL's Unix socket by peer authentication, and logs the client in to
//! PostgreSQL with the client's own SCRAM proof. So `user create|rotate|drop` take effect at
//! once. The lookup function ([`lookup_function_sql`]) is installed by the superuser in each
//! lake database and answers only for the login roles of that lake: never a superuser, the
//! server's own roles or the pooler's.
//!
//! This crate writes the configuration (`pgbouncer.ini`, no secret in it), starts the process
//! (its own process group, as PostgreSQL's OS user when root), re-emits its log lines as
//! tracing events (target `pgbouncer`) and stops it. Restarts are the server's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base::recent::RecentLines;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The role the pooler looks users up as: LOGIN, peer authentication on the Unix socket only,
/// EXECUTE on the lookup function and nothing else.
pub const AUTH_ROLE: &str = "ducklake_pooler";
/// The schema of the lookup function in each lake database (owned by the superuser).
pub const AUTH_SCHEMA: &str = "ducklake_pooler";
/// What the pooler asks for a user's SCRAM verifier.
pub const AUTH_QUERY: &str = "SELECT usename, passwd FROM ducklake_pooler.lookup($1)";

/// The lookup role's sessions the pooler holds at most (PostgreSQL allows it a few more).
pub const LOOKUP_CONNECTIONS: u32 = 8;
/// Where Debian installs PgBouncer.
const DEBIAN_BINARY: &str = "/usr/sbin/pgbouncer";
/// How many of the pooler's last lines are kept to explain a failed start.
const KEEP: usize = 20;

/// The pooler's settings slice.
#[derive(Debug, Clone)]
pub struct PoolerSettings {
    /// The `pgbouncer` program.
    pub bin: PathBuf,
    /// Its folder: `pgbouncer.ini` and the (empty) user list.
    pub dir: PathBuf,
    pub listen_address: String,
    pub port: u16,
    /// The databases clients may reach through it (the lakes ready now); any other name is
    /// refused at once.
    pub databases: Vec<String>,
    /// PostgreSQL's Unix socket folder and port.
    pub pg_socket_dir: PathBuf,
    pub pg_port: u16,
    /// The certificate and key clients see (PostgreSQL's own).
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Client connections the pooler accepts in all.
    pub max_client_conn: u32,
    /// Server connections per lake database and user.
    pub pool_size: u32,
    /// Server connections per lake database, all users together.
    pub max_db_connections: u32,
    /// The OS user and group to run as (PostgreSQL's, when the supervisor is root).
    pub os_user: Option<(u32, u32)>,
    /// Where the running pooler's pid is recorded (outside `dir`, in the supervisor's own
    /// folder): a pooler left behind by a killed supervisor is stopped before a new one starts.
    pub pidfile: PathBuf,
    pub start_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolerError {
    #[error("the connection pooler's program {path} is missing: install Debian's `pgbouncer` package (`cargo xtask deps` does) or set pooler.bin")]
    NotInstalled { path: String },
    #[error("{action}: {error}")]
    Io {
        action: String,
        error: std::io::Error,
    },
    #[error("the connection pooler's port {addr} is in use; set pooler.port to a free port or stop what listens there")]
    PortInUse { addr: String },
    #[error("the connection pooler exited while starting ({status}): {last_lines}; see its log lines above (target pgbouncer)")]
    StartFailed { status: String, last_lines: String },
    #[error("the connection pooler did not listen on {addr} within {secs} s: {last_lines}; see its log lines above (target pgbouncer)")]
    StartTimeout {
        addr: String,
        secs: u64,
        last_lines: String,
    },
}

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> PoolerError {
    let action = action.into();
    move |error| PoolerError::Io { action, error }
}

/// The pooler program: `configured`, else Debian's.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, PoolerError> {
    let path = configured.map_or_else(|| PathBuf::from(DEBIAN_BINARY), Path::to_path_buf);
    if path.is_file() {
        Ok(path)
    } else {
        Err(PoolerError::NotInstalled {
            path: path.display().to_string(),
        })
    }
}

/// `pgbouncer.ini` for `s`: each lake database reached over PostgreSQL's socket, users looked up
/// with [`AUTH_QUERY`], transaction pooling, TLS offered with PostgreSQL's certificate, the log
/// on stderr. It holds no secret.
pub fn config_text(s: &PoolerSettings) -> String {
    let mut ini = String::from(
        "; Managed by ducklake-catalog: rewritten on every start ([pooler] in its configuration).\n",
    );
    ini.push_str("[databases]\n");
    for db in &s.databases {
        let _ = writeln!(
            ini,
            "{db} = host={} port={} dbname={db} auth_user={AUTH_ROLE}",
            s.pg_socket_dir.display(),
            s.pg_port
        );
    }
    ini.push('\n');
    let _ = write!(
        ini,
        "[pgbouncer]
listen_addr = {listen}
listen_port = {port}
unix_socket_dir =
pidfile =
logfile =
syslog = 0
auth_type = hba
auth_hba_file = {hba}
auth_file = {users}
auth_user = {AUTH_ROLE}
auth_query = {AUTH_QUERY}
pool_mode = transaction
max_client_conn = {max_client}
default_pool_size = {pool}
min_pool_size = 0
reserve_pool_size = 0
max_db_connections = {max_db}
server_reset_query =
server_check_query = select 1
server_lifetime = 3600
server_idle_timeout = 300
ignore_startup_parameters = extra_float_digits
client_tls_sslmode = allow
client_tls_cert_file = {cert}
client_tls_key_file = {key}
client_tls_protocols = secure
client_login_timeout = 10
verbose = 0
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
application_name_add_host = 0

[users]
; The lookups of every lake share this role's sessions: idle ones in one database are closed
; to serve another instead of failing.
{AUTH_ROLE} = max_user_connections={lookup}
",
        listen = s.listen_address,
        port = s.port,
        users = s.dir.join("users.txt").display(),
        hba = s.dir.join("pg_hba.conf").display(),
        max_client = s.max_client_conn,
        pool = s.pool_size,
        max_db = s.max_db_connections,
        lookup = LOOKUP_CONNECTIONS,
        cert = s.tls_cert.display(),
        key = s.tls_key.display(),
    );
    ini
}

/// Who may log in through the pooler, as PostgreSQL's own `pg_hba.conf` says it for TCP: SCRAM,
/// without TLS only on loopback; never the pooler's lookup role.
const POOLER_HBA: &str = "\
# Managed by ducklake-catalog: rewritten on every start.
host     all  ducklake_pooler      0.0.0.0/0     reject
host     all  ducklake_pooler      ::/0          reject
host     all  ducklake_supervisor  0.0.0.0/0     reject
host     all  ducklake_supervisor  ::/0          reject
host     all  all                  127.0.0.1/32  scram-sha-256
host     all  all                  ::1/128       scram-sha-256
hostssl  all  all                  0.0.0.0/0     scram-sha-256
hostssl  all  all                  ::/0          scram-sha-256
";

/// Writes the pooler's folder: `pgbouncer.ini`, its `pg_hba.conf` and an empty user list
/// (every user is looked up), owned by the OS user it runs as, readable by it alone.
pub fn write_config(s: &PoolerSettings) -> Result<PathBuf, PoolerError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    // Made afresh on every start: the OS user the pooler runs as owns the folder afterwards,
    // and nothing it left there (a symbolic link) may redirect these writes. `remove_dir_all`
    // removes a link itself, never what it points to.
    match std::fs::symlink_metadata(&s.dir) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&s.dir),
        Ok(_) => std::fs::remove_file(&s.dir),
        Err(_) => Ok(()),
    }
    .map_err(io(format!("clear {}", s.dir.display())))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&s.dir)
        .map_err(io(format!("create {}", s.dir.display())))?;
    let ini = s.dir.join("pgbouncer.ini");
    let users = s.dir.join("users.txt");
    let hba = s.dir.join("pg_hba.conf");
    for (path, text) in [
        (&ini, config_text(s)),
        (&users, String::new()),
        (&hba, POOLER_HBA.to_owned()),
    ] {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io(format!("write {}", path.display())))?;
    }
    if let Some((uid, gid)) = s.os_user {
        for path in [&s.dir, &ini, &users, &hba] {
            nix::unistd::chown(
                path.as_path(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(|e| PoolerError::Io {
                action: format!("hand {} to the pooler's OS user", path.display()),
                error: e.into(),
            })?;
        }
    }
    Ok(ini)
}

/// The SQL that makes the lookup function in a lake database `lake`: run by the superuser
/// with the search path pinned. The function returns the SCRAM verifier of a role that may use
/// this lake through the pooler — a LOGIN role with a SCRAM password, not expired, a member of
/// the lake's reader, writer or owner role, and neither a superuser, a replication or
/// RLS-bypassing role, nor one of the server's own roles — and nothing for any other name.
pub fn lookup_function_sql(lake: &str, superuser: &str, servers_group: &str) -> String {
    let ident = base::quote_ident;
    let lit = base::quote_literal;
    let schema = ident(AUTH_SCHEMA);
    let role = ident(AUTH_ROLE);
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {su};
ALTER SCHEMA {schema} OWNER TO {su};
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
GRANT USAGE ON SCHEMA {schema} TO {role};
CREATE OR REPLACE FUNCTION {schema}.lookup(wanted text, OUT usename text, OUT passwd text)
  RETURNS SETOF record LANGUAGE sql STABLE STRICT SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp AS $lookup$
  SELECT a.rolname::text, a.rolpassword
  FROM pg_catalog.pg_authid a
  WHERE a.rolname = wanted
    AND a.rolcanlogin AND NOT a.rolsuper AND NOT a.rolreplication AND NOT a.rolbypassrls
    AND a.rolpassword LIKE 'SCRAM-SHA-256$%'
    AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil > pg_catalog.now())
    AND a.rolname NOT IN ({su_lit}, {role_lit})
    AND NOT pg_catalog.pg_has_role(a.oid, {servers}, 'MEMBER')
    AND (pg_catalog.pg_has_role(a.oid, {reader}, 'MEMBER')
         OR pg_catalog.pg_has_role(a.oid, {writer}, 'MEMBER')
         OR pg_catalog.pg_has_role(a.oid, {owner}, 'MEMBER'))
$lookup$;
ALTER FUNCTION {schema}.lookup(text) OWNER TO {su};
REVOKE ALL ON FUNCTION {schema}.lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.lookup(text) TO {role};
GRANT CONNECT ON DATABASE {db} TO {role};",
        su = ident(superuser),
        su_lit = lit(superuser),
        role_lit = lit(AUTH_ROLE),
        servers = lit(servers_group),
        reader = lit(&format!("{lake}_reader")),
        writer = lit(&format!("{lake}_writer")),
        owner = lit(&format!("{lake}_owner")),
        db = ident(lake),
    )
}

/// The last lines the pooler wrote, on one line (without PgBouncer's prefixes).
fn summary(recent: &RecentLines) -> String {
    let lines = recent.lines();
    let tail: Vec<&str> = lines
        .iter()
        .skip(lines.len().saturating_sub(3))
        .map(|l| parse(l).map_or(l.as_str(), |(_, _, m)| m))
        .collect();
    if tail.is_empty() {
        "(no output)".into()
    } else {
        tail.join(" / ")
    }
}

/// A PgBouncer line: `2026-12-06 12:00:00.000 UTC [4242] LOG message` → pid, severity,
/// message.
fn parse(line: &str) -> Option<(&str, &str, &str)> {
    let open = line.find(" [")?;
    let rest = &line[open + 2..];
    let close = rest.find("] ")?;
    let pid = &rest[..close];
    let rest = &rest[close + 2..];
    let (severity, message) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((pid, severity, message))
}

/// One log line as a tracing event. Only a line carrying the child's own pid keeps its
/// severity: a client can put a newline in its user name, and the forged line that follows
/// is logged as plain text.
fn emit(line: &str, child: &str) {
    let Some((pid, severity, message)) = parse(line).filter(|(pid, _, _)| *pid == child) else {
        tracing::info!(target: "pgbouncer", "{line}");
        return;
    };
    macro_rules! ev {
        ($lvl:expr) => {
            tracing::event!(target: "pgbouncer", $lvl, pooler_pid = pid, severity, "{}", message)
        };
    }
    match severity {
        "ERROR" | "FATAL" => ev!(tracing::Level::ERROR),
        "WARNING" => ev!(tracing::Level::WARN),
        "DEBUG" | "NOISE" => ev!(tracing::Level::DEBUG),
        _ => ev!(tracing::Level::INFO),
    }
}

async fn forward(out: impl AsyncRead + Unpin, recent: RecentLines, child: String) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        recent.push(&line);
        emit(&line, &child);
    }
}

/// A running pooler. Dropping it kills the process.
#[derive(Debug)]
pub struct RunningPooler {
    child: Child,
    pid: i32,
    recent: RecentLines,
    pidfile: PathBuf,
}

/// Stops the pooler `pidfile` records if it still runs with `ini`: one left behind by a
/// supervisor that was killed (SIGKILL, OOM) would otherwise hold the port. Any other process
/// with that pid is left alone.
async fn stop_leftover(pidfile: &Path, ini: &Path) {
    let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    else {
        return;
    };
    let ours = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"pgbouncer"))
                && args.contains(&ini.as_os_str().as_encoded_bytes())
        })
    };
    if !ours(pid) {
        let _ = std::fs::remove_file(pidfile);
        return;
    }
    tracing::warn!(
        pooler_pid = pid,
        "stopping a connection pooler left behind by an earlier run"
    );
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ours(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if ours(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_file(pidfile);
}

/// Writes the configuration and starts the pooler; returns once it accepts TCP connections.
pub async fn start(s: &PoolerSettings) -> Result<RunningPooler, PoolerError> {
    stop_leftover(&s.pidfile, &s.dir.join("pgbouncer.ini")).await;
    let addr = format!("{}:{}", s.listen_address, s.port);
    let probe = addr_of(&s.listen_address, s.port);
    if std::net::TcpListener::bind(probe).is_err() {
        return Err(PoolerError::PortInUse { addr });
    }
    let ini = write_config(s)?;
    let mut cmd = Command::new(&s.bin);
    cmd.arg(&ini)
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some((uid, gid)) = s.os_user {
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd.spawn().map_err(io("spawn pgbouncer"))?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .expect("a just-spawned child has a pid");
    if let Err(e) = std::fs::write(&s.pidfile, pid.to_string()) {
        tracing::warn!(error = %e, path = %s.pidfile.display(), "could not record the pooler's pid");
    }
    let recent = RecentLines::new(KEEP);
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward(stderr, recent.clone(), pid.to_string()));
    }
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward(stdout, recent.clone(), pid.to_string()));
    }
    let mut running = RunningPooler {
        child,
        pid,
        recent,
        pidfile: s.pidfile.clone(),
    };
    let deadline = Instant::now() + s.start_timeout;
    loop {
        if let Some(status) = running.child.try_wait().map_err(io("poll pgbouncer"))? {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if running.recent.mentions("Address already in use") {
                return Err(PoolerError::PortInUse { addr });
            }
            return Err(PoolerError::StartFailed {
                status: status.to_string(),
                last_lines: summary(&running.recent),
            });
        }
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(probe)).await
        {
            tracing::info!(
                pooler_pid = pid,
                port = s.port,
                "the connection pooler is accepting connections"
            );
            return Ok(running);
        }
        if Instant::now() > deadline {
            return Err(PoolerError::StartTimeout {
                addr,
                secs: s.start_timeout.as_secs(),
                last_lines: summary(&running.recent),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The address to probe: the listen address, or loopback when it listens on all.
fn addr_of(listen: &str, port: u16) -> std::net::SocketAddr {
    let host = match listen {
        "*" | "0.0.0.0" | "" => "127.0.0.1",
        "::" => "::1",
        other => other,
    };
    let ip: std::net::IpAddr = host
        .parse()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    std::net::SocketAddr::new(ip, port)
}

impl RunningPooler {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits until the pooler exits on its own.
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Rewrites the configuration for `s` and has the pooler read it again (SIGHUP): how a
    /// lake created or dropped while it runs is added or removed.
    pub fn reload(&self, s: &PoolerSettings) -> Result<(), PoolerError> {
        write_config(s)?;
        kill(Pid::from_raw(self.pid), Signal::SIGHUP).map_err(|e| PoolerError::Io {
            action: "signal pgbouncer to reload".into(),
            error: e.into(),
        })
    }

    /// The last lines it wrote, on one line.
    pub fn last_lines(&self) -> String {
        summary(&self.recent)
    }

    /// Stops the pooler at once (SIGTERM: its immediate shutdown, closing client connections;
    /// their transactions end with them), killing it after 5 s.
    pub async fn stop(mut self) -> Result<ExitStatus, PoolerError> {
        let _ = std::fs::remove_file(&self.pidfile);
        if let Err(e) = kill(Pid::from_raw(self.pid), Signal::SIGTERM) {
            tracing::warn!(pooler_pid = self.pid, error = %e, "signal pgbouncer");
        }
        if let Ok(status) = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            return status.map_err(io("wait for pgbouncer"));
        }
        tracing::error!(
            pooler_pid = self.pid,
            "pgbouncer ignored SIGTERM; killing it"
        );
        self.child.kill().await.map_err(io("kill pgbouncer"))?;
        self.child.wait().await.map_err(io("wait for pgbouncer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> PoolerSettings {
        PoolerSettings {
            bin: DEBIAN_BINARY.into(),
            dir: dir.join("pooler"),
            listen_address: "127.0.0.1".into(),
            port: 6432,
            databases: vec!["sales".into(), "hr".into()],
            pg_socket_dir: dir.join("run"),
            pg_port: 5432,
            tls_cert: dir.join("server.crt"),
            tls_key: dir.join("server.key"),
            max_client_conn: 5000,
            pool_size: 20,
            max_db_connections: 80,
            os_user: None,
            pidfile: dir.join("pooler.pid"),
            start_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_configuration_looks_users_up_and_holds_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let text = config_text(&s);
        assert!(
            text.contains(&format!("auth_query = {AUTH_QUERY}")),
            "{text}"
        );
        assert!(text.contains("pool_mode = transaction"));
        assert!(text.contains(&format!(
            "sales = host={} port=5432 dbname=sales auth_user=ducklake_pooler",
            dir.path().join("run").display()
        )));
        assert!(text.contains("\nhr = host="));
        assert!(
            !text.contains("* ="),
            "no wildcard: other databases are refused at once"
        );
        assert!(!text.to_lowercase().contains("password"), "{text}");
        // A user named in `[users]` would be taken as configured there, with no password, and
        // never looked up: only the lookup role (which never logs in through the pooler) is.
        let users = text.split("[users]").nth(1).unwrap();
        assert_eq!(
            users
                .lines()
                .filter(|l| l.contains('='))
                .collect::<Vec<_>>(),
            ["ducklake_pooler = max_user_connections=8"],
            "{text}"
        );
        write_config(&s).unwrap();
        assert_eq!(
            std::fs::read_to_string(s.dir.join("users.txt")).unwrap(),
            "",
            "no user is listed: every one is looked up"
        );
    }

    #[test]
    fn the_lookup_function_answers_only_for_the_lakes_own_users() {
        let sql = lookup_function_sql("sales", "ducklake_supervisor", "ducklake_servers");
        for needle in [
            "SECURITY DEFINER",
            "SET search_path = pg_catalog, pg_temp",
            "NOT a.rolsuper",
            "'sales_reader'",
            "'sales_writer'",
            "'sales_owner'",
            "NOT pg_catalog.pg_has_role(a.oid, 'ducklake_servers', 'MEMBER')",
            "REVOKE ALL ON FUNCTION \"ducklake_pooler\".lookup(text) FROM PUBLIC",
        ] {
            assert!(sql.contains(needle), "{needle}: {sql}");
        }
    }

    #[test]
    fn log_lines_are_split_into_pid_severity_and_message() {
        assert_eq!(
            parse("2026-12-06 12:00:00.000 UTC [4242] LOG process up: PgBouncer 1.18.0"),
            Some(("4242", "LOG", "process up: PgBouncer 1.18.0"))
        );
        assert_eq!(parse("no prefix here"), None);
    }
}
