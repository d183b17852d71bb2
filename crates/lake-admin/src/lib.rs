//! The DuckLake administration, over any PostgreSQL.
//!
//! What this product adds to a bare PostgreSQL for DuckLake: each lake's database, roles and
//! guard and the lake registry ([`lake`], [`lakes`]), users ([`users`]), native inspection
//! ([`inspect`]) and the catalog's tuning ([`tuning`]); the `lake-upkeep` crate adds
//! maintenance, catalog garbage and the data files' checks on top. It reaches PostgreSQL only
//! through a [`PgHandle`] (the `lake-session` crate), which the server builds from its
//! supervised cluster's socket or from `postgres.url`, and takes its settings as an
//! [`AdminSettings`]: it depends neither on the supervisor nor on the configuration.
//!
//! **Architecture invariant:** only the lake crates (`lake-session`, this one, `lake-upkeep`)
//! run SQL against the lakes' catalogs; they spawn no long-running task.

pub mod connection;
pub mod inspect;
pub mod lake;
pub mod lakes;
pub mod names;
pub mod settings;
pub mod tuning;
pub mod users;

pub use ::lake_session;
pub use lake_session::postgres;

pub use lake_session::PgHandle;
pub use settings::{AdminSettings, ClientEndpoint, LakeConfig, MaintenanceConfig};

pub(crate) use ::duckdb_worker;
pub(crate) use base::{secret, versions};

/// The DuckLake administration of one server: how it reaches PostgreSQL and its settings.
#[derive(Debug, Clone)]
pub struct Admin {
    pub pg: PgHandle,
    pub settings: AdminSettings,
}
