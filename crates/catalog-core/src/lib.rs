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

pub mod config;
pub mod config_reference;
pub mod connection;
pub mod datafiles;
pub mod doctor;
pub mod duckdb_worker;
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
pub use aws::{marketplace, secrets_manager};
pub(crate) use base::one_line;
pub use base::{secret, versions, Secret};
pub use pg_conn::remote;
pub use supervisor::{Probe, ServeError, Supervisor};

/// `doc` with the text between `begin` and the next `end` replaced by `content`; both markers
/// stay. Panics when the page lost its markers.
#[cfg(test)]
pub(crate) fn fill_block(doc: &str, begin: &str, end: &str, content: &str) -> String {
    let start = doc
        .find(begin)
        .unwrap_or_else(|| panic!("the page lost its `{begin}` marker"))
        + begin.len();
    let len = doc[start..]
        .find(end)
        .unwrap_or_else(|| panic!("no `{end}` after `{begin}`"));
    format!("{}{content}{}", &doc[..start], &doc[start + len..])
}

/// Checks that a doc page's generated parts are current: `fill` regenerates them from the code.
/// With `DUCKLAKE_UPDATE_DOCS` set the page is rewritten instead.
#[cfg(test)]
pub(crate) fn assert_doc_current(page: &str, fill: impl Fn(&str) -> String) {
    let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../../docs")
        .join(page);
    let doc = std::fs::read_to_string(&path).unwrap();
    let fresh = fill(&doc);
    assert_ne!(fresh.len(), 0);
    if std::env::var_os("DUCKLAKE_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    assert!(
        doc == fresh,
        "docs/{page} differs from what the code generates: run `DUCKLAKE_UPDATE_DOCS=1 cargo xtask test -p catalog-core docs_`"
    );
}
