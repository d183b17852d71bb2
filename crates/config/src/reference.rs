//! The configuration reference: every key, its environment variable, default and meaning.
//! `ducklake-catalog config reference` prints it; docs/configuration.md holds the same table
//! (a test keeps them equal), and a test here keeps it equal to the keys of [`Config`].
//!
//! [`Config`]: crate::Config

use std::fmt::Write as _;

use crate::ENV_PREFIX;

/// One configuration key.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct KeyDoc {
    /// Dotted key; `lakes[].x` for a field of each `[[lakes]]` entry.
    pub key: &'static str,
    /// The default, in words when it is computed.
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every key, in the order of the reference.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        key: "home",
        default: "`./.ducklake-catalog`",
        meaning: "folder for all state: `pgdata/`, `secrets/`, `run/` (socket), `lakes/` (local data)",
    },
    KeyDoc {
        key: "postgres.url",
        default: "— (supervise a PostgreSQL of its own)",
        meaning: "an external PostgreSQL 15+ (RDS, Aurora) to administer instead: `postgres://ADMIN@HOST:5432/postgres`, optionally `?sslmode=verify-full&sslrootcert=PATH`; the admin needs `CREATEDB CREATEROLE`, never SUPERUSER; no password in the URL; not with `backup.target` (docs/external-postgres.md)",
    },
    KeyDoc {
        key: "postgres.bin_dir",
        default: "Debian's `/usr/lib/postgresql/15/bin`, else `pg_config --bindir`",
        meaning: "PostgreSQL 15 server binaries",
    },
    KeyDoc {
        key: "postgres.listen_address",
        default: "`127.0.0.1`",
        meaning: "`listen_addresses`; use `0.0.0.0` in a container",
    },
    KeyDoc {
        key: "postgres.port",
        default: "`5432`",
        meaning: "client port",
    },
    KeyDoc {
        key: "postgres.advertised_host",
        default: "listen address (`127.0.0.1` for a wildcard)",
        meaning: "host printed in ATTACH strings",
    },
    KeyDoc {
        key: "postgres.admin_user",
        default: "`admin`",
        meaning: "login role for clients; owns every lake database; never superuser; with `postgres.url`, the URL's user",
    },
    KeyDoc {
        key: "postgres.admin_password",
        default: "generated once into `<home>/secrets/admin.password`",
        meaning: "applied on every start; at least 12 characters",
    },
    KeyDoc {
        key: "postgres.admin_password_file",
        default: "—",
        meaning: "file holding the admin password",
    },
    KeyDoc {
        key: "postgres.admin_password_secret",
        default: "—",
        meaning: "AWS Secrets Manager secret holding the admin password: ARN or name, optionally `:json_key` (or `{ secret = \"…\", key = \"password\" }`); rotations are applied without a restart",
    },
    KeyDoc {
        key: "postgres.admin_password_refresh",
        default: "`5m`",
        meaning: "how often the secret is read again (`0s`: only on SIGHUP)",
    },
    KeyDoc {
        key: "postgres.os_user",
        default: "`postgres`",
        meaning: "OS user PostgreSQL runs as when the server runs as root",
    },
    KeyDoc {
        key: "postgres.tls_cert_file",
        default: "self-signed, generated at first boot",
        meaning: "PEM certificate",
    },
    KeyDoc {
        key: "postgres.tls_key_file",
        default: "—",
        meaning: "PEM key for `tls_cert_file` (set both or neither)",
    },
    KeyDoc {
        key: "postgres.max_connections",
        default: "sized to the container's memory: 10 MiB a connection, 25 to 800",
        meaning: "each DuckDB client keeps a pool of about 8 connections",
    },
    KeyDoc {
        key: "postgres.shared_buffers",
        default: "`128MB`",
        meaning: "PostgreSQL `shared_buffers`",
    },
    KeyDoc {
        key: "postgres.wal_segment_size_mb",
        default: "`1`",
        meaning: "WAL segment size (initdb, first start only); power of two, 1-1024",
    },
    KeyDoc {
        key: "postgres.stop_timeout_secs",
        default: "`30`",
        meaning: "fast shutdown budget before an immediate one; half of it may go to flushing the WAL archive",
    },
    KeyDoc {
        key: "postgres.start_timeout_secs",
        default: "`120`",
        meaning: "how long PostgreSQL may take to accept connections",
    },
    KeyDoc {
        key: "postgres.settings",
        default: "—",
        meaning: "table of extra `postgresql.conf` settings, written last",
    },
    KeyDoc {
        key: "backup.target",
        default: "unset (no backups; warned at start)",
        meaning: "`s3://bucket/prefix/` or an absolute folder for WAL and base backups; see [backups](backup-and-restore.md)",
    },
    KeyDoc {
        key: "backup.archive_timeout",
        default: "`1s`",
        meaning: "the RPO: longest wait before a commit's WAL is shipped (whole seconds)",
    },
    KeyDoc {
        key: "backup.base_interval",
        default: "`24h`",
        meaning: "how often a base backup is taken (at least `1m`)",
    },
    KeyDoc {
        key: "backup.retention.count",
        default: "`7`",
        meaning: "keep at least this many newest base backups",
    },
    KeyDoc {
        key: "backup.retention.max_age",
        default: "unset",
        meaning: "also keep base backups younger than this (`14d`)",
    },
    KeyDoc {
        key: "backup.compression",
        default: "`zstd`",
        meaning: "`zstd` or `none`",
    },
    KeyDoc {
        key: "backup.auto_restore",
        default: "`true`",
        meaning: "restore on an empty home when the target holds a backup",
    },
    KeyDoc {
        key: "ha.mode",
        default: "`single`",
        meaning: "`auto`: every server on `backup.target` is a candidate: the lease holder is the primary, the others are hot standbys (streaming, the archive when the primary is out of reach) that take over when it stops renewing; needs `ha.replication_password` (docs/high-availability.md)",
    },
    KeyDoc {
        key: "ha.lease_period",
        default: "`8s`",
        meaning: "a standby takes over once the primary's lease went this long unrenewed; the primary stops accepting writes after half of it (2s-10m)",
    },
    KeyDoc {
        key: "ha.advertise_host",
        default: "this machine's host name",
        meaning: "where standbys reach this server's PostgreSQL (with `postgres.port`) when it is the primary",
    },
    KeyDoc {
        key: "ha.replication_password",
        default: "—",
        meaning: "password of the replication role `ducklake_replication`, the same on every server of the target (SCRAM, TLS only); `_file` form; at least 16 characters",
    },
    KeyDoc {
        key: "ha.replication_password_file",
        default: "—",
        meaning: "file holding `ha.replication_password`",
    },
    KeyDoc {
        key: "ha.synchronous",
        default: "`false`",
        meaning: "zero-loss mode: a commit is acknowledged once a standby has flushed it (costs a round trip per commit)",
    },
    KeyDoc {
        key: "ha.synchronous_timeout",
        default: "unset (wait for ever)",
        meaning: "with `ha.synchronous`: after this long without a standby, commits stop waiting (asynchronous, logged, `ducklake_catalog_ha_synchronous` 0) until one is back",
    },
    KeyDoc {
        key: "pooler.enabled",
        default: "`true` (`false` with `postgres.url`)",
        meaning: "run PgBouncer (transaction pooling) in front of the supervised PostgreSQL on `pooler.port`: users looked up live (no password file), TLS with PostgreSQL's certificate, supervised and restarted with PostgreSQL (docs/connections.md)",
    },
    KeyDoc {
        key: "pooler.port",
        default: "`6432`",
        meaning: "the pooled port clients connect to, on `postgres.listen_address`; `postgres.port` stays the direct session path",
    },
    KeyDoc {
        key: "pooler.max_client_conn",
        default: "`5000`",
        meaning: "client connections the pooler holds in all (10-100000)",
    },
    KeyDoc {
        key: "pooler.pool_size",
        default: "`20`",
        meaning: "PostgreSQL connections per lake database and user; all of one lake share at most 3/4 of `max_connections`",
    },
    KeyDoc {
        key: "pooler.bin",
        default: "Debian's `/usr/sbin/pgbouncer`",
        meaning: "the `pgbouncer` program",
    },
    KeyDoc {
        key: "metrics.refresh",
        default: "`15s`",
        meaning: "how often `/metrics` gathers PostgreSQL's statistics and each lake's catalog figures (kept between scrapes; 1s-1h)",
    },
    KeyDoc {
        key: "metrics.cloudwatch",
        default: "`off`",
        meaning: "`emf`: also write the key figures every `metrics.refresh` as CloudWatch Embedded Metric Format lines on stdout, which the ECS `awslogs` driver turns into metrics (namespace `DuckLakeCatalog`) with no new IAM permission (docs/observability.md)",
    },
    KeyDoc {
        key: "metrics.token",
        default: "unset",
        meaning: "when set, `/metrics`, `/status` and the status page need it (`Authorization: Bearer …` or `?token=…`); `/healthz` and `/readyz` stay open for load balancers; `_file` form; at least 16 characters",
    },
    KeyDoc {
        key: "metrics.token_file",
        default: "—",
        meaning: "file holding `metrics.token`",
    },
    KeyDoc {
        key: "metrics.cloudwatch_service",
        default: "`ducklake-catalog`",
        meaning: "the EMF metrics' `Service` dimension, telling catalogs apart (the CloudFormation stack sets its name)",
    },
    KeyDoc {
        key: "http.listen",
        default: "`127.0.0.1:8080`",
        meaning: "`/healthz`, `/readyz`; use `0.0.0.0:8080` in a container",
    },
    KeyDoc {
        key: "s3.region",
        default: "`AWS_REGION`",
        meaning: "bucket region",
    },
    KeyDoc {
        key: "s3.endpoint",
        default: "AWS",
        meaning: "S3-compatible endpoint URL (MinIO, moto)",
    },
    KeyDoc {
        key: "s3.allow_http",
        default: "`false`",
        meaning: "allow a plain-HTTP endpoint",
    },
    KeyDoc {
        key: "s3.force_path_style",
        default: "`false`",
        meaning: "path-style requests, for S3-compatible stores",
    },
    KeyDoc {
        key: "s3.access_key_id",
        default: "AWS credential chain",
        meaning: "static key id",
    },
    KeyDoc {
        key: "s3.secret_access_key",
        default: "AWS credential chain",
        meaning: "static secret key (also `s3.secret_access_key_file`)",
    },
    KeyDoc {
        key: "s3.secret_access_key_file",
        default: "—",
        meaning: "file holding the secret key",
    },
    KeyDoc {
        key: "s3.session_token",
        default: "—",
        meaning: "session token (also `s3.session_token_file`)",
    },
    KeyDoc {
        key: "s3.session_token_file",
        default: "—",
        meaning: "file holding the session token",
    },
    KeyDoc {
        key: "duckdb.extension_directory",
        default: "`<home>/extensions`, `/usr/lib/ducklake-catalog/extensions`, `~/.duckdb/extensions`",
        meaning: "where `v1.5.5/linux_amd64/ducklake.duckdb_extension` and `postgres_scanner.duckdb_extension` are; never downloaded",
    },
    KeyDoc {
        key: "log.format",
        default: "`auto`",
        meaning: "`auto` (JSON unless stdout is a terminal), `json`, `text`",
    },
    KeyDoc {
        key: "log.level",
        default: "`info`",
        meaning: "tracing filter, e.g. `info,catalog_server=debug`",
    },
    KeyDoc {
        key: "marketplace.product_code",
        default: "—",
        meaning: "AWS Marketplace product code: `RegisterUsage` at start, no start without entitlement",
    },
    KeyDoc {
        key: "marketplace.public_key_version",
        default: "`1`",
        meaning: "public key version from the product's metering instructions",
    },
    KeyDoc {
        key: "maintenance.enabled",
        default: "`true`",
        meaning: "run each lake's maintenance on a schedule (see docs/maintenance.md); a `[lakes.maintenance]` table replaces `[maintenance]` for one lake",
    },
    KeyDoc {
        key: "maintenance.interval",
        default: "`6h`",
        meaning: "time from the end of one job to the start of the next, per lake",
    },
    KeyDoc {
        key: "maintenance.expire_snapshots_older_than",
        default: "`5d`",
        meaning: "`ducklake_expire_snapshots` of older snapshots; unset: never expire",
    },
    KeyDoc {
        key: "maintenance.merge_adjacent_files",
        default: "`true`",
        meaning: "`ducklake_merge_adjacent_files`: merge small Parquet files",
    },
    KeyDoc {
        key: "maintenance.flush_inlined_data",
        default: "`true`",
        meaning: "`ducklake_flush_inlined_data`: move inlined rows into Parquet",
    },
    KeyDoc {
        key: "maintenance.cleanup_old_files_older_than",
        default: "`10d`",
        meaning: "`ducklake_cleanup_old_files` of files scheduled for deletion longer than this; at least the backups' recovery window",
    },
    KeyDoc {
        key: "maintenance.catalog_garbage",
        default: "`true`",
        meaning: "remove stats of dropped tables, empty inlined-data tables, duplicate deletion entries",
    },
    KeyDoc {
        key: "maintenance.max_runtime",
        default: "`30m`",
        meaning: "a job still running after this is interrupted",
    },
    KeyDoc {
        key: "lakes",
        default: "one lake, see below",
        meaning: "array of `{ name, data_path }` (and optionally a `maintenance` table); lakes can also be created by command (`lake create`)",
    },
    KeyDoc {
        key: "lakes[].name",
        default: "—",
        meaning: "lake and database name: lowercase letters, digits, `_`",
    },
    KeyDoc {
        key: "lakes[].data_path",
        default: "—",
        meaning: "`s3://bucket/prefix/` or an absolute folder; fixed once the lake exists",
    },
];

/// The environment variable that sets `key`; `None` for the fields of `[[lakes]]` entries
/// (set lakes in the TOML file, or the single lake with `DUCKLAKE_CATALOG_LAKE_NAME` and
/// `DUCKLAKE_CATALOG_DATA_PATH`).
pub fn env_var(key: &str) -> Option<String> {
    (!key.contains('[') && key != "lakes")
        .then(|| format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase()))
}

/// The reference as a Markdown table.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| key | environment variable | default | meaning |\n|---|---|---|---|\n");
    for k in KEYS {
        let env = env_var(k.key).map_or_else(|| "—".to_owned(), |e| format!("`{e}`"));
        let _ = writeln!(
            out,
            "| `{}` | {env} | {} | {} |",
            k.key, k.default, k.meaning
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::{Config, LakeConfig};

    fn leaves(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) if !map.is_empty() && prefix != "postgres.settings" => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&key, v, out);
                }
            }
            _ => {
                out.insert(prefix.to_owned());
            }
        }
    }

    #[test]
    fn the_reference_lists_exactly_the_keys_of_the_config_types() {
        let mut keys = BTreeSet::new();
        leaves(
            "",
            &serde_json::to_value(Config::default()).unwrap(),
            &mut keys,
        );
        let lake = LakeConfig::new("x".into(), storage::DataPath::parse("/tmp/x").unwrap());
        leaves("lakes[]", &serde_json::to_value(lake).unwrap(), &mut keys);
        let documented: BTreeSet<String> = KEYS.iter().map(|k| k.key.to_owned()).collect();
        assert_eq!(
            documented.difference(&keys).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "documented keys the config does not have"
        );
        assert_eq!(
            keys.difference(&documented).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "config keys missing from config_reference::KEYS"
        );
    }

    #[test]
    fn docs_configuration_holds_the_reference_table() {
        crate::doc_pages::assert_doc_current("configuration.md", |doc| {
            crate::doc_pages::fill_block(
                doc,
                "<!-- config reference -->\n",
                "<!-- end config reference -->",
                &markdown_table(),
            )
        });
    }
}
