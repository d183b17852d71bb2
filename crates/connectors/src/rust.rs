//! Rust with the `duckdb` crate.

use std::path::Path;

use super::{Connector, ConnectorError, Spec, Toolchain};

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rust;

static SPEC: Spec = Spec {
    language: "rust",
    client: "Rust (duckdb crate ={duckdb_crate})",
    highlight: "rust",
    run_hint: "PGPASSWORD=… DUCKDB_LIB_DIR=<folder with libduckdb.so {duckdb}> cargo run --release",
    files: &[
        (
            "src/main.rs",
            include_str!("../../../examples/rust/src/main.rs"),
        ),
        (
            "Cargo.toml",
            include_str!("../../../examples/rust/Cargo.toml"),
        ),
        (
            "Cargo.lock",
            include_str!("../../../examples/rust/Cargo.lock"),
        ),
        ("build.rs", include_str!("../../../examples/rust/build.rs")),
    ],
};

#[async_trait::async_trait]
impl Connector for Rust {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    async fn run(&self, dir: &Path, tools: &Toolchain) -> Result<String, ConnectorError> {
        // The check runs the program once: an unoptimised build without debug info compiles in
        // about half the time of `--release` (DuckDB itself is the prebuilt library either way).
        let mut args = vec!["run", "--locked", "--quiet"];
        let mut cmd_env = vec![];
        if let Some(lib) = &tools.libduckdb_dir {
            // Link the official library (the program's build.rs sets its run path).
            cmd_env.push(("DUCKDB_LIB_DIR", lib.clone()));
        } else {
            // No library to link: compile DuckDB from source (slow).
            args.extend(["--features", "bundled"]);
        }
        let mut cmd = tools.command("cargo", &args, dir)?;
        cmd.env("CARGO_TARGET_DIR", &tools.cargo_target_dir)
            .env("CARGO_PROFILE_DEV_DEBUG", "false")
            .envs(cmd_env);
        tools
            .output(
                "cargo run",
                cmd,
                "install Rust with rustup (https://rustup.rs)",
            )
            .await
    }
}
