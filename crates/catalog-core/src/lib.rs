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

pub mod backup;
pub mod config;
pub mod config_reference;
pub mod connection;
pub mod lake;
pub mod postgres;
pub mod recovery;
pub mod secret;
pub mod status;
pub mod supervisor;
pub mod versions;

pub use config::Config;

/// Folds a multi-line message (PostgreSQL, DuckDB and figment write several lines) into one.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
pub use secret::Secret;
pub use supervisor::{Probe, ServeError, Supervisor};
