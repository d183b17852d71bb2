//! Helpers the benchmarks and the container smoke test share: free ports and moto on loopback.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `moto_server` (S3 and Secrets Manager) from the test venv, killed on drop.
pub(crate) struct Moto {
    child: Child,
    pub(crate) port: u16,
    venv: PathBuf,
}

impl Moto {
    /// Starts moto on `host` (`127.0.0.1`, or `0.0.0.0` when a container must reach it) and
    /// waits until it accepts connections.
    pub(crate) fn start(venv: &Path, host: &str) -> Result<Moto> {
        let port = free_port()?;
        let child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", host, "-p", &port.to_string()])
            // Path-style only: a client that reaches moto by a host name (a container through
            // `host.containers.internal`) would otherwise have the name's first label taken
            // for the bucket.
            .env("S3_IGNORE_SUBDOMAIN_BUCKETNAME", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start moto_server")?;
        let began = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if began.elapsed() > Duration::from_secs(30) {
                bail!("moto_server did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Moto {
            child,
            port,
            venv: venv.to_path_buf(),
        })
    }

    /// Runs Python code in the venv; `boto3` and `duckdb` are importable there.
    pub(crate) fn python(&self, code: &str) -> Result<String> {
        let out = Command::new(self.venv.join("bin/python"))
            .args(["-c", code])
            .env("MOTO_ENDPOINT", format!("http://127.0.0.1:{}", self.port))
            .output()
            .context("run the venv's python")?;
        if !out.status.success() {
            bail!(
                "python failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(crate) fn create_bucket(&self, name: &str) -> Result<()> {
        self.python(&format!(
            "import os, boto3; boto3.client('s3', endpoint_url=os.environ['MOTO_ENDPOINT'], region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing').create_bucket(Bucket='{name}')"
        ))
        .with_context(|| format!("create bucket {name} in moto"))
        .map(|_| ())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
