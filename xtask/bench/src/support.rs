//! Helpers the benchmarks and the container smoke test share: options, free ports and moto on
//! loopback.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// Runs `cmd` and returns its output; when it fails, an error naming `what`, the exit status
/// and its stderr.
pub fn checked_output(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A benchmark's options: `--name value` for each of `valued`, a bare `--name` for each of
/// `flags`; anything else is an error naming what is accepted. The last occurrence wins.
#[derive(Debug)]
pub struct BenchArgs {
    given: std::collections::HashMap<String, Option<String>>,
}

impl BenchArgs {
    pub fn parse(args: &[String], valued: &[&str], flags: &[&str]) -> Result<Self> {
        let mut given = std::collections::HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if valued.contains(&a.as_str()) {
                let v = it.next().with_context(|| format!("{a} takes a value"))?;
                given.insert(a.clone(), Some(v.clone()));
            } else if flags.contains(&a.as_str()) {
                given.insert(a.clone(), None);
            } else {
                let known: Vec<&str> = valued.iter().chain(flags).copied().collect();
                bail!("unknown option `{a}` (use {})", known.join(", "));
            }
        }
        Ok(BenchArgs { given })
    }

    /// `name`'s value, parsed, or `default` when it was not given.
    pub fn value<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        match self.text(name) {
            Some(v) => v
                .parse()
                .with_context(|| format!("{name} {v}: not a valid value")),
            None => Ok(default),
        }
    }

    /// `name`'s value as given.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.given.get(name).and_then(|v| v.as_deref())
    }

    /// Whether the flag `name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.given.contains_key(name)
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET /readyz` on a loopback health port: the response when it is 200, else `None`.
pub fn readyz(port: u16) -> Option<String> {
    http_get(port, "/readyz", Duration::from_secs(2)).ok()
}

/// `GET path` over plain HTTP/1.0 on a loopback port, reading at most `timeout` between
/// bytes: the whole answer (status line, headers, body) when it is 200, else an error naming
/// the status line.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect to the HTTP listener")?;
    s.set_read_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    // A read cut short still yields what came, which is then judged by its status line.
    let _ = s.read_to_string(&mut text);
    if !text.starts_with("HTTP/1.0 200") && !text.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", text.lines().next().unwrap_or("no answer"));
    }
    Ok(text)
}

/// `moto_server` (S3 and Secrets Manager) from the test venv, killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub port: u16,
    venv: PathBuf,
}

impl Moto {
    /// Starts moto on `host` (`127.0.0.1`, or `0.0.0.0` when a container must reach it) and
    /// waits until it accepts connections.
    pub fn start(venv: &Path, host: &str) -> Result<Moto> {
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
    pub fn python(&self, code: &str) -> Result<String> {
        let out = checked_output(
            Command::new(self.venv.join("bin/python"))
                .args(["-c", code])
                .env("MOTO_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            "the venv's python",
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn create_bucket(&self, name: &str) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::BenchArgs;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn bench_options_take_values_flags_and_defaults_and_name_the_unknown() {
        let a = BenchArgs::parse(
            &args(&["--runs", "5", "--skip", "--runs", "7"]),
            &["--runs", "--gb"],
            &["--skip"],
        )
        .unwrap();
        assert_eq!(a.value("--runs", 3usize).unwrap(), 7);
        assert!((a.value("--gb", 1.5f64).unwrap() - 1.5).abs() < f64::EPSILON);
        assert!(a.flag("--skip"));
        let bad = BenchArgs::parse(&args(&["--runs", "x"]), &["--runs"], &[]).unwrap();
        assert!(bad
            .value("--runs", 3usize)
            .unwrap_err()
            .to_string()
            .contains("--runs x"));
        let e = BenchArgs::parse(&args(&["--nope"]), &["--runs"], &["--skip"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown option `--nope` (use --runs, --skip)"
        );
        let e = BenchArgs::parse(&args(&["--runs"]), &["--runs"], &[]).unwrap_err();
        assert_eq!(e.to_string(), "--runs takes a value");
    }
}
