//! `ducklake-catalog doctor`: every precondition of a working catalog, checked in order, each
//! with a one-line fix when it fails. Usable before the first start (the checks that need a
//! running server are skipped while the home holds no cluster) and against a running server.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use aws::S3Probe;
use serde::Serialize;
use storage::DataPath;

use catalog_server::config::{Config, ConfigError};
use catalog_server::connection::admin_password;
use catalog_server::postgres::{quote_ident, PgBinaries};
use catalog_server::versions::{DUCKLAKE_SPEC_VERSION, PG_MAJOR};

/// Free space below which the home fails the check.
const MIN_FREE_BYTES: u64 = 1 << 30;
/// SigV4 rejects requests whose clock is off by more than 15 minutes; S3 by more than 5.
const MAX_SKEW: Duration = Duration::from_mins(5);

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pass,
    Fail,
    /// Not applicable here (nothing on S3, no cluster yet…); does not fail the report.
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub state: State,
    pub detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    fn new() -> Self {
        Report {
            ok: true,
            checks: Vec::new(),
        }
    }

    fn pass(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, State::Pass, detail.into(), None);
    }

    fn skip(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, State::Skip, detail.into(), None);
    }

    fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, State::Fail, detail.into(), Some(fix.into()));
    }

    /// A failure whose message is the product's own one-line error: `cause; fix`.
    fn fail_with(&mut self, name: impl Into<String>, error: &dyn std::fmt::Display) {
        let text = base::one_line(&error.to_string());
        match text.split_once("; ") {
            Some((cause, fix)) => self.fail(name, cause, fix),
            None => self.fail(name, text, "see docs/troubleshooting.md"),
        }
    }

    fn push(&mut self, name: impl Into<String>, state: State, detail: String, fix: Option<String>) {
        self.ok &= state != State::Fail;
        self.checks.push(Check {
            name: name.into(),
            state,
            detail,
            fix,
        });
    }

    /// The table people read: `✓`, `✗` or `-`, the check, what was found, and the fix.
    pub fn to_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let mark = match c.state {
                State::Pass => "✓",
                State::Fail => "✗",
                State::Skip => "-",
            };
            let _ = writeln!(out, "{mark} {:width$}  {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "  {:width$}  fix: {fix}", "");
            }
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.state == State::Fail)
            .count();
        if failed == 0 {
            out.push_str("all checks passed\n");
        } else {
            let _ = writeln!(out, "{failed} check(s) failed");
        }
        out
    }
}

/// Runs every check. `config` is what loading the configuration gave; when it failed, that is
/// the only line.
pub async fn run(config: Result<Config, ConfigError>) -> Report {
    let mut report = Report::new();
    let mut config = match config {
        Ok(c) => c,
        Err(e) => {
            report.fail_with("config", &e);
            return report;
        }
    };
    report.pass(
        "config",
        format!(
            "valid; {} lake(s): {}",
            config.lakes.len(),
            config.lake_names()
        ),
    );
    check_home(&mut report, &config.home);
    if let Some(remote) = config.external().cloned() {
        check_external(&mut report, &config, &remote).await;
    } else {
        match PgBinaries::find(config.postgres.bin_dir.as_deref()) {
            Ok(b) => report.pass(
                "postgres binaries",
                format!("PostgreSQL {PG_MAJOR} in {}", b.bin_dir.display()),
            ),
            Err(e) => report.fail_with("postgres binaries", &e),
        }
        check_postgres(&mut report, &config).await;
    }
    let (aws_ok, aws) = check_aws(&mut report, &mut config).await;
    let usable = aws.as_ref().filter(|_| aws_ok);
    let probes = check_places(&mut report, &config, aws.as_ref(), usable).await;
    check_services(&mut report, &config, usable).await;
    check_clock(&mut report, &probes);
    report
}

fn check_home(report: &mut Report, home: &Path) {
    // Before the first start the home may not exist: its nearest existing folder must be
    // writable, since `serve` creates it.
    let existing = home.ancestors().find(|p| p.exists()).unwrap_or(home);
    let probe = existing.join(format!(".doctor-{}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, b"x") {
        report.fail(
            "home",
            format!("{} is not writable ({e})", existing.display()),
            "point home (DUCKLAKE_CATALOG_HOME) at a writable volume, owned by the server's user",
        );
        return;
    }
    let _ = std::fs::remove_file(&probe);
    match nix::sys::statvfs::statvfs(existing) {
        Ok(st) => {
            let free = st.blocks_available() * st.fragment_size();
            #[allow(clippy::cast_precision_loss)] // a GiB figure to two decimals
            let gib = free as f64 / f64::from(1u32 << 30);
            if free < MIN_FREE_BYTES {
                report.fail(
                    "home",
                    format!("{}: only {gib:.2} GiB free", home.display()),
                    "give the volume at least 1 GiB free (WAL is kept until archived)",
                );
            } else {
                report.pass(
                    "home",
                    format!("{} writable, {gib:.1} GiB free", home.display()),
                );
            }
        }
        Err(e) => report.fail(
            "home",
            format!("free space of {}: {e}", existing.display()),
            "check the volume mounted at home",
        ),
    }
}

/// Checks PostgreSQL accepts TLS logins as the admin, and each lake's catalog.
async fn check_postgres(report: &mut Report, config: &Config) {
    if !config.pgdata().join("PG_VERSION").exists() {
        report.skip(
            "postgres",
            "no cluster in the home yet; the first `ducklake-catalog serve` creates it",
        );
        return;
    }
    let password = match admin_password(config).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            report.fail(
                "postgres",
                "the admin password is not readable",
                format!(
                    "run doctor as the server's user, or set postgres.admin_password ({} holds the generated one)",
                    config.generated_password_file().display()
                ),
            );
            return;
        }
        Err(e) => {
            report.fail_with("postgres", &e);
            return;
        }
    };
    let host = config.client_host();
    let client = match tls_connect(config, &host, &password, "postgres").await {
        Ok(c) => c,
        Err(e) => {
            report.fail(
                "postgres",
                format!("{host}:{}: {e}", config.postgres.port),
                "start the server (`ducklake-catalog serve`); if it runs, check postgres.port, advertised_host and the admin password",
            );
            return;
        }
    };
    let tls = client
        .query_one(
            "SELECT version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_or_else(
            |_| "TLS".into(),
            |r| format!("{} {}", r.get::<_, String>(0), r.get::<_, String>(1)),
        );
    report.pass(
        "postgres",
        format!(
            "accepts TLS logins as {} on {host}:{} ({tls})",
            config.postgres.admin_user, config.postgres.port
        ),
    );
    for lake in &config.lakes {
        let name = format!("lake {}", lake.name);
        match lake_spec(config, &host, &password, &lake.name).await {
            Ok(Some(v)) if v == DUCKLAKE_SPEC_VERSION => {
                report.pass(name, format!("initialised, DuckLake spec {v}"));
            }
            Ok(Some(v)) => report.fail(
                name,
                format!("DuckLake spec {v}, this release serves {DUCKLAKE_SPEC_VERSION}"),
                "attach once with a DuckDB client of this release (it migrates the catalog), or use the matching ducklake-catalog",
            ),
            Ok(None) => report.fail(
                name,
                "database exists but holds no DuckLake catalog",
                "restart `ducklake-catalog serve`: it initialises every configured lake",
            ),
            Err(e) => report.fail(
                name,
                e,
                "restart `ducklake-catalog serve`: it creates every configured lake",
            ),
        }
    }
}

async fn lake_spec(
    config: &Config,
    host: &str,
    password: &catalog_server::Secret,
    lake: &str,
) -> Result<Option<String>, String> {
    let client = tls_connect(config, host, password, lake).await?;
    spec_of(&client).await
}

/// The DuckLake spec version of the catalog `client` is connected to; `None`: no catalog.
async fn spec_of(client: &tokio_postgres::Client) -> Result<Option<String>, String> {
    let exists: Option<String> = client
        .query_one("SELECT to_regclass('public.ducklake_metadata')::text", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if exists.is_none() {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!(
                "SELECT value FROM {}.ducklake_metadata WHERE key = 'version' AND scope IS NULL",
                quote_ident("public")
            ),
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.map(|r| r.get(0)))
}

/// A TLS connection (certificate not verified, like libpq's `sslmode=require`) as the admin,
/// through the same login as an external PostgreSQL's; the error is PostgreSQL's own words.
async fn tls_connect(
    config: &Config,
    host: &str,
    password: &catalog_server::Secret,
    dbname: &str,
) -> Result<tokio_postgres::Client, String> {
    let pg = catalog_server::remote::RemotePg {
        host: host.to_owned(),
        port: config.postgres.port,
        user: config.postgres.admin_user.clone(),
        dbname: dbname.to_owned(),
        verify: catalog_server::remote::Verify::Encrypt,
    };
    pg.connect(
        &pg.user,
        password.expose(),
        dbname,
        "ducklake-catalog doctor",
        None,
    )
    .await
    .map_err(|e| match e {
        catalog_server::remote::RemoteError::Connect { detail, .. } => detail,
        other @ catalog_server::remote::RemoteError::RootCert { .. } => other.to_string(),
    })
}

/// An external PostgreSQL (`postgres.url`): a TLS login as the admin, the server version,
/// every privilege the admin needs (each missing one named with the statement that grants
/// it), the settings that matter to DuckLake, and each lake's catalog.
async fn check_external(
    report: &mut Report,
    config: &Config,
    remote: &catalog_server::remote::RemotePg,
) {
    let endpoint = format!("{}:{}", remote.host, remote.port);
    let password = match admin_password(config).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            report.fail(
                "postgres",
                "the admin password is not set",
                "set postgres.admin_password, admin_password_file or admin_password_secret",
            );
            return;
        }
        Err(e) => {
            report.fail_with("postgres", &e);
            return;
        }
    };
    let client = match remote
        .connect(
            &remote.user,
            password.expose(),
            &remote.dbname,
            "ducklake-catalog doctor",
            None,
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            report.fail(
                "postgres",
                e.to_string(),
                "check postgres.url, the admin password, and that the security group lets this task reach the port",
            );
            return;
        }
    };
    let facts = match external_facts(&client).await {
        Ok(f) => f,
        Err(e) => {
            report.fail("postgres", e, "see docs/external-postgres.md");
            return;
        }
    };
    if facts.version_num < 150_000 {
        report.fail(
            "postgres",
            format!("{endpoint} runs PostgreSQL {}", facts.version),
            "use PostgreSQL 15 or newer (RDS: modify the instance's engine version)",
        );
    } else {
        report.pass(
            "postgres",
            format!(
                "external {endpoint}, PostgreSQL {}, TLS {} (sslmode={}), logged in as {}",
                facts.version,
                facts.tls,
                remote.sslmode(),
                remote.user
            ),
        );
    }
    check_admin_privileges(report, &remote.user, &facts);
    check_external_settings(report, &facts);
    for lake in &config.lakes {
        let name = format!("lake {}", lake.name);
        match lake_spec_remote(remote, &password, &lake.name).await {
            Ok(Some(v)) => report.pass(name, format!("initialised, DuckLake spec {v}")),
            Ok(None) => report.skip(name, "no catalog yet: `ducklake-catalog serve` creates it"),
            Err(e) => report.skip(name, format!("not created yet ({e})")),
        }
    }
}

/// The admin login's role attributes.
struct RoleAttrs {
    superuser: bool,
    createdb: bool,
    createrole: bool,
}

/// What the doctor reads from an external PostgreSQL about itself and the admin.
struct ExternalFacts {
    version: String,
    version_num: i32,
    tls: String,
    attrs: RoleAttrs,
    /// Roles whose privileges the admin has, of those that matter.
    member_of: Vec<String>,
    settings: std::collections::BTreeMap<String, String>,
    /// `pg_stat_statements` is preloaded (`shared_preload_libraries`).
    statements_preloaded: bool,
}

async fn external_facts(client: &tokio_postgres::Client) -> Result<ExternalFacts, String> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,
                    coalesce((SELECT version || ' ' || cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl), 'off'),
                    r.rolsuper, r.rolcreatedb, r.rolcreaterole,
                    ARRAY(SELECT g.rolname::text FROM pg_roles g
                          WHERE g.rolname IN ('pg_monitor', 'pg_read_all_stats', 'pg_signal_backend', 'rds_superuser')
                            AND pg_has_role(current_user, g.oid, 'USAGE') ORDER BY 1),
                    coalesce((SELECT setting LIKE '%pg_stat_statements%' FROM pg_settings
                              WHERE name = 'shared_preload_libraries'), false)
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| catalog_server::postgres::pg_message(&e))?;
    let settings = client
        .query(
            "SELECT name, setting || coalesce(unit, '') FROM pg_settings
             WHERE name IN ('idle_in_transaction_session_timeout', 'lc_messages', 'max_connections', 'password_encryption')",
            &[],
        )
        .await
        .map_err(|e| catalog_server::postgres::pg_message(&e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(ExternalFacts {
        version: row.get(0),
        version_num: row.get(1),
        tls: row.get(2),
        attrs: RoleAttrs {
            superuser: row.get(3),
            createdb: row.get(4),
            createrole: row.get(5),
        },
        member_of: row.get(6),
        settings,
        statements_preloaded: row.get(7),
    })
}

/// Each privilege the admin login needs, and the statement that grants a missing one.
fn check_admin_privileges(report: &mut Report, admin: &str, f: &ExternalFacts) {
    let admin = quote_ident(admin);
    let has = |role: &str| f.attrs.superuser || f.member_of.iter().any(|m| m == role);
    let rds = has("rds_superuser");
    let mut missing: Vec<(&str, String)> = Vec::new();
    if !f.attrs.superuser && !f.attrs.createdb {
        missing.push((
            "CREATEDB (each lake is a database)",
            format!("ALTER ROLE {admin} CREATEDB"),
        ));
    }
    if !f.attrs.superuser && !f.attrs.createrole {
        missing.push((
            "CREATEROLE (each lake's roles and users)",
            format!("ALTER ROLE {admin} CREATEROLE"),
        ));
    }
    if !has("pg_signal_backend") && !rds {
        missing.push((
            "pg_signal_backend (lake drop ends the lake's sessions)",
            format!("GRANT pg_signal_backend TO {admin}"),
        ));
    }
    if !has("pg_monitor") && !has("pg_read_all_stats") && !rds {
        missing.push((
            "pg_monitor (inspection reads every user's statements and activity)",
            format!("GRANT pg_monitor TO {admin}"),
        ));
    }
    if missing.is_empty() {
        report.pass(
            "admin privileges",
            if f.attrs.superuser {
                "superuser (more than needed: CREATEDB CREATEROLE pg_monitor pg_signal_backend suffice)".to_owned()
            } else {
                format!(
                    "CREATEDB CREATEROLE, member of {}; not a superuser",
                    f.member_of.join(", ")
                )
            },
        );
    } else {
        report.fail(
            "admin privileges",
            format!(
                "missing {}",
                missing
                    .iter()
                    .map(|(what, _)| *what)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "as the master user: {}",
                missing
                    .iter()
                    .map(|(_, fix)| fix.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        );
    }
    if !f.attrs.superuser && !rds {
        report.skip(
            "lake guard",
            "the admin is not a superuser: event triggers that confine writers' DDL are not installed (docs/external-postgres.md)",
        );
    }
}

/// The server settings DuckLake depends on, with the parameter-group change that fixes each.
fn check_external_settings(report: &mut Report, f: &ExternalFacts) {
    let get = |k: &str| f.settings.get(k).map_or("", String::as_str);
    let mut bad: Vec<(String, &str)> = Vec::new();
    let lc = get("lc_messages");
    if !(lc.is_empty() || lc == "C" || lc.starts_with("en_") || lc == "POSIX") {
        bad.push((
            format!("lc_messages is {lc}: DuckLake recognises commit conflicts only in English"),
            "lc_messages = C",
        ));
    }
    if get("idle_in_transaction_session_timeout") == "0ms" {
        bad.push((
            "idle_in_transaction_session_timeout is 0: a client that dies mid-transaction holds its locks until TCP notices".into(),
            "idle_in_transaction_session_timeout = 600000 (10 min)",
        ));
    }
    let max: u32 = get("max_connections").parse().unwrap_or(0);
    if max < 100 {
        bad.push((
            format!(
                "max_connections is {max}: each DuckDB client keeps a pool of 4 to 32 connections"
            ),
            "max_connections of at least 100 (RDS sizes it by instance memory)",
        ));
    }
    if bad.is_empty() {
        report.pass(
            "postgres settings",
            format!(
                "lc_messages {lc}, idle_in_transaction_session_timeout {}, max_connections {max}",
                get("idle_in_transaction_session_timeout")
            ),
        );
    } else {
        report.fail(
            "postgres settings",
            bad.iter()
                .map(|(w, _)| w.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            format!(
                "in the DB parameter group: {}",
                bad.iter()
                    .map(|(_, fix)| *fix)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    if f.statements_preloaded {
        report.pass(
            "pg_stat_statements",
            "preloaded: inspection shows the statements clients run",
        );
    } else {
        report.skip(
            "pg_stat_statements",
            "not in shared_preload_libraries (or not readable by the admin: pg_monitor): inspection shows no statement statistics (parameter group: shared_preload_libraries = pg_stat_statements, then reboot)",
        );
    }
}

async fn lake_spec_remote(
    remote: &catalog_server::remote::RemotePg,
    password: &catalog_server::Secret,
    lake: &str,
) -> Result<Option<String>, String> {
    let client = remote
        .connect(
            &remote.user,
            password.expose(),
            lake,
            "ducklake-catalog doctor",
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
    spec_of(&client).await
}

/// Region and credentials, when anything configured uses AWS: whether those passed, and the
/// identity set up (when the region resolved).
async fn check_aws(report: &mut Report, config: &mut Config) -> (bool, Option<aws::AwsContext>) {
    if !config.uses_aws() {
        report.skip(
            "aws",
            "nothing configured uses AWS (local data paths, no secret, no metering)",
        );
        return (true, None);
    }
    let aws = match config.prepare_aws().await {
        Ok(Some((region, aws))) => {
            report.pass(
                "region",
                format!("{} (from {})", region.name, region.source),
            );
            aws
        }
        Ok(None) => return (true, None),
        Err(e) => {
            report.fail_with("region", &e);
            return (false, None);
        }
    };
    let ok = match aws.credentials().await {
        Ok(c) => {
            report.pass(
                "credentials",
                format!(
                    "from {} (access key {}…{})",
                    c.source,
                    &c.access_key_id[..c.access_key_id.len().min(4)],
                    expiry_note(c.expiry)
                ),
            );
            true
        }
        Err(e) => {
            report.fail_with("credentials", &e);
            false
        }
    };
    (ok, Some(aws))
}

/// Each data path and the backup target: the bucket's region, then list/put/get/delete.
/// Returns what S3 answered, for the clock check.
/// `aws` signs the storage checks; `usable` is it when the AWS checks passed.
async fn check_places(
    report: &mut Report,
    config: &Config,
    aws: Option<&aws::AwsContext>,
    usable: Option<&aws::AwsContext>,
) -> Vec<S3Probe> {
    let mut places: Vec<(String, DataPath)> = config
        .lakes
        .iter()
        .map(|l| (format!("data path {}", l.name), l.data_path.clone()))
        .collect();
    if let Some(t) = &config.backup.target {
        places.push(("backup target".into(), t.clone()));
    }
    let mut probes = Vec::new();
    let s3 = config.s3_settings(aws);
    for (name, path) in &places {
        if let DataPath::S3 { bucket, .. } = path {
            let Some(aws) = usable else {
                report.skip(
                    name.clone(),
                    format!("{path}: needs the AWS checks above to pass"),
                );
                continue;
            };
            let probe = aws
                .probe_bucket(config.s3.endpoint.as_deref(), bucket)
                .await;
            let mismatch = probe.bucket_region.clone().filter(|r| r != aws.region());
            // S3's clock is worth comparing whatever the bucket's region.
            probes.push(probe);
            if let Some(actual) = mismatch {
                report.fail(
                    name.clone(),
                    format!(
                        "{path}: bucket `{bucket}` is in {actual}, but the configured region is {}",
                        aws.region()
                    ),
                    format!("set s3.region = \"{actual}\" (env DUCKLAKE_CATALOG_S3__REGION)"),
                );
                continue;
            }
        }
        match storage::preflight(path, &s3).await {
            Ok(()) => report.pass(name.clone(), format!("{path}: list, put, get, delete ok")),
            Err(e) => report.fail_with(name.clone(), &e),
        }
    }
    probes
}

/// The admin password secret and Marketplace metering, when configured.
async fn check_services(report: &mut Report, config: &Config, aws: Option<&aws::AwsContext>) {
    if let Some(r) = &config.postgres.admin_password_secret {
        match aws {
            None => report.skip(
                "admin password secret",
                "needs the AWS checks above to pass",
            ),
            Some(aws) => match catalog_server::secrets_manager::fetch(aws, r).await {
                Ok(f) => report.pass(
                    "admin password secret",
                    format!(
                        "{r} readable (version {})",
                        f.version_id.as_deref().unwrap_or("?")
                    ),
                ),
                Err(e) => report.fail_with("admin password secret", &e),
            },
        }
    }
    if config.marketplace.product_code.is_some() {
        match aws {
            None => report.skip("marketplace", "needs the AWS checks above to pass"),
            Some(aws) => {
                match catalog_server::marketplace::register(Some(aws), &config.marketplace).await {
                    Ok(Some(r)) => report.pass(
                        "marketplace",
                        format!("RegisterUsage accepted for product {}", r.product_code),
                    ),
                    Ok(None) => {}
                    Err(e) => report.fail_with("marketplace", &e),
                }
            }
        }
    }
}

fn expiry_note(expiry: Option<std::time::SystemTime>) -> String {
    match expiry.and_then(|e| e.duration_since(std::time::SystemTime::now()).ok()) {
        Some(left) => format!(", expires in {}s, refreshed before", left.as_secs()),
        None => String::new(),
    }
}

fn check_clock(report: &mut Report, probes: &[S3Probe]) {
    let Some(server) = probes.iter().find_map(|p| p.server_time) else {
        if !probes.is_empty() {
            report.skip("clock", "S3 sent no Date header");
        }
        return;
    };
    let skew = (chrono::Utc::now() - server).num_seconds().unsigned_abs();
    if skew > MAX_SKEW.as_secs() {
        report.fail(
            "clock",
            format!("this host's clock is {skew}s off S3's (SigV4 fails past 300s)"),
            "sync the clock (chrony/NTP; on ECS the host's time sync)",
        );
    } else {
        report.pass("clock", format!("within {skew}s of S3's"));
    }
}
