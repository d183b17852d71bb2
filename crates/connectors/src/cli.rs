//! The DuckDB command-line client, driven by a POSIX shell script.

use std::path::Path;

use super::{Connector, ConnectorError, Spec, Toolchain};

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cli;

static SPEC: Spec = Spec {
    language: "cli",
    client: "DuckDB CLI (duckdb-cli on PyPI, or the duckdb binary)",
    highlight: "sh",
    run_hint: "pip install duckdb-cli=={duckdb} && PGPASSWORD=… sh main.sh",
    files: &[("main.sh", include_str!("../../../examples/cli/main.sh"))],
};

#[async_trait::async_trait]
impl Connector for Cli {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn setting(&self, name: &str, value: &str) -> String {
        format!("${{{name}:={value}}}")
    }

    async fn run(&self, dir: &Path, tools: &Toolchain) -> Result<String, ConnectorError> {
        // The script runs "${DUCKDB:-duckdb}"; check first that the binary starts at all, so a
        // missing CLI is named as such rather than as a shell error.
        let probe = tools.command(&tools.duckdb_cli, &["-version"], dir)?;
        tools
            .output(
                "duckdb -version",
                probe,
                "install the DuckDB CLI {duckdb} (`pip install duckdb-cli=={duckdb}`) or point DUCKDB at it",
            )
            .await?;
        let mut cmd = tools.command("sh", &["main.sh"], dir)?;
        cmd.env("DUCKDB", &tools.duckdb_cli);
        tools
            .output("sh main.sh", cmd, "install a POSIX shell")
            .await
    }
}
