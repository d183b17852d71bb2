//! Running a program with the client toolchains found on this machine.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{io, ConnectorError, STEP_TIMEOUT};

/// The client toolchains a check runs programs with, and how to run them offline.
///
/// [`Toolchain::from_env`] reads (each optional):
/// `DUCKLAKE_CONNECT_PYTHON` (a Python with `duckdb`; default `python3`), `DUCKDB` (the DuckDB
/// CLI; default `duckdb`), `DUCKLAKE_CONNECT_NODE_MODULES` (a `node_modules` holding
/// `@duckdb/node-api`; default: `npm ci` in the scratch folder), `DUCKDB_LIB_DIR` (the
/// official libduckdb for Rust; the cli passes the one beside its own binary; without one,
/// DuckDB is compiled from source),
/// `DUCKLAKE_CONNECT_CARGO_TARGET_DIR` (default `~/.cache/ducklake-catalog/connect-rust`) and
/// `DUCKLAKE_CONNECT_EXTENSIONS` (a DuckDB extension directory, for machines that cannot
/// download extensions; default: DuckDB's own `~/.duckdb/extensions`).
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub python: PathBuf,
    pub duckdb_cli: PathBuf,
    pub node_modules: Option<PathBuf>,
    pub libduckdb_dir: Option<PathBuf>,
    pub cargo_target_dir: PathBuf,
    pub extension_dir: Option<PathBuf>,
    /// Extra environment for every program (the catalog password as `PGPASSWORD`).
    pub env: Vec<(String, String)>,
}

impl Toolchain {
    /// The toolchains named by the environment (see the type's documentation).
    pub fn from_env() -> Toolchain {
        Toolchain::from_vars(|name| std::env::var(name).ok())
    }

    /// The toolchains named by `var` (the variables [`Toolchain::from_env`] reads; empty
    /// counts as unset). The variables themselves are not passed on to programs.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Toolchain {
        let path = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = path("HOME").unwrap_or_else(std::env::temp_dir);
        Toolchain {
            python: path("DUCKLAKE_CONNECT_PYTHON").unwrap_or_else(|| "python3".into()),
            duckdb_cli: path("DUCKDB").unwrap_or_else(|| "duckdb".into()),
            node_modules: path("DUCKLAKE_CONNECT_NODE_MODULES"),
            libduckdb_dir: path("DUCKDB_LIB_DIR"),
            cargo_target_dir: path("DUCKLAKE_CONNECT_CARGO_TARGET_DIR")
                .unwrap_or_else(|| home.join(".cache/ducklake-catalog/connect-rust")),
            extension_dir: path("DUCKLAKE_CONNECT_EXTENSIONS"),
            env: Vec::new(),
        }
    }

    /// `program args…` in `dir`, with the toolchain's environment. With an extension
    /// directory, HOME points at a folder whose `.duckdb/extensions` is that directory (DuckDB
    /// clients look there, so `INSTALL` finds the files and never downloads); the language
    /// tools' own caches keep their usual places.
    pub(crate) fn command(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        dir: &Path,
    ) -> Result<tokio::process::Command, ConnectorError> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(ext) = &self.extension_dir {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map_or_else(std::env::temp_dir, PathBuf::from);
            let keep: [(&str, PathBuf); 6] = [
                ("GOPATH", home.join("go")),
                ("GOCACHE", home.join(".cache/go-build")),
                ("CARGO_HOME", home.join(".cargo")),
                ("RUSTUP_HOME", home.join(".rustup")),
                ("npm_config_cache", home.join(".npm")),
                ("GOENV", home.join(".config/go/env")),
            ];
            for (var, default) in keep {
                let value: OsString = std::env::var_os(var)
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| default.into_os_string());
                cmd.env(var, value);
            }
            let client_home = dir.join(".client-home");
            let link = client_home.join(".duckdb/extensions");
            if !link.exists() {
                std::fs::create_dir_all(client_home.join(".duckdb"))
                    .map_err(io("create the client's home folder"))?;
                std::os::unix::fs::symlink(ext, &link)
                    .map_err(io(format!("link {}", link.display())))?;
            }
            cmd.env("HOME", client_home);
        }
        Ok(cmd)
    }

    /// Runs `cmd` to completion; its stdout, or an error carrying the last line it printed.
    pub(crate) async fn output(
        &self,
        step: &str,
        mut cmd: tokio::process::Command,
        fix: &str,
    ) -> Result<String, ConnectorError> {
        let tool = cmd.as_std().get_program().to_string_lossy().into_owned();
        let child = cmd.spawn().map_err(|error| ConnectorError::ToolMissing {
            tool,
            error,
            fix: crate::pinned(fix),
        })?;
        let out = tokio::time::timeout(STEP_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| ConnectorError::TimedOut {
                step: step.to_owned(),
                secs: STEP_TIMEOUT.as_secs(),
            })?
            .map_err(io(step.to_owned()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The client's own error: the last line that names one (a Python traceback ends with
        // it, Go logs it before `exit status 1`), else the last line printed.
        let lines: Vec<&str> = stderr
            .lines()
            .chain(stdout.lines())
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let detail = lines
            .iter()
            .rev()
            .find(|l| l.contains("Error") || l.contains("error:"))
            .or(lines.last())
            .copied()
            .unwrap_or("(no output)");
        let detail: String = detail.chars().take(600).collect();
        Err(ConnectorError::Failed {
            step: step.to_owned(),
            code: out
                .status
                .code()
                .map_or_else(|| "by signal".into(), |c| c.to_string()),
            detail,
        })
    }
}

/// A fresh folder for one language's program, removed when dropped.
pub(crate) fn scratch(language: &str) -> Result<tempfile::TempDir, ConnectorError> {
    tempfile::Builder::new()
        .prefix(&format!("ducklake-connect-{language}-"))
        .tempdir()
        .map_err(io("create a scratch folder"))
}
