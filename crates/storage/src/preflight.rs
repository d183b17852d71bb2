//! The storage preflight: prove a data path is usable before a lake is reported ready.
//!
//! Local folders and S3 prefixes go through the same [`ObjectStore`] calls, so one check (and
//! one test suite) covers both backends: put a small marker object, read it back, list the
//! prefix, delete the marker.

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::PutPayload;

use crate::store::{classify, key_prefix, open_store, Operation, S3Settings, StorageError};
use crate::DataPath;

/// Checks that the data path can be listed, written, read and cleaned under its prefix.
pub async fn preflight(path: &DataPath, s3: &S3Settings) -> Result<(), StorageError> {
    let fail = |op: Operation, e: &object_store::Error| classify("data path", path, op, e);
    let store = open_store(path, s3).map_err(|e| fail(Operation::Connect, &e))?;
    let prefix = key_prefix(path);
    let marker = ObjectPath::from(format!(
        "{prefix}.ducklake-catalog-preflight-{}",
        uuid::Uuid::new_v4()
    ));
    let body = Bytes::from_static(b"ducklake-catalog preflight\n");
    store
        .put(&marker, PutPayload::from_bytes(body.clone()))
        .await
        .map_err(|e| fail(Operation::Put, &e))?;
    let read = async { store.get(&marker).await?.bytes().await };
    let got = read.await.map_err(|e| fail(Operation::Get, &e))?;
    if got != body {
        return Err(StorageError::Inconsistent {
            path: format!("data path {path}"),
        });
    }
    let list_prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
    store
        .list_with_delimiter(list_prefix.as_ref())
        .await
        .map_err(|e| fail(Operation::List, &e))?;
    store
        .delete(&marker)
        .await
        .map_err(|e| fail(Operation::Delete, &e))?;
    tracing::debug!(data_path = %path, "storage preflight passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_preflight_creates_the_folder_and_leaves_no_marker() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lakes/sales");
        let path = DataPath::parse(lake.to_str().unwrap()).unwrap();
        preflight(&path, &S3Settings::default()).await.unwrap();
        assert!(lake.is_dir());
        assert_eq!(
            std::fs::read_dir(&lake).unwrap().count(),
            0,
            "marker left behind"
        );
    }

    #[tokio::test]
    async fn local_preflight_names_the_path_when_it_cannot_be_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let path = DataPath::parse(file.join("lake").to_str().unwrap()).unwrap();
        let err = preflight(&path, &S3Settings::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not-a-dir/lake/"), "{err}");
        assert!(err.contains("connect failed"), "{err}");
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let s = S3Settings {
            secret_access_key: Some("hunter2".into()),
            session_token: Some("tok".into()),
            ..S3Settings::default()
        };
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("tok\""), "{dbg}");
    }
}
