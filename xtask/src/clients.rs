//! The client toolchains' dependencies for the examples and `connect --check`: installed from
//! the package registries (npm, the Go module proxy, crates.io) into the cache, so the tests
//! run with no network.
//!
//! - `clients/node/node_modules`: `npm ci` of examples/node's lock file. Its
//!   `@duckdb/node-bindings-linux-x64` also ships `libduckdb.so` 1.5.5, which the Rust example
//!   links instead of compiling DuckDB a second time.
//! - the Go module cache and build cache: `go build` of examples/go.
//! - `clients/rust-target`: examples/rust built against that library.
//! - `clients/duckdb-<v>/`: older DuckDB releases (venv and extensions) for the client
//!   compatibility tests.
//!
//! The tests get the folder as `DUCKLAKE_TEST_CLIENTS` and derive these paths from it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{run, workspace_root};

/// Runs `step` unless `stamp` already holds `inputs` (the lock files it was built from).
fn once(stamp: &Path, inputs: &str, step: impl FnOnce() -> Result<()>) -> Result<()> {
    if fs::read_to_string(stamp).is_ok_and(|s| s == inputs) {
        return Ok(());
    }
    step()?;
    fs::write(stamp, inputs).with_context(|| format!("write {}", stamp.display()))
}

pub(crate) fn need(tool: &str, fix: &str) -> Result<()> {
    let ok = Command::new(tool)
        .arg(if tool == "go" { "version" } else { "--version" })
        .output()
        .is_ok_and(|o| o.status.success());
    anyhow::ensure!(ok, "`{tool}` is not installed: {fix}");
    Ok(())
}

pub(crate) fn install(cache: &Path) -> Result<PathBuf> {
    let examples = workspace_root().join("examples");
    let dir = cache.join("clients");
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;

    need("npm", "install Node.js 18 or newer with npm")?;
    let node = dir.join("node");
    fs::create_dir_all(&node)?;
    let lock = fs::read_to_string(examples.join("node/package-lock.json"))
        .context("read examples/node/package-lock.json")?;
    once(&node.join(".stamp"), &lock, || {
        eprintln!("xtask: npm ci for the Node client");
        for f in ["package.json", "package-lock.json"] {
            fs::copy(examples.join("node").join(f), node.join(f))
                .with_context(|| format!("copy examples/node/{f}"))?;
        }
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&node))
    })?;
    let libduckdb = node.join("node_modules/@duckdb/node-bindings-linux-x64");

    need("go", "install Go 1.24 or newer (https://go.dev/dl/)")?;
    let go_sum =
        fs::read_to_string(examples.join("go/go.sum")).context("read examples/go/go.sum")?;
    once(&dir.join("go.stamp"), &go_sum, || {
        eprintln!("xtask: downloading and building the Go client (duckdb-go)");
        run(Command::new("go")
            .args(["build", "-mod=mod", "-o"])
            .arg(dir.join("go-example"))
            .arg(".")
            .current_dir(examples.join("go")))
    })?;

    let rust_target = dir.join("rust-target");
    let mut cargo_lock = String::new();
    for f in ["Cargo.lock", "Cargo.toml", "build.rs"] {
        cargo_lock += &fs::read_to_string(examples.join("rust").join(f))
            .with_context(|| format!("read examples/rust/{f}"))?;
    }
    once(&dir.join("rust.stamp"), &cargo_lock, || {
        eprintln!("xtask: building the Rust client example against libduckdb from npm");
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--release", "--locked"])
                .current_dir(examples.join("rust"))
                .env("CARGO_TARGET_DIR", &rust_target)
                .env("DUCKDB_LIB_DIR", &libduckdb),
        )
    })?;
    older_duckdb(&dir)?;
    Ok(dir)
}

/// Older DuckDB clients for the compatibility tests: the oldest release that can attach the
/// lake's spec and the newest one that cannot. Each gets a venv and an extension folder with
/// its own `ducklake` and `postgres` extensions.
pub(crate) fn older_duckdb(dir: &Path) -> Result<()> {
    for v in [
        crate::versions::OLDEST_CLIENT_VERSION,
        crate::versions::TOO_OLD_CLIENT_VERSION,
    ] {
        let root = dir.join(format!("duckdb-{v}"));
        let venv = root.join("venv");
        crate::venv_with(
            &venv,
            &format!(
                "duckdb=={v}\nduckdb-extension-ducklake=={v}\nduckdb-extension-postgres=={v}\n"
            ),
        )?;
        crate::copy_extensions(
            &root.join("extensions"),
            &venv,
            v,
            &[("ducklake", "ducklake"), ("postgres", "postgres_scanner")],
        )?;
    }
    Ok(())
}
