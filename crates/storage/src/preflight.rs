//! The storage preflight: prove a data path is usable before a lake is reported ready.
//!
//! Local folders and S3 prefixes go through the same [`ObjectStore`] calls, so one check (and
//! one test suite) covers both backends: put a small marker object, read it back, list the
//! prefix, delete the marker.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};

use crate::DataPath;

/// S3 connection settings; every field is optional and unset fields fall back to the standard
/// AWS environment (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, ECS task role, instance metadata).
#[derive(Clone, Default)]
pub struct S3Settings {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub allow_http: bool,
    pub force_path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "[redacted]");
        f.debug_struct("S3Settings")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("allow_http", &self.allow_http)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .finish()
    }
}

/// The object-store operation a preflight step performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Connect,
    Put,
    Get,
    List,
    Delete,
}

impl Operation {
    fn iam_action(self) -> &'static str {
        match self {
            Operation::Connect | Operation::List => "s3:ListBucket",
            Operation::Put => "s3:PutObject",
            Operation::Get => "s3:GetObject",
            Operation::Delete => "s3:DeleteObject",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Connect => "connect",
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::List => "list",
            Operation::Delete => "delete",
        })
    }
}

/// Why a data path failed its preflight. Each message is one line naming the place, the
/// operation and the likely fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreflightError {
    #[error("data path {path}: bucket `{bucket}` does not exist ({op} failed); create it or fix the lake's data_path")]
    NoSuchBucket {
        path: String,
        bucket: String,
        op: Operation,
    },
    #[error("data path {path}: the S3 credentials were rejected ({op} failed: {detail}); check the access key or the task role (s3.access_key_id / AWS_ACCESS_KEY_ID)")]
    BadCredentials {
        path: String,
        op: Operation,
        detail: String,
    },
    #[error("data path {path}: access denied for {op} on bucket `{bucket}` prefix `{prefix}`; grant {action} on arn:aws:s3:::{bucket}/{prefix}*")]
    AccessDenied {
        path: String,
        bucket: String,
        prefix: String,
        op: Operation,
        action: &'static str,
    },
    #[error("data path {path}: {op} failed: {detail}; check s3.endpoint and s3.region and that S3 is reachable")]
    Unreachable {
        path: String,
        op: Operation,
        detail: String,
    },
    #[error("data path {path}: local folder is not usable ({op} failed: {detail}); create it and make it writable by the server")]
    Local {
        path: String,
        op: Operation,
        detail: String,
    },
    #[error("data path {path}: the marker object read back differs from what was written; the store is not consistent")]
    Inconsistent { path: String },
}

/// Builds the object store that serves `path`, rooted at the bucket (S3) or at `/` (local).
fn open_store(
    path: &DataPath,
    s3: &S3Settings,
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    match path {
        DataPath::Local(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })?;
            Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?))
        }
        DataPath::S3 { bucket, .. } => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(s3.allow_http)
                .with_virtual_hosted_style_request(!s3.force_path_style)
                .with_retry(RetryConfig {
                    max_retries: 2,
                    retry_timeout: Duration::from_secs(10),
                    ..RetryConfig::default()
                })
                .with_client_options(
                    ClientOptions::new()
                        .with_allow_http(s3.allow_http)
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_timeout(Duration::from_secs(20)),
                );
            if let Some(v) = &s3.region {
                b = b.with_region(v);
            }
            if let Some(v) = &s3.endpoint {
                b = b.with_endpoint(v);
            }
            if let Some(v) = &s3.access_key_id {
                b = b.with_access_key_id(v);
            }
            if let Some(v) = &s3.secret_access_key {
                b = b.with_secret_access_key(v);
            }
            if let Some(v) = &s3.session_token {
                b = b.with_token(v);
            }
            Ok(Arc::new(b.build()?))
        }
    }
}

/// Checks that the data path can be listed, written, read and cleaned under its prefix.
pub async fn preflight(path: &DataPath, s3: &S3Settings) -> Result<(), PreflightError> {
    let fail = |op: Operation, e: &object_store::Error| classify(path, op, e);
    let store = open_store(path, s3).map_err(|e| fail(Operation::Connect, &e))?;
    let prefix = match path {
        DataPath::S3 { prefix, .. } => prefix.clone(),
        DataPath::Local(_) => String::new(),
    };
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
        return Err(PreflightError::Inconsistent {
            path: path.to_string(),
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

fn classify(path: &DataPath, op: Operation, err: &object_store::Error) -> PreflightError {
    let detail = one_line(&err.to_string());
    let path_s = path.to_string();
    let DataPath::S3 { bucket, prefix } = path else {
        return PreflightError::Local {
            path: path_s,
            op,
            detail,
        };
    };
    // Match on the whole chain, untruncated: S3's error code sits in the response body.
    let mut full = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        full.push(' ');
        full.push_str(&e.to_string());
        source = e.source();
    }
    let has = |needle: &str| full.contains(needle);
    if has("NoSuchBucket") || has("specified bucket does not exist") {
        return PreflightError::NoSuchBucket {
            path: path_s,
            bucket: bucket.clone(),
            op,
        };
    }
    if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("ExpiredToken")
        || has("InvalidToken")
        || has("credential")
        || matches!(err, object_store::Error::Unauthenticated { .. })
    {
        return PreflightError::BadCredentials {
            path: path_s,
            op,
            detail,
        };
    }
    if has("AccessDenied") || matches!(err, object_store::Error::PermissionDenied { .. }) {
        return PreflightError::AccessDenied {
            path: path_s,
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            op,
            action: op.iam_action(),
        };
    }
    PreflightError::Unreachable {
        path: path_s,
        op,
        detail,
    }
}

/// Folds a multi-line error (object_store includes response bodies) into one line.
fn one_line(s: &str) -> String {
    let folded: Vec<&str> = s.split_whitespace().collect();
    let mut out = folded.join(" ");
    if out.len() > 400 {
        let mut cut = 400;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
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
