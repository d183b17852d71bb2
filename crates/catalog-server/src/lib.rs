//! The server that runs the DuckLake administration.
//!
//! [`Supervisor::run`] is what `serve` runs: with the supervised PostgreSQL it prepares the
//! data directory and starts PostgreSQL as a child (the `pg-cluster` crate), with
//! `postgres.url` it administers an external one; either way it makes each lake's database,
//! roles and DuckLake catalog ready ([`lake::ensure_lake`], through a
//! [`lake_session::PgHandle`]), publishes its [`status::Status`] for the health endpoints and
//! runs the lake watch and the maintenance schedule ([`schedule`]), every long-running task in
//! one set. The administration (`lake-session`, `lake-admin`, `lake-upkeep`), the
//! configuration, the supervisor, the backups and the DuckDB worker are crates of their own,
//! re-exported here under the paths the binary uses.
//!
//! **Architecture invariant:** this crate is the only library that reads the whole [`Config`]
//! (it hands each library its slice); its long-running tasks run in one set, whose every exit
//! is logged and turns readiness false; other crates see [`status::Status`],
//! [`supervisor::Probe`] and [`connection::ConnectionInfo`].

pub mod admin;
pub mod connection;
pub mod observe;
pub mod pooling;
pub mod postgres;
pub mod recovery;
pub mod schedule;
pub mod supervisor;

pub use config::Config;

pub use ::backup;
pub use ::config;
pub use ::config::reference as config_reference;
pub use ::duckdb_worker;
pub use ::failover as ha;
pub use ::lake_admin;
pub use ::lake_upkeep;
pub use ::serve_status as status;
pub use ::telemetry;
pub use aws::{iam, marketplace, secrets_manager};
pub(crate) use base::one_line;
pub use base::{secret, versions, Secret};
pub use lake_admin::{inspect, lake, lake_session, lakes, tuning, users, Admin};
pub use lake_upkeep::{datafiles, garbage, maintenance};
pub use pg_conn::remote;
pub use supervisor::{Probe, ServeError, Supervisor};
