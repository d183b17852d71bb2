//! `/metrics` against a real server with two lakes and the real DuckDB client: every family is
//! there with values that match what the test did — N commits move the lake's commit counter
//! and its database's `xact_commit` by N (and the other lake's by nothing), a forced snapshot
//! key collision moves the conflict counter by one, an open writer session is counted as a
//! writer's — and no secret is in it. Every metric is documented in docs/observability.md.

// The values compared are small counts, exact in f64.
#![allow(clippy::float_cmp)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use catalog_server::telemetry::{parse, Sample, METRICS};
use common::{home, Server};

const ADMIN_PASSWORD: &str = "admin-password-metrics-1";

/// The next snapshot, as a commit inserts it.
const NEXT: &str = "INSERT INTO public.ducklake_snapshot (snapshot_id, snapshot_time, schema_version, next_catalog_id, next_file_id)
         SELECT snapshot_id + 1, now(), schema_version, next_catalog_id, next_file_id
           FROM public.ducklake_snapshot ORDER BY snapshot_id DESC LIMIT 1";

fn scrape(server: &Server) -> (String, Vec<Sample>) {
    let (code, ctype, text) = server.get_text("/metrics");
    assert_eq!(code, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let samples = parse(&text);
    (text, samples)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// Scrapes until `pred` holds (the facts refresh every second here).
fn wait_for(server: &Server, what: &str, pred: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (text, samples) = scrape(server);
        if pred(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "{what} within 30 s:\n{text}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn metrics_count_what_clients_did() {
    let dir = home();
    let config = common::two_lakes(dir.path());
    let mut server = Server::spawn(
        dir.path(),
        &[
            ("DUCKLAKE_CATALOG_CONFIG", config.to_str().unwrap()),
            ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("DUCKLAKE_CATALOG_METRICS__REFRESH", "1s"),
            ("DUCKLAKE_CATALOG_METRICS__CLOUDWATCH", "emf"),
            (
                "DUCKLAKE_CATALOG_METRICS__CLOUDWATCH_SERVICE",
                "test-catalog",
            ),
            // No scheduled job makes snapshots while the test counts them.
            ("DUCKLAKE_CATALOG_MAINTENANCE__ENABLED", "false"),
        ],
    );
    server.wait_ready(Duration::from_mins(2));
    let pg_port = server.pg_port.to_string();
    let env = [
        ("DUCKLAKE_CATALOG_CONFIG", config.to_str().unwrap()),
        ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("DUCKLAKE_CATALOG_POSTGRES__PORT", pg_port.as_str()),
    ];
    let out = common::run_cli(
        dir.path(),
        &env,
        &[
            "user", "create", "ana", "--lake", "sales", "--role", "writer", "--format", "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pw = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = server.pooler_port.to_string();
    common::client_script("commits.py", &["ana", &pw, &port, "sales", "create", "0"]);

    // The server's own families, PostgreSQL's and both lakes'.
    let before = wait_for(&server, "both lakes' figures", |s| {
        value(s, "ducklake_tables", &[("lake", "sales")]) == Some(1.0)
            && value(s, "ducklake_tables", &[("lake", "hr")]) == Some(0.0)
    });
    for (name, labels) in [
        ("ducklake_catalog_up", vec![]),
        ("ducklake_catalog_ready", vec![]),
        ("pg_up", vec![]),
        ("ducklake_catalog_pooler_up", vec![]),
    ] {
        assert_eq!(value(&before, name, &labels), Some(1.0), "{name}");
    }
    let build = before
        .iter()
        .find(|s| s.name == "ducklake_catalog_build_info")
        .unwrap();
    assert_eq!(
        build.labels["duckdb"],
        catalog_server::versions::DUCKDB_VERSION
    );
    assert_eq!(build.labels["ducklake_spec"], "1.0");
    assert!(value(&before, "pg_settings_max_connections", &[]).unwrap() >= 25.0);
    assert!(value(&before, "pg_database_size_bytes", &[("datname", "hr")]).unwrap() > 1e6);
    assert!(value(&before, "ducklake_catalog_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(value(
        &before,
        "ducklake_catalog_maintenance_running",
        &[("lake", "sales")]
    )
    .is_none());

    let after = commits_are_counted(&server, &pw, &before);
    let conflicted = a_conflict_is_counted(&server, &pw, &after);
    assert!(
        value(
            &conflicted,
            "pg_stat_database_xact_rollback",
            &[("datname", "sales")]
        )
        .unwrap()
            >= value(
                &before,
                "pg_stat_database_xact_rollback",
                &[("datname", "sales")]
            )
            .unwrap()
                + 1.0
    );
    emf_lines_tell_the_same(&server, &conflicted);
    everything_is_documented_and_status_shows_it(&mut server, &env, &pw);
    drop(dir);
}

/// N commits: the lake's commit counter and snapshots move by N, its database's commits by at
/// least N, the other lake's by nothing.
fn commits_are_counted(server: &Server, pw: &str, before: &[Sample]) -> Vec<Sample> {
    let port = server.pooler_port.to_string();
    let n = 5.0;
    let commits = |s: &[Sample], lake| value(s, "ducklake_commits", &[("lake", lake)]).unwrap();
    let xacts =
        |s: &[Sample], db| value(s, "pg_stat_database_xact_commit", &[("datname", db)]).unwrap();
    common::client_script("commits.py", &["ana", pw, &port, "sales", "insert", "5"]);
    let after = wait_for(server, "five more commits", |s| {
        commits(s, "sales") >= commits(before, "sales") + n
    });
    assert_eq!(commits(&after, "sales"), commits(before, "sales") + n);
    assert_eq!(
        value(&after, "ducklake_snapshots", &[("lake", "sales")]).unwrap(),
        value(before, "ducklake_snapshots", &[("lake", "sales")]).unwrap() + n
    );
    assert_eq!(commits(&after, "hr"), commits(before, "hr"));
    assert!(xacts(&after, "sales") >= xacts(before, "sales") + n);
    // Five single-row inserts are inlined into the catalog.
    assert_eq!(
        value(&after, "ducklake_inlined_rows", &[("lake", "sales")]),
        Some(n)
    );
    assert!(
        value(
            &after,
            "ducklake_newest_snapshot_age_seconds",
            &[("lake", "sales")]
        )
        .unwrap()
            < 60.0
    );

    after
}

/// A forced collision on the snapshot key, made the way two writers' concurrent commits make
/// one: both insert the next snapshot id, the second waits on the key, the first commits (an
/// empty snapshot: one more commit), the second fails with PostgreSQL's unique violation. The
/// conflict counter moves by one, in that lake only. The sessions stay open meanwhile and are
/// counted as a writer's.
fn a_conflict_is_counted(server: &Server, pw: &str, after: &[Sample]) -> Vec<Sample> {
    let commits = |s: &[Sample], lake| value(s, "ducklake_commits", &[("lake", lake)]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sessions = rt.block_on(async {
        let first = common::connect(server.pg_port, "ana", pw, "sales")
            .await
            .unwrap();
        let second = common::connect(server.pg_port, "ana", pw, "sales")
            .await
            .unwrap();
        first
            .batch_execute(&format!("BEGIN; {NEXT}"))
            .await
            .unwrap();
        second.batch_execute("BEGIN").await.unwrap();
        let (first, second) = (std::sync::Arc::new(first), std::sync::Arc::new(second));
        let waiting = {
            let second = second.clone();
            tokio::spawn(async move { second.batch_execute(NEXT).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "the second insert waits on the key");
        first.batch_execute("COMMIT").await.unwrap();
        let e = waiting.await.unwrap().unwrap_err();
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
            "{e:?}"
        );
        second.batch_execute("ROLLBACK").await.unwrap();
        (first, second)
    });
    let conflicted = wait_for(server, "the conflict counted", |s| {
        value(s, "ducklake_commit_conflicts", &[("lake", "sales")]) == Some(1.0)
            && value(
                s,
                "pg_stat_activity_count",
                &[
                    ("datname", "sales"),
                    ("role_kind", "writer"),
                    ("state", "idle"),
                ],
            )
            .is_some_and(|v| v >= 1.0)
    });
    assert_eq!(
        value(&conflicted, "ducklake_commit_conflicts", &[("lake", "hr")]),
        Some(0.0)
    );
    assert_eq!(commits(&conflicted, "sales"), commits(after, "sales") + 1.0);
    drop(sessions);
    conflicted
}

/// The CloudWatch EMF lines the server wrote on stdout follow the specification, and their
/// per-lake increases add up to what `/metrics` counts (the lake began at snapshot 0).
fn emf_lines_tell_the_same(server: &Server, now: &[Sample]) {
    let logs = server.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("\"_aws\"")).collect();
    assert!(lines.len() >= 3, "EMF lines: {lines:?}");
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    let mut last_ready = None;
    for line in &lines {
        catalog_server::telemetry::validate_emf(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["Service"], "test-catalog");
        if v["Lake"] == "sales" {
            *sums.entry("Commits").or_default() += v["Commits"].as_f64().unwrap();
            *sums.entry("CommitConflicts").or_default() += v["CommitConflicts"].as_f64().unwrap();
        } else if v.get("Lake").is_none() {
            last_ready = v["Ready"].as_f64();
        }
    }
    assert_eq!(last_ready, Some(1.0), "the server's last line says ready");
    assert_eq!(
        sums["Commits"],
        value(now, "ducklake_commits", &[("lake", "sales")]).unwrap()
    );
    assert_eq!(sums["CommitConflicts"], 1.0);
}

/// Every sample's name is documented and no secret is in a label; `status` shows the same
/// facts, and fails in one line once the server is stopped.
fn everything_is_documented_and_status_shows_it(
    server: &mut Server,
    env: &[(&str, &str)],
    pw: &str,
) {
    let (text, samples) = scrape(server);
    let mut seen = BTreeMap::new();
    for s in &samples {
        assert!(
            METRICS.iter().any(|(n, _, _)| *n == s.name),
            "{} undocumented",
            s.name
        );
        *seen.entry(s.name.clone()).or_insert(0) += 1;
    }
    assert!(!text.contains(ADMIN_PASSWORD) && !text.contains(pw));
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/observability.md"),
    )
    .unwrap();
    for (name, _, _) in METRICS {
        assert!(
            docs.contains(&format!("`{name}`")),
            "docs/observability.md lacks {name}"
        );
    }
    assert!(seen.contains_key("pg_stat_activity_count"));

    // `status`: the same facts in the terminal, and as JSON.
    let listen = format!("127.0.0.1:{}", server.http_port);
    let status_env = [
        env[0],
        env[1],
        ("DUCKLAKE_CATALOG_HTTP__LISTEN", listen.as_str()),
    ];
    let home = server.home.clone();
    let out = common::run_cli(&home, &status_env, &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(": ready,"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("sales ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("hr ")), "{text}");
    assert!(text.contains("backups: off"), "{text}");
    let out = common::run_cli(&home, &status_env, &["status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["lakes"]["sales"]["commit_conflicts"], 1, "{v}");
    assert_eq!(v["server"]["ready"], true);
    assert!(server.stop().success());
    // Stopped: `status` fails in one line naming the address.
    let out = common::run_cli(&home, &status_env, &["status"]);
    assert!(!out.status.success());
    let line = common::error_line(&String::from_utf8_lossy(&out.stderr));
    assert!(line.contains(&listen), "{line}");
}
