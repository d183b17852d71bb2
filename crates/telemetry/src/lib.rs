//! What the catalog knows about itself, as metrics (docs/observability.md).
//!
//! The server gathers [`Facts`] on its own schedule (PostgreSQL's statistics, each lake's
//! catalog, the supervisor's status) and keeps the last ones; a scrape only renders them, so
//! it costs the same whatever the number of lakes and never queries anything. [`prometheus`]
//! renders Prometheus's text format through `metrics-exporter-prometheus` (a fresh local
//! recorder per render: a dropped lake's series go with it). PostgreSQL's facts use
//! postgres_exporter's names where the fact is the same, so its dashboards work.
//!
//! Labels carry lake (database) names, role kinds and states: never user data or secrets.

use std::collections::BTreeMap;

use metrics::{counter, describe_counter, describe_gauge, gauge, Label};
use serde::{Deserialize, Serialize};

/// Everything the metrics show, as last gathered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub server: ServerFacts,
    pub postgres: PgFacts,
    /// Per lake, by name.
    pub lakes: BTreeMap<String, LakeFacts>,
    /// `None` without `backup.target`.
    pub backup: Option<BackupFacts>,
    /// Per lake, by name.
    pub maintenance: BTreeMap<String, MaintenanceFacts>,
    /// `None` with the pooler off.
    pub pooler: Option<PoolerFacts>,
    /// `None` for a single server (`ha.mode = "single"`).
    pub ha: Option<HaFacts>,
    /// The last hour, one point per gathering, oldest first (the status page's charts).
    pub history: Vec<HistoryPoint>,
}

/// The figures the status page charts, at one gathering.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Unix time, seconds.
    pub at: f64,
    /// Every lake's newest snapshot id, added up: the difference between two points is the
    /// commits made between them.
    pub commits: u64,
    pub commit_conflicts: u64,
    /// `None` without backups.
    pub rpo_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerFacts {
    pub ready: bool,
    pub version: String,
    pub duckdb_version: String,
    pub ducklake_spec: String,
    /// Unexpected PostgreSQL exits since the server started.
    pub postgres_restarts: u64,
    pub uptime_seconds: f64,
    pub resident_memory_bytes: u64,
    /// The last warnings and errors the server logged, newest last.
    pub recent_problems: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PgFacts {
    /// PostgreSQL answered the last gathering.
    pub up: bool,
    pub max_connections: u64,
    /// Client sessions by database, role kind and state.
    pub connections: Vec<Connections>,
    /// Per lake database, by name.
    pub databases: BTreeMap<String, DatabaseFacts>,
    /// `pg_stat_archiver`, with WAL archiving on.
    pub archiver: Option<ArchiverFacts>,
}

/// Sessions of one kind: `role_kind` is admin, owner, writer, reader, server (the catalog's
/// own) or other; `state` is PostgreSQL's (active, idle, idle in transaction, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    pub database: String,
    pub role_kind: String,
    pub state: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseFacts {
    pub xact_commit: u64,
    pub xact_rollback: u64,
    pub size_bytes: u64,
    /// The longest open transaction now, 0 without one.
    pub max_tx_duration_seconds: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArchiverFacts {
    pub archived_count: u64,
    pub failed_count: u64,
    pub last_archive_age_seconds: Option<f64>,
}

/// One lake's catalog, read as the lake's own server role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LakeFacts {
    pub data_path: String,
    pub spec_version: String,
    pub state: String,
    /// Snapshots kept (expiry removes old ones).
    pub snapshots: u64,
    /// The newest snapshot's id: one more per commit, so its rate is commits per second.
    pub newest_snapshot_id: u64,
    pub newest_snapshot_age_seconds: Option<f64>,
    pub tables: u64,
    pub data_files: u64,
    pub delete_files: u64,
    pub data_bytes: u64,
    /// Rows inlined into the catalog, waiting for a flush to Parquet.
    pub inlined_rows: u64,
    /// Catalog rows no snapshot needs any more (what the garbage cleanup removes).
    pub garbage_rows: u64,
    /// Commits that collided on `ducklake_snapshot`'s primary key since the server started.
    pub commit_conflicts: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupFacts {
    pub target: String,
    /// How old the oldest WAL not yet in the target is: the recovery point right now (0 when
    /// everything is shipped).
    pub rpo_seconds: f64,
    pub pending_wal: u64,
    pub archived_segments: u64,
    pub archive_failures: u64,
    pub base_backup_age_seconds: Option<f64>,
    pub base_backup_bytes: Option<u64>,
    /// The last base backup attempt failed.
    pub base_backup_failing: bool,
    pub lease_generation: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceFacts {
    pub running: bool,
    pub last_run_timestamp: Option<f64>,
    pub last_duration_seconds: Option<f64>,
    /// `Some(true)` when the last job succeeded.
    pub last_ok: Option<bool>,
    pub files_merged: u64,
    pub files_deleted: u64,
    pub next_run_timestamp: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolerFacts {
    pub up: bool,
    pub restarts: u64,
}

/// A server of a failover pair.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HaFacts {
    pub primary: bool,
    pub lease_generation: u64,
    /// Standby: how far replay is behind what it received.
    pub replay_lag_seconds: Option<f64>,
    /// Primary: standbys streaming from it.
    pub standbys: u64,
    /// Primary: the largest replay lag among them.
    pub standby_lag_seconds: Option<f64>,
    /// Primary in zero-loss mode: commits wait for a standby now (false: degraded).
    pub synchronous: Option<bool>,
}

/// The content type of [`prometheus`]'s text.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect()
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

// Metric values are counts and bytes far below 2^52.
#[allow(clippy::cast_precision_loss)]
fn num(n: u64) -> f64 {
    n as f64
}

/// Every metric with its help text and kind, in the order docs/observability.md lists them.
pub const METRICS: &[(&str, Kind, &str)] = &[
    ("ducklake_catalog_up", Kind::Gauge, "1: the server answers"),
    (
        "ducklake_catalog_ready",
        Kind::Gauge,
        "1: PostgreSQL and every lake are ready (as /readyz)",
    ),
    (
        "ducklake_catalog_build_info",
        Kind::Gauge,
        "1, with the product, DuckDB engine and DuckLake spec versions as labels",
    ),
    (
        "ducklake_catalog_postgres_restarts",
        Kind::Counter,
        "unexpected PostgreSQL exits since the server started",
    ),
    (
        "ducklake_catalog_uptime_seconds",
        Kind::Gauge,
        "seconds since the server started",
    ),
    (
        "ducklake_catalog_resident_memory_bytes",
        Kind::Gauge,
        "the server process's resident memory",
    ),
    (
        "pg_up",
        Kind::Gauge,
        "1: PostgreSQL answered the last gathering",
    ),
    (
        "pg_settings_max_connections",
        Kind::Gauge,
        "PostgreSQL's max_connections",
    ),
    (
        "pg_stat_activity_count",
        Kind::Gauge,
        "client sessions by database, role kind and state",
    ),
    (
        "pg_stat_activity_max_tx_duration",
        Kind::Gauge,
        "seconds the longest open transaction of a database has run",
    ),
    (
        "pg_stat_database_xact_commit",
        Kind::Counter,
        "transactions committed in a lake's database",
    ),
    (
        "pg_stat_database_xact_rollback",
        Kind::Counter,
        "transactions rolled back in a lake's database",
    ),
    (
        "pg_database_size_bytes",
        Kind::Gauge,
        "a lake database's size on disk",
    ),
    (
        "pg_stat_archiver_archived_count",
        Kind::Counter,
        "WAL files archived",
    ),
    (
        "pg_stat_archiver_failed_count",
        Kind::Counter,
        "failed WAL archive attempts",
    ),
    (
        "pg_stat_archiver_last_archive_age",
        Kind::Gauge,
        "seconds since the last WAL file was archived",
    ),
    ("ducklake_snapshots", Kind::Gauge, "snapshots a lake keeps"),
    (
        "ducklake_commits",
        Kind::Counter,
        "the newest snapshot id: its rate is commits per second",
    ),
    (
        "ducklake_newest_snapshot_age_seconds",
        Kind::Gauge,
        "seconds since a lake's last commit",
    ),
    ("ducklake_tables", Kind::Gauge, "live tables"),
    (
        "ducklake_data_files",
        Kind::Gauge,
        "live Parquet data files",
    ),
    ("ducklake_delete_files", Kind::Gauge, "live delete files"),
    (
        "ducklake_data_bytes",
        Kind::Gauge,
        "bytes of live data files",
    ),
    (
        "ducklake_inlined_rows",
        Kind::Gauge,
        "rows inlined in the catalog, waiting for a flush",
    ),
    (
        "ducklake_catalog_garbage_rows",
        Kind::Gauge,
        "catalog rows no snapshot needs (removed by maintenance)",
    ),
    (
        "ducklake_commit_conflicts",
        Kind::Counter,
        "commits that collided on ducklake_snapshot's primary key (DuckLake retries them)",
    ),
    (
        "ducklake_catalog_backup_rpo_seconds",
        Kind::Gauge,
        "age of the oldest WAL not yet in the backup target: the recovery point now",
    ),
    (
        "ducklake_catalog_backup_pending_wal",
        Kind::Gauge,
        "WAL segments finished but not yet in the target",
    ),
    (
        "ducklake_catalog_backup_archived_segments",
        Kind::Counter,
        "WAL segments shipped since the server started",
    ),
    (
        "ducklake_catalog_backup_archive_failures",
        Kind::Counter,
        "failed WAL uploads since the server started",
    ),
    (
        "ducklake_catalog_backup_base_age_seconds",
        Kind::Gauge,
        "age of the last base backup",
    ),
    (
        "ducklake_catalog_backup_base_bytes",
        Kind::Gauge,
        "stored size of the last base backup",
    ),
    (
        "ducklake_catalog_backup_base_failing",
        Kind::Gauge,
        "1: the last base backup attempt failed",
    ),
    (
        "ducklake_catalog_backup_lease_generation",
        Kind::Gauge,
        "the backup target's lease generation this server holds",
    ),
    (
        "ducklake_catalog_maintenance_running",
        Kind::Gauge,
        "1: a maintenance job runs on the lake now",
    ),
    (
        "ducklake_catalog_maintenance_last_run_timestamp_seconds",
        Kind::Gauge,
        "when the last maintenance job started (Unix time)",
    ),
    (
        "ducklake_catalog_maintenance_last_duration_seconds",
        Kind::Gauge,
        "how long the last maintenance job took",
    ),
    (
        "ducklake_catalog_maintenance_last_success",
        Kind::Gauge,
        "1: the last maintenance job succeeded; 0: it failed",
    ),
    (
        "ducklake_catalog_maintenance_files_merged",
        Kind::Gauge,
        "files the last maintenance job merged",
    ),
    (
        "ducklake_catalog_maintenance_files_deleted",
        Kind::Gauge,
        "files the last maintenance job deleted",
    ),
    (
        "ducklake_catalog_maintenance_next_run_timestamp_seconds",
        Kind::Gauge,
        "when the next maintenance job is due (Unix time)",
    ),
    (
        "ducklake_catalog_pooler_up",
        Kind::Gauge,
        "1: the connection pooler runs",
    ),
    (
        "ducklake_catalog_pooler_restarts",
        Kind::Counter,
        "unexpected pooler exits since the server started",
    ),
    (
        "ducklake_catalog_ha_primary",
        Kind::Gauge,
        "1: this server is the primary of its failover pair; 0: a hot standby",
    ),
    (
        "ducklake_catalog_ha_lease_generation",
        Kind::Gauge,
        "the backup target's lease generation this server holds or follows",
    ),
    (
        "ducklake_catalog_ha_replay_lag_seconds",
        Kind::Gauge,
        "standby: how far replay is behind the newest commit it received",
    ),
    (
        "ducklake_catalog_ha_standbys",
        Kind::Gauge,
        "primary: standbys streaming from it",
    ),
    (
        "ducklake_catalog_ha_standby_lag_seconds",
        Kind::Gauge,
        "primary: the largest replay lag of its streaming standbys",
    ),
    (
        "ducklake_catalog_ha_synchronous",
        Kind::Gauge,
        "primary in zero-loss mode: 1 while commits wait for a standby, 0 when degraded to asynchronous",
    ),
];

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// `facts` in Prometheus's text exposition format.
pub fn prometheus(facts: &Facts) -> String {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        for (name, kind, help) in METRICS {
            match kind {
                Kind::Gauge => describe_gauge!(*name, *help),
                Kind::Counter => describe_counter!(*name, *help),
            }
        }
        record_server(facts);
        record_postgres(&facts.postgres);
        for (lake, l) in &facts.lakes {
            record_lake(lake, l);
        }
        if let Some(b) = &facts.backup {
            record_backup(b);
        }
        for (lake, m) in &facts.maintenance {
            record_maintenance(lake, m);
        }
        if let Some(p) = &facts.pooler {
            gauge!("ducklake_catalog_pooler_up").set(flag(p.up));
            counter!("ducklake_catalog_pooler_restarts").absolute(p.restarts);
        }
        if let Some(h) = &facts.ha {
            record_ha(h);
        }
    });
    handle.render()
}

fn record_server(facts: &Facts) {
    let s = &facts.server;
    gauge!("ducklake_catalog_up").set(1.0);
    gauge!("ducklake_catalog_ready").set(flag(s.ready));
    gauge!(
        "ducklake_catalog_build_info",
        labels(&[
            ("version", &s.version),
            ("duckdb", &s.duckdb_version),
            ("ducklake_spec", &s.ducklake_spec),
        ])
    )
    .set(1.0);
    counter!("ducklake_catalog_postgres_restarts").absolute(s.postgres_restarts);
    gauge!("ducklake_catalog_uptime_seconds").set(s.uptime_seconds);
    gauge!("ducklake_catalog_resident_memory_bytes").set(num(s.resident_memory_bytes));
}

fn record_postgres(pg: &PgFacts) {
    gauge!("pg_up").set(flag(pg.up));
    if !pg.up {
        return;
    }
    gauge!("pg_settings_max_connections").set(num(pg.max_connections));
    for c in &pg.connections {
        gauge!(
            "pg_stat_activity_count",
            labels(&[
                ("datname", &c.database),
                ("role_kind", &c.role_kind),
                ("state", &c.state),
            ])
        )
        .set(num(c.count));
    }
    for (db, d) in &pg.databases {
        let l = labels(&[("datname", db)]);
        counter!("pg_stat_database_xact_commit", l.clone()).absolute(d.xact_commit);
        counter!("pg_stat_database_xact_rollback", l.clone()).absolute(d.xact_rollback);
        gauge!("pg_database_size_bytes", l.clone()).set(num(d.size_bytes));
        gauge!("pg_stat_activity_max_tx_duration", l).set(d.max_tx_duration_seconds);
    }
    if let Some(a) = &pg.archiver {
        counter!("pg_stat_archiver_archived_count").absolute(a.archived_count);
        counter!("pg_stat_archiver_failed_count").absolute(a.failed_count);
        if let Some(age) = a.last_archive_age_seconds {
            gauge!("pg_stat_archiver_last_archive_age").set(age);
        }
    }
}

fn record_lake(lake: &str, l: &LakeFacts) {
    let lb = labels(&[("lake", lake)]);
    gauge!("ducklake_snapshots", lb.clone()).set(num(l.snapshots));
    counter!("ducklake_commits", lb.clone()).absolute(l.newest_snapshot_id);
    if let Some(age) = l.newest_snapshot_age_seconds {
        gauge!("ducklake_newest_snapshot_age_seconds", lb.clone()).set(age);
    }
    gauge!("ducklake_tables", lb.clone()).set(num(l.tables));
    gauge!("ducklake_data_files", lb.clone()).set(num(l.data_files));
    gauge!("ducklake_delete_files", lb.clone()).set(num(l.delete_files));
    gauge!("ducklake_data_bytes", lb.clone()).set(num(l.data_bytes));
    gauge!("ducklake_inlined_rows", lb.clone()).set(num(l.inlined_rows));
    gauge!("ducklake_catalog_garbage_rows", lb.clone()).set(num(l.garbage_rows));
    counter!("ducklake_commit_conflicts", lb).absolute(l.commit_conflicts);
}

fn record_backup(b: &BackupFacts) {
    gauge!("ducklake_catalog_backup_rpo_seconds").set(b.rpo_seconds);
    gauge!("ducklake_catalog_backup_pending_wal").set(num(b.pending_wal));
    counter!("ducklake_catalog_backup_archived_segments").absolute(b.archived_segments);
    counter!("ducklake_catalog_backup_archive_failures").absolute(b.archive_failures);
    if let Some(age) = b.base_backup_age_seconds {
        gauge!("ducklake_catalog_backup_base_age_seconds").set(age);
    }
    if let Some(bytes) = b.base_backup_bytes {
        gauge!("ducklake_catalog_backup_base_bytes").set(num(bytes));
    }
    gauge!("ducklake_catalog_backup_base_failing").set(flag(b.base_backup_failing));
    if let Some(g) = b.lease_generation {
        gauge!("ducklake_catalog_backup_lease_generation").set(num(g));
    }
}

fn record_ha(h: &HaFacts) {
    gauge!("ducklake_catalog_ha_primary").set(flag(h.primary));
    #[allow(clippy::cast_precision_loss)] // generations stay far below 2^52
    gauge!("ducklake_catalog_ha_lease_generation").set(h.lease_generation as f64);
    if let Some(l) = h.replay_lag_seconds {
        gauge!("ducklake_catalog_ha_replay_lag_seconds").set(l);
    }
    if h.primary {
        #[allow(clippy::cast_precision_loss)]
        gauge!("ducklake_catalog_ha_standbys").set(h.standbys as f64);
    }
    if let Some(l) = h.standby_lag_seconds {
        gauge!("ducklake_catalog_ha_standby_lag_seconds").set(l);
    }
    if let Some(s) = h.synchronous {
        gauge!("ducklake_catalog_ha_synchronous").set(flag(s));
    }
}

fn record_maintenance(lake: &str, m: &MaintenanceFacts) {
    let lb = labels(&[("lake", lake)]);
    gauge!("ducklake_catalog_maintenance_running", lb.clone()).set(flag(m.running));
    if let Some(t) = m.last_run_timestamp {
        gauge!(
            "ducklake_catalog_maintenance_last_run_timestamp_seconds",
            lb.clone()
        )
        .set(t);
    }
    if let Some(d) = m.last_duration_seconds {
        gauge!(
            "ducklake_catalog_maintenance_last_duration_seconds",
            lb.clone()
        )
        .set(d);
    }
    if let Some(ok) = m.last_ok {
        gauge!("ducklake_catalog_maintenance_last_success", lb.clone()).set(flag(ok));
        gauge!("ducklake_catalog_maintenance_files_merged", lb.clone()).set(num(m.files_merged));
        gauge!("ducklake_catalog_maintenance_files_deleted", lb.clone()).set(num(m.files_deleted));
    }
    if let Some(t) = m.next_run_timestamp {
        gauge!(
            "ducklake_catalog_maintenance_next_run_timestamp_seconds",
            lb
        )
        .set(t);
    }
}

/// The CloudWatch namespace of the EMF lines.
pub const EMF_NAMESPACE: &str = "DuckLakeCatalog";

/// The key figures as CloudWatch Embedded Metric Format lines (one JSON object per line), for
/// the ECS `awslogs` driver to turn into metrics with the permissions it already has. One line
/// for the server (dimension `Service`) and one per lake (`Service` and `Lake`). `previous` is the facts
/// of the last emission: commits and conflicts are sent as their increase since then.
/// `disk_used_percent` is the home volume's use.
pub fn emf(
    service: &str,
    facts: &Facts,
    previous: Option<&Facts>,
    timestamp_ms: u64,
    disk_used_percent: Option<f64>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let connections: u64 = facts.postgres.connections.iter().map(|c| c.count).sum();
    let mut server: Vec<(&str, &str, f64)> = vec![
        ("Ready", "None", flag(facts.server.ready)),
        ("PostgresUp", "None", flag(facts.postgres.up)),
        (
            "PostgresRestarts",
            "Count",
            num(facts.server.postgres_restarts),
        ),
        ("Connections", "Count", num(connections)),
    ];
    if facts.postgres.max_connections > 0 {
        server.push((
            "ConnectionsUsedPercent",
            "Percent",
            100.0 * num(connections) / num(facts.postgres.max_connections),
        ));
    }
    if let Some(b) = &facts.backup {
        server.push(("RpoSeconds", "Seconds", b.rpo_seconds));
        server.push(("PendingWal", "Count", num(b.pending_wal)));
        if let Some(age) = b.base_backup_age_seconds {
            server.push(("BaseBackupAgeSeconds", "Seconds", age));
        }
        server.push(("BaseBackupFailing", "None", flag(b.base_backup_failing)));
    }
    let failing = facts
        .maintenance
        .values()
        .filter(|m| m.last_ok == Some(false))
        .count();
    server.push(("MaintenanceFailing", "Count", num(failing as u64)));
    if let Some(p) = &facts.pooler {
        server.push(("PoolerUp", "None", flag(p.up)));
    }
    if let Some(d) = disk_used_percent {
        server.push(("DiskUsedPercent", "Percent", d));
    }
    lines.push(emf_line(timestamp_ms, &[("Service", service)], &server));
    for (lake, l) in &facts.lakes {
        let before = previous.and_then(|p| p.lakes.get(lake));
        let delta = |now: u64, then: Option<u64>| num(now.saturating_sub(then.unwrap_or(now)));
        let values = [
            (
                "Commits",
                "Count",
                delta(l.newest_snapshot_id, before.map(|b| b.newest_snapshot_id)),
            ),
            (
                "CommitConflicts",
                "Count",
                delta(l.commit_conflicts, before.map(|b| b.commit_conflicts)),
            ),
            ("Snapshots", "Count", num(l.snapshots)),
            ("DataBytes", "Bytes", num(l.data_bytes)),
            ("DataFiles", "Count", num(l.data_files)),
            ("InlinedRows", "Count", num(l.inlined_rows)),
        ];
        lines.push(emf_line(
            timestamp_ms,
            &[("Service", service), ("Lake", lake)],
            &values,
        ));
    }
    lines
}

fn emf_line(
    timestamp_ms: u64,
    dimensions: &[(&str, &str)],
    values: &[(&str, &str, f64)],
) -> String {
    let mut root = serde_json::Map::new();
    let dims: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": EMF_NAMESPACE,
                "Dimensions": [dims],
                "Metrics": values.iter().map(|(name, unit, _)| serde_json::json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (k, v) in dimensions {
        root.insert((*k).into(), serde_json::Value::String((*v).to_owned()));
    }
    for (name, _, v) in values {
        root.insert((*name).into(), serde_json::json!(v));
    }
    serde_json::Value::Object(root).to_string()
}

/// The units the EMF specification allows.
const EMF_UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one line against the CloudWatch Embedded Metric Format specification: a JSON object
/// whose `_aws` member has an integer `Timestamp` (ms) and `CloudWatchMetrics` directives, each
/// with a `Namespace` (1-1024 characters), `Dimensions` (sets of at most 30 names, each naming
/// a string member of the object) and `Metrics` (at most 100, each a `Name` of 1-1024
/// characters naming a number member or an array of at most 100 numbers, an allowed `Unit`,
/// a `StorageResolution` of 1 or 60).
pub fn validate_emf(line: &str) -> Result<(), String> {
    let root: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let root = root.as_object().ok_or("not a JSON object")?;
    let aws = root
        .get("_aws")
        .and_then(serde_json::Value::as_object)
        .ok_or("no `_aws` object")?;
    if !aws.get("Timestamp").is_some_and(serde_json::Value::is_u64) {
        return Err("`_aws.Timestamp` is not an integer of milliseconds".into());
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(serde_json::Value::as_array)
        .ok_or("no `_aws.CloudWatchMetrics` array")?;
    let name_ok = |v: &serde_json::Value| {
        v.as_str()
            .is_some_and(|s| (1..=1024).contains(&s.len()) && !s.trim().is_empty())
    };
    for d in directives {
        if !d.get("Namespace").is_some_and(name_ok) {
            return Err("a directive's `Namespace` is missing or empty".into());
        }
        for set in d
            .get("Dimensions")
            .and_then(serde_json::Value::as_array)
            .ok_or("a directive has no `Dimensions` array")?
        {
            let set = set.as_array().ok_or("a dimension set is not an array")?;
            if set.len() > 30 {
                return Err("a dimension set has more than 30 dimensions".into());
            }
            for dim in set {
                let key = dim.as_str().ok_or("a dimension is not a string")?;
                if !root.get(key).is_some_and(serde_json::Value::is_string) {
                    return Err(format!("dimension `{key}` has no string member"));
                }
            }
        }
        let metrics = d
            .get("Metrics")
            .and_then(serde_json::Value::as_array)
            .ok_or("a directive has no `Metrics` array")?;
        if metrics.len() > 100 {
            return Err("more than 100 metrics in a directive".into());
        }
        for m in metrics {
            let name = m
                .get("Name")
                .filter(|n| name_ok(n))
                .and_then(serde_json::Value::as_str)
                .ok_or("a metric has no `Name`")?;
            if let Some(unit) = m.get("Unit") {
                if !unit.as_str().is_some_and(|u| EMF_UNITS.contains(&u)) {
                    return Err(format!(
                        "metric `{name}` has unit {unit}, not one EMF allows"
                    ));
                }
            }
            if let Some(r) = m.get("StorageResolution") {
                if r.as_u64() != Some(1) && r.as_u64() != Some(60) {
                    return Err(format!(
                        "metric `{name}`'s StorageResolution is not 1 or 60"
                    ));
                }
            }
            let ok = match root.get(name) {
                Some(serde_json::Value::Number(_)) => true,
                Some(serde_json::Value::Array(a)) => {
                    a.len() <= 100 && a.iter().all(serde_json::Value::is_number)
                }
                _ => false,
            };
            if !ok {
                return Err(format!("metric `{name}` has no number member"));
            }
        }
    }
    Ok(())
}

/// One sample of a rendered exposition: `name{labels} value`, for tests and `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a Prometheus text exposition (comments skipped). Label values are read as
/// the exporter writes them (no escaped quotes in the names this server uses).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

#[cfg(test)]
// The values compared are small counts, exact in f64.
#[allow(clippy::float_cmp)]
mod tests {
    use super::*;

    fn sample_facts() -> Facts {
        let mut f = Facts::default();
        f.server.ready = true;
        f.server.version = "0.1.0".into();
        f.postgres.up = true;
        f.postgres.max_connections = 100;
        f.postgres.connections.push(Connections {
            database: "sales".into(),
            role_kind: "writer".into(),
            state: "idle".into(),
            count: 3,
        });
        f.postgres.databases.insert(
            "sales".into(),
            DatabaseFacts {
                xact_commit: 42,
                ..Default::default()
            },
        );
        for lake in ["sales", "hr"] {
            f.lakes.insert(
                lake.into(),
                LakeFacts {
                    snapshots: 7,
                    newest_snapshot_id: 9,
                    commit_conflicts: 2,
                    ..Default::default()
                },
            );
        }
        f
    }

    #[test]
    fn a_standby_shows_its_lag_and_a_primary_its_standbys_and_zero_loss_state() {
        let value = |f: &Facts, name: &str| {
            parse(&prometheus(f))
                .into_iter()
                .find(|s| s.name == name)
                .map(|s| s.value)
        };
        let mut standby = sample_facts();
        standby.ha = Some(HaFacts {
            primary: false,
            lease_generation: 3,
            replay_lag_seconds: Some(0.25),
            ..HaFacts::default()
        });
        assert_eq!(value(&standby, "ducklake_catalog_ha_primary"), Some(0.0));
        assert_eq!(
            value(&standby, "ducklake_catalog_ha_replay_lag_seconds"),
            Some(0.25)
        );
        assert_eq!(value(&standby, "ducklake_catalog_ha_standbys"), None);
        let mut primary = sample_facts();
        primary.ha = Some(HaFacts {
            primary: true,
            lease_generation: 4,
            standbys: 1,
            synchronous: Some(false),
            ..HaFacts::default()
        });
        assert_eq!(value(&primary, "ducklake_catalog_ha_primary"), Some(1.0));
        assert_eq!(
            value(&primary, "ducklake_catalog_ha_lease_generation"),
            Some(4.0)
        );
        assert_eq!(value(&primary, "ducklake_catalog_ha_standbys"), Some(1.0));
        assert_eq!(
            value(&primary, "ducklake_catalog_ha_synchronous"),
            Some(0.0)
        );
        assert_eq!(value(&sample_facts(), "ducklake_catalog_ha_primary"), None);
    }

    #[test]
    fn every_family_has_help_and_type_and_counters_keep_postgres_exporter_names() {
        let text = prometheus(&sample_facts());
        assert!(
            text.contains("# TYPE pg_stat_database_xact_commit counter"),
            "{text}"
        );
        assert!(
            text.contains("pg_stat_database_xact_commit{datname=\"sales\"} 42"),
            "{text}"
        );
        assert!(text.contains("# HELP ducklake_commit_conflicts "), "{text}");
        let samples = parse(&text);
        let conflicts: Vec<_> = samples
            .iter()
            .filter(|s| s.name == "ducklake_commit_conflicts")
            .collect();
        assert_eq!(conflicts.len(), 2);
        assert!(conflicts.iter().all(|s| s.value == 2.0));
        let activity = samples
            .iter()
            .find(|s| s.name == "pg_stat_activity_count")
            .unwrap();
        assert_eq!(activity.labels["role_kind"], "writer");
        assert_eq!(activity.labels["state"], "idle");
        assert_eq!(activity.value, 3.0);
        // Every name rendered is one docs/observability.md lists.
        for s in &samples {
            assert!(
                METRICS.iter().any(|(n, _, _)| *n == s.name),
                "{} is not in METRICS",
                s.name
            );
        }
    }

    #[test]
    fn emf_lines_follow_the_specification_and_send_increases() {
        let mut f = sample_facts();
        f.backup = Some(BackupFacts {
            rpo_seconds: 0.5,
            ..Default::default()
        });
        let before = f.clone();
        f.lakes.get_mut("sales").unwrap().newest_snapshot_id += 4;
        f.lakes.get_mut("sales").unwrap().commit_conflicts += 1;
        let lines = emf("catalog", &f, Some(&before), 1_765_000_000_000, Some(42.0));
        assert_eq!(lines.len(), 3, "the server and two lakes");
        for l in &lines {
            validate_emf(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        }
        let sales: serde_json::Value = serde_json::from_str(
            lines
                .iter()
                .find(|l| l.contains("\"Lake\":\"sales\""))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(sales["Commits"], 4.0);
        assert_eq!(sales["CommitConflicts"], 1.0);
        let server: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(server["RpoSeconds"], 0.5);
        assert_eq!(server["DiskUsedPercent"], 42.0);
        assert_eq!(server["ConnectionsUsedPercent"], 3.0);
        // The first emission sends no increase.
        let first = emf("catalog", &f, None, 1, None);
        assert!(first[1].contains("\"Commits\":0.0"), "{}", first[1]);
    }

    #[test]
    fn the_validator_refuses_what_the_specification_refuses() {
        let good = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[["Lake"]],"Metrics":[{"Name":"M","Unit":"Count"}]}]},"Lake":"x","M":1}"#;
        validate_emf(good).unwrap();
        for (bad, why) in [
            (
                good.replace("\"Timestamp\":1", "\"Timestamp\":\"1\""),
                "Timestamp",
            ),
            (good.replace("\"Lake\":\"x\"", "\"Lake\":3"), "dimension"),
            (good.replace("\"M\":1", "\"M\":\"1\""), "number member"),
            (good.replace("\"Count\"", "\"Things\""), "unit"),
            (
                good.replace("\"Namespace\":\"N\"", "\"Namespace\":\"\""),
                "Namespace",
            ),
        ] {
            let e = validate_emf(&bad).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn a_dropped_lake_leaves_no_series_behind() {
        let mut f = sample_facts();
        assert!(prometheus(&f).contains("lake=\"hr\""));
        f.lakes.remove("hr");
        assert!(!prometheus(&f).contains("lake=\"hr\""));
    }

    #[test]
    fn postgres_down_shows_pg_up_zero_and_no_stale_figures() {
        let mut f = sample_facts();
        f.postgres.up = false;
        let text = prometheus(&f);
        assert!(text.contains("pg_up 0"), "{text}");
        assert!(!text.contains("pg_stat_database_xact_commit{"), "{text}");
    }
}
