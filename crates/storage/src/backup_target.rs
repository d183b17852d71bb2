//! A backup target: the S3 prefix (or local folder) that holds WAL, base backups and the lease.
//!
//! Small objects (WAL segments, history files) are stored *sealed*: a 48-byte header with a
//! magic, the compression, the raw length and the SHA-256 of the raw bytes, then the (optionally
//! zstd-compressed) payload. They are written with [`PutMode::Create`] (S3 `If-None-Match: *`),
//! so an object is never replaced: writing the same content again is a no-op, writing different
//! content is a [`TargetError::Conflict`]. Reading checks the checksum, so a corrupted or
//! truncated object is an error, never silently replayed.
//!
//! Large objects (base backups) are streamed with multipart uploads through
//! [`BackupTarget::writer`] and read back as a stream through [`BackupTarget::reader`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;

use crate::store::{classify, key_prefix, one_line, open_store, Operation, S3Settings};
use crate::{DataPath, StorageError};

const MAGIC: &[u8; 4] = b"DLCK";
const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 48;

/// How a sealed object's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    #[default]
    Zstd,
}

impl Compression {
    fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }
}

/// What [`BackupTarget::put_sealed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was created.
    Created,
    /// An identical object was already there (a retried upload).
    AlreadyPresent,
}

/// One listed object, its name relative to the target's prefix.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// Why a backup-target operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{place}: object {key} is corrupt ({reason}); it must not be replayed — restore from another base backup, or point-in-time before it")]
    Corrupt {
        place: String,
        key: String,
        reason: String,
    },
    #[error("{place}: {key} already exists with different content; another cluster writes into this target, so this one refuses to overwrite it (give each catalog its own backup target)")]
    Conflict { place: String, key: String },
    #[error("{place}: {what}: {detail}")]
    Io {
        place: String,
        what: String,
        detail: String,
    },
}

/// Seals `raw`: header with checksum, then the payload.
pub fn encode_object(raw: &[u8], compression: Compression) -> Result<Vec<u8>, std::io::Error> {
    let payload = match compression {
        Compression::None => raw.to_vec(),
        Compression::Zstd => zstd::bulk::compress(raw, 3)?,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(compression.code());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(raw.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(raw));
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Opens a sealed object: checks the header, decompresses and verifies length and checksum.
pub fn decode_object(sealed: &[u8]) -> Result<Vec<u8>, String> {
    if sealed.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than its header", sealed.len()));
    }
    if &sealed[..4] != MAGIC || sealed[4] != FORMAT_VERSION {
        return Err("not a ducklake-catalog sealed object (bad magic or version)".into());
    }
    let len = u64::from_le_bytes(sealed[8..16].try_into().expect("8 bytes"));
    let len = usize::try_from(len).map_err(|_| "length does not fit in memory".to_owned())?;
    let payload = &sealed[HEADER_LEN..];
    let raw = match sealed[5] {
        0 => payload.to_vec(),
        1 => zstd::bulk::decompress(payload, len).map_err(|e| format!("zstd: {e}"))?,
        other => return Err(format!("unknown compression code {other}")),
    };
    if raw.len() != len {
        return Err(format!("{} bytes, header says {len}", raw.len()));
    }
    if Sha256::digest(&raw).as_slice() != &sealed[16..48] {
        return Err("SHA-256 mismatch".into());
    }
    Ok(raw)
}

/// The place backups live, with the object store that reaches it.
#[derive(Clone)]
pub struct BackupTarget {
    store: Arc<dyn ObjectStore>,
    path: DataPath,
    prefix: String,
}

impl fmt::Debug for BackupTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupTarget")
            .field("path", &self.path.to_string())
            .finish_non_exhaustive()
    }
}

impl BackupTarget {
    /// Opens the target; nothing is read or written yet.
    pub fn open(path: &DataPath, s3: &S3Settings) -> Result<Self, TargetError> {
        let store = open_store(path, s3)
            .map_err(|e| classify("backup target", path, Operation::Connect, &e))?;
        Ok(BackupTarget {
            store,
            path: path.clone(),
            prefix: key_prefix(path),
        })
    }

    /// `backup target s3://bucket/prefix/`, for messages.
    pub fn place(&self) -> String {
        format!("backup target {}", self.path)
    }

    /// The target's own path.
    pub fn path(&self) -> &DataPath {
        &self.path
    }

    fn key(&self, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{name}", self.prefix))
    }

    fn fail(&self, op: Operation, e: &object_store::Error) -> TargetError {
        TargetError::Storage(classify("backup target", &self.path, op, e))
    }

    /// Seals and creates `name`; an identical existing object is fine, a different one is a
    /// [`TargetError::Conflict`].
    pub async fn put_sealed(
        &self,
        name: &str,
        raw: &[u8],
        compression: Compression,
    ) -> Result<PutOutcome, TargetError> {
        let sealed = encode_object(raw, compression).map_err(|e| TargetError::Io {
            place: self.place(),
            what: format!("compress {name}"),
            detail: e.to_string(),
        })?;
        if self.create(name, Bytes::from(sealed)).await? {
            return Ok(PutOutcome::Created);
        }
        match self.get_sealed(name).await {
            Ok(Some(existing)) if existing == raw => Ok(PutOutcome::AlreadyPresent),
            Ok(_) | Err(TargetError::Corrupt { .. }) => Err(TargetError::Conflict {
                place: self.place(),
                key: name.to_owned(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Reads and verifies a sealed object; `None` when it does not exist.
    pub async fn get_sealed(&self, name: &str) -> Result<Option<Vec<u8>>, TargetError> {
        let Some(sealed) = self.get(name).await? else {
            return Ok(None);
        };
        decode_object(&sealed)
            .map(Some)
            .map_err(|reason| TargetError::Corrupt {
                place: self.place(),
                key: name.to_owned(),
                reason,
            })
    }

    /// Creates `name` with `body` unless it exists; true when this call created it.
    pub async fn create(&self, name: &str, body: Bytes) -> Result<bool, TargetError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.key(name), PutPayload::from_bytes(body), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.fail(Operation::Put, &e)),
        }
    }

    /// Writes `name`, replacing what is there (the lease heartbeat; never history).
    pub async fn put(&self, name: &str, body: Bytes) -> Result<(), TargetError> {
        self.store
            .put(&self.key(name), PutPayload::from_bytes(body))
            .await
            .map(|_| ())
            .map_err(|e| self.fail(Operation::Put, &e))
    }

    /// The whole object `name`, or `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Bytes>, TargetError> {
        let read = async { self.store.get(&self.key(name)).await?.bytes().await };
        match read.await {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(Operation::Get, &e)),
        }
    }

    /// Whether `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool, TargetError> {
        match self.store.head(&self.key(name)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.fail(Operation::Head, &e)),
        }
    }

    /// Every object under `dir` (relative, e.g. `wal/`), recursively.
    pub async fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>, TargetError> {
        self.list_from(dir, None).await
    }

    /// The objects under `dir` whose names sort after `after` (e.g. `wal/000000010000000000000042`):
    /// S3 starts the listing there instead of at the beginning of a long WAL folder.
    pub async fn list_after(&self, dir: &str, after: &str) -> Result<Vec<ObjectInfo>, TargetError> {
        self.list_from(dir, Some(after)).await
    }

    async fn list_from(
        &self,
        dir: &str,
        after: Option<&str>,
    ) -> Result<Vec<ObjectInfo>, TargetError> {
        let prefix = self.key(dir.trim_end_matches('/'));
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len()
        };
        let stream = match after {
            Some(after) => self.store.list_with_offset(Some(&prefix), &self.key(after)),
            None => self.store.list(Some(&prefix)),
        };
        let metas: Vec<_> = stream
            .try_collect()
            .await
            .map_err(|e| self.fail(Operation::List, &e))?;
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .map(|m| ObjectInfo {
                name: m.location.as_ref().get(strip..).unwrap_or("").to_owned(),
                size: m.size,
                last_modified: m.last_modified,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes `name`; a missing object is fine.
    pub async fn delete(&self, name: &str) -> Result<(), TargetError> {
        match self.store.delete(&self.key(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(Operation::Delete, &e)),
        }
    }

    /// A streamed (multipart) upload to `name`; call `shutdown` to complete it.
    pub fn writer(&self, name: &str) -> BufWriter {
        BufWriter::with_capacity(Arc::clone(&self.store), self.key(name), 16 << 20)
            .with_max_concurrency(4)
    }

    /// A streamed download of `name`.
    pub async fn reader(
        &self,
        name: &str,
    ) -> Result<impl AsyncRead + Send + Unpin + 'static, TargetError> {
        let got = self
            .store
            .get(&self.key(name))
            .await
            .map_err(|e| self.fail(Operation::Get, &e))?;
        let place = self.place();
        let stream = got.into_stream().map_err(move |e| {
            std::io::Error::other(format!(
                "{place}: download failed: {}",
                one_line(&e.to_string())
            ))
        });
        Ok(tokio_util::io::StreamReader::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_objects_round_trip_and_detect_damage() {
        let raw: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [Compression::None, Compression::Zstd] {
            let mut sealed = encode_object(&raw, c).unwrap();
            assert_eq!(decode_object(&sealed).unwrap(), raw);
            let last = sealed.len() - 1;
            sealed[last] ^= 0x55;
            assert!(decode_object(&sealed).is_err(), "flipped byte not caught");
            assert!(decode_object(&sealed[..sealed.len() / 2]).is_err());
        }
        assert!(encode_object(&raw, Compression::Zstd).unwrap().len() < raw.len() / 4);
    }

    #[tokio::test]
    async fn sealed_put_never_overwrites_different_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = DataPath::parse(dir.path().to_str().unwrap()).unwrap();
        let t = BackupTarget::open(&path, &S3Settings::default()).unwrap();
        let name = "wal/000000010000000000000001";
        assert_eq!(
            t.put_sealed(name, b"one", Compression::Zstd).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            t.put_sealed(name, b"one", Compression::Zstd).await.unwrap(),
            PutOutcome::AlreadyPresent
        );
        let err = t
            .put_sealed(name, b"two", Compression::Zstd)
            .await
            .unwrap_err();
        assert!(matches!(err, TargetError::Conflict { .. }), "{err}");
        assert_eq!(t.get_sealed(name).await.unwrap().unwrap(), b"one");
        assert!(t.get_sealed("wal/missing").await.unwrap().is_none());
        let listed = t.list("wal/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, name);
    }
}
