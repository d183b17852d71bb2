//! The one typed configuration tree, loaded with figment.
//!
//! Precedence, lowest first: [`Config::default`] < TOML file (`--config FILE` or
//! `DUCKLAKE_CATALOG_CONFIG`) < environment `DUCKLAKE_CATALOG_*` (nested with `__`) < CLI flags.
//! Every secret `x` also accepts `x_file`, a path whose content is the value. The field docs
//! below are the configuration reference (docs/configuration.md).

pub mod reference;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aws::{AwsContext, AwsError, ResolvedRegion, StaticKeys};
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use storage::{DataPath, S3Settings};

use aws::secrets_manager::{check_strength, SecretRef};
use base::Secret;
pub use lake_admin::names::{
    data_path_conflict, overlaps, valid_identifier, valid_lake_name, MAX_LAKE_NAME,
};
pub use lake_admin::settings::{LakeConfig, MaintenanceConfig};

/// The environment prefix the product reads.
pub const ENV_PREFIX: &str = "DUCKLAKE_CATALOG_";
/// The name of the lake created when none is configured.
pub const DEFAULT_LAKE: &str = "lakehouse";

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folder that holds all state: PGDATA, generated secrets, TLS files, local lake data.
    /// Env `DUCKLAKE_CATALOG_HOME`. Default `./.ducklake-catalog`.
    pub home: PathBuf,
    /// The PostgreSQL server the product supervises.
    pub postgres: PostgresConfig,
    /// The connection pooler (PgBouncer) in front of it.
    pub pooler: PoolerConfig,
    /// The HTTP server for `/healthz` and `/readyz`.
    pub http: HttpConfig,
    /// S3 access for lake data paths; unset fields use the standard AWS credential chain.
    pub s3: S3Config,
    /// The embedded DuckDB that initialises lakes.
    pub duckdb: DuckdbConfig,
    /// Logging.
    pub log: LogConfig,
    /// Continuous WAL archiving, base backups and restore (the catalog's durability).
    pub backup: BackupConfig,
    /// High availability: a primary and hot standbys on one backup target
    /// (docs/high-availability.md).
    pub ha: HaConfig,
    /// AWS Marketplace metering (the paid container product).
    pub marketplace: MarketplaceConfig,
    /// Scheduled DuckLake maintenance of every lake (a `[lakes.maintenance]` table replaces it
    /// for one lake).
    pub maintenance: MaintenanceConfig,
    /// `/metrics`: how often its facts are gathered.
    pub metrics: MetricsConfig,
    /// The lakes this catalog serves, one PostgreSQL database each. When empty, one lake named
    /// `lakehouse` (or `DUCKLAKE_CATALOG_LAKE_NAME`) with data path `DUCKLAKE_CATALOG_DATA_PATH`
    /// or `<home>/lakes/<name>/`.
    pub lakes: Vec<LakeConfig>,
    /// `postgres.url`, parsed when the configuration is loaded.
    #[serde(skip)]
    external: Option<pg_conn::remote::RemotePg>,
}

pub use aws::marketplace::MarketplaceConfig;

/// `[metrics]`: the facts `/metrics` shows are gathered every `refresh` and kept, so a scrape
/// only renders them (docs/observability.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// How often PostgreSQL's statistics and each lake's catalog are read.
    pub refresh: HumanDuration,
    /// `emf`: also write the key figures every `refresh` as CloudWatch Embedded Metric Format
    /// lines on stdout (the ECS `awslogs` driver makes them metrics); `off`: do not.
    pub cloudwatch: CloudWatch,
    /// The EMF lines' `Service` dimension: which catalog they are about (the stack's name).
    pub cloudwatch_service: String,
    /// When set, `/metrics`, `/status` and the status page answer only requests that carry it
    /// (`Authorization: Bearer …` or `?token=…`); `/healthz` and `/readyz` stay open.
    pub token: Option<Secret>,
    /// A file whose content is `token`.
    pub token_file: Option<PathBuf>,
}

/// `metrics.cloudwatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudWatch {
    #[default]
    Off,
    Emf,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            refresh: HumanDuration(std::time::Duration::from_secs(15)),
            cloudwatch: CloudWatch::Off,
            cloudwatch_service: "ducklake-catalog".into(),
            token: None,
            token_file: None,
        }
    }
}

/// `[pooler]`: PgBouncer in transaction mode on its own port, in front of the supervised
/// PostgreSQL (docs/connections.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolerConfig {
    /// Run the pooler: unset means on in front of the supervised PostgreSQL and off with
    /// `postgres.url`; see [`Config::pooler_enabled`].
    pub enabled: Option<bool>,
    /// The port clients connect to through the pooler (on `postgres.listen_address`).
    pub port: u16,
    /// Client connections the pooler accepts in all.
    pub max_client_conn: u32,
    /// Server connections per lake database and user.
    pub pool_size: u32,
    /// The `pgbouncer` program; default Debian's `/usr/sbin/pgbouncer`.
    pub bin: Option<PathBuf>,
}

impl Default for PoolerConfig {
    fn default() -> Self {
        PoolerConfig {
            enabled: None,
            port: 6432,
            max_client_conn: 5000,
            pool_size: 20,
            bin: None,
        }
    }
}

/// `[postgres]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// An external PostgreSQL 15+ to administer instead of supervising one (Amazon RDS, Aurora
    /// PostgreSQL): `postgres://ADMIN@HOST:5432/postgres`, optionally
    /// `?sslmode=verify-full&sslrootcert=PATH`. The admin login needs `CREATEDB CREATEROLE`,
    /// never SUPERUSER; its password comes from `admin_password`, `_file` or `_secret`. The
    /// keys of the supervised PostgreSQL (port, listen_address, TLS files, sizing, settings)
    /// and `backup.target` do not apply (docs/external-postgres.md).
    pub url: Option<String>,
    /// Folder with the PostgreSQL 15 server binaries. Default: Debian's
    /// `/usr/lib/postgresql/15/bin`, else `pg_config --bindir`.
    pub bin_dir: Option<PathBuf>,
    /// Addresses PostgreSQL listens on (`listen_addresses`). Use `0.0.0.0` in a container.
    pub listen_address: String,
    /// TCP port clients connect to.
    pub port: u16,
    /// Host name clients should use, printed in the ATTACH string. Default: `listen_address`,
    /// or `127.0.0.1` when that is a wildcard.
    pub advertised_host: Option<String>,
    /// The login role clients use; owns every lake database; never a superuser.
    pub admin_user: String,
    /// Password of `admin_user`, applied on every start. When unset (and no
    /// `admin_password_file`), one is generated once and stored in `<home>/secrets/`.
    pub admin_password: Option<Secret>,
    /// File whose content is the admin password (the `_FILE` convention).
    pub admin_password_file: Option<PathBuf>,
    /// AWS Secrets Manager secret holding the admin password: an ARN or name, optionally with
    /// the JSON key (`ARN:password`, `NAME:password`, or `{ secret = "…", key = "password" }`).
    /// Read at start, then every `admin_password_refresh` and on SIGHUP; a rotated value is
    /// applied with `ALTER ROLE` without restarting PostgreSQL or dropping connections.
    pub admin_password_secret: Option<SecretRef>,
    /// How often `admin_password_secret` is read again (`5m`); `0s`: only on SIGHUP.
    pub admin_password_refresh: HumanDuration,
    /// OS user PostgreSQL runs as when the server runs as root (PostgreSQL refuses root).
    pub os_user: String,
    /// PEM certificate for TLS. Default: a self-signed one generated at first boot.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// `max_connections`. Each DuckDB client keeps a pool of about 8. Default: sized to the
    /// container's memory (10 MiB a connection after shared buffers, 25 to 800).
    pub max_connections: Option<u32>,
    /// `shared_buffers`.
    pub shared_buffers: String,
    /// WAL segment size in MB, fixed when the cluster is created (initdb): a power of two,
    /// 1-1024. Small segments keep each forced switch (`backup.archive_timeout`) cheap.
    pub wal_segment_size_mb: u32,
    /// Seconds a fast shutdown may take before it becomes an immediate one.
    pub stop_timeout_secs: u64,
    /// Seconds PostgreSQL may take to accept connections after it is started.
    pub start_timeout_secs: u64,
    /// Extra `postgresql.conf` settings, written after the managed ones.
    pub settings: BTreeMap<String, String>,
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the health HTTP server. Use `0.0.0.0:8080` in a container.
    pub listen: SocketAddr,
}

/// `[s3]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// AWS region of the buckets. Default: `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// Endpoint URL for S3-compatible stores (MinIO, moto), e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Allow plain-HTTP endpoints.
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`), needed by most S3-compatible stores.
    pub force_path_style: bool,
    /// Static access key id. Default: the AWS credential chain.
    pub access_key_id: Option<String>,
    /// Static secret access key.
    pub secret_access_key: Option<Secret>,
    /// File whose content is the secret access key.
    pub secret_access_key_file: Option<PathBuf>,
    /// Session token for temporary credentials.
    pub session_token: Option<Secret>,
    /// File whose content is the session token.
    pub session_token_file: Option<PathBuf>,
}

/// `[duckdb]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DuckdbConfig {
    /// DuckDB extension directory holding `v1.5.5/linux_amd64/ducklake.duckdb_extension` and
    /// `postgres_scanner.duckdb_extension`. Default: `<home>/extensions`, then
    /// `/usr/lib/ducklake-catalog/extensions`, then `~/.duckdb/extensions`. Never downloaded.
    pub extension_directory: Option<PathBuf>,
}

pub use backup::{BackupConfig, CompressionKind, HaConfig, HaMode, RetentionConfig};
pub use base::duration::HumanDuration;

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (JSON unless stdout is a terminal), `json` or `text`.
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `info,catalog_server=debug`.
    pub level: String,
}

pub use base::LogFormat;

impl Default for Config {
    fn default() -> Self {
        Config {
            home: PathBuf::from(".ducklake-catalog"),
            postgres: PostgresConfig::default(),
            pooler: PoolerConfig::default(),
            http: HttpConfig::default(),
            s3: S3Config::default(),
            duckdb: DuckdbConfig::default(),
            log: LogConfig::default(),
            backup: BackupConfig::default(),
            ha: HaConfig::default(),
            marketplace: MarketplaceConfig::default(),
            maintenance: MaintenanceConfig::default(),
            metrics: MetricsConfig::default(),
            lakes: Vec::new(),
            external: None,
        }
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: None,
            bin_dir: None,
            listen_address: "127.0.0.1".into(),
            port: 5432,
            advertised_host: None,
            admin_user: "admin".into(),
            admin_password: None,
            admin_password_file: None,
            admin_password_secret: None,
            admin_password_refresh: HumanDuration(std::time::Duration::from_mins(5)),
            os_user: "postgres".into(),
            tls_cert_file: None,
            tls_key_file: None,
            max_connections: None,
            shared_buffers: "128MB".into(),
            wal_segment_size_mb: 1,
            stop_timeout_secs: 30,
            start_timeout_secs: 120,
            settings: BTreeMap::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

/// A configuration that cannot be used. Displayed as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Figment(String),
    #[error("invalid configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("configuration file {path} not found: fix --config or DUCKLAKE_CATALOG_CONFIG")]
    FileMissing { path: PathBuf },
    #[error("no lake named `{name}`; configured lakes: {known}")]
    UnknownLake { name: String, known: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where a configuration comes from, besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// TOML file (`--config`); `None` falls back to `<prefix>CONFIG` from `env`.
    pub file: Option<PathBuf>,
    /// The environment to read, as name/value pairs (`std::env::vars()` in production).
    pub env: Vec<(String, String)>,
    /// Values from CLI flags, highest precedence, as a nested serde value.
    pub overrides: Option<serde_json::Value>,
    /// Folder relative paths are resolved against (the working directory).
    pub cwd: PathBuf,
}

impl Sources {
    /// The process environment and working directory.
    pub fn from_process() -> Self {
        Sources {
            file: None,
            env: std::env::vars().collect(),
            overrides: None,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
    }

    fn var(&self, suffix: &str) -> Option<&str> {
        let name = format!("{ENV_PREFIX}{suffix}");
        self.env
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Keys whose env value is a list or table in figment's syntax (`[…]`, `{…}`); every other
/// env value is a string.
const STRUCTURED_ENV_KEYS: &[&str] = &["lakes", "postgres__settings"];

/// Env names that are not configuration keys but shortcuts read separately.
const ENV_SHORTCUTS: &[&str] = &["config", "lake_name", "data_path"];

impl Config {
    /// Loads and validates the configuration from `sources`.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let file = sources
            .file
            .clone()
            .or_else(|| sources.var("CONFIG").map(PathBuf::from));
        if let Some(file) = file {
            let file = sources.cwd.join(file);
            if !file.is_file() {
                return Err(ConfigError::FileMissing { path: file });
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(EnvPairs(sources.env.clone()));
        if let Some(overrides) = &sources.overrides {
            figment = figment.merge(Serialized::defaults(overrides.clone()));
        }
        let mut config: Config = figment
            .extract_lossy()
            .map_err(|e| ConfigError::Figment(base::one_line(&e.to_string())))?;
        config.resolve(sources)?;
        Ok(config)
    }

    /// Applies shortcuts, `_FILE` secrets and relative paths, then checks cross-field rules.
    fn resolve(&mut self, sources: &Sources) -> Result<(), ConfigError> {
        self.home = sources.cwd.join(&self.home);
        let name = sources.var("LAKE_NAME");
        let data_path = sources.var("DATA_PATH");
        if name.is_some() || data_path.is_some() {
            if !self.lakes.is_empty() {
                return Err(ConfigError::invalid(
                    "lakes",
                    "both [[lakes]] and DUCKLAKE_CATALOG_LAKE_NAME/DATA_PATH are set; use one",
                ));
            }
            let name = name.unwrap_or(DEFAULT_LAKE).to_owned();
            let data_path = match data_path {
                Some(raw) => DataPath::parse(raw).map_err(|e| {
                    ConfigError::invalid("DUCKLAKE_CATALOG_DATA_PATH", e.to_string())
                })?,
                None => self.default_data_path(&name),
            };
            self.lakes.push(LakeConfig::new(name, data_path));
        }
        if self.lakes.is_empty() {
            let data_path = self.default_data_path(DEFAULT_LAKE);
            self.lakes
                .push(LakeConfig::new(DEFAULT_LAKE.into(), data_path));
        }
        // Every secret `x` may come from `x_file` instead.
        let secrets = [
            (
                &mut self.postgres.admin_password,
                &self.postgres.admin_password_file,
                "postgres.admin_password",
            ),
            (
                &mut self.s3.secret_access_key,
                &self.s3.secret_access_key_file,
                "s3.secret_access_key",
            ),
            (
                &mut self.s3.session_token,
                &self.s3.session_token_file,
                "s3.session_token",
            ),
            (
                &mut self.metrics.token,
                &self.metrics.token_file,
                "metrics.token",
            ),
            (
                &mut self.ha.replication_password,
                &self.ha.replication_password_file,
                "ha.replication_password",
            ),
        ];
        for (value, file, key) in secrets {
            resolve_secret_file(value, file.as_deref(), key, &sources.cwd)?;
        }
        self.resolve_external(&sources.cwd)?;
        self.validate()
    }

    /// `postgres.url`: parsed, its user is the admin, and what needs the supervised
    /// PostgreSQL is refused.
    fn resolve_external(&mut self, cwd: &Path) -> Result<(), ConfigError> {
        let Some(url) = &self.postgres.url else {
            return Ok(());
        };
        let remote = pg_conn::remote::RemotePg::parse(url, cwd)
            .map_err(|e| ConfigError::invalid("postgres.url", e.to_string()))?;
        let pg = &mut self.postgres;
        if pg.admin_user != PostgresConfig::default().admin_user && pg.admin_user != remote.user {
            return Err(ConfigError::invalid(
                "postgres.admin_user",
                format!(
                    "is `{}` but postgres.url logs in as `{}`; with postgres.url the URL's user is the admin: remove admin_user",
                    pg.admin_user, remote.user
                ),
            ));
        }
        pg.admin_user.clone_from(&remote.user);
        if pg.admin_password.is_none() && pg.admin_password_secret.is_none() {
            return Err(ConfigError::invalid(
                "postgres.admin_password",
                format!(
                    "is needed with postgres.url: the password of `{}` on the external PostgreSQL (set admin_password, admin_password_file or admin_password_secret)",
                    remote.user
                ),
            ));
        }
        if let Some(target) = &self.backup.target {
            return Err(ConfigError::invalid(
                "backup.target",
                format!(
                    "is {target}, but WAL shipping needs the supervised PostgreSQL and postgres.url names an external one; RDS/Aurora automated backups and point-in-time recovery cover the catalog: remove backup.target"
                ),
            ));
        }
        self.external = Some(remote);
        Ok(())
    }

    /// The external PostgreSQL this server administers (`postgres.url`); `None`: it supervises
    /// its own.
    pub fn external(&self) -> Option<&pg_conn::remote::RemotePg> {
        self.external.as_ref()
    }

    fn default_data_path(&self, lake: &str) -> DataPath {
        DataPath::Local(self.home.join("lakes").join(lake))
    }

    fn validate_pooler(&self) -> Result<(), ConfigError> {
        let p = &self.pooler;
        if !self.pooler_enabled() {
            return Ok(());
        }
        if p.port == 0 || p.port == self.postgres.port || p.port == self.http.listen.port() {
            return Err(ConfigError::invalid(
                "pooler.port",
                "must be 1-65535 and differ from postgres.port and the port of http.listen",
            ));
        }
        if !(10..=100_000).contains(&p.max_client_conn) {
            return Err(ConfigError::invalid(
                "pooler.max_client_conn",
                "must be 10-100000",
            ));
        }
        if !(1..=1_000).contains(&p.pool_size) {
            return Err(ConfigError::invalid("pooler.pool_size", "must be 1-1000"));
        }
        if self.external.is_some() && p.enabled == Some(true) {
            return Err(ConfigError::invalid(
                "pooler.enabled",
                "the pooler runs in front of the supervised PostgreSQL only; with postgres.url use RDS Proxy or a pooler of your own",
            ));
        }
        Ok(())
    }

    fn validate_metrics(&self) -> Result<(), ConfigError> {
        if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_hours(1))
            .contains(&self.metrics.refresh.0)
        {
            return Err(ConfigError::invalid(
                "metrics.refresh",
                "must be between 1s and 1h",
            ));
        }
        if let Some(t) = &self.metrics.token {
            if t.expose().len() < 16 {
                return Err(ConfigError::invalid(
                    "metrics.token",
                    "must be at least 16 characters (e.g. `openssl rand -hex 24`)",
                ));
            }
        }
        let service = &self.metrics.cloudwatch_service;
        if service.is_empty() || service.len() > 255 || service.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                "metrics.cloudwatch_service",
                "must be 1-255 printable characters (a CloudWatch dimension value)",
            ));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let pg = &self.postgres;
        if pg.port == 0 {
            return Err(ConfigError::invalid("postgres.port", "must be 1-65535"));
        }
        self.validate_pooler()?;
        self.validate_metrics()?;
        if let Some(n) = self.postgres.max_connections {
            if !(10..=10_000).contains(&n) {
                return Err(ConfigError::invalid(
                    "postgres.max_connections",
                    "must be 10-10000 (or unset: sized to the container's memory)",
                ));
            }
        }
        if pg.listen_address.trim().is_empty() {
            return Err(ConfigError::invalid(
                "postgres.listen_address",
                "must not be empty",
            ));
        }
        if !valid_identifier(&pg.admin_user) || pg.admin_user == pg_conn::SUPERUSER {
            return Err(ConfigError::invalid(
                "postgres.admin_user",
                format!(
                    "`{}` is not allowed: use lowercase letters, digits and _ (not `{}`)",
                    pg.admin_user,
                    pg_conn::SUPERUSER
                ),
            ));
        }
        self.validate_secrets()?;
        if pg.tls_cert_file.is_some() != pg.tls_key_file.is_some() {
            return Err(ConfigError::invalid(
                "postgres.tls_cert_file",
                "set both tls_cert_file and tls_key_file, or neither",
            ));
        }
        if !pg.wal_segment_size_mb.is_power_of_two() || pg.wal_segment_size_mb > 1024 {
            return Err(ConfigError::invalid(
                "postgres.wal_segment_size_mb",
                "must be a power of two from 1 to 1024",
            ));
        }
        for (key, value, max) in [
            ("postgres.stop_timeout_secs", pg.stop_timeout_secs, 3_600),
            ("postgres.start_timeout_secs", pg.start_timeout_secs, 86_400),
        ] {
            if !(1..=max).contains(&value) {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be 1 to {max} seconds"),
                ));
            }
        }
        for (key, value) in &pg.settings {
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(ConfigError::invalid(
                    format!("postgres.settings.{key}"),
                    "is not a PostgreSQL setting name",
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    format!("postgres.settings.{key}"),
                    "contains a newline or another control character, which postgresql.conf cannot hold",
                ));
            }
            if MANAGED_SETTINGS.contains(&key.to_ascii_lowercase().as_str()) {
                return Err(ConfigError::invalid(
                    format!("postgres.settings.{key}"),
                    "is managed by ducklake-catalog (security, logging to its log, or a [postgres] key); remove it",
                ));
            }
        }
        if let Some(region) = &self.s3.region {
            if region.trim().is_empty() {
                return Err(ConfigError::invalid("s3.region", "must not be empty"));
            }
        }
        self.validate_backup()?;
        self.validate_ha()?;
        self.validate_all_maintenance()?;
        self.validate_lakes()
    }

    /// `[[lakes]]`: names, and data paths that hold nothing of the server's or each other's.
    fn validate_lakes(&self) -> Result<(), ConfigError> {
        let pg = &self.postgres;
        let mut names = HashSet::new();
        for (i, lake) in self.lakes.iter().enumerate() {
            if !valid_lake_name(&lake.name) || lake.name == pg.admin_user {
                return Err(ConfigError::invalid(
                    format!("lakes[{i}].name"),
                    format!(
                        "`{}` is not a valid lake name: use 1-{MAX_LAKE_NAME} lowercase letters, digits and _, starting with a letter (not pg_…, ducklake_…, postgres, template0, template1 or the admin user)",
                        lake.name
                    ),
                ));
            }
            if let Some(why) = data_path_conflict(&self.home, &lake.data_path) {
                return Err(ConfigError::invalid(
                    format!("lakes[{i}].data_path"),
                    format!("{} {why}", lake.data_path),
                ));
            }
            if let Some(other) = self.lakes[..i]
                .iter()
                .find(|o| overlaps(&o.data_path, &lake.data_path))
            {
                return Err(ConfigError::invalid(
                    format!("lakes[{i}].data_path"),
                    format!(
                        "{} overlaps lake `{}`'s data path {}: one lake's gc or drop --delete-data would delete the other's files; give each lake its own prefix",
                        lake.data_path, other.name, other.data_path
                    ),
                ));
            }
            if !names.insert(lake.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("lakes[{i}].name"),
                    format!("lake `{}` is configured twice", lake.name),
                ));
            }
        }
        Ok(())
    }

    /// The admin password's sources and the Marketplace settings.
    fn validate_secrets(&self) -> Result<(), ConfigError> {
        if let Some(pw) = &self.postgres.admin_password {
            let key = if self.postgres.admin_password_file.is_some() {
                "postgres.admin_password_file"
            } else {
                "postgres.admin_password"
            };
            check_strength(pw, key).map_err(|e| ConfigError::invalid(key, e.to_string()))?;
            if self.postgres.admin_password_secret.is_some() {
                return Err(ConfigError::invalid(
                    "postgres.admin_password_secret",
                    format!("set either {key} or admin_password_secret, not both"),
                ));
            }
        }
        if let Some(code) = &self.marketplace.product_code {
            if code.trim().is_empty() || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(ConfigError::invalid(
                    "marketplace.product_code",
                    "must be the product code from AWS Marketplace (letters and digits)",
                ));
            }
        }
        if self.marketplace.public_key_version < 1 {
            return Err(ConfigError::invalid(
                "marketplace.public_key_version",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// `[maintenance]` and each lake's own.
    fn validate_all_maintenance(&self) -> Result<(), ConfigError> {
        let maintained = std::iter::once(("maintenance".to_owned(), &self.maintenance)).chain(
            self.lakes.iter().enumerate().filter_map(|(i, l)| {
                l.maintenance
                    .as_ref()
                    .map(|m| (format!("lakes[{i}].maintenance"), m))
            }),
        );
        for (key, m) in maintained {
            self.validate_maintenance(&key, m)?;
        }
        Ok(())
    }

    fn validate_maintenance(&self, key: &str, m: &MaintenanceConfig) -> Result<(), ConfigError> {
        if m.interval.0 < std::time::Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                format!("{key}.interval"),
                "must be at least 1s",
            ));
        }
        if m.max_runtime.0 < std::time::Duration::from_secs(10) {
            return Err(ConfigError::invalid(
                format!("{key}.max_runtime"),
                "must be at least 10s",
            ));
        }
        if let Some(window) = self.backup.recovery_window() {
            if m.enabled && m.cleanup_old_files_older_than.0 < window {
                return Err(ConfigError::invalid(
                    format!("{key}.cleanup_old_files_older_than"),
                    format!(
                        "must be at least the backups' recovery window ({}: backup.retention.count × backup.base_interval, or max_age), or a point-in-time restore would name deleted files; raise it or shorten the retention",
                        humantime::format_duration(window)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_backup(&self) -> Result<(), ConfigError> {
        let b = &self.backup;
        let timeout = b.archive_timeout.0;
        if timeout.as_secs() == 0 || timeout.subsec_nanos() != 0 {
            return Err(ConfigError::invalid(
                "backup.archive_timeout",
                "must be whole seconds, at least 1s (PostgreSQL's archive_timeout)",
            ));
        }
        if b.base_interval.0 < std::time::Duration::from_mins(1) {
            return Err(ConfigError::invalid(
                "backup.base_interval",
                "must be at least 1m",
            ));
        }
        if b.retention.count == 0 {
            return Err(ConfigError::invalid(
                "backup.retention.count",
                "must be at least 1 (the newest base backup is always kept)",
            ));
        }
        if let Some(target) = &b.target {
            if self.lakes.iter().any(|l| overlaps(&l.data_path, target)) {
                return Err(ConfigError::invalid(
                    "backup.target",
                    format!("{target} overlaps a lake's data path; give backups their own prefix"),
                ));
            }
        }
        Ok(())
    }

    /// `[ha]`: failover needs the supervised PostgreSQL, a backup target and the replication
    /// role's password; the lease period bounds the timing.
    fn validate_ha(&self) -> Result<(), ConfigError> {
        let ha = &self.ha;
        let period = ha.lease_period.0;
        if period < std::time::Duration::from_secs(2) || period > std::time::Duration::from_mins(10)
        {
            return Err(ConfigError::invalid(
                "ha.lease_period",
                "must be between 2s and 10m",
            ));
        }
        if let Some(t) = &ha.synchronous_timeout {
            if t.0.is_zero() {
                return Err(ConfigError::invalid(
                    "ha.synchronous_timeout",
                    "must be more than 0s; leave it unset to wait for a standby for ever",
                ));
            }
        }
        if let Some(host) = &ha.advertise_host {
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
            {
                return Err(ConfigError::invalid(
                    "ha.advertise_host",
                    format!("`{host}` is not a host name or IP address"),
                ));
            }
        }
        if let Some(pw) = &ha.replication_password {
            let key = if ha.replication_password_file.is_some() {
                "ha.replication_password_file"
            } else {
                "ha.replication_password"
            };
            check_strength(pw, key).map_err(|e| ConfigError::invalid(key, e.to_string()))?;
        }
        if !ha.enabled() {
            return Ok(());
        }
        if self.postgres.url.is_some() {
            return Err(ConfigError::invalid(
                "ha.mode",
                "is auto, but postgres.url names an external PostgreSQL, whose failover is its own (Multi-AZ RDS, Aurora): set ha.mode = \"single\"",
            ));
        }
        if self.backup.target.is_none() {
            return Err(ConfigError::invalid(
                "ha.mode",
                "is auto, which needs backup.target: the primary's lease, its WAL and the standbys' base backup live there; set backup.target",
            ));
        }
        if ha.replication_password.is_none() {
            return Err(ConfigError::invalid(
                "ha.replication_password",
                "is needed with ha.mode = \"auto\": the same password on every server of the backup target (set replication_password or replication_password_file)",
            ));
        }
        Ok(())
    }

    /// The folder of the PostgreSQL data directory.
    pub fn pgdata(&self) -> PathBuf {
        self.home.join("pgdata")
    }

    /// The folder of the Unix socket PostgreSQL listens on.
    pub fn socket_dir(&self) -> PathBuf {
        self.home.join("run")
    }

    /// The supervised PostgreSQL's Unix socket (`<home>/run`).
    pub fn socket(&self) -> pg_conn::Socket {
        pg_conn::Socket {
            dir: self.socket_dir(),
            port: self.postgres.port,
        }
    }

    /// The supervisor's settings slice.
    pub fn cluster_settings(&self) -> pg_cluster::ClusterSettings {
        let pg = &self.postgres;
        pg_cluster::ClusterSettings {
            home: self.home.clone(),
            pgdata: self.pgdata(),
            socket_dir: self.socket_dir(),
            bin_dir: pg.bin_dir.clone(),
            listen_address: pg.listen_address.clone(),
            port: pg.port,
            client_host: self.client_host(),
            os_user: pg.os_user.clone(),
            tls_cert_file: pg.tls_cert_file.clone(),
            tls_key_file: pg.tls_key_file.clone(),
            max_connections: pg.max_connections,
            shared_buffers: pg.shared_buffers.clone(),
            wal_segment_size_mb: pg.wal_segment_size_mb,
            stop_timeout_secs: pg.stop_timeout_secs,
            start_timeout_secs: pg.start_timeout_secs,
            settings: pg.settings.clone(),
        }
    }

    /// The file the generated admin password is stored in.
    pub fn generated_password_file(&self) -> PathBuf {
        self.home.join("secrets").join("admin.password")
    }

    /// The host clients should connect to.
    pub fn client_host(&self) -> String {
        if let Some(h) = &self.postgres.advertised_host {
            return h.clone();
        }
        let first = self
            .postgres
            .listen_address
            .split(',')
            .next()
            .unwrap_or("")
            .trim();
        match first {
            "" | "*" | "0.0.0.0" | "::" => "127.0.0.1".into(),
            other => other.into(),
        }
    }

    /// The URL of one of this server's health endpoints (`/healthz`, `/readyz`), as seen from
    /// the same host.
    pub fn health_url(&self, path: &str) -> String {
        let addr = self.http.listen;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        format!("http://{host}:{}{path}", addr.port())
    }

    /// The lake called `name`, or an error listing the configured ones.
    pub fn lake(&self, name: &str) -> Result<&LakeConfig, ConfigError> {
        self.lakes
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| ConfigError::UnknownLake {
                name: name.to_owned(),
                known: self.lake_names(),
            })
    }

    /// What the IAM policies of `lake` (every lake when `None`) are made from: the lakes'
    /// and the backup target's S3 places, the admin password secret, metering.
    pub fn iam_inputs(&self, lake: Option<&str>) -> Result<aws::iam::PolicyInputs, ConfigError> {
        let lakes: Vec<&LakeConfig> = match lake {
            Some(name) => vec![self.lake(name)?],
            None => self.lakes.iter().collect(),
        };
        let place = |p: &DataPath| match p {
            DataPath::S3 { bucket, prefix } => Some(aws::iam::S3Place {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
            }),
            DataPath::Local(_) => None,
        };
        Ok(aws::iam::PolicyInputs {
            lakes: lakes
                .iter()
                .map(|l| (l.name.clone(), place(&l.data_path)))
                .collect(),
            backup: self.backup.target.as_ref().and_then(place),
            admin_secret: self.postgres.admin_password_secret.clone(),
            region: self.s3.region.clone(),
            metering: self.marketplace.product_code.is_some(),
        })
    }

    /// The configured lakes' names, comma-separated, for messages.
    pub fn lake_names(&self) -> String {
        self.lakes
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether anything configured calls AWS: an S3 data path or backup target, the admin
    /// password secret, or Marketplace metering.
    pub fn uses_aws(&self) -> bool {
        let s3 = |p: &DataPath| matches!(p, DataPath::S3 { .. });
        self.lakes.iter().any(|l| s3(&l.data_path))
            || self.backup.target.as_ref().is_some_and(s3)
            || self.postgres.admin_password_secret.is_some()
            || self.marketplace.product_code.is_some()
    }

    /// Resolves the region (written into `s3.region`) and sets up the one AWS credential chain
    /// every AWS call of this process shares, which the caller keeps and passes on (the
    /// configuration holds data only); `None` when nothing configured uses AWS.
    pub async fn prepare_aws(&mut self) -> Result<Option<(ResolvedRegion, AwsContext)>, AwsError> {
        if !self.uses_aws() {
            return Ok(None);
        }
        let region =
            aws::identity::resolve_region(self.s3.region.as_deref(), self.s3.endpoint.is_some())
                .await?;
        let keys = match (&self.s3.access_key_id, &self.s3.secret_access_key) {
            (Some(id), Some(secret)) => Some(StaticKeys {
                access_key_id: id.clone(),
                secret_access_key: secret.expose().to_owned(),
                session_token: self
                    .s3
                    .session_token
                    .as_ref()
                    .map(|t| t.expose().to_owned()),
            }),
            _ => None,
        };
        self.s3.region = Some(region.name.clone());
        let context = AwsContext::new(&region.name, keys.as_ref());
        Ok(Some((region, context)))
    }

    /// S3 settings for the storage crate, signing with `aws` (from [`Config::prepare_aws`])
    /// when given; secrets exposed only into that struct.
    pub fn s3_settings(&self, aws: Option<&AwsContext>) -> S3Settings {
        S3Settings {
            identity: aws.map(|ctx| storage::S3Identity {
                region: ctx.region().to_owned(),
                credentials: ctx.object_store_credentials(),
            }),
            region: self.s3.region.clone(),
            endpoint: self.s3.endpoint.clone(),
            allow_http: self.s3.allow_http,
            force_path_style: self.s3.force_path_style,
            access_key_id: self.s3.access_key_id.clone(),
            secret_access_key: self
                .s3
                .secret_access_key
                .as_ref()
                .map(|s| s.expose().to_owned()),
            session_token: self
                .s3
                .session_token
                .as_ref()
                .map(|s| s.expose().to_owned()),
        }
    }

    /// Where lake users connect: the external PostgreSQL (TLS required), or this server's
    /// client address and port (the pooler's, when it runs).
    pub fn client_endpoint(&self) -> lake_admin::settings::ClientEndpoint {
        match self.external() {
            Some(r) => lake_admin::settings::ClientEndpoint {
                host: r.host.clone(),
                port: r.port,
                sslmode: Some("require"),
            },
            None => lake_admin::settings::ClientEndpoint {
                host: self.client_host(),
                // Through the pooler when it runs; `postgres.port` stays the direct path.
                port: if self.pooler_enabled() {
                    self.pooler.port
                } else {
                    self.postgres.port
                },
                sslmode: None,
            },
        }
    }

    /// Whether the supervised pooler runs: `pooler.enabled`, which defaults to on in front of
    /// the supervised PostgreSQL and to off with `postgres.url` (there is no socket to pool).
    pub fn pooler_enabled(&self) -> bool {
        self.pooler.enabled.unwrap_or(self.external.is_none())
    }

    /// The `pg_pool_max_connections` clients are given: through the pooler four fifths of its
    /// pool per lake user (duckdb-postgres's advice for transaction poolers, so a client's
    /// pool waits at the pooler's door rather than behind itself); directly 4, DuckDB's own
    /// floor, as each of those is a PostgreSQL connection.
    pub fn client_pool_max(&self) -> u32 {
        if self.pooler_enabled() {
            (self.pooler.pool_size * 4 / 5).max(1)
        } else {
            4
        }
    }

    /// The `max_connections` the supervised PostgreSQL runs with (`postgres.max_connections`,
    /// else sized to the container's memory).
    pub fn max_connections(&self) -> u32 {
        pg_cluster::sizing::max_connections(self.postgres.max_connections)
    }

    /// The DuckLake administration's settings slice.
    pub fn admin_settings(&self) -> lake_admin::AdminSettings {
        lake_admin::AdminSettings {
            admin_user: self.postgres.admin_user.clone(),
            home: self.home.clone(),
            lakes: self.lakes.clone(),
            maintenance: self.maintenance.clone(),
            backup_target: self.backup.target.clone(),
            recovery_window: self.backup.recovery_window().unwrap_or_default(),
            max_connections: self.max_connections(),
            clients: self.client_endpoint(),
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config tree serialises to TOML")
    }
}

/// PostgreSQL settings `[postgres.settings]` may not override: what the security model, the
/// supervisor's log pipeline and TLS depend on (their own `[postgres]` keys exist where a value
/// is the user's choice).
const MANAGED_SETTINGS: &[&str] = &[
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "password_encryption",
    "shared_preload_libraries",
    "logging_collector",
    "log_destination",
    "log_line_prefix",
    "lc_messages",
    "hba_file",
    "ident_file",
    "data_directory",
    "archive_command",
    "restore_command",
    "pg_stat_statements.track_utility",
    "auth_delay.milliseconds",
];

fn resolve_secret_file(
    value: &mut Option<Secret>,
    file: Option<&Path>,
    key: &str,
    cwd: &Path,
) -> Result<(), ConfigError> {
    let Some(file) = file else { return Ok(()) };
    let file_key = format!("{key}_file");
    if value.is_some() {
        return Err(ConfigError::invalid(
            &file_key,
            format!("set either {key} or {file_key}, not both"),
        ));
    }
    let path = cwd.join(file);
    let raw = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::invalid(&file_key, format!("read {}: {e}", path.display())))?;
    let trimmed = raw.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(ConfigError::invalid(
            &file_key,
            format!("{} is empty", path.display()),
        ));
    }
    *value = Some(Secret::new(trimmed));
    Ok(())
}

/// The environment as a figment provider. figment's own `Env` reads the process environment;
/// this one reads the pairs it is given (so tests cannot see a developer's shell) and names the
/// variable in errors: `postgres.port` is reported as `DUCKLAKE_CATALOG_POSTGRES__PORT`.
struct EnvPairs(Vec<(String, String)>);

impl figment::Provider for EnvPairs {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("environment").interpolater(|_profile, keys| {
            format!(
                "{} (env {ENV_PREFIX}{})",
                keys.join("."),
                keys.join("__").to_ascii_uppercase()
            )
        })
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (name, value) in &self.0 {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase();
            if key.is_empty() || ENV_SHORTCUTS.contains(&key.as_str()) {
                continue;
            }
            let path: Vec<&str> = key.split("__").collect();
            // A value is the exact string given: `0123` stays `0123` for a string key, and
            // `Config::load` reads numbers and booleans out of strings where the key wants
            // one. Only the keys that hold a list or a table parse their value as one.
            let value: figment::value::Value = if STRUCTURED_ENV_KEYS.contains(&key.as_str()) {
                value.parse().expect("Value::from_str is infallible")
            } else {
                figment::value::Value::from(value.clone())
            };
            insert_nested(&mut dict, &path, value);
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

fn insert_nested(dict: &mut figment::value::Dict, path: &[&str], value: figment::value::Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_owned())
                .or_insert_with(|| figment::value::Value::from(figment::value::Dict::new()));
            if let figment::value::Value::Dict(_, inner) = entry {
                insert_nested(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The example configuration docs/iam-permissions.md shows: lake `sales` on
    /// `s3://acme-data/lakes/sales/`, backups in `s3://acme-backups/catalog/`.
    fn iam_example() -> Config {
        let mut config = Config {
            lakes: vec![
                LakeConfig::new(
                    "sales".into(),
                    DataPath::parse("s3://acme-data/lakes/sales/").expect("valid"),
                ),
                LakeConfig::new(
                    "scratch".into(),
                    DataPath::parse("/var/lib/lakes/scratch").expect("valid"),
                ),
            ],
            ..Config::default()
        };
        config.backup.target = Some(DataPath::parse("s3://acme-backups/catalog/").expect("valid"));
        config.s3.region = Some("eu-west-1".into());
        config.postgres.admin_password_secret = Some(
            SecretRef::parse(
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:catalog/admin-AbCdEf:password",
            )
            .expect("valid"),
        );
        config.marketplace.product_code = Some("exampleproductcode".into());
        config
    }

    #[test]
    fn iam_inputs_carry_the_chosen_lakes_s3_places_and_the_servers_calls() {
        let config = iam_example();
        let all = config.iam_inputs(None).unwrap();
        assert_eq!(all.lakes.len(), 2);
        assert_eq!(
            all.lakes[1],
            ("scratch".to_owned(), None),
            "local: no place"
        );
        let sales = config.iam_inputs(Some("sales")).unwrap();
        assert_eq!(
            sales.lakes,
            [(
                "sales".to_owned(),
                Some(aws::iam::S3Place {
                    bucket: "acme-data".into(),
                    prefix: "lakes/sales/".into()
                })
            )]
        );
        assert_eq!(sales.backup.unwrap().bucket, "acme-backups");
        assert!(sales.metering && sales.admin_secret.is_some());
        let err = config.iam_inputs(Some("hr")).unwrap_err().to_string();
        assert!(
            err.contains("no lake named `hr`; configured lakes: sales"),
            "{err}"
        );
    }

    #[test]
    fn docs_iam_permissions_shows_the_generated_policies() {
        use aws::iam::{explain, policy, PolicyRole};
        let inputs = iam_example().iam_inputs(Some("sales")).unwrap();
        crate::doc_pages::assert_doc_current("iam-permissions.md", |doc| {
            let mut out = doc.to_owned();
            for role in [PolicyRole::Server, PolicyRole::Writer, PolicyRole::Reader] {
                let policy = policy(&inputs, role).unwrap();
                out = crate::doc_pages::fill_block(
                    &out,
                    &format!("<!-- iam-policy {} -->\n", role.name()),
                    "<!-- end -->",
                    &format!("```json\n{}\n```\n\n{}", policy.to_json(), explain(&policy)),
                );
            }
            out
        });
    }

    use super::*;

    fn sources(env: &[(&str, &str)]) -> Sources {
        Sources {
            file: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            overrides: None,
            cwd: PathBuf::from("/srv"),
        }
    }

    #[test]
    fn defaults_give_one_local_lake_under_home() {
        let c = Config::load(&sources(&[])).unwrap();
        assert_eq!(c.home, PathBuf::from("/srv/.ducklake-catalog"));
        assert_eq!(c.postgres.port, 5432);
        assert_eq!(c.postgres.admin_user, "admin");
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.lakes.len(), 1);
        assert_eq!(c.lakes[0].name, "lakehouse");
        assert_eq!(
            c.lakes[0].data_path.to_string(),
            "/srv/.ducklake-catalog/lakes/lakehouse/"
        );
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[postgres]\nport = 6000\nlisten_address = \"0.0.0.0\"\n",
        )
        .unwrap();
        let mut s = sources(&[("DUCKLAKE_CATALOG_POSTGRES__PORT", "6001")]);
        s.file = Some(file.clone());
        let c = Config::load(&s).unwrap();
        assert_eq!(c.postgres.port, 6001);
        assert_eq!(c.postgres.listen_address, "0.0.0.0");
        assert_eq!(c.client_host(), "127.0.0.1");
        s.overrides = Some(serde_json::json!({"postgres": {"port": 6002}}));
        assert_eq!(Config::load(&s).unwrap().postgres.port, 6002);
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let err = Config::load(&sources(&[("DUCKLAKE_CATALOG_POSTGRES__PROT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot") && err.contains("postgres"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn failover_needs_a_target_a_replication_password_and_the_supervised_postgres() {
        let err = |env: &[(&str, &str)]| Config::load(&sources(env)).unwrap_err().to_string();
        let auto = ("DUCKLAKE_CATALOG_HA__MODE", "auto");
        let target = ("DUCKLAKE_CATALOG_BACKUP__TARGET", "/srv/catalog-backups");
        let pw = (
            "DUCKLAKE_CATALOG_HA__REPLICATION_PASSWORD",
            "replication-secret-1",
        );
        let e = err(&[auto, pw]);
        assert!(e.contains("ha.mode") && e.contains("backup.target"), "{e}");
        let e = err(&[auto, target]);
        assert!(e.contains("ha.replication_password"), "{e}");
        let e = err(&[
            auto,
            target,
            ("DUCKLAKE_CATALOG_HA__REPLICATION_PASSWORD", "short"),
        ]);
        assert!(e.contains("ha.replication_password"), "{e}");
        let e = err(&[
            auto,
            target,
            pw,
            ("DUCKLAKE_CATALOG_HA__LEASE_PERIOD", "1s"),
        ]);
        assert!(e.contains("ha.lease_period"), "{e}");
        let e = err(&[
            auto,
            target,
            pw,
            ("DUCKLAKE_CATALOG_HA__ADVERTISE_HOST", "a b"),
        ]);
        assert!(e.contains("ha.advertise_host"), "{e}");
        let ok = Config::load(&sources(&[auto, target, pw])).unwrap();
        assert!(ok.ha.enabled());
        assert_eq!(ok.ha.fence_after(), std::time::Duration::from_secs(4));
    }

    #[test]
    fn bad_value_is_an_error_naming_the_key() {
        let err = Config::load(&sources(&[("DUCKLAKE_CATALOG_POSTGRES__PORT", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres.port"), "{err}");
    }

    #[test]
    fn malformed_data_path_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[[lakes]]\nname = \"sales\"\ndata_path = \"relative/dir\"\n",
        )
        .unwrap();
        let mut s = sources(&[]);
        s.file = Some(file);
        let err = Config::load(&s).unwrap_err().to_string();
        assert!(
            err.contains("lakes.0.data_path") && err.contains("relative/dir"),
            "{err}"
        );
        let err = Config::load(&sources(&[("DUCKLAKE_CATALOG_DATA_PATH", "s3://")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DUCKLAKE_CATALOG_DATA_PATH"), "{err}");
    }

    #[test]
    fn single_lake_shortcuts_build_one_lake() {
        let c = Config::load(&sources(&[
            ("DUCKLAKE_CATALOG_LAKE_NAME", "sales"),
            ("DUCKLAKE_CATALOG_DATA_PATH", "s3://acme-data/lakes/sales"),
        ]))
        .unwrap();
        assert_eq!(c.lakes.len(), 1);
        assert_eq!(c.lakes[0].name, "sales");
        assert_eq!(
            c.lakes[0].data_path.to_string(),
            "s3://acme-data/lakes/sales/"
        );
    }

    #[test]
    fn lakes_from_file_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let toml = "[[lakes]]\nname = \"a\"\ndata_path = \"s3://b-1/x\"\n[[lakes]]\nname = \"b\"\ndata_path = \"s3://b-1/x/\"\n";
        std::fs::write(&file, toml).unwrap();
        let mut s = sources(&[]);
        s.file = Some(file.clone());
        let err = Config::load(&s).unwrap_err().to_string();
        assert!(err.contains("lakes[1].data_path"), "{err}");
        std::fs::write(
            &file,
            "[[lakes]]\nname = \"Bad-Name\"\ndata_path = \"/d\"\n",
        )
        .unwrap();
        let err = Config::load(&s).unwrap_err().to_string();
        assert!(err.contains("lakes[0].name"), "{err}");
    }

    #[test]
    fn secret_file_convention_reads_and_trims_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-value\n").unwrap();
        let c = Config::load(&sources(&[(
            "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD_FILE",
            pw.to_str().unwrap(),
        )]))
        .unwrap();
        assert_eq!(
            c.postgres.admin_password.as_ref().unwrap().expose(),
            "s3cret-value"
        );
        let err = Config::load(&sources(&[
            (
                "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD_FILE",
                pw.to_str().unwrap(),
            ),
            ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", "x"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("postgres.admin_password_file"), "{err}");
        let err = Config::load(&sources(&[(
            "DUCKLAKE_CATALOG_S3__SECRET_ACCESS_KEY_FILE",
            "/nonexistent/key",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("s3.secret_access_key_file") && err.contains("/nonexistent/key"));
    }

    #[test]
    fn every_string_key_from_env_keeps_the_exact_string() {
        // Values a type guess would turn into numbers, booleans, floats or lists.
        for raw in [
            "0123456789abcdef",
            "012345678901",
            "0123456789",
            "123456789012",
            "1234567890.50",
            "00",
            "true",
            "1e5",
            "0x1F",
            "-0",
            "[1]",
            "{a = 1}",
        ] {
            // The admin password must be 12 characters or longer.
            let strong = raw.len() >= 12;
            let mut env = vec![
                ("DUCKLAKE_CATALOG_S3__SECRET_ACCESS_KEY", raw),
                ("DUCKLAKE_CATALOG_S3__SESSION_TOKEN", raw),
                ("DUCKLAKE_CATALOG_S3__ACCESS_KEY_ID", raw),
                ("DUCKLAKE_CATALOG_S3__REGION", raw),
            ];
            if strong {
                env.push(("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", raw));
            }
            let c = Config::load(&sources(&env)).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            if strong {
                assert_eq!(c.postgres.admin_password.unwrap().expose(), raw);
            }
            assert_eq!(c.s3.secret_access_key.unwrap().expose(), raw, "{raw:?}");
            assert_eq!(c.s3.session_token.unwrap().expose(), raw, "{raw:?}");
            assert_eq!(c.s3.access_key_id.as_deref(), Some(raw), "{raw:?}");
            assert_eq!(c.s3.region.as_deref(), Some(raw), "{raw:?}");
        }
    }

    #[test]
    fn numbers_and_booleans_from_env_still_reach_their_keys() {
        let c = Config::load(&sources(&[
            ("DUCKLAKE_CATALOG_POSTGRES__PORT", "6543"),
            ("DUCKLAKE_CATALOG_POSTGRES__MAX_CONNECTIONS", "0100"),
            ("DUCKLAKE_CATALOG_S3__ALLOW_HTTP", "true"),
            (
                "DUCKLAKE_CATALOG_POSTGRES__SETTINGS",
                "{work_mem = \"64MB\"}",
            ),
        ]))
        .unwrap();
        assert_eq!(c.postgres.port, 6543);
        assert_eq!(c.postgres.max_connections, Some(100));
        assert!(c.s3.allow_http);
        assert_eq!(c.postgres.settings["work_mem"], "64MB");
        let err = Config::load(&sources(&[("DUCKLAKE_CATALOG_POSTGRES__PORT", "54x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DUCKLAKE_CATALOG_POSTGRES__PORT"), "{err}");
    }

    #[test]
    fn redacted_toml_hides_every_secret() {
        let c = Config::load(&sources(&[
            (
                "DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD",
                "pg-secret-value",
            ),
            ("DUCKLAKE_CATALOG_S3__SECRET_ACCESS_KEY", "s3-secret"),
            ("DUCKLAKE_CATALOG_S3__SESSION_TOKEN", "s3-token"),
        ]))
        .unwrap();
        let shown = c.to_redacted_toml();
        for secret in ["pg-secret-value", "s3-secret", "s3-token"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("[redacted]"));
        assert!(!format!("{c:?}").contains("pg-secret-value"));
    }
}

/// Test support for the doc pages whose parts are generated from code (this crate's
/// `configuration.md`, `iam-permissions.md`).
#[doc(hidden)]
pub mod doc_pages {
    /// `doc` with the text between `begin` and the next `end` replaced by `content`; both
    /// markers stay. Panics when the page lost its markers.
    pub fn fill_block(doc: &str, begin: &str, end: &str, content: &str) -> String {
        let start = doc
            .find(begin)
            .unwrap_or_else(|| panic!("the page lost its `{begin}` marker"))
            + begin.len();
        let len = doc[start..]
            .find(end)
            .unwrap_or_else(|| panic!("no `{end}` after `{begin}`"));
        format!("{}{content}{}", &doc[..start], &doc[start + len..])
    }

    /// Checks that a doc page's generated parts are current: `fill` regenerates them from the
    /// code. With `DUCKLAKE_UPDATE_DOCS` set the page is rewritten instead.
    pub fn assert_doc_current(page: &str, fill: impl Fn(&str) -> String) {
        let path =
            std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
                .join("../../docs")
                .join(page);
        let doc = std::fs::read_to_string(&path).unwrap();
        let fresh = fill(&doc);
        assert_ne!(fresh.len(), 0);
        if std::env::var_os("DUCKLAKE_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &fresh).unwrap();
            return;
        }
        assert!(
            doc == fresh,
            "docs/{page} differs from what the code generates: run `DUCKLAKE_UPDATE_DOCS=1 cargo xtask test -p config docs_`"
        );
    }
}
