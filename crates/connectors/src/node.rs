//! Node.js with `@duckdb/node-api` from npm.

use std::path::Path;

use super::{io, Connector, ConnectorError, Spec, Toolchain};

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Node;

static SPEC: Spec = Spec {
    language: "node",
    client: "Node.js (@duckdb/node-api {node_api})",
    highlight: "javascript",
    run_hint: "npm ci && PGPASSWORD=… node main.js",
    files: &[
        ("main.js", include_str!("../../../examples/node/main.js")),
        (
            "package.json",
            include_str!("../../../examples/node/package.json"),
        ),
        (
            "package-lock.json",
            include_str!("../../../examples/node/package-lock.json"),
        ),
    ],
};

#[async_trait::async_trait]
impl Connector for Node {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    async fn run(&self, dir: &Path, tools: &Toolchain) -> Result<String, ConnectorError> {
        if let Some(modules) = &tools.node_modules {
            std::os::unix::fs::symlink(modules, dir.join("node_modules"))
                .map_err(io(format!("link {}", modules.display())))?;
        } else {
            let cmd = tools.command("npm", &["ci", "--no-audit", "--no-fund"], dir)?;
            tools
                .output("npm ci", cmd, "install Node.js 18 or newer with npm")
                .await?;
        }
        let cmd = tools.command("node", &["main.js"], dir)?;
        tools
            .output("node main.js", cmd, "install Node.js 18 or newer")
            .await
    }
}
