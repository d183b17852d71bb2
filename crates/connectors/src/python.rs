//! Python with `duckdb` from PyPI.

use std::path::Path;

use super::{Connector, ConnectorError, Spec, Toolchain};

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Python;

static SPEC: Spec = Spec {
    language: "python",
    client: "Python (duckdb on PyPI)",
    highlight: "python",
    run_hint: "pip install duckdb=={duckdb} && PGPASSWORD=… python main.py",
    files: &[("main.py", include_str!("../../../examples/python/main.py"))],
};

#[async_trait::async_trait]
impl Connector for Python {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    async fn run(&self, dir: &Path, tools: &Toolchain) -> Result<String, ConnectorError> {
        let cmd = tools.command(&tools.python, &["main.py"], dir)?;
        tools
            .output(
                "python main.py",
                cmd,
                "install Python 3 with `pip install duckdb=={duckdb}`, or point DUCKLAKE_CONNECT_PYTHON at one",
            )
            .await
    }
}
