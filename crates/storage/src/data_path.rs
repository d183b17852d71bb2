//! Parsing and display of lake data paths.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a lake's Parquet files live, normalised to end with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPath {
    /// `s3://bucket/prefix/`; `prefix` is empty or ends with `/`.
    S3 { bucket: String, prefix: String },
    /// An absolute local folder.
    Local(PathBuf),
}

/// Why a string is not a data path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataPathError {
    #[error("`{0}` is neither s3://bucket/prefix/ nor an absolute local path")]
    Unsupported(String),
    #[error("`{0}` has no bucket name: write s3://bucket/prefix/")]
    MissingBucket(String),
    #[error("`{path}` has an invalid bucket name `{bucket}`: use 3-63 lowercase letters, digits, dots and hyphens")]
    InvalidBucket { path: String, bucket: String },
    #[error("`{0}` contains `..` or an empty segment: write a plain prefix such as s3://bucket/lakes/sales/")]
    InvalidPrefix(String),
}

impl DataPath {
    /// Parses `s3://bucket/prefix` or `/absolute/path`; a trailing `/` is added where missing.
    pub fn parse(raw: &str) -> Result<Self, DataPathError> {
        let raw = raw.trim();
        if let Some(rest) = raw.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(DataPathError::MissingBucket(raw.to_owned()));
            }
            if !valid_bucket(bucket) {
                return Err(DataPathError::InvalidBucket {
                    path: raw.to_owned(),
                    bucket: bucket.to_owned(),
                });
            }
            let prefix = prefix.trim_end_matches('/');
            if !prefix.is_empty()
                && prefix
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == "..")
            {
                return Err(DataPathError::InvalidPrefix(raw.to_owned()));
            }
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            };
            return Ok(DataPath::S3 {
                bucket: bucket.to_owned(),
                prefix,
            });
        }
        let path = Path::new(raw);
        if raw.contains("://") || !path.is_absolute() {
            return Err(DataPathError::Unsupported(raw.to_owned()));
        }
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(DataPathError::InvalidPrefix(raw.to_owned()));
        }
        // One spelling per folder: `//` and `/./` folded, so paths compare as strings.
        Ok(DataPath::Local(path.components().collect()))
    }

    /// True for S3 data paths.
    pub fn is_s3(&self) -> bool {
        matches!(self, DataPath::S3 { .. })
    }
}

impl fmt::Display for DataPath {
    /// The form DuckLake stores as `data_path`: always with a trailing `/`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataPath::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            DataPath::Local(path) => {
                let s = path.to_string_lossy();
                if s.ends_with('/') {
                    f.write_str(&s)
                } else {
                    write!(f, "{s}/")
                }
            }
        }
    }
}

impl serde::Serialize for DataPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DataPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        DataPath::parse(&raw).map_err(serde::de::Error::custom)
    }
}

fn valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_paths_are_normalised_with_a_trailing_slash() {
        let p = DataPath::parse("s3://my-bucket/lakes/sales").unwrap();
        assert_eq!(
            p,
            DataPath::S3 {
                bucket: "my-bucket".into(),
                prefix: "lakes/sales/".into()
            }
        );
        assert_eq!(p.to_string(), "s3://my-bucket/lakes/sales/");
        assert_eq!(
            DataPath::parse("s3://my-bucket").unwrap().to_string(),
            "s3://my-bucket/"
        );
        assert_eq!(
            DataPath::parse("s3://my-bucket/").unwrap().to_string(),
            "s3://my-bucket/"
        );
    }

    #[test]
    fn local_paths_must_be_absolute() {
        assert_eq!(
            DataPath::parse("/data/lake").unwrap().to_string(),
            "/data/lake/"
        );
        assert!(matches!(
            DataPath::parse("data/lake"),
            Err(DataPathError::Unsupported(_))
        ));
        assert!(matches!(
            DataPath::parse("/data/../etc"),
            Err(DataPathError::InvalidPrefix(_))
        ));
    }

    #[test]
    fn malformed_s3_paths_are_rejected_with_the_reason() {
        assert!(matches!(
            DataPath::parse("s3:///x"),
            Err(DataPathError::MissingBucket(_))
        ));
        assert!(matches!(
            DataPath::parse("s3://My_Bucket/x"),
            Err(DataPathError::InvalidBucket { .. })
        ));
        assert!(matches!(
            DataPath::parse("s3://bucket/a//b"),
            Err(DataPathError::InvalidPrefix(_))
        ));
        assert!(matches!(
            DataPath::parse("gs://bucket/x"),
            Err(DataPathError::Unsupported(_))
        ));
    }
}
