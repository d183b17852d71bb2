//! The data directory: first-boot initdb, the managed configuration, ownership and checks.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Uid, User};

use super::{tls, ClusterError, ClusterSettings, PgBinaries, Socket, SUPERUSER};
use base::versions::PG_MAJOR;

/// The file that marks a data directory as initialised by ducklake-catalog.
const MARKER: &str = "ducklake-catalog.cluster";

/// The OS account PostgreSQL runs as, when the supervisor is root.
#[derive(Debug, Clone)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl OsUser {
    /// `postgres.os_user` when the supervisor is root; `None` otherwise (PostgreSQL then runs
    /// as the supervisor's own user).
    pub fn for_settings(settings: &ClusterSettings) -> Result<Option<OsUser>, ClusterError> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        let name = &settings.os_user;
        let user = User::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| ClusterError::NoOsUser { user: name.clone() })?;
        Ok(Some(OsUser {
            name: name.clone(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }))
    }
}

/// A prepared PostgreSQL data directory and everything needed to run it.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub bins: PgBinaries,
    pub pgdata: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub listen_address: String,
    /// `Some` when the supervisor is root and drops to this user for PostgreSQL.
    pub os_user: Option<OsUser>,
    pub stop_timeout_secs: u64,
    pub start_timeout_secs: u64,
    /// Settings written after the managed ones and before `[postgres.settings]`: archiving and
    /// recovery, decided by the supervisor.
    pub extra_settings: Vec<(String, String)>,
    /// `initdb --wal-segsize`, for a new cluster.
    pub wal_segment_size_mb: u32,
    /// What its log lines told, counted across restarts (commit conflicts).
    pub log_events: crate::logs::LogEvents,
    /// A standby's password for streaming from the primary: given to PostgreSQL in its
    /// environment (libpq's `PGPASSWORD`), never written into a file.
    pub replication_password: Option<base::Secret>,
}

/// What `pg_controldata` says about a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlData {
    pub system_identifier: String,
    /// The timeline of the latest checkpoint.
    pub timeline: u32,
    pub segment_bytes: u64,
    /// The WAL file holding the latest checkpoint's redo point: every later backup starts in
    /// it or after it.
    pub redo_wal_file: String,
    /// Where the latest checkpoint record starts (`pg_lsn` text): after a clean shutdown, the
    /// end of the WAL.
    pub checkpoint_lsn: String,
}

/// What [`Cluster::prepare`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// initdb ran: a new cluster.
    First,
    /// An existing cluster of ours.
    Existing,
}

impl Cluster {
    /// Finds the binaries, creates the home, initialises PGDATA on first boot (never over a
    /// foreign or other-major directory) and writes the managed configuration.
    pub fn prepare(
        settings: &ClusterSettings,
        extra_settings: Vec<(String, String)>,
    ) -> Result<(Cluster, Boot), ClusterError> {
        let bins = PgBinaries::find(settings.bin_dir.as_deref())?;
        let os_user = OsUser::for_settings(settings)?;
        let cluster = Cluster {
            bins,
            pgdata: settings.pgdata.clone(),
            socket_dir: settings.socket_dir.clone(),
            port: settings.port,
            listen_address: settings.listen_address.clone(),
            os_user,
            stop_timeout_secs: settings.stop_timeout_secs,
            start_timeout_secs: settings.start_timeout_secs,
            extra_settings,
            wal_segment_size_mb: settings.wal_segment_size_mb,
            log_events: crate::logs::LogEvents::default(),
            replication_password: None,
        };
        cluster.make_home(&settings.home)?;
        let boot = cluster.init_if_needed()?;
        cluster.write_managed_files(settings)?;
        cluster.clear_stale_pid()?;
        Ok((cluster, boot))
    }

    fn make_home(&self, home: &Path) -> Result<(), ClusterError> {
        let secrets = home.join("secrets");
        for dir in [home, &self.socket_dir, &secrets] {
            create_home_dir(home, dir)?;
        }
        set_mode(&secrets, 0o700)?;
        if let Some(user) = &self.os_user {
            // PostgreSQL's user must traverse the home to reach PGDATA and the socket folder.
            let mode = fs::metadata(home)
                .map_err(ClusterError::io("stat home"))?
                .mode();
            if mode & 0o001 == 0 {
                set_mode(home, (mode & 0o7777) | 0o011)?;
            }
            self.chown(&self.socket_dir)?;
            check_reachable(user, home)?;
        }
        Ok(())
    }

    fn init_if_needed(&self) -> Result<Boot, ClusterError> {
        let version_file = self.pgdata.join("PG_VERSION");
        if version_file.exists() {
            let found = fs::read_to_string(&version_file)
                .map_err(ClusterError::io(format!("read {}", version_file.display())))?;
            let found = found.trim();
            if found != PG_MAJOR.to_string() {
                return Err(ClusterError::WrongMajor {
                    pgdata: self.pgdata.clone(),
                    found: found.into(),
                });
            }
            if !self.pgdata.join(MARKER).exists() {
                return Err(ClusterError::ForeignDataDir {
                    pgdata: self.pgdata.clone(),
                });
            }
            if let Some(user) = &self.os_user {
                let meta = fs::metadata(&self.pgdata).map_err(ClusterError::io("stat PGDATA"))?;
                if meta.uid() != user.uid {
                    // A volume remounted with other ownership: give it back to PostgreSQL's user.
                    chown_tree(&self.pgdata, user)?;
                }
            }
            return Ok(Boot::Existing);
        }
        if self.pgdata.exists()
            && fs::read_dir(&self.pgdata)
                .map_err(ClusterError::io(format!("read {}", self.pgdata.display())))?
                .next()
                .is_some()
        {
            return Err(ClusterError::ForeignDataDir {
                pgdata: self.pgdata.clone(),
            });
        }
        // initdb into a sibling and rename, so an interrupted first boot leaves nothing that
        // looks like a cluster.
        let staging = self.pgdata.with_file_name("pgdata.initdb");
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .map_err(ClusterError::io("remove an interrupted initdb"))?;
        }
        fs::create_dir_all(&staging).map_err(ClusterError::io("create the initdb folder"))?;
        set_mode(&staging, 0o700)?;
        self.chown(&staging)?;
        tracing::info!(pgdata = %self.pgdata.display(), "first boot: running initdb");
        let mut cmd = Command::new(self.bins.initdb());
        cmd.arg("--pgdata")
            .arg(&staging)
            .arg(format!("--username={SUPERUSER}"))
            .args([
                "--data-checksums",
                "--encoding=UTF8",
                "--locale=C",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--no-instructions",
            ])
            // Small segments: a forced switch every `archive_timeout` ships 1 MB, not 16 MB.
            .arg(format!("--wal-segsize={}", self.wal_segment_size_mb))
            .env_clear()
            .env("LC_ALL", "C");
        self.as_os_user(&mut cmd);
        let out = cmd.output().map_err(ClusterError::io("run initdb"))?;
        if !out.status.success() {
            return Err(ClusterError::Initdb {
                status: out.status.to_string(),
                stderr: base::one_line(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        fs::write(
            staging.join(MARKER),
            format!(
                "initialised by ducklake-catalog {}\n",
                env!("CARGO_PKG_VERSION")
            ),
        )
        .map_err(ClusterError::io("write the cluster marker"))?;
        self.chown(&staging.join(MARKER))?;
        if self.pgdata.exists() {
            fs::remove_dir(&self.pgdata).map_err(ClusterError::io("replace the empty PGDATA"))?;
        }
        fs::rename(&staging, &self.pgdata)
            .map_err(ClusterError::io("move the new cluster into place"))?;
        Ok(Boot::First)
    }

    /// Writes postgresql.conf, pg_hba.conf, pg_ident.conf and the TLS files, wholesale.
    fn write_managed_files(&self, pg: &ClusterSettings) -> Result<(), ClusterError> {
        let (cert, key) = match (&pg.tls_cert_file, &pg.tls_key_file) {
            (Some(c), Some(k)) => (
                fs::read(c).map_err(ClusterError::io(format!(
                    "read postgres.tls_cert_file {}",
                    c.display()
                )))?,
                fs::read(k).map_err(ClusterError::io(format!(
                    "read postgres.tls_key_file {}",
                    k.display()
                )))?,
            ),
            _ => tls::existing_or_new(&self.pgdata, &pg.client_host)?,
        };
        self.write_file("server.crt", &cert, 0o600)?;
        self.write_file("server.key", &key, 0o600)?;
        self.write_file(
            "postgresql.conf",
            postgresql_conf(self, pg).as_bytes(),
            0o600,
        )?;
        self.write_file("pg_hba.conf", PG_HBA.as_bytes(), 0o600)?;
        let supervisor_os_user = User::from_uid(Uid::effective())
            .ok()
            .flatten()
            .map_or_else(|| Uid::effective().to_string(), |u| u.name);
        // The connection pooler runs as PostgreSQL's OS user (or the supervisor's) and looks
        // users up as `ducklake_pooler` over the socket.
        let pooler_os_user = self
            .os_user
            .as_ref()
            .map_or(supervisor_os_user.as_str(), |u| u.name.as_str());
        let ident = format!(
            "# Managed by ducklake-catalog: rewritten on every start.\nsupervisor {supervisor_os_user} {SUPERUSER}\npooler {pooler_os_user} ducklake_pooler\n"
        );
        self.write_file("pg_ident.conf", ident.as_bytes(), 0o600)
    }

    fn write_file(&self, name: &str, content: &[u8], mode: u32) -> Result<(), ClusterError> {
        let path = self.pgdata.join(name);
        fs::write(&path, content).map_err(ClusterError::io(format!("write {}", path.display())))?;
        set_mode(&path, mode)?;
        self.chown(&path)
    }

    /// Removes a `postmaster.pid` left by a crash, unless its postgres is still alive.
    fn clear_stale_pid(&self) -> Result<(), ClusterError> {
        let pidfile = self.pgdata.join("postmaster.pid");
        let Ok(content) = fs::read_to_string(&pidfile) else {
            return Ok(());
        };
        let pid = content
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let exe = String::from_utf8_lossy(&cmdline);
            if pid != std::process::id().cast_signed() && exe.contains("postgres") {
                return Err(ClusterError::AlreadyRunning {
                    pid,
                    pgdata: self.pgdata.clone(),
                });
            }
        }
        tracing::warn!(pidfile = %pidfile.display(), "removing a stale postmaster.pid left by an unclean stop");
        fs::remove_file(&pidfile).map_err(ClusterError::io("remove the stale postmaster.pid"))
    }

    /// Reads the control file: system identifier, timeline, WAL segment size, redo WAL file.
    /// `pg_controldata` runs as a child the runtime awaits, never blocking a worker thread.
    pub async fn control_data(&self) -> Result<ControlData, ClusterError> {
        let out = tokio::process::Command::new(self.bins.pg_controldata())
            .arg("-D")
            .arg(&self.pgdata)
            .env_clear()
            .env("LC_ALL", "C")
            .output()
            .await
            .map_err(ClusterError::io("run pg_controldata"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim_start_matches(':').trim().to_owned())
        };
        let parsed = (|| {
            Some(ControlData {
                system_identifier: field("Database system identifier")?,
                timeline: field("Latest checkpoint's TimeLineID")?.parse().ok()?,
                segment_bytes: field("Bytes per WAL segment")?.parse().ok()?,
                redo_wal_file: field("Latest checkpoint's REDO WAL file")?,
                checkpoint_lsn: field("Latest checkpoint location")?,
            })
        })();
        parsed.ok_or_else(|| ClusterError::Io {
            action: format!("read the control data of {}", self.pgdata.display()),
            error: std::io::Error::other(base::one_line(&String::from_utf8_lossy(&out.stderr))),
        })
    }

    /// Runs `cmd` as PostgreSQL's OS user when the supervisor is root.
    pub(crate) fn as_os_user(&self, cmd: &mut Command) {
        if let Some(user) = &self.os_user {
            cmd.uid(user.uid).gid(user.gid);
        }
    }

    fn chown(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some(user) = &self.os_user {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(
                ClusterError::io(format!("chown {} to {}", path.display(), user.name)),
            )?;
        }
        Ok(())
    }

    /// Where this cluster's Unix socket is.
    pub fn socket(&self) -> Socket {
        Socket {
            dir: self.socket_dir.clone(),
            port: self.port,
        }
    }

    /// libpq connection string for `user` over the Unix socket.
    pub fn socket_conninfo(&self, user: &str, password: Option<&str>, dbname: &str) -> String {
        self.socket().conninfo(user, password, dbname)
    }

    /// Connects as the internal superuser over the Unix socket.
    pub async fn connect_superuser(
        &self,
        dbname: &str,
    ) -> Result<tokio_postgres::Client, pg_conn::PgError> {
        self.socket()
            .connect_superuser(dbname, "ducklake-catalog")
            .await
            .map_err(pg_conn::PgError::sql(format!(
                "connect to database {dbname} as {SUPERUSER}"
            )))
    }

    /// Fails when another process already listens on the configured port.
    pub fn check_port_free(&self) -> Result<(), ClusterError> {
        for addr in self.listen_address.split(',').map(str::trim) {
            let host = match addr {
                "*" => "0.0.0.0",
                "" => continue,
                other => other,
            };
            let target = if host.contains(':') {
                format!("[{host}]:{}", self.port)
            } else {
                format!("{host}:{}", self.port)
            };
            if let Err(e) = std::net::TcpListener::bind(&target) {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    return Err(ClusterError::PortInUse { addr: target });
                }
            }
        }
        Ok(())
    }
}

const PG_HBA: &str = "\
# Managed by ducklake-catalog: rewritten on every start.
# TYPE   DATABASE USER                 ADDRESS      METHOD
local    all      ducklake_supervisor               peer map=supervisor
local    replication ducklake_supervisor            peer map=supervisor
host     all      ducklake_supervisor  all          reject
local    all      ducklake_pooler                   peer map=pooler
host     all      ducklake_pooler      all          reject
host     all      +ducklake_servers    all          reject
hostssl  replication ducklake_replication all       scram-sha-256
local    all      ducklake_replication              reject
host     all      ducklake_replication all          reject
local    all      all                               scram-sha-256
host     all      all                  127.0.0.1/32 scram-sha-256
host     all      all                  ::1/128      scram-sha-256
hostssl  all      all                  all          scram-sha-256
";

/// `v` as a quoted postgresql.conf value: PostgreSQL reads backslash escapes there, so a
/// backslash is doubled along with a quote (a value ending in `\` would otherwise swallow the
/// closing quote). Control characters are refused at configuration load.
fn conf_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

fn postgresql_conf(cluster: &Cluster, pg: &ClusterSettings) -> String {
    let mut s = String::from(
        "# Managed by ducklake-catalog: rewritten on every start. Change settings through the\n\
         # ducklake-catalog configuration ([postgres] and [postgres.settings]), not here.\n",
    );
    let mut set = |k: &str, v: String| {
        let _ = writeln!(s, "{k} = {v}");
    };
    set("listen_addresses", conf_value(&pg.listen_address));
    set("port", pg.port.to_string());
    set(
        "unix_socket_directories",
        conf_value(&cluster.socket_dir.to_string_lossy()),
    );
    set(
        "max_connections",
        crate::sizing::max_connections(pg.max_connections).to_string(),
    );
    set("superuser_reserved_connections", "3".into());
    set("password_encryption", "'scram-sha-256'".into());
    set("ssl", "on".into());
    set("ssl_cert_file", "'server.crt'".into());
    set("ssl_key_file", "'server.key'".into());
    set("ssl_min_protocol_version", "'TLSv1.2'".into());
    set("shared_buffers", conf_value(&pg.shared_buffers));
    // DuckLake's catalog is small, hot and commit-heavy: many short transactions on narrow tables.
    set("work_mem", "'8MB'".into());
    set("maintenance_work_mem", "'64MB'".into());
    set("effective_cache_size", "'512MB'".into());
    set("wal_level", "'replica'".into());
    set("max_wal_size", "'1GB'".into());
    set("checkpoint_timeout", "'5min'".into());
    set("autovacuum_naptime", "'15s'".into());
    set("autovacuum_vacuum_scale_factor", "0.05".into());
    set("idle_in_transaction_session_timeout", "'10min'".into());
    set("tcp_keepalives_idle", "60".into());
    // Catalog queries are short: JIT compilation would only add latency (and the container
    // image leaves out LLVM).
    set("jit", "off".into());
    // What DuckLake clients run, per statement (`cargo xtask bench catalog`, `lake show`).
    // pg_stat_statements: what DuckLake clients run, per statement (never utility statements:
    // `ALTER ROLE … PASSWORD` would keep what a user typed). passwordcheck: a user's own
    // `ALTER ROLE … PASSWORD` must be a real password. auth_delay: each failed login waits,
    // so guessing passwords is slow.
    let libraries: Vec<&str> = ["pg_stat_statements", "passwordcheck", "auth_delay"]
        .into_iter()
        .filter(|l| cluster.bins.has_library(l))
        .collect();
    if !libraries.is_empty() {
        set("shared_preload_libraries", conf_value(&libraries.join(",")));
    }
    if libraries.contains(&"pg_stat_statements") {
        set("pg_stat_statements.max", "5000".into());
        set("pg_stat_statements.track", "'top'".into());
        set("pg_stat_statements.track_utility", "off".into());
    }
    if libraries.contains(&"auth_delay") {
        set("auth_delay.milliseconds", "250".into());
    }
    // Logging: stderr only, parsed by the supervisor; CIS-style auditing.
    set("logging_collector", "off".into());
    set("log_destination", "'stderr'".into());
    set("log_line_prefix", conf_value(super::logs::LINE_PREFIX));
    set("log_timezone", "'UTC'".into());
    set("timezone", "'UTC'".into());
    set("lc_messages", "'C'".into());
    set("log_connections", "on".into());
    set("log_disconnections", "off".into());
    set("log_statement", "'ddl'".into());
    set("log_checkpoints", "on".into());
    set("log_lock_waits", "on".into());
    set("log_min_duration_statement", "'5s'".into());
    set("datestyle", "'iso, mdy'".into());
    set("dynamic_shared_memory_type", "posix".into());
    for (k, v) in &cluster.extra_settings {
        set(k, conf_value(v));
    }
    for (k, v) in &pg.settings {
        set(k, conf_value(v));
    }
    s
}

/// Creates `dir` (the home or a folder in it). A permission error means the home is not
/// writable by this server's user — a root-owned volume or bind mount under the non-root image —
/// and says so; every path that creates the home goes through here.
pub fn create_home_dir(home: &Path, dir: &Path) -> Result<(), ClusterError> {
    fs::create_dir_all(dir).map_err(home_io(home, format!("create {}", dir.display())))
}

/// An I/O error of `action` on the home or in it: a permission error means the home is not
/// writable by this server's user, and says so.
pub fn home_io(home: &Path, action: String) -> impl FnOnce(std::io::Error) -> ClusterError {
    let home = home.to_path_buf();
    move |error| {
        if error.kind() == std::io::ErrorKind::PermissionDenied {
            ClusterError::HomeNotWritable {
                path: home,
                uid: nix::unistd::geteuid().as_raw(),
            }
        } else {
            ClusterError::Io { action, error }
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ClusterError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(ClusterError::io(format!("chmod {}", path.display())))
}

/// Makes `dir` a valid PGDATA: mode 0700, owned by PostgreSQL's user throughout.
pub fn own_tree(dir: &Path, user: Option<&OsUser>) -> Result<(), ClusterError> {
    set_mode(dir, 0o700)?;
    match user {
        Some(user) => chown_tree(dir, user),
        None => Ok(()),
    }
}

fn chown_tree(dir: &Path, user: &OsUser) -> Result<(), ClusterError> {
    std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
        .map_err(ClusterError::io(format!("chown {}", dir.display())))?;
    for entry in fs::read_dir(dir).map_err(ClusterError::io(format!("read {}", dir.display())))? {
        let path = entry.map_err(ClusterError::io("read PGDATA"))?.path();
        if path.is_dir() && !path.is_symlink() {
            chown_tree(&path, user)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(user.uid), Some(user.gid))
                .map_err(ClusterError::io(format!("chown {}", path.display())))?;
        }
    }
    Ok(())
}

/// Checks that `user` can traverse every ancestor of `path` (permission bits only).
fn check_reachable(user: &OsUser, path: &Path) -> Result<(), ClusterError> {
    let abs = path
        .canonicalize()
        .map_err(ClusterError::io(format!("resolve {}", path.display())))?;
    for dir in abs.ancestors() {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        let mode = meta.mode();
        let ok = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(ClusterError::Unreachable {
                user: user.name.clone(),
                path: dir.to_path_buf(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_values_keep_backslashes_and_quotes() {
        // A value ending in a backslash once swallowed its closing quote.
        assert_eq!(conf_value("x\\"), "'x\\\\'");
        assert_eq!(conf_value("it's"), "'it''s'");
    }
}
