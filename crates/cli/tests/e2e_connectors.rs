//! End to end, every client language: each example in examples/<lang>/ and each program
//! `connect --lang <lang> --check` renders, run for real against `serve` with the lake's data
//! on moto S3. Clients come from `cargo xtask test` (venv, npm, Go modules, crates.io); nothing
//! is downloaded here.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::{extensions, home, run_cli, venv, Moto, Server};
use connectors::{Target, Toolchain};

/// The folder `cargo xtask test` installed the Node, Go and Rust clients' dependencies into.
fn clients() -> PathBuf {
    let dir = std::env::var_os("DUCKLAKE_TEST_CLIENTS")
        .map_or_else(|| common::cache().join("clients"), PathBuf::from);
    assert!(
        dir.join("node/node_modules").is_dir(),
        "no client dependencies in {}: run `cargo xtask test`",
        dir.display()
    );
    dir
}

/// The variables `Toolchain::from_env` reads, pointing at the installed clients, plus what
/// keeps Go and Cargo off the network.
fn toolchain_env() -> Vec<(String, String)> {
    let clients = clients();
    let node_modules = clients.join("node/node_modules");
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let mut env: Vec<(String, String)> = vec![
        (
            "DUCKLAKE_CONNECT_PYTHON".into(),
            s(venv().join("bin/python")),
        ),
        ("DUCKDB".into(), s(venv().join("bin/duckdb"))),
        (
            "DUCKDB_LIB_DIR".into(),
            s(node_modules.join("@duckdb/node-bindings-linux-x64")),
        ),
        ("DUCKLAKE_CONNECT_NODE_MODULES".into(), s(node_modules)),
        (
            "DUCKLAKE_CONNECT_CARGO_TARGET_DIR".into(),
            s(clients.join("rust-target")),
        ),
        ("DUCKLAKE_CONNECT_EXTENSIONS".into(), s(extensions())),
        ("GOFLAGS".into(), "-mod=mod".into()),
        ("GOPROXY".into(), "off".into()),
        ("CARGO_NET_OFFLINE".into(), "true".into()),
        // The lake's data is on moto: the clients' AWS credential chain finds these.
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
    ];
    // Where this machine keeps its toolchains, when not in their default places under HOME
    // (the binary under test starts with a cleared environment).
    for var in [
        "RUSTUP_HOME",
        "CARGO_HOME",
        "RUSTUP_TOOLCHAIN",
        "GOPATH",
        "GOMODCACHE",
        "GOCACHE",
    ] {
        if let Ok(value) = std::env::var(var) {
            env.push((var.into(), value));
        }
    }
    env
}

/// The toolchain `connect --check` finds through [`toolchain_env`], with `program_env` (and
/// those variables) given to every program.
fn toolchain(program_env: Vec<(String, String)>) -> Toolchain {
    let vars = toolchain_env();
    let mut tools = Toolchain::from_vars(|name| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    });
    tools.env = vars;
    tools.env.extend(program_env);
    tools
}

#[test]
fn every_example_and_every_connect_check_runs_against_a_live_server() {
    let moto = Moto::start(&[]);
    moto.python("s3.create_bucket(Bucket='examples')");
    let dir = home();
    let mut env = moto.server_env();
    env.push(("DUCKLAKE_CATALOG_LAKE_NAME".into(), "sales".into()));
    env.push((
        "DUCKLAKE_CATALOG_DATA_PATH".into(),
        "s3://examples/lakes/sales/".into(),
    ));
    let server_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut server = Server::start(dir.path(), &server_env);

    // The examples as committed, pointed at this server through their CATALOG_* variables.
    let tools = toolchain(vec![
        ("PGPASSWORD".into(), server.admin_password()),
        ("CATALOG_PORT".into(), server.pooler_port.to_string()),
        ("CATALOG_LAKE".into(), "sales".into()),
        (
            "CATALOG_S3_ENDPOINT".into(),
            format!("127.0.0.1:{}", moto.port),
        ),
        ("CATALOG_S3_USE_SSL".into(), "false".into()),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut timings = vec![];
    for c in connectors::registry() {
        let program = connectors::render(c.as_ref(), &Target::example()).unwrap();
        let started = Instant::now();
        let report = rt
            .block_on(connectors::check(c.as_ref(), &program, &tools))
            .unwrap_or_else(|e| panic!("examples/{}: {e}\n{}", c.language(), server.logs()));
        timings.push((c.language(), started.elapsed().as_secs_f64()));
        assert_eq!(report.summary.rows, 1003);
    }

    // `connect --lang X --check`: the rendered program, with this server's settings baked in.
    let mut cli_env = server_env.clone();
    let port = server.pg_port.to_string();
    cli_env.push(("DUCKLAKE_CATALOG_POSTGRES__PORT", &port));
    let tool_env = toolchain_env();
    cli_env.extend(tool_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for lang in connectors::languages() {
        let out = run_cli(
            dir.path(),
            &cli_env,
            &["connect", "--lang", lang, "--check", "--format", "json"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "connect --lang {lang} --check: {stderr}"
        );
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{lang}: {e}"));
        assert_eq!(report["language"], lang);
        assert_eq!(report["summary"]["rows"], 1003);
        assert!(report["summary"]["data_files"].as_u64() >= Some(1));
    }

    // Every table the programs wrote is on S3 under the lake's prefix.
    let keys = moto.python(
        "print('\\n'.join(o['Key'] for o in s3.list_objects_v2(Bucket='examples').get('Contents', [])))",
    );
    for lang in connectors::languages() {
        assert!(
            keys.lines().any(|k| k.starts_with("lakes/sales/")
                && k.contains(&format!("example_{lang}"))
                && k.ends_with(".parquet")),
            "no Parquet file of example_{lang}: {keys}"
        );
    }
    eprintln!("example run times (s): {timings:?}");
    assert!(server.stop().success());
}

/// Attaches the server's lake with the DuckDB release `version` from its venv under
/// `clients/duckdb-<version>/`, writes a row and reads the count; returns (ok, output).
fn attach_with(version: &str, server: &Server) -> (bool, String) {
    let root = clients().join(format!("duckdb-{version}"));
    let script = format!(
        "import duckdb\n\
         con = duckdb.connect(config={{'extension_directory': {ext:?}, 'autoinstall_known_extensions': 'false'}})\n\
         con.execute('LOAD ducklake; LOAD postgres')\n\
         con.execute(\"ATTACH 'ducklake:postgres:host=127.0.0.1 port={port} user=admin dbname=sales sslmode=require' AS lake\")\n\
         con.execute('CREATE TABLE IF NOT EXISTS lake.compat (v VARCHAR)')\n\
         con.execute('INSERT INTO lake.compat VALUES (?)', [duckdb.__version__])\n\
         print(con.execute('SELECT count(*) FROM lake.compat').fetchone()[0])\n",
        ext = root.join("extensions").to_string_lossy(),
        port = server.pooler_port,
    );
    let out = std::process::Command::new(root.join("venv/bin/python"))
        .args(["-c", &script])
        .env("PGPASSWORD", server.admin_password())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_oldest_supported_client_works_and_an_older_one_gets_the_documented_error() {
    let dir = home();
    let data = dir.path().join("data");
    let data = data.to_string_lossy();
    let mut server = Server::start(
        dir.path(),
        &[
            ("DUCKLAKE_CATALOG_LAKE_NAME", "sales"),
            ("DUCKLAKE_CATALOG_DATA_PATH", &data),
        ],
    );
    let oldest = catalog_server::versions::OLDEST_CLIENT_VERSION;
    let (ok, out) = attach_with(oldest, &server);
    assert!(ok, "DuckDB {oldest}: {out}");
    assert_eq!(out.trim(), "1");

    let too_old = catalog_server::versions::TOO_OLD_CLIENT_VERSION;
    let (ok, out) = attach_with(too_old, &server);
    assert!(!ok, "DuckDB {too_old} attached a spec 1.0 lake: {out}");
    let expected = "catalog version is 1.0, but the extension requires version 0.4";
    assert!(out.contains(expected), "{out}");
    let doc = std::fs::read_to_string(
        std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("../../docs/connecting.md"),
    )
    .unwrap();
    assert!(
        doc.contains(expected),
        "docs/connecting.md must explain: {expected}"
    );
    assert!(
        doc.contains(&format!("DuckDB {oldest}")),
        "docs/connecting.md must name {oldest}"
    );
    assert!(server.stop().success());
}
