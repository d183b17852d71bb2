//! The versions users depend on, pinned in one place.
//!
//! `xtask` installs the matching dependencies from these (libduckdb, Python wheels, extension
//! files), `connectors` names them in the hints it prints, and a hygiene test checks that the
//! `duckdb` crate pin in the root `Cargo.toml` and the examples agree with them.

/// The DuckDB engine version the server embeds and the extension files must match.
pub const DUCKDB_VERSION: &str = "1.5.5";
/// The Rust `duckdb` crate release that bundles [`DUCKDB_VERSION`].
pub const DUCKDB_CRATE_VERSION: &str = "1.10505.0";
/// The Go client's module version (`github.com/duckdb/duckdb-go/v2`) that embeds
/// [`DUCKDB_VERSION`]; examples/go/go.mod requires it.
pub const DUCKDB_GO_VERSION: &str = "v2.10505.0";
/// The official DuckDB [`DUCKDB_VERSION`] shared library the binaries link (instead of
/// compiling DuckDB): the npm package that ships it, its exact version, and the SHA-512 of its
/// tarball (`cargo xtask deps` refuses any other). The same file the Node.js client loads.
pub const LIBDUCKDB_NPM_PACKAGE: &str = "@duckdb/node-bindings-linux-x64";
/// See [`LIBDUCKDB_NPM_PACKAGE`]; must start with `<DUCKDB_VERSION>-`.
pub const LIBDUCKDB_NPM_VERSION: &str = "1.5.5-r.5";
/// See [`LIBDUCKDB_NPM_PACKAGE`]: hex SHA-512 of the package tarball (npm's `integrity`).
pub const LIBDUCKDB_NPM_SHA512: &str = "902caae815e19fa4177f017cc957552ab8924873feadf556709e7a706f2a67394e669c72bd3e561a6ea332c871838762b4b94eb07b0837f0f8ed162b7235ee1d";
/// The DuckLake catalog format version that the pinned `ducklake` extension writes.
pub const DUCKLAKE_SPEC_VERSION: &str = "1.0";
/// The oldest DuckDB release whose `ducklake` extension attaches a spec
/// [`DUCKLAKE_SPEC_VERSION`] catalog (found by attaching with each release; 1.5.0 and 1.5.1
/// speak spec 0.4, 1.4 only up to 0.3).
pub const OLDEST_CLIENT_VERSION: &str = "1.5.2";
/// The newest release that cannot, for the test of the error such a client gets.
pub const TOO_OLD_CLIENT_VERSION: &str = "1.5.1";
/// Which DuckDB clients attach a catalog of each DuckLake spec version, newest first (found by
/// attaching with each release, see [`OLDEST_CLIENT_VERSION`]); `lake list` shows it.
pub const SPEC_CLIENTS: &[(&str, &str)] = &[
    ("1.0", "DuckDB 1.5.2 and newer"),
    ("0.4", "DuckDB 1.5.0-1.5.1"),
    ("0.3", "DuckDB 1.4"),
    ("0.2", "DuckDB 1.3"),
    ("0.1", "DuckDB 1.3"),
];
/// The PostgreSQL major version the supervisor runs and accepts in a data directory.
pub const PG_MAJOR: u32 = 15;
/// DuckDB extensions the server and the test clients load, as `(PyPI wheel, file stem)`.
/// The `postgres` wheel's file must be installed as `postgres_scanner` to load.
pub const DUCKDB_EXTENSIONS: &[(&str, &str)] = &[
    ("ducklake", "ducklake"),
    ("postgres", "postgres_scanner"),
    ("httpfs", "httpfs"),
    ("aws", "aws"),
    ("parquet", "parquet"),
    ("json", "json"),
];
/// The DuckDB platform string of this build's extension files.
pub const DUCKDB_PLATFORM: &str = "linux_amd64";
/// `moto[server]`, the S3 and Secrets Manager emulator the tests run on loopback.
pub const MOTO_VERSION: &str = "5.2.5";
/// `cfn-lint`, which checks the CloudFormation template in deploy/ in the tests.
pub const CFN_LINT_VERSION: &str = "1.58.0";
/// Selenium for Python, which drives Debian's chromium through chromium-driver in the status
/// page's browser test (test venv only).
pub const SELENIUM_VERSION: &str = "4.50.0";
