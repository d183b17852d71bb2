//! Base backups: `pg_basebackup` as a tar on stdout, compressed and streamed to the target as a
//! multipart upload — nothing is staged on local disk.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use sha2::{Digest, Sha256};
use storage::{BackupTarget, Compression};
use tokio_util::io::SyncIoBridge;

use super::wal::Lsn;
use super::{data_object, manifest_object, BackupError, BackupManifest, WAL_DIR};
use pg_cluster::{Cluster, ControlData, SUPERUSER};

/// How long a finished backup waits for its last WAL segment to reach the target.
const WAL_WAIT: Duration = Duration::from_mins(2);

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what passes through.
pub(crate) struct HashingReader<R> {
    pub(crate) inner: R,
    pub(crate) sha: Sha256,
    pub(crate) bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What the streaming part produced.
struct Streamed {
    raw_bytes: u64,
    stored_bytes: u64,
    sha256: String,
}

/// Takes a base backup of the running `cluster` into `target`.
pub async fn take(
    cluster: &Cluster,
    target: &BackupTarget,
    compression: Compression,
    control: &ControlData,
) -> Result<BackupManifest, BackupError> {
    let started = Instant::now();
    let start_time = Utc::now();
    let id = start_time.format("%Y%m%dT%H%M%S%3fZ").to_string();
    let comp = match compression {
        Compression::Zstd => "zstd",
        Compression::None => "none",
    };
    let object = data_object(&id, comp);
    // This backup starts at a checkpoint after the current one: its history file sorts after
    // the current redo segment, which bounds the listing of a long WAL folder below.
    let redo_wal_file = cluster
        .control_data()
        .await
        .map_or_else(|_| control.redo_wal_file.clone(), |c| c.redo_wal_file);
    tracing::info!(backup = %id, target = %target.path(), "base backup started");
    let mut cmd = Command::new(cluster.bins.pg_basebackup());
    cmd.arg("--host")
        .arg(&cluster.socket_dir)
        .args(["--port", &cluster.port.to_string()])
        .args(["--username", SUPERUSER, "--no-password"])
        .args(["--pgdata", "-", "--format", "tar", "--wal-method", "none"])
        .args(["--checkpoint", "fast", "--label", &id])
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let writer = target.writer(&object);
    let handle = tokio::runtime::Handle::current();
    let streamed = tokio::task::spawn_blocking(move || stream(cmd, writer, compression, &handle))
        .await
        .expect("the backup stream does not panic");
    let streamed = match streamed {
        Ok(s) => s,
        Err(e) => {
            let _ = target.delete(&object).await;
            return Err(e);
        }
    };
    // PostgreSQL archives a backup history file (`….backup`) carrying our label and the WAL
    // range, and pg_basebackup returns only once it and the last segment are archived.
    let range = find_history(target, &id, &redo_wal_file).await?;
    let stop_wal = range.stop_file.clone();
    let deadline = Instant::now() + WAL_WAIT;
    while !target.exists(&format!("{WAL_DIR}{stop_wal}")).await? {
        if Instant::now() > deadline {
            return Err(not_archived(target, &format!("WAL segment {stop_wal}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let manifest = BackupManifest {
        id: id.clone(),
        system_identifier: control.system_identifier.clone(),
        timeline: range.timeline,
        start_lsn: range.start_lsn.to_string(),
        stop_lsn: range.stop_lsn.to_string(),
        start_wal: range.start_file,
        stop_wal,
        start_time,
        stop_time: Utc::now(),
        raw_bytes: streamed.raw_bytes,
        stored_bytes: streamed.stored_bytes,
        sha256: streamed.sha256,
        compression: comp.into(),
        segment_bytes: control.segment_bytes,
        product_version: env!("CARGO_PKG_VERSION").into(),
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    target.create(&manifest_object(&id), body.into()).await?;
    tracing::info!(
        backup = %id,
        raw_bytes = manifest.raw_bytes,
        stored_bytes = manifest.stored_bytes,
        wal_range = %format!("{}..{}", manifest.start_wal, manifest.stop_wal),
        elapsed_ms = started.elapsed().as_millis(),
        "base backup complete"
    );
    Ok(manifest)
}

fn stream(
    mut cmd: Command,
    writer: storage::TargetWriter,
    compression: Compression,
    handle: &tokio::runtime::Handle,
) -> Result<Streamed, BackupError> {
    let fail =
        |what: &str, e: &dyn std::fmt::Display| BackupError::BaseBackup(format!("{what}: {e}"));
    let mut child = cmd.spawn().map_err(|e| fail("run pg_basebackup", &e))?;
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut sink = Hashing {
        inner: SyncIoBridge::new_with_handle(writer, handle.clone()),
        sha: Sha256::new(),
        bytes: 0,
    };
    let copied = (|| -> std::io::Result<u64> {
        match compression {
            Compression::Zstd => {
                let mut enc = zstd::Encoder::new(&mut sink, 3)?;
                enc.multithread(2)?;
                let n = std::io::copy(&mut stdout, &mut enc)?;
                enc.finish()?;
                Ok(n)
            }
            Compression::None => std::io::copy(&mut stdout, &mut sink),
        }
    })();
    let status = child
        .wait()
        .map_err(|e| fail("wait for pg_basebackup", &e))?;
    let stderr = stderr_thread.join().unwrap_or_default();
    let abort = |sink: Hashing<SyncIoBridge<storage::TargetWriter>>| {
        let mut w = sink.inner.into_inner();
        let _ = handle.block_on(w.abort());
    };
    let raw_bytes = match copied {
        Ok(n) if status.success() => n,
        Ok(_) => {
            abort(sink);
            return Err(BackupError::BaseBackup(format!(
                "pg_basebackup failed ({status}): {}",
                ::base::one_line(stderr.lines().last().unwrap_or(""))
            )));
        }
        Err(e) => {
            let _ = child.kill();
            abort(sink);
            return Err(fail("upload the backup stream", &e));
        }
    };
    sink.inner
        .shutdown()
        .map_err(|e| fail("complete the upload", &e))?;
    Ok(Streamed {
        raw_bytes,
        stored_bytes: sink.bytes,
        sha256: hex(&sink.sha.finalize()),
    })
}

fn not_archived(target: &BackupTarget, what: &str) -> BackupError {
    BackupError::BaseBackup(format!(
        "{what} did not reach {} within {} s; check the archive (see /readyz backup.archive)",
        target.place(),
        WAL_WAIT.as_secs()
    ))
}

/// The WAL range of one backup, from its backup history file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HistoryRange {
    start_lsn: Lsn,
    start_file: String,
    stop_lsn: Lsn,
    stop_file: String,
    timeline: u32,
    label: String,
}

/// Parses PostgreSQL's backup history file (`START WAL LOCATION: 0/2000028 (file 0000…)`).
fn parse_history(text: &str) -> Option<HistoryRange> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let location = |name: &str| -> Option<(Lsn, String)> {
        let v = field(name)?;
        let (lsn, rest) = v.split_once(' ')?;
        let file = rest.trim().strip_prefix("(file ")?.strip_suffix(')')?;
        Some((Lsn::parse(lsn)?, file.to_owned()))
    };
    let (start_lsn, start_file) = location("START WAL LOCATION:")?;
    let (stop_lsn, stop_file) = location("STOP WAL LOCATION:")?;
    Some(HistoryRange {
        start_lsn,
        start_file,
        stop_lsn,
        stop_file,
        timeline: field("START TIMELINE:")?.parse().ok()?,
        label: field("LABEL:")?.to_owned(),
    })
}

/// Finds the archived backup history file labelled `label` among those after `redo_wal_file`
/// (newest first).
async fn find_history(
    target: &BackupTarget,
    label: &str,
    redo_wal_file: &str,
) -> Result<HistoryRange, BackupError> {
    let deadline = Instant::now() + WAL_WAIT;
    let after = format!("{WAL_DIR}{redo_wal_file}");
    loop {
        let mut names: Vec<String> = target
            .list_after(WAL_DIR, &after)
            .await?
            .into_iter()
            .map(|o| o.name)
            .filter(|n| n.ends_with(".backup"))
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        for name in names {
            if let Some(raw) = target.get_sealed(&name).await? {
                let parsed = parse_history(&String::from_utf8_lossy(&raw));
                if let Some(range) = parsed.filter(|r| r.label == label) {
                    return Ok(range);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(not_archived(
                target,
                &format!("the backup history file of {label}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_wal_range_from_a_backup_history_file() {
        let text = "START WAL LOCATION: 0/2000028 (file 000000030000000000000002)\n\
                    STOP WAL LOCATION: 0/3000100 (file 000000030000000000000003)\n\
                    CHECKPOINT LOCATION: 0/2000060\n\
                    BACKUP METHOD: streamed\n\
                    BACKUP FROM: primary\n\
                    START TIME: 2026-11-26 17:19:11 UTC\n\
                    LABEL: 20261126T171911460Z\n\
                    START TIMELINE: 3\n\
                    STOP TIME: 2026-11-26 17:19:12 UTC\n\
                    STOP TIMELINE: 3\n";
        let r = parse_history(text).unwrap();
        assert_eq!(r.start_file, "000000030000000000000002");
        assert_eq!(r.stop_file, "000000030000000000000003");
        assert_eq!((r.timeline, r.label.as_str()), (3, "20261126T171911460Z"));
        assert_eq!(r.stop_lsn.to_string(), "0/3000100");
        assert!(parse_history("LABEL: x").is_none());
    }
}
