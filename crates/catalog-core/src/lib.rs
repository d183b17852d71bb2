//! The DuckLake catalog: configuration, the PostgreSQL supervisor, lakes and their roles.
//!
//! [`Supervisor::run`] is what `serve` runs: it prepares the data directory
//! ([`postgres::Cluster::prepare`]), starts PostgreSQL as a child
//! ([`postgres::Cluster::start`]), creates the admin role and each lake's database and DuckLake
//! catalog ([`lake::ensure_lake`]), publishes its [`status::Status`] for the health endpoints,
//! restarts PostgreSQL with backoff when it dies, and stops it with a checkpoint on shutdown.
//!
//! **Architecture invariant:** only this crate runs SQL against the catalog; other crates see
//! [`status::Status`], [`supervisor::Probe`] and [`connection::ConnectionInfo`].

pub mod connection;
pub mod datafiles;
pub mod doctor;
pub mod garbage;
pub mod iam;
pub mod inspect;
pub mod lake;
pub mod lake_session;
pub mod lakes;
pub mod maintenance;
pub mod postgres;
pub mod recovery;
pub mod status;
pub mod supervisor;
pub mod tuning;
pub mod users;

pub use config::Config;

pub use ::backup;
pub use ::config;
pub use ::config::reference as config_reference;
pub use ::duckdb_worker;
pub use aws::{marketplace, secrets_manager};
pub(crate) use base::one_line;
pub use base::{secret, versions, Secret};
pub use pg_conn::remote;
pub use supervisor::{Probe, ServeError, Supervisor};
