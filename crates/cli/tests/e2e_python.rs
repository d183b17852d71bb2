//! End to end: the real Python `duckdb` client with the stock extensions, against `serve`, with
//! lake data on S3 emulated by `moto_server` on loopback.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{error_line, extensions, home, serve_fails, venv, Moto, Server};

fn workspace_file(rel: &str) -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../..")
        .join(rel)
}

fn python(script: &Path, args: &[&str], env: &[(&str, String)]) -> String {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.arg(script).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn server_env(moto: &Moto, data_path: &str) -> Vec<(String, String)> {
    let mut env = moto.server_env();
    env.push(("DUCKLAKE_CATALOG_LAKE_NAME".into(), "sales".into()));
    env.push(("DUCKLAKE_CATALOG_DATA_PATH".into(), data_path.into()));
    env
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn python_client_writes_parquet_to_s3_and_reads_it_back_after_a_restart() {
    let moto = Moto::start(&[]);
    moto.python("s3.create_bucket(Bucket='acme-lake')");
    let dir = home();
    let env = server_env(&moto, "s3://acme-lake/lakes/sales/");
    let mut server = Server::start(dir.path(), &as_refs(&env));
    let (_, body) = server.get("/readyz").unwrap();
    assert_eq!(
        body["lakes"]["sales"]["data_path"],
        "s3://acme-lake/lakes/sales/"
    );

    let client_env = |server: &Server| {
        vec![
            (
                "DLC_ATTACH",
                format!(
                    "ducklake:postgres:host=127.0.0.1 port={} user=admin dbname=sales",
                    server.pooler_port
                ),
            ),
            ("PGPASSWORD", server.admin_password()),
            (
                "DLC_EXTENSIONS",
                extensions().to_string_lossy().into_owned(),
            ),
            ("DLC_S3_ENDPOINT", format!("127.0.0.1:{}", moto.port)),
        ]
    };
    let script = workspace_file("crates/cli/tests/python/lake_roundtrip.py");
    let wrote: serde_json::Value =
        serde_json::from_str(&python(&script, &["write"], &client_env(&server))).unwrap();
    let expected_sum: i64 = (0..20_000).sum::<i64>() - 3;
    assert_eq!(wrote["count"], 20_002);
    assert_eq!(wrote["sum"], expected_sum);
    assert!(wrote["files"].as_i64().unwrap() >= 1, "{wrote}");

    // The Parquet files are in the bucket under the lake's prefix, and nothing else is.
    let keys = moto.python(
        "print('\\n'.join(o['Key'] for o in s3.list_objects_v2(Bucket='acme-lake').get('Contents', [])))",
    );
    let keys: Vec<&str> = keys.lines().collect();
    assert!(keys.iter().any(|k| k.ends_with(".parquet")), "{keys:?}");
    assert!(
        keys.iter().all(|k| k.starts_with("lakes/sales/")),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.contains("preflight")),
        "preflight marker left: {keys:?}"
    );

    let (pg, http) = (server.pg_port, server.http_port);
    assert!(server.stop().success(), "{}", server.logs());
    let mut server = Server::spawn_on(dir.path(), pg, http, &as_refs(&env));
    server.wait_ready(Duration::from_mins(2));
    let read: serde_json::Value =
        serde_json::from_str(&python(&script, &["read"], &client_env(&server))).unwrap();
    assert_eq!(read, wrote);
    assert!(server.stop().success());
}

#[test]
fn the_product_page_quick_start_runs_as_written_against_the_embedded_default() {
    let dir = home();
    let mut server = Server::start(dir.path(), &[]);
    // `duckdb.connect()` without options looks in ~/.duckdb/extensions: point it at the
    // extension files the tests installed, so INSTALL finds them and never downloads.
    let client_home = dir.path().with_extension("client-home");
    std::fs::create_dir_all(client_home.join(".duckdb")).unwrap();
    let link = client_home.join(".duckdb/extensions");
    if !link.exists() {
        std::os::unix::fs::symlink(extensions(), &link).unwrap();
    }
    let out = python(
        &workspace_file("examples/python/quickstart.py"),
        &[],
        &[
            ("HOME", client_home.to_string_lossy().into_owned()),
            ("CATALOG_PORT", server.pooler_port.to_string()),
            ("CATALOG_PASSWORD", server.admin_password()),
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE".into()),
            ("AWS_SECRET_ACCESS_KEY", "example".into()),
            ("AWS_REGION", "us-east-1".into()),
        ],
    );
    assert_eq!(out.trim(), "[(1, 'signup')]");
    assert!(server.stop().success());
    let _ = std::fs::remove_dir_all(client_home);
}

#[test]
fn a_missing_bucket_is_a_one_line_error_naming_it() {
    let moto = Moto::start(&[]);
    let dir = home();
    let env = server_env(&moto, "s3://no-such-bucket/lake/");
    let (code, stderr) = serve_fails(dir.path(), &as_refs(&env));
    assert_eq!(code, 1, "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("bucket `no-such-bucket` does not exist"),
        "{line}"
    );
    assert!(!common::postgres_running(&dir.path().join("pgdata")));
}

#[test]
fn rejected_s3_credentials_are_a_one_line_error() {
    // With INITIAL_NO_AUTH_ACTION_COUNT=0 moto checks every request's access key.
    let moto = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let dir = home();
    let env = server_env(&moto, "s3://acme-lake/lake/");
    let (code, stderr) = serve_fails(dir.path(), &as_refs(&env));
    assert_eq!(code, 1, "{stderr}");
    let line = error_line(&stderr);
    assert!(line.contains("S3 credentials were rejected"), "{line}");
    assert!(!line.contains("testing\""), "{line}");
}
