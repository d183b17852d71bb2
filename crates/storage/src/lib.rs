//! Object-store access to the places lakes and backups keep their data.
//!
//! A lake's [`DataPath`] is either an S3 prefix (`s3://bucket/prefix/`) or an absolute local
//! folder; a backup target is the same kind of place. This crate parses those paths, builds an
//! [`object_store::ObjectStore`] for them with the server's S3 settings ([`S3Settings`]), runs the
//! [`preflight`] check that proves the credentials can list, put, get and delete under a prefix,
//! removes a dropped lake's objects ([`purge`]), lists, measures, deletes and verifies the
//! objects the catalog's maintenance looks at ([`list`], [`object_sizes`], [`delete`],
//! [`verify`]: HEAD for size, Parquet footers by ranged reads),
//! and gives the backup code a [`BackupTarget`]: checksummed, compressed, never-overwritten
//! objects and streamed uploads and downloads.
//!
//! **Architecture invariant:** storage knows nothing about PostgreSQL or DuckDB; it only moves
//! bytes and names the place, operation and fix when that fails.

mod backup_target;
mod data_path;
mod objects;
mod preflight;
mod purge;
mod store;

pub use backup_target::{
    decode_object, encode_object, BackupTarget, Compression, ObjectInfo, PutOutcome, TargetError,
};
pub use data_path::{DataPath, DataPathError};
/// A streamed (multipart) upload to a backup target; `shutdown` completes it, `abort` drops it.
pub use object_store::buffered::BufWriter as TargetWriter;
pub use objects::{delete, list, object_sizes, verify, Expected, Listed, Problem};
pub use preflight::preflight;
pub use purge::purge;
pub use store::{
    classify, key_prefix, open_store, Operation, S3Identity, S3Settings, StorageError,
};
