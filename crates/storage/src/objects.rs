//! The objects under a data path, as the catalog's maintenance sees them: listing (`orphans`,
//! `gc`), sizes of files about to be deleted, deleting chosen objects, and verifying files
//! against what the catalog recorded (`verify`: existence and size by HEAD; with `deep`, the
//! Parquet footer's row count, read with two ranged GETs and no full download).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use serde::Serialize;

use crate::store::{classify, key_prefix, open_store, Operation, S3Settings, StorageError};
use crate::DataPath;

/// Requests in flight at once.
const PARALLEL: usize = 32;

/// An object under a data path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// Absolute, as DuckLake writes it: the data path followed by the object's name.
    pub path: String,
    pub size: u64,
    /// UTC, RFC 3339.
    pub last_modified: String,
    /// Seconds since it was last written.
    pub age_secs: u64,
}

/// A file the catalog says exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Absolute: the data path followed by the file's name.
    pub path: String,
    pub size: u64,
    /// Rows the catalog recorded (a delete file: deleted rows), checked with `deep`.
    pub rows: Option<u64>,
}

/// What is wrong with one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    Missing {
        path: String,
    },
    Size {
        path: String,
        recorded: u64,
        found: u64,
    },
    Rows {
        path: String,
        recorded: u64,
        found: u64,
    },
    Unreadable {
        path: String,
        error: String,
    },
    /// Outside the data path: not checked.
    Elsewhere {
        path: String,
    },
}

fn store_and_prefix(
    path: &DataPath,
    s3: &S3Settings,
) -> Result<(std::sync::Arc<dyn ObjectStore>, String), StorageError> {
    let store =
        open_store(path, s3).map_err(|e| classify("data path", path, Operation::Connect, &e))?;
    Ok((store, key_prefix(path)))
}

/// The object key of an absolute file path under `path`, if it is under it.
fn key_of(path: &DataPath, prefix: &str, file: &str) -> Option<ObjectPath> {
    let root = path.to_string();
    let relative = file.strip_prefix(&root)?;
    Some(ObjectPath::from(format!("{prefix}{relative}")))
}

/// Whether the object `key` of a local data path really lies in its folder: a symbolic link in
/// the folder (a client on the same machine can make one) must never lead a listing or a delete
/// to files elsewhere, such as the server's PGDATA or another lake. S3 keys always do.
pub(crate) fn really_under(path: &DataPath, key: &ObjectPath) -> bool {
    let DataPath::Local(root) = path else {
        return true;
    };
    let Ok(real_root) = std::fs::canonicalize(root) else {
        return false;
    };
    let file = root.join(key.as_ref());
    // The folder holding the object, resolved; the object itself may be a link (deleting one
    // removes the link only, and a listing shows it as what it is).
    let parent = file.parent().map(std::fs::canonicalize);
    matches!(parent, Some(Ok(p)) if p.starts_with(&real_root))
        && std::fs::symlink_metadata(&file).map_or(true, |m| !m.file_type().is_symlink())
}

/// Every object under `path`.
pub async fn list(path: &DataPath, s3: &S3Settings) -> Result<Vec<Listed>, StorageError> {
    let (store, prefix) = store_and_prefix(path, s3)?;
    let list_prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
    let root = path.to_string();
    let now = chrono::Utc::now();
    store
        .list(list_prefix.as_ref())
        .try_filter(|m| futures::future::ready(really_under(path, &m.location)))
        .map_ok(|m| {
            let key = m.location.to_string();
            let relative = key
                .strip_prefix(&prefix)
                .unwrap_or(&key)
                .trim_start_matches('/');
            Listed {
                path: format!("{root}{relative}"),
                size: m.size,
                last_modified: m
                    .last_modified
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                age_secs: u64::try_from((now - m.last_modified).num_seconds()).unwrap_or(0),
            }
        })
        .try_collect()
        .await
        .map_err(|e| classify("data path", path, Operation::List, &e))
}

/// The keys of those `files` (absolute paths) that lie under `path`.
fn keys_under(path: &DataPath, prefix: &str, files: &[String]) -> Vec<ObjectPath> {
    files
        .iter()
        .filter_map(|f| key_of(path, prefix, f))
        .collect()
}

/// Deletes `keys` in batches (S3 `DeleteObjects` takes up to 1,000), counting missing ones as
/// deleted; `progress(deleted)` after each batch.
pub(crate) async fn delete_keys(
    store: &dyn ObjectStore,
    path: &DataPath,
    keys: &[ObjectPath],
    mut progress: impl FnMut(u64),
) -> Result<u64, StorageError> {
    let mut deleted = 0;
    let keys: Vec<ObjectPath> = keys
        .iter()
        .filter(|k| really_under(path, k))
        .cloned()
        .collect();
    for batch in keys.chunks(1000) {
        let locations = futures::stream::iter(batch.iter().cloned().map(Ok)).boxed();
        let results: Vec<_> = store.delete_stream(locations).collect().await;
        for r in results {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(classify("data path", path, Operation::Delete, &e)),
            }
        }
        progress(deleted);
    }
    Ok(deleted)
}

/// The total size of `files` (absolute paths under `path`); missing ones count 0.
pub async fn object_sizes(
    path: &DataPath,
    s3: &S3Settings,
    files: &[String],
) -> Result<u64, StorageError> {
    let (store, prefix) = store_and_prefix(path, s3)?;
    let keys = keys_under(path, &prefix, files);
    let sizes: Vec<u64> = futures::stream::iter(keys)
        .map(|k| {
            let store = store.clone();
            async move {
                match store.head(&k).await {
                    Ok(m) => Ok(m.size),
                    Err(object_store::Error::NotFound { .. }) => Ok(0),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await
        .map_err(|e| classify("data path", path, Operation::Get, &e))?;
    Ok(sizes.iter().sum())
}

/// Deletes `files` (absolute paths under `path`); returns how many were deleted.
pub async fn delete(
    path: &DataPath,
    s3: &S3Settings,
    files: &[String],
) -> Result<u64, StorageError> {
    let (store, prefix) = store_and_prefix(path, s3)?;
    delete_keys(
        store.as_ref(),
        path,
        &keys_under(path, &prefix, files),
        |_| {},
    )
    .await
}

/// Checks each expected file: it exists with the recorded size and, with `deep`, its Parquet
/// footer holds the recorded row count. `progress(checked, total)` after each file.
pub async fn verify(
    path: &DataPath,
    s3: &S3Settings,
    files: &[Expected],
    deep: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Vec<Problem>, StorageError> {
    let (store, prefix) = store_and_prefix(path, s3)?;
    let total = files.len() as u64;
    let checked = AtomicU64::new(0);
    let checks = futures::stream::iter(files)
        .map(|f| {
            let store = store.clone();
            let key = key_of(path, &prefix, &f.path);
            let checked = &checked;
            async move {
                let r = match key {
                    None => Ok(Some(Problem::Elsewhere {
                        path: f.path.clone(),
                    })),
                    Some(key) => check_one(store.as_ref(), &key, f, deep).await,
                };
                progress(checked.fetch_add(1, Ordering::SeqCst) + 1, total);
                r
            }
        })
        .buffer_unordered(PARALLEL);
    let found: Vec<Option<Problem>> = checks
        .try_collect()
        .await
        .map_err(|e| classify("data path", path, Operation::Get, &e))?;
    let mut problems: Vec<Problem> = found.into_iter().flatten().collect();
    problems.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    Ok(problems)
}

async fn check_one(
    store: &dyn ObjectStore,
    key: &ObjectPath,
    f: &Expected,
    deep: bool,
) -> Result<Option<Problem>, object_store::Error> {
    let meta = match store.head(key).await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => {
            return Ok(Some(Problem::Missing {
                path: f.path.clone(),
            }))
        }
        Err(e) => return Err(e),
    };
    if meta.size != f.size {
        return Ok(Some(Problem::Size {
            path: f.path.clone(),
            recorded: f.size,
            found: meta.size,
        }));
    }
    let (true, Some(recorded)) = (deep, f.rows) else {
        return Ok(None);
    };
    Ok(match parquet_rows(store, key, meta.size).await {
        Ok(found) if found == recorded => None,
        Ok(found) => Some(Problem::Rows {
            path: f.path.clone(),
            recorded,
            found,
        }),
        Err(error) => Some(Problem::Unreadable {
            path: f.path.clone(),
            error,
        }),
    })
}

/// The row count in a Parquet file's footer: the last 8 bytes give the footer's length and the
/// `PAR1` magic, a second ranged read fetches the footer.
async fn parquet_rows(store: &dyn ObjectStore, key: &ObjectPath, size: u64) -> Result<u64, String> {
    if size < 12 {
        return Err(format!("{size} bytes is too short for a Parquet file"));
    }
    let tail: Bytes = store
        .get_range(key, size - 8..size)
        .await
        .map_err(|e| e.to_string())?;
    if &tail[4..] != b"PAR1" {
        return Err("no Parquet magic at the end of the file".into());
    }
    let footer_len = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
    if footer_len + 12 > size {
        return Err(format!("footer length {footer_len} exceeds the file"));
    }
    let footer = store
        .get_range(key, size - 8 - footer_len..size - 8)
        .await
        .map_err(|e| e.to_string())?;
    let meta = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&footer)
        .map_err(|e| format!("footer: {e}"))?;
    u64::try_from(meta.file_metadata().num_rows()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &std::path::Path) -> DataPath {
        DataPath::parse(dir.to_str().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn verify_names_missing_resized_and_outside_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = local(dir.path());
        std::fs::create_dir_all(dir.path().join("main/t")).unwrap();
        std::fs::write(dir.path().join("main/t/a.parquet"), b"12345").unwrap();
        std::fs::write(dir.path().join("main/t/b.parquet"), b"123").unwrap();
        let root = path.to_string();
        let files = vec![
            Expected {
                path: format!("{root}main/t/a.parquet"),
                size: 5,
                rows: None,
            },
            Expected {
                path: format!("{root}main/t/b.parquet"),
                size: 5,
                rows: None,
            },
            Expected {
                path: format!("{root}main/t/c.parquet"),
                size: 1,
                rows: None,
            },
            Expected {
                path: "/elsewhere/d.parquet".into(),
                size: 1,
                rows: None,
            },
        ];
        let calls = AtomicU64::new(0);
        let problems = verify(&path, &S3Settings::default(), &files, false, &|_, total| {
            assert_eq!(total, 4);
            calls.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.contains(&Problem::Size {
            path: format!("{root}main/t/b.parquet"),
            recorded: 5,
            found: 3
        }));
        assert!(problems.contains(&Problem::Missing {
            path: format!("{root}main/t/c.parquet")
        }));
        assert!(problems.contains(&Problem::Elsewhere {
            path: "/elsewhere/d.parquet".into()
        }));
        let deep = verify(
            &path,
            &S3Settings::default(),
            &[Expected {
                path: format!("{root}main/t/a.parquet"),
                size: 5,
                rows: Some(1),
            }],
            true,
            &|_, _| {},
        )
        .await
        .unwrap();
        assert!(matches!(deep[0], Problem::Unreadable { .. }), "{deep:?}");
    }

    #[tokio::test]
    async fn list_sizes_and_delete_speak_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = local(dir.path());
        std::fs::create_dir_all(dir.path().join("x")).unwrap();
        std::fs::write(dir.path().join("x/one"), b"1").unwrap();
        std::fs::write(dir.path().join("x/two"), b"22").unwrap();
        let s3 = S3Settings::default();
        let mut listed = list(&path, &s3).await.unwrap();
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        let root = path.to_string();
        assert_eq!(listed[0].path, format!("{root}x/one"));
        assert_eq!(listed[1].size, 2);
        assert!(listed[0].age_secs < 60);
        let all: Vec<String> = listed.iter().map(|l| l.path.clone()).collect();
        assert_eq!(object_sizes(&path, &s3, &all).await.unwrap(), 3);
        assert_eq!(delete(&path, &s3, &all[..1]).await.unwrap(), 1);
        assert!(!dir.path().join("x/one").exists() && dir.path().join("x/two").exists());
    }
}
