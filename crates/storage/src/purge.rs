//! Removing every object under a data path: `lake drop --delete-data`. The same
//! [`ObjectStore`](object_store::ObjectStore) calls for local folders and S3.

use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;

use crate::store::{classify, key_prefix, open_store, Operation, S3Settings, StorageError};
use crate::DataPath;

/// Deletes every object under `path`, in batches (S3 `DeleteObjects` takes up to 1,000 keys).
/// `progress(deleted, listed)` is called after each batch. Returns how many were deleted; a
/// failure leaves the rest in place, so running it again finishes the job.
pub async fn purge(
    path: &DataPath,
    s3: &S3Settings,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, StorageError> {
    let fail = |op: Operation, e: &object_store::Error| classify("data path", path, op, e);
    let store = open_store(path, s3).map_err(|e| fail(Operation::Connect, &e))?;
    let prefix = key_prefix(path);
    let list_prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
    let keys: Vec<ObjectPath> = store
        .list(list_prefix.as_ref())
        .try_filter(|m| futures::future::ready(crate::objects::really_under(path, &m.location)))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .map_err(|e| fail(Operation::List, &e))?;
    let listed = keys.len() as u64;
    progress(0, listed);
    let deleted =
        crate::objects::delete_keys(store.as_ref(), path, &keys, |d| progress(d, listed)).await?;
    if let DataPath::Local(dir) = path {
        remove_empty_folders(dir);
    }
    Ok(deleted)
}

/// Local folders outlive their files; leave none behind (nor the data path itself).
fn remove_empty_folders(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_folders(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn purge_removes_every_object_and_folder_and_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lakes/sales");
        for i in 0..1203 {
            let sub = lake.join(format!("main/t{}", i % 3));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("f{i}.parquet")), b"x").unwrap();
        }
        let neighbour = dir.path().join("lakes/sales2/keep.parquet");
        std::fs::create_dir_all(neighbour.parent().unwrap()).unwrap();
        std::fs::write(&neighbour, b"x").unwrap();
        let path = DataPath::parse(lake.to_str().unwrap()).unwrap();
        let mut calls = Vec::new();
        let n = purge(&path, &S3Settings::default(), |d, l| calls.push((d, l)))
            .await
            .unwrap();
        assert_eq!(n, 1203);
        assert_eq!(calls.first(), Some(&(0, 1203)));
        assert_eq!(calls.last(), Some(&(1203, 1203)));
        assert_eq!(
            calls.len(),
            2 + 1,
            "one call per batch of 1,000 and one before"
        );
        assert!(!lake.exists(), "empty folders are removed too");
        assert!(neighbour.exists(), "a neighbouring prefix is not touched");
    }
}
