//! A lake's upkeep, on top of the DuckLake administration (`lake-admin`).
//!
//! [`maintenance::run`] runs one job on a lake: DuckLake's own functions in the DuckDB worker,
//! then the catalog garbage DuckLake leaves ([`garbage`]); the server's schedule and
//! `ducklake-catalog maintain` call it. [`datafiles`] checks a lake's data files against its
//! catalog (verify), lists the objects no snapshot references (orphans) and deletes them (gc),
//! refusing any data path that could hold what is not the lake's.
//!
//! Like the administration it reaches PostgreSQL only through a `PgHandle` and takes its
//! settings as an `AdminSettings`; it spawns no long-running task.

pub mod datafiles;
pub mod garbage;
pub mod maintenance;

pub(crate) use ::duckdb_worker;
pub(crate) use lake_admin::{inspect, lake, lake_session, names, postgres, settings, Admin};
