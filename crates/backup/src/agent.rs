//! The archive agent: the supervisor's end of `archive_command` and `restore_command`.
//!
//! PostgreSQL runs `ducklake-wal push <socket> %p %f` to archive and `ducklake-wal fetch
//! <socket> %f %p` to restore. The helper sends the file's bytes over the Unix socket; the agent
//! checks the lease, seals the file and creates it in the target, and answers only once the
//! object store has acknowledged the write, so PostgreSQL never recycles WAL that is not safely
//! stored. On fetch, the agent downloads, verifies and returns the file, and prefetches the
//! next segments in parallel (as WAL-G does).
//!
//! Wire format, one request per connection: a header line, then `len` raw bytes where given.
//!
//! ```text
//! push <name> <len>\n<bytes>   →  ok\n | err <message>\n
//! fetch <name>\n               →  ok <len>\n<bytes> | missing\n | err <message>\n
//! backup\n                     →  ok <manifest json>\n | err <message>\n
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use storage::{BackupTarget, Compression, PutOutcome, TargetError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lease::{self, Lease};
use super::wal::{is_wal_file_name, Segment};
use super::{BackupError, BackupManifest, WAL_DIR};

/// How many segments after the requested one a fetch downloads ahead.
const PREFETCH: u64 = 8;
/// The largest file the agent accepts (a WAL segment is at most 1 GiB).
const MAX_FILE: usize = 1 << 30;

/// Counters of the archive, for `/readyz` and the logs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveStats {
    pub archived: u64,
    pub archived_bytes: u64,
    pub last_archived_wal: Option<String>,
    pub last_archived_at: Option<DateTime<Utc>>,
    pub failures: u64,
    pub last_failure: Option<String>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub fetched: u64,
}

/// A request for a base backup, answered with its manifest.
pub type BackupRequest = oneshot::Sender<Result<BackupManifest, BackupError>>;
/// A planned switchover asked for on the socket; answered with what happened, one line.
pub type SwitchoverRequest = oneshot::Sender<Result<String, String>>;

/// Why the agent did not archive a WAL file, or did not take a base backup on request. Its
/// one-line text is what the helper (and so PostgreSQL's log) and `backup now` show.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    #[error("`{0}` is not a WAL file name")]
    NotWalName(String),
    #[error("this instance does not hold the lease of {0}; it does not archive")]
    NoLease(String),
    /// This instance was fenced earlier; the reason it was.
    #[error("{0}")]
    Fenced(String),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("this server takes no base backups yet (still starting or restoring)")]
    NoScheduler,
    #[error("the backup scheduler has stopped")]
    SchedulerStopped,
    #[error("the backup was cancelled")]
    Cancelled,
}

type Prefetched = JoinHandle<Result<Option<Vec<u8>>, TargetError>>;

/// The agent; cheap to clone.
#[derive(Debug, Clone)]
pub struct ArchiveAgent {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    target: BackupTarget,
    compression: Compression,
    segment_bytes: u64,
    /// `None` in restore-only agents (`backup verify`) and on a standby: pushes are refused.
    lease: Mutex<Option<Lease>>,
    stats: Mutex<ArchiveStats>,
    fenced: watch::Sender<Option<String>>,
    prefetched: Mutex<HashMap<String, Prefetched>>,
    backups: Mutex<Option<mpsc::Sender<BackupRequest>>>,
    switchovers: Mutex<Option<mpsc::Sender<SwitchoverRequest>>>,
    last_fetch_error: Mutex<Option<String>>,
}

impl ArchiveAgent {
    pub fn new(
        target: BackupTarget,
        compression: Compression,
        segment_bytes: u64,
        lease: Option<Lease>,
    ) -> Self {
        ArchiveAgent {
            inner: Arc::new(Inner {
                target,
                compression,
                segment_bytes,
                lease: Mutex::new(lease),
                stats: Mutex::default(),
                fenced: watch::channel(None).0,
                prefetched: Mutex::default(),
                backups: Mutex::default(),
                switchovers: Mutex::default(),
                last_fetch_error: Mutex::default(),
            }),
        }
    }

    /// The target this agent writes to.
    pub fn target(&self) -> &BackupTarget {
        &self.inner.target
    }

    /// The lease this agent archives under, if any.
    pub fn lease(&self) -> Option<Lease> {
        self.inner.lease.lock().expect("lease lock").clone()
    }

    /// Archives under `lease` from now on (a standby that took over).
    pub fn set_lease(&self, lease: Lease) {
        *self.inner.lease.lock().expect("lease lock") = Some(lease);
    }

    /// A copy of the counters.
    pub fn stats(&self) -> ArchiveStats {
        self.inner.stats.lock().expect("stats lock").clone()
    }

    /// Fires with the reason once this instance finds it was fenced.
    pub fn fenced(&self) -> watch::Receiver<Option<String>> {
        self.inner.fenced.subscribe()
    }

    /// The last error a WAL download hit, which explains why a restore stopped.
    pub fn last_fetch_error(&self) -> Option<String> {
        self.inner
            .last_fetch_error
            .lock()
            .expect("fetch error lock")
            .clone()
    }

    /// Routes `backup` requests (from `ducklake-catalog backup now`) to `tx`.
    pub fn set_backup_handler(&self, tx: mpsc::Sender<BackupRequest>) {
        *self.inner.backups.lock().expect("backups lock") = Some(tx);
    }

    /// Routes `switchover` requests (from `ducklake-catalog switchover`) to `tx`.
    pub fn set_switchover_handler(&self, tx: mpsc::Sender<SwitchoverRequest>) {
        *self.inner.switchovers.lock().expect("switchovers lock") = Some(tx);
    }

    /// Listens on `socket` (owned by `owner` when given, mode 0600); the returned future serves
    /// it until `cancel` (the caller spawns it: the server into its task set).
    pub fn listen(
        &self,
        socket: &Path,
        owner: Option<(u32, u32)>,
        cancel: CancellationToken,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, BackupError> {
        if socket.exists() {
            std::fs::remove_file(socket).map_err(BackupError::io(format!(
                "remove stale {}",
                socket.display()
            )))?;
        }
        let listener = UnixListener::bind(socket)
            .map_err(BackupError::io(format!("listen on {}", socket.display())))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(socket, Some(uid), Some(gid))
                .map_err(BackupError::io(format!("chown {}", socket.display())))?;
        }
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(BackupError::io(format!("chmod {}", socket.display())))?;
        let agent = self.clone();
        Ok(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let agent = agent.clone();
                            tokio::spawn(async move { agent.serve_one(stream).await });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "archive agent: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        })
    }

    async fn serve_one(&self, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut line = String::new();
        if read.read_line(&mut line).await.is_err() {
            return;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply: Vec<u8> = match words.as_slice() {
            ["push", name, len] => {
                let data = match len.parse::<usize>() {
                    Ok(n) if n <= MAX_FILE => {
                        let mut buf = vec![0; n];
                        match read.read_exact(&mut buf).await {
                            Ok(_) => Ok(buf),
                            Err(e) => Err(format!("reading {name} from the helper: {e}")),
                        }
                    }
                    _ => Err(format!("bad length {len}")),
                };
                match data {
                    Ok(data) => match self.push(name, &data).await {
                        Ok(()) => b"ok\n".to_vec(),
                        Err(e) => {
                            format!("err {}\n", ::base::one_line(&e.to_string())).into_bytes()
                        }
                    },
                    Err(e) => format!("err {e}\n").into_bytes(),
                }
            }
            ["fetch", name] => match self.fetch(name).await {
                Ok(Some(data)) => {
                    let mut out = format!("ok {}\n", data.len()).into_bytes();
                    out.extend_from_slice(&data);
                    out
                }
                Ok(None) => b"missing\n".to_vec(),
                Err(e) => {
                    let e = ::base::one_line(&e.to_string());
                    tracing::error!(wal = %name, error = %e, "restoring a WAL file failed; PostgreSQL stops rather than end recovery early");
                    *self
                        .inner
                        .last_fetch_error
                        .lock()
                        .expect("fetch error lock") = Some(e.clone());
                    format!("err {e}\n").into_bytes()
                }
            },
            ["backup"] => match self.request_backup().await {
                Ok(m) => format!(
                    "ok {}\n",
                    serde_json::to_string(&m).expect("manifest serialises")
                )
                .into_bytes(),
                Err(e) => format!("err {}\n", ::base::one_line(&e.to_string())).into_bytes(),
            },
            ["switchover"] => match self.request_switchover().await {
                Ok(done) => format!("ok {}\n", ::base::one_line(&done)).into_bytes(),
                Err(e) => format!("err {}\n", ::base::one_line(&e)).into_bytes(),
            },
            _ => format!("err unknown request `{}`\n", line.trim()).into_bytes(),
        };
        let _ = write.write_all(&reply).await;
        let _ = write.shutdown().await;
    }

    /// Archives one WAL file; returns only once it is durable in the target.
    pub async fn push(&self, name: &str, data: &[u8]) -> Result<(), ArchiveError> {
        let result = self.push_inner(name, data).await;
        let mut stats = self.inner.stats.lock().expect("stats lock");
        match &result {
            Ok(()) => {
                stats.archived += 1;
                stats.archived_bytes += data.len() as u64;
                stats.last_archived_wal = Some(name.to_owned());
                stats.last_archived_at = Some(Utc::now());
            }
            Err(e) => {
                stats.failures += 1;
                stats.last_failure = Some(::base::one_line(&e.to_string()));
                stats.last_failure_at = Some(Utc::now());
                tracing::warn!(wal = name, error = %e, "archiving a WAL file failed; PostgreSQL keeps it and retries");
            }
        }
        result
    }

    async fn push_inner(&self, name: &str, data: &[u8]) -> Result<(), ArchiveError> {
        if !is_wal_file_name(name) {
            return Err(ArchiveError::NotWalName(name.to_owned()));
        }
        let target = &self.inner.target;
        let Some(lease) = self.lease() else {
            return Err(ArchiveError::NoLease(target.place()));
        };
        if let Some(reason) = self.inner.fenced.borrow().clone() {
            return Err(ArchiveError::Fenced(reason));
        }
        if let Some(newer) = lease::superseded_by(target, &lease).await? {
            let e = lease::fenced_error(target, &newer);
            self.fence(&e.to_string());
            return Err(e.into());
        }
        match target
            .put_sealed(&format!("{WAL_DIR}{name}"), data, self.inner.compression)
            .await
        {
            Ok(PutOutcome::Created) => Ok(()),
            Ok(PutOutcome::AlreadyPresent) => {
                tracing::info!(
                    wal = name,
                    "already archived with identical content (a retried upload)"
                );
                Ok(())
            }
            Err(e @ TargetError::Conflict { .. }) => {
                self.fence(&e.to_string());
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn fence(&self, reason: &str) {
        self.inner.fenced.send_if_modified(|f| {
            if f.is_none() {
                tracing::error!(reason, "fenced: this instance stops archiving");
                *f = Some(reason.to_owned());
                true
            } else {
                false
            }
        });
    }

    /// One archived WAL file, verified; `None` when the archive does not have it.
    pub async fn fetch(&self, name: &str) -> Result<Option<Vec<u8>>, BackupError> {
        if !is_wal_file_name(name) {
            return Err(BackupError::Restore(format!(
                "`{name}` is not a WAL file name"
            )));
        }
        let pending = self
            .inner
            .prefetched
            .lock()
            .expect("prefetch lock")
            .remove(name);
        let got = match pending {
            Some(handle) => match handle.await {
                // A prefetched miss may be stale: ask again.
                Ok(Ok(Some(data))) => Some(data),
                _ => self.download(name).await?,
            },
            None => self.download(name).await?,
        };
        if got.is_some() {
            self.inner.stats.lock().expect("stats lock").fetched += 1;
            self.prefetch_after(name);
        }
        Ok(got)
    }

    async fn download(&self, name: &str) -> Result<Option<Vec<u8>>, BackupError> {
        Ok(self
            .inner
            .target
            .get_sealed(&format!("{WAL_DIR}{name}"))
            .await?)
    }

    fn prefetch_after(&self, name: &str) {
        let bytes = self.inner.segment_bytes;
        let Some(seg) = Segment::parse(name, bytes) else {
            return;
        };
        let mut map = self.inner.prefetched.lock().expect("prefetch lock");
        for n in 1..=PREFETCH {
            let next = Segment {
                timeline: seg.timeline,
                number: seg.number + n,
            }
            .name(bytes);
            if map.contains_key(&next) {
                continue;
            }
            let target = self.inner.target.clone();
            let key = format!("{WAL_DIR}{next}");
            map.insert(
                next,
                tokio::spawn(async move { target.get_sealed(&key).await }),
            );
        }
        // Bound memory: forget prefetches far behind the replay position.
        map.retain(|k, _| Segment::parse(k, bytes).is_none_or(|s| s.number > seg.number));
    }

    async fn request_switchover(&self) -> Result<String, String> {
        match ask(&self.inner.switchovers).await {
            Ok(answer) => answer,
            Err(Unanswered::NoHandler) => Err("this server is not a primary with ha.mode = \"auto\"; run `ducklake-catalog switchover` on the primary".to_owned()),
            Err(Unanswered::Stopped | Unanswered::Dropped) => Err("the server is stopping".to_owned()),
        }
    }

    async fn request_backup(&self) -> Result<BackupManifest, ArchiveError> {
        match ask(&self.inner.backups).await {
            Ok(answer) => Ok(answer?),
            Err(Unanswered::NoHandler) => Err(ArchiveError::NoScheduler),
            Err(Unanswered::Stopped) => Err(ArchiveError::SchedulerStopped),
            Err(Unanswered::Dropped) => Err(ArchiveError::Cancelled),
        }
    }
}

/// Why a request handed to the server's handler got no answer.
enum Unanswered {
    /// No handler is set (this server does not serve such requests).
    NoHandler,
    /// The handler's task ended.
    Stopped,
    /// The handler dropped the request.
    Dropped,
}

/// Hands a request to the handler in `slot` (a `backup` or `switchover` from the socket) and
/// waits for its answer.
async fn ask<R>(slot: &Mutex<Option<mpsc::Sender<oneshot::Sender<R>>>>) -> Result<R, Unanswered> {
    let tx = slot
        .lock()
        .expect("handler lock")
        .clone()
        .ok_or(Unanswered::NoHandler)?;
    let (reply, rx) = oneshot::channel();
    tx.send(reply).await.map_err(|_| Unanswered::Stopped)?;
    rx.await.map_err(|_| Unanswered::Dropped)
}

/// The client side of the agent socket, for `ducklake-catalog backup now`.
#[derive(Debug)]
pub struct AgentClient;

impl AgentClient {
    /// Asks the running server to take a base backup now and waits for it.
    pub async fn backup_now(socket: &Path) -> Result<BackupManifest, BackupError> {
        let json = Self::call(socket, "backup").await?;
        serde_json::from_str(&json)
            .map_err(|e| BackupError::Agent(format!("unreadable answer from the server: {e}")))
    }

    /// Asks the running primary to hand over to a standby and waits until one took over.
    pub async fn switchover(socket: &Path) -> Result<String, BackupError> {
        Self::call(socket, "switchover").await
    }

    /// Sends `request` and returns the text after `ok `; an `err` answer is the error.
    async fn call(socket: &Path, request: &str) -> Result<String, BackupError> {
        let mut stream = UnixStream::connect(socket).await.map_err(|e| {
            BackupError::Agent(format!(
                "cannot reach the running server's archive agent at {} ({e}); is `ducklake-catalog serve` running with backup.target set and the same --home?",
                socket.display()
            ))
        })?;
        stream
            .write_all(format!("{request}\n").as_bytes())
            .await
            .map_err(BackupError::io(format!("send the {request} request")))?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .await
            .map_err(BackupError::io(format!("read the {request} result")))?;
        let reply = reply.trim();
        if let Some(ok) = reply.strip_prefix("ok ") {
            return Ok(ok.to_owned());
        }
        Err(BackupError::Agent(
            reply.strip_prefix("err ").unwrap_or(reply).to_owned(),
        ))
    }
}
