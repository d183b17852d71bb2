//! `ducklake-wal`: the tiny helper PostgreSQL runs as `archive_command` and `restore_command`.
//!
//! It uses only the standard library (PostgreSQL starts it for every WAL file) and holds no
//! credentials: it hands the file to the supervisor's archive agent over a Unix socket and maps
//! the answer to the exit codes PostgreSQL expects.
//!
//! ```text
//! ducklake-wal push  <socket> <path> <name>   archive: 0 stored durably, 1 not (PostgreSQL retries)
//! ducklake-wal fetch <socket> <name> <path>   restore: 0 written, 1 not in the archive,
//!                                             126 error (PostgreSQL stops recovery rather than
//!                                             ending it early and losing the rest of the WAL)
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// How long one request may take: a WAL upload retried by the agent, or a slow download.
const TIMEOUT: Duration = Duration::from_mins(5);
/// Exit code that makes PostgreSQL's startup process stop (any code above 125).
const FATAL: u8 = 126;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["push", socket, path, name] => report(push(socket, path, name), 1),
        ["fetch", socket, name, path] => match fetch(socket, name, path) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => report(Err(e), FATAL),
        },
        _ => {
            eprintln!(
                "usage: ducklake-wal push <socket> <path> <name> | fetch <socket> <name> <path>"
            );
            ExitCode::from(2)
        }
    }
}

fn report(result: Result<(), String>, code: u8) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ducklake-wal: {e}");
            ExitCode::from(code)
        }
    }
}

fn connect(socket: &str) -> Result<UnixStream, String> {
    let s = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the ducklake-catalog archive agent at {socket}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn push(socket: &str, path: &str, name: &str) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| format!("read {path}: {e}"))?;
    let mut s = connect(socket)?;
    s.write_all(format!("push {name} {}\n", data.len()).as_bytes())
        .and_then(|()| s.write_all(&data))
        .map_err(|e| format!("send {name}: {e}"))?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| format!("wait for {name}: {e}"))?;
    match reply.trim() {
        "ok" => Ok(()),
        other => Err(other.strip_prefix("err ").unwrap_or(other).to_owned()),
    }
}

fn fetch(socket: &str, name: &str, path: &str) -> Result<bool, String> {
    let mut s = connect(socket)?;
    s.write_all(format!("fetch {name}\n").as_bytes())
        .map_err(|e| format!("ask for {name}: {e}"))?;
    let mut reader = BufReader::new(s);
    let mut header = String::new();
    reader
        .read_line(&mut header)
        .map_err(|e| format!("wait for {name}: {e}"))?;
    let header = header.trim();
    if header == "missing" {
        return Ok(false);
    }
    let Some(len) = header.strip_prefix("ok ") else {
        return Err(header.strip_prefix("err ").unwrap_or(header).to_owned());
    };
    let len: usize = len.parse().map_err(|_| format!("bad answer `{header}`"))?;
    let mut data = vec![0; len];
    reader
        .read_exact(&mut data)
        .map_err(|e| format!("receive {name}: {e}"))?;
    // Write beside the destination and rename, so PostgreSQL never sees half a file.
    let dest = Path::new(path);
    let tmp = dest.with_extension("ducklake-wal.tmp");
    std::fs::write(&tmp, &data)
        .and_then(|()| std::fs::rename(&tmp, dest))
        .map_err(|e| format!("write {path}: {e}"))?;
    Ok(true)
}
