//! Go with the DuckDB driver `github.com/duckdb/duckdb-go/v2` (cgo, prebuilt DuckDB library).

use std::path::Path;

use super::{Connector, ConnectorError, Spec, Toolchain};

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Go;

static SPEC: Spec = Spec {
    language: "go",
    client: "Go (github.com/duckdb/duckdb-go/v2 {duckdb_go})",
    highlight: "go",
    run_hint: "PGPASSWORD=… go run .",
    files: &[
        ("main.go", include_str!("../../../examples/go/main.go")),
        ("go.mod", include_str!("../../../examples/go/go.mod")),
        ("go.sum", include_str!("../../../examples/go/go.sum")),
    ],
};

#[async_trait::async_trait]
impl Connector for Go {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    async fn run(&self, dir: &Path, tools: &Toolchain) -> Result<String, ConnectorError> {
        let cmd = tools.command("go", &["run", "."], dir)?;
        tools
            .output(
                "go run .",
                cmd,
                "install Go 1.24 or newer and a C compiler (the driver uses cgo)",
            )
            .await
    }
}
