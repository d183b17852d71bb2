//! Repository hygiene that `cargo test` enforces: docs cover the config, versions agree, every
//! crate root explains itself.

use std::path::{Path, PathBuf};

use catalog_server::config::{Config, LakeConfig};
use catalog_server::Secret;

fn root() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Every key of a config with all optional fields set, as dotted paths.
fn all_keys() -> Vec<String> {
    let mut c = Config::default();
    c.postgres.bin_dir = Some("/x".into());
    c.postgres.advertised_host = Some("h".into());
    c.postgres.admin_password = Some(Secret::new("p"));
    c.postgres.admin_password_file = Some("/x".into());
    c.postgres.tls_cert_file = Some("/x".into());
    c.postgres.tls_key_file = Some("/x".into());
    c.postgres.settings.insert("k".into(), "v".into());
    c.s3.region = Some("r".into());
    c.s3.endpoint = Some("e".into());
    c.s3.access_key_id = Some("a".into());
    c.s3.secret_access_key = Some(Secret::new("s"));
    c.s3.secret_access_key_file = Some("/x".into());
    c.s3.session_token = Some(Secret::new("t"));
    c.s3.session_token_file = Some("/x".into());
    c.duckdb.extension_directory = Some("/x".into());
    c.pooler.bin = Some("/x".into());
    c.backup.target = Some(storage::DataPath::parse("/b").unwrap());
    c.backup.retention.max_age = Some(catalog_server::config::HumanDuration(
        std::time::Duration::from_mins(1),
    ));
    c.lakes.push(LakeConfig::new(
        "l".into(),
        storage::DataPath::parse("/d").unwrap(),
    ));
    let v = serde_json::to_value(&c).unwrap();
    let mut keys = Vec::new();
    walk(&v, "", &mut keys);
    keys
}

fn walk(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) if prefix != "postgres.settings" => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(key.clone());
                walk(v, &key, out);
            }
        }
        serde_json::Value::Array(items) => {
            if let Some(first) = items.first() {
                walk(first, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn configuration_doc_lists_every_key() {
    let doc = read("docs/configuration.md");
    let missing: Vec<String> = all_keys()
        .into_iter()
        .filter(|k| {
            !matches!(
                k.as_str(),
                "postgres"
                    | "http"
                    | "s3"
                    | "duckdb"
                    | "log"
                    | "backup"
                    | "backup.retention"
                    | "marketplace"
                    | "maintenance"
                    | "pooler"
                    | "metrics"
                    | "ha"
            )
        })
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document: {missing:?}"
    );
}

#[test]
fn the_duckdb_crate_pin_matches_versions_rs() {
    let cargo = read("Cargo.toml");
    let want = format!(
        "duckdb = {{ version = \"={}\"",
        catalog_server::versions::DUCKDB_CRATE_VERSION
    );
    assert!(cargo.contains(&want), "root Cargo.toml must pin `{want}`");
    let engine = catalog_server::versions::DUCKDB_VERSION.replace('.', "0");
    assert!(
        catalog_server::versions::DUCKDB_CRATE_VERSION.starts_with(&format!("1.{engine}")),
        "the duckdb crate 1.MMmmpp encodes the engine version"
    );
}

#[test]
fn every_crate_root_opens_with_a_module_doc() {
    for rel in [
        "crates/catalog-server/src/lib.rs",
        "crates/storage/src/lib.rs",
        "crates/health/src/lib.rs",
        "crates/connectors/src/lib.rs",
        "crates/cli/src/main.rs",
        "xtask/src/main.rs",
    ] {
        assert!(
            read(rel).starts_with("//!"),
            "{rel} must open with a //! paragraph"
        );
    }
}

#[test]
fn readme_names_the_two_commands_and_ci_runs_the_test_one() {
    let readme = read("README.md");
    assert!(readme.contains("cargo xtask serve") && readme.contains("cargo xtask test"));
    assert!(read(".ci/run").contains("cargo xtask test"));
    for page in [
        "getting-started",
        "configuration",
        "connecting",
        "iam-permissions",
        "troubleshooting",
    ] {
        assert!(
            root().join(format!("docs/{page}.md")).is_file(),
            "docs/{page}.md is missing"
        );
        assert!(
            readme.contains(&format!("docs/{page}.md")),
            "README does not link docs/{page}.md"
        );
    }
}
