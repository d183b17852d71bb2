//! The workspace's dependency rules (ARCHITECTURE.md, "Invariants"), checked over
//! `cargo metadata`: a crate that gains a forbidden dependency fails here, naming it.

use std::collections::BTreeMap;
use std::process::Command;

/// `cargo metadata --no-deps` of the workspace.
fn metadata() -> serde_json::Value {
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Each workspace crate's normal (non-dev) dependencies, by crate name.
fn dependencies() -> BTreeMap<String, Vec<String>> {
    metadata()["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null() || d["kind"] == "build")
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// The workspace's own crates.
fn ours(all: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    all.keys().cloned().collect()
}

/// The workspace's crates but `keep`: what a crate allowed only `keep` must not depend on.
fn ours_except(all: &BTreeMap<String, Vec<String>>, keep: &[&str]) -> Vec<String> {
    ours(all)
        .into_iter()
        .filter(|c| !keep.contains(&c.as_str()))
        .collect()
}

fn forbid(all: &BTreeMap<String, Vec<String>>, krate: &str, forbidden: &[&str], why: &str) {
    let deps = all
        .get(krate)
        .unwrap_or_else(|| panic!("no crate `{krate}` in the workspace"));
    let bad: Vec<&String> = deps
        .iter()
        .filter(|d| forbidden.contains(&d.as_str()))
        .collect();
    assert!(bad.is_empty(), "`{krate}` depends on {bad:?}: {why}");
}

/// Lines of `src/**/*.rs` under `dir`, each file counted up to its first top-level
/// `#[cfg(test)]` (unit tests sit at the end of a file).
fn non_test_lines(dir: &std::path::Path) -> usize {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            total += non_test_lines(&path);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            total += text
                .lines()
                .take_while(|l| !l.starts_with("#[cfg(test)]"))
                .count();
        }
    }
    total
}

/// The most non-test code a crate may hold: past it, a crate holds more than one concern and
/// is split (ARCHITECTURE.md).
const MAX_CRATE_LINES: usize = 3_000;

#[test]
fn no_crate_holds_more_than_about_three_thousand_lines() {
    let meta = metadata();
    let mut sizes = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        let manifest = std::path::PathBuf::from(p["manifest_path"].as_str().unwrap());
        let src = manifest.parent().unwrap().join("src");
        sizes.push((p["name"].as_str().unwrap().to_owned(), non_test_lines(&src)));
    }
    let over: Vec<_> = sizes.iter().filter(|(_, n)| *n > MAX_CRATE_LINES).collect();
    assert!(
        over.is_empty(),
        "crates over {MAX_CRATE_LINES} non-test lines: {over:?} (all: {sizes:?}); split by concern"
    );
}

#[test]
fn the_base_depends_on_no_crate_of_ours() {
    let all = dependencies();
    let ours = ours(&all);
    let ours: Vec<&str> = ours.iter().map(String::as_str).collect();
    forbid(
        &all,
        "base",
        &ours,
        "base is what every crate may depend on",
    );
}

#[test]
fn health_connectors_storage_and_aws_depend_on_no_crate_of_ours_but_the_base() {
    let all = dependencies();
    let others = ours_except(&all, &["base"]);
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    for krate in ["health", "connectors", "storage", "aws"] {
        forbid(
            &all,
            krate,
            &others,
            "it is reused alone; the server adapts it to the rest (ARCHITECTURE.md)",
        );
    }
}

#[test]
fn storage_knows_neither_postgresql_nor_the_aws_sdk() {
    let all = dependencies();
    forbid(
        &all,
        "storage",
        &[
            "tokio-postgres",
            "postgres-protocol",
            "tokio-postgres-rustls",
        ],
        "storage reads and writes objects; only the catalog crates speak to PostgreSQL",
    );
    let sdk: Vec<&String> = all["storage"]
        .iter()
        .filter(|d| d.starts_with("aws-"))
        .collect();
    assert!(
        sdk.is_empty(),
        "`storage` depends on {sdk:?}: it takes an object_store credential provider, which the `aws` crate builds"
    );
}

#[test]
fn only_the_binary_and_xtask_use_anyhow() {
    let all = dependencies();
    for krate in all.keys() {
        // xtask's benchmark crates are part of xtask, split by concern.
        if krate == "ducklake-catalog" || krate.starts_with("xtask") {
            continue;
        }
        forbid(
            &all,
            krate,
            &["anyhow"],
            "libraries return typed errors (thiserror)",
        );
    }
}

#[test]
fn the_postgresql_crates_know_nothing_of_the_product() {
    let all = dependencies();
    // pg-conn: sessions and PostgreSQL's error text; both the supervisor and the DuckLake
    // administration build on it.
    let not_conn = ours_except(&all, &["base"]);
    forbid(
        &all,
        "pg-conn",
        &not_conn.iter().map(String::as_str).collect::<Vec<_>>(),
        "pg-conn is the bottom of the PostgreSQL stack: base only",
    );
    // pg-cluster: the supervisor takes its own ClusterSettings, never the configuration, and
    // knows no lake, backup or AWS.
    let not_cluster = ours_except(&all, &["base", "pg-conn"]);
    forbid(
        &all,
        "pg-cluster",
        &not_cluster.iter().map(String::as_str).collect::<Vec<_>>(),
        "the PostgreSQL supervisor depends on base and pg-conn only (ARCHITECTURE.md)",
    );
    forbid(
        &all,
        "pg-cluster",
        &["duckdb", "figment", "object_store", "aws-config"],
        "the supervisor runs PostgreSQL; DuckDB, configuration loading, storage and AWS are others'",
    );
}

#[test]
fn backups_depend_on_storage_and_the_postgresql_crates_only() {
    let all = dependencies();
    let forbidden = ours_except(&all, &["base", "storage", "pg-conn", "pg-cluster"]);
    let forbidden: Vec<&str> = forbidden.iter().map(String::as_str).collect();
    forbid(
        &all,
        "backup",
        &forbidden,
        "backups take their own BackupConfig and an S3Settings, never the configuration or the DuckLake administration",
    );
}

#[test]
fn the_ducklake_administration_reaches_postgresql_through_a_handle_only() {
    let all = dependencies();
    let allowed: [(&str, &[&str]); 3] = [
        ("lake-session", &["base", "pg-conn"]),
        (
            "lake-admin",
            &[
                "base",
                "storage",
                "pg-conn",
                "duckdb-worker",
                "lake-session",
            ],
        ),
        (
            "lake-upkeep",
            &["base", "storage", "duckdb-worker", "lake-admin"],
        ),
    ];
    for (krate, keep) in allowed {
        let forbidden = ours_except(&all, keep);
        let forbidden: Vec<&str> = forbidden.iter().map(String::as_str).collect();
        forbid(
            &all,
            krate,
            &forbidden,
            "the administration takes a PgHandle and its AdminSettings: never the supervisor (pg-cluster), the backups, AWS, the configuration or the server",
        );
        forbid(
            &all,
            krate,
            &[
                "aws-config",
                "aws-sdk-secretsmanager",
                "figment",
                "tokio-postgres-rustls",
            ],
            "it knows no AWS SDK and no configuration loading; TLS to PostgreSQL is pg-conn's",
        );
    }
}

#[test]
fn the_pooler_knows_only_pgbouncer() {
    let all = dependencies();
    let others = ours_except(&all, &["base"]);
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    forbid(
        &all,
        "pooler",
        &others,
        "the pooler writes PgBouncer's configuration and runs it; the server supervises it",
    );
}

#[test]
fn telemetry_renders_facts_and_reads_nothing() {
    let all = dependencies();
    let others = ours_except(&all, &["base"]);
    let mut forbidden: Vec<&str> = others.iter().map(String::as_str).collect();
    forbidden.extend(["tokio-postgres", "tokio", "axum"]);
    forbid(
        &all,
        "telemetry",
        &forbidden,
        "it renders the facts the server gathers; it queries and serves nothing (ARCHITECTURE.md)",
    );
}

#[test]
fn no_library_depends_on_the_configuration() {
    let all = dependencies();
    for krate in [
        "base",
        "aws",
        "storage",
        "health",
        "connectors",
        "pg-conn",
        "pg-cluster",
        "backup",
        "duckdb-worker",
        "lake-session",
        "lake-admin",
        "lake-upkeep",
        "pooler",
        "telemetry",
    ] {
        forbid(
            &all,
            krate,
            &["config", "figment"],
            "a library takes its own settings struct; the config crate composes them (ARCHITECTURE.md)",
        );
    }
}

#[test]
fn duckdb_is_linked_by_the_worker_and_the_binary_only() {
    let all = dependencies();
    let others = ours_except(&all, &["base"]);
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    forbid(
        &all,
        "duckdb-worker",
        &others,
        "the worker runs DuckDB jobs it is sent; it depends on base only",
    );
    for krate in all.keys() {
        if ["duckdb-worker", "ducklake-catalog"].contains(&krate.as_str()) {
            continue;
        }
        forbid(
            &all,
            krate,
            &["duckdb"],
            "only the worker (and the binary's `version`) link DuckDB, so the other crates build without it",
        );
    }
}
