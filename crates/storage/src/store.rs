//! Opening object stores for data paths and backup targets, and naming their failures.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

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
    /// The process's AWS identity; when set, S3 requests sign with its credential chain and
    /// refresh expiring credentials, and it gives the region.
    pub identity: Option<S3Identity>,
}

/// The process's AWS identity as S3 needs it: the region and a credential provider that
/// refreshes itself (the `aws` crate builds one from its credential chain).
#[derive(Clone)]
pub struct S3Identity {
    pub region: String,
    pub credentials: object_store::aws::AwsCredentialProvider,
}

impl fmt::Debug for S3Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Identity")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
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
            .field("identity", &self.identity)
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
    Head,
}

impl Operation {
    fn iam_action(self) -> &'static str {
        match self {
            Operation::Connect | Operation::List => "s3:ListBucket",
            Operation::Put => "s3:PutObject",
            Operation::Get | Operation::Head => "s3:GetObject",
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
            Operation::Head => "head",
        })
    }
}

/// Why an object-store operation on a data path or backup target failed. Each message is one
/// line naming the place (`data path s3://…` or `backup target s3://…`), the operation and the
/// likely fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("{path}: bucket `{bucket}` does not exist ({op} failed); create it or fix the configured path")]
    NoSuchBucket {
        path: String,
        bucket: String,
        op: Operation,
    },
    #[error("{path}: the S3 credentials were rejected ({op} failed: {detail}); check the access key or the task role (s3.access_key_id / AWS_ACCESS_KEY_ID)")]
    BadCredentials {
        path: String,
        op: Operation,
        detail: String,
    },
    #[error("{path}: access denied for {op} on bucket `{bucket}` prefix `{prefix}`; grant {action} on arn:aws:s3:::{bucket}/{prefix}*")]
    AccessDenied {
        path: String,
        bucket: String,
        prefix: String,
        op: Operation,
        action: &'static str,
    },
    #[error(
        "{path}: {op} failed: {detail}; check s3.endpoint and s3.region and that S3 is reachable"
    )]
    Unreachable {
        path: String,
        op: Operation,
        detail: String,
    },
    #[error("{path}: local folder is not usable ({op} failed: {detail}); create it and make it writable by the server")]
    Local {
        path: String,
        op: Operation,
        detail: String,
    },
    #[error("{path}: the marker object read back differs from what was written; the store is not consistent")]
    Inconsistent { path: String },
}

/// Builds the object store that serves `path`, rooted at the bucket (S3) or at the folder
/// (local); object keys are then [`key_prefix`] + a relative name.
pub fn open_store(
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
            if let Some(id) = &s3.identity {
                b = b
                    .with_region(s3.region.as_deref().unwrap_or(&id.region))
                    .with_credentials(id.credentials.clone());
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

/// The key prefix objects of `path` live under, inside the store [`open_store`] returns.
pub fn key_prefix(path: &DataPath) -> String {
    match path {
        DataPath::S3 { prefix, .. } => prefix.clone(),
        DataPath::Local(_) => String::new(),
    }
}

/// Names what went wrong with `op` on `path`; `label` says what the path is ("data path",
/// "backup target").
pub fn classify(
    label: &str,
    path: &DataPath,
    op: Operation,
    err: &object_store::Error,
) -> StorageError {
    let detail = one_line(&err.to_string());
    let path_s = format!("{label} {path}");
    let DataPath::S3 { bucket, prefix } = path else {
        return StorageError::Local {
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
        return StorageError::NoSuchBucket {
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
        return StorageError::BadCredentials {
            path: path_s,
            op,
            detail,
        };
    }
    if has("AccessDenied") || matches!(err, object_store::Error::PermissionDenied { .. }) {
        return StorageError::AccessDenied {
            path: path_s,
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            op,
            action: op.iam_action(),
        };
    }
    StorageError::Unreachable {
        path: path_s,
        op,
        detail,
    }
}

/// Folds a multi-line error (object_store includes response bodies) into one line.
pub(crate) fn one_line(s: &str) -> String {
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
