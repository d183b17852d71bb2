//! Object-store access to the places lakes keep their data.
//!
//! A lake's [`DataPath`] is either an S3 prefix (`s3://bucket/prefix/`) or an absolute local
//! folder. This crate parses data paths, builds an [`object_store::ObjectStore`] for them with the
//! server's S3 settings ([`S3Settings`]), and runs the [`preflight`] check that proves the
//! credentials can list, put, get and delete under the prefix before a lake is reported ready.
//!
//! **Architecture invariant:** storage knows nothing about PostgreSQL or DuckDB; it only moves
//! bytes and names the bucket, prefix and operation when that fails.

mod data_path;
mod preflight;

pub use data_path::{DataPath, DataPathError};
pub use preflight::{preflight, Operation, PreflightError, S3Settings};
