//! Client connectors: for each DuckDB client (Python, Go, the DuckDB CLI, Node, Rust), a
//! complete program that ATTACHes a lake served by this catalog, and the way to run and check it.
//!
//! The programs are the ones in `examples/<lang>/`, compiled in with `include_str!`: each reads
//! its connection settings from `CATALOG_*` environment variables with defaults, and
//! [`render`] replaces those defaults with a server's own values. So the program
//! `ducklake-catalog connect --lang go` prints is, byte for byte apart from the defaults, the
//! example the end-to-end tests run — it cannot drift from what ran in CI.
//!
//! Adding a language: one module implementing [`Connector`], its example under `examples/`, and
//! a line in [`registry`].

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

mod cli;
mod go;
mod node;
mod python;
mod run;
mod rust;

pub use run::Toolchain;

/// Why a program could not be rendered or did not pass its check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    #[error("unknown client language `{0}`; choose one of: {langs}", langs = languages().join(", "))]
    UnknownLanguage(String),
    #[error("{name} = `{value}` cannot be written into a program (only letters, digits and `.:_-` are allowed); use a plain host name, user or lake name")]
    UnsafeValue { name: &'static str, value: String },
    #[error("{tool} could not be started ({error}); {fix}")]
    ToolMissing {
        tool: String,
        error: std::io::Error,
        fix: String,
    },
    #[error("{step} failed (exit {code}): {detail}")]
    Failed {
        step: String,
        code: String,
        detail: String,
    },
    #[error("{step} did not finish within {secs} s")]
    TimedOut { step: String, secs: u64 },
    #[error("the program ran but printed {got:?}; expected {expected}")]
    WrongOutput { got: String, expected: String },
    #[error("{action}: {error}")]
    Io {
        action: String,
        error: std::io::Error,
    },
}

/// Where a lake's data lives, as the client must be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Storage {
    /// A folder on the client's machine (local runs).
    Local,
    /// S3 with the AWS credential chain (env, profile, ECS task role, instance metadata).
    S3,
    /// An S3-compatible store at `endpoint` (`host:port`), path-style URLs; credentials from
    /// the client's environment.
    S3Endpoint {
        endpoint: String,
        region: String,
        use_ssl: bool,
    },
}

/// What a rendered program connects to. The password is never part of it: programs read it
/// from `PGPASSWORD`, which libpq (inside DuckDB's postgres extension) reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The lake, which is also the catalog's database name.
    pub lake: String,
    /// libpq `sslmode`: `require` encrypts (the server always offers TLS); `verify-full` also
    /// checks the certificate.
    pub sslmode: String,
    pub storage: Storage,
    /// `pg_pool_max_connections`: catalog connections each attached lake keeps.
    pub pool_max: u32,
}

impl Target {
    /// The defaults written in `examples/<lang>/`.
    pub fn example() -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: 6432,
            user: "admin".into(),
            lake: "lakehouse".into(),
            sslmode: "require".into(),
            storage: Storage::S3,
            pool_max: 16,
        }
    }

    /// `(environment variable, value)` for every setting a program reads, in program order.
    fn settings(&self) -> Vec<(&'static str, String)> {
        let (storage, endpoint, region, use_ssl) = match &self.storage {
            Storage::Local => ("local", String::new(), "us-east-1".into(), true),
            Storage::S3 => ("s3", String::new(), "us-east-1".into(), true),
            Storage::S3Endpoint {
                endpoint,
                region,
                use_ssl,
            } => ("s3", endpoint.clone(), region.clone(), *use_ssl),
        };
        vec![
            ("CATALOG_HOST", self.host.clone()),
            ("CATALOG_PORT", self.port.to_string()),
            ("CATALOG_USER", self.user.clone()),
            ("CATALOG_LAKE", self.lake.clone()),
            ("CATALOG_SSLMODE", self.sslmode.clone()),
            ("CATALOG_STORAGE", storage.into()),
            ("CATALOG_S3_ENDPOINT", endpoint),
            ("CATALOG_S3_REGION", region),
            ("CATALOG_S3_USE_SSL", use_ssl.to_string()),
            ("CATALOG_POOL_MAX", self.pool_max.to_string()),
        ]
    }
}

/// What a client SETs before ATTACH, with `pool_max` catalog connections per attached lake.
/// Every example runs exactly these (a test holds them to it); `cargo xtask bench clients`
/// measures each against DuckDB's default, and docs/connections.md gives the figures:
/// - `ducklake_max_retry_count = 100` (default 10): concurrent commits to one lake collide on
///   the next snapshot id and retry; with many writers ten retries are not enough.
/// - `pg_pool_acquire_mode = 'wait'` with `pg_pool_max_connections` (default `force`, which
///   opens connections past the pool's size under load): a bounded number of connections per
///   client, below the pooler's pool for one user.
/// - `pg_pool_health_check_query = ''` (default `SELECT 1` before each use of a pooled
///   connection): one round trip less per catalog transaction.
pub fn client_settings(pool_max: u32) -> Vec<String> {
    vec![
        "SET ducklake_max_retry_count = 100".into(),
        "SET pg_pool_acquire_mode = 'wait'".into(),
        format!("SET pg_pool_max_connections = {pool_max}"),
        "SET pg_pool_health_check_query = ''".into(),
    ]
}

/// One file of a program.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramFile {
    pub name: &'static str,
    pub contents: String,
}

/// A complete program for one client: its files (the first is the one to read) and how to
/// run it.
#[derive(Debug, Clone, Serialize)]
pub struct Program {
    pub language: &'static str,
    pub files: Vec<ProgramFile>,
    pub run: String,
}

impl Program {
    /// The main file's text.
    pub fn main(&self) -> &str {
        &self.files[0].contents
    }

    /// Writes every file into `dir` (created).
    pub fn write_to(&self, dir: &Path) -> Result<(), ConnectorError> {
        for f in &self.files {
            let path = dir.join(f.name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("create {}", parent.display())))?;
            }
            std::fs::write(&path, &f.contents).map_err(io(format!("write {}", path.display())))?;
        }
        Ok(())
    }
}

/// What describes one client: its name, its example's files and how to run them.
#[derive(Debug)]
pub struct Spec {
    /// The `--lang` name.
    pub language: &'static str,
    /// The client, for people: "Go (github.com/duckdb/duckdb-go/v2 {duckdb_go})"; the
    /// placeholders of [`pinned`] name the versions.
    pub client: &'static str,
    /// The Markdown code-fence language of the main file.
    pub highlight: &'static str,
    /// The command that runs the program from its folder (with [`pinned`]'s placeholders).
    pub run_hint: &'static str,
    /// The example's files as committed in `examples/<lang>/`, the main file first.
    pub files: &'static [(&'static str, &'static str)],
}

/// A DuckDB client this catalog can be reached from.
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    fn spec(&self) -> &'static Spec;
    /// The `--lang` name.
    fn language(&self) -> &'static str {
        self.spec().language
    }
    /// How this language writes "setting `name`, defaulting to `value`" in the main file: by
    /// default a call of the examples' `env` helper.
    fn setting(&self, name: &str, value: &str) -> String {
        format!("env(\"{name}\", \"{value}\")")
    }
    /// Runs the program whose files are in `dir`; returns what it printed on stdout.
    async fn run(&self, dir: &Path, tools: &Toolchain) -> Result<String, ConnectorError>;
}

/// Every connector, in the order docs list them.
pub fn registry() -> Vec<Box<dyn Connector>> {
    vec![
        Box::new(python::Python),
        Box::new(go::Go),
        Box::new(cli::Cli),
        Box::new(node::Node),
        Box::new(rust::Rust),
    ]
}

/// The `--lang` names.
pub fn languages() -> Vec<&'static str> {
    registry().iter().map(|c| c.language()).collect()
}

/// The connector for `--lang name`.
pub fn connector(name: &str) -> Result<Box<dyn Connector>, ConnectorError> {
    registry()
        .into_iter()
        .find(|c| c.language() == name)
        .ok_or_else(|| ConnectorError::UnknownLanguage(name.to_owned()))
}

/// The connector's example with `target`'s values as its defaults.
pub fn render(connector: &dyn Connector, target: &Target) -> Result<Program, ConnectorError> {
    let example = Target::example().settings();
    let files = connector.spec().files;
    let mut main = files[0].1.to_owned();
    for ((name, default), (_, value)) in example.iter().zip(target.settings()) {
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".:_-".contains(c))
        {
            return Err(ConnectorError::UnsafeValue { name, value });
        }
        let from = connector.setting(name, default);
        assert!(
            main.contains(&from),
            "examples/{}/{} lost its `{from}` line",
            connector.language(),
            files[0].0
        );
        main = main.replace(&from, &connector.setting(name, &value));
    }
    let mut out = vec![ProgramFile {
        name: files[0].0,
        contents: main,
    }];
    out.extend(files[1..].iter().map(|(name, text)| ProgramFile {
        name,
        contents: (*text).to_owned(),
    }));
    Ok(Program {
        language: connector.language(),
        files: out,
        run: pinned(connector.spec().run_hint),
    })
}

/// What every example prints as its last line, read back from DuckDB itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub rows: u64,
    pub data_files: u64,
    pub sum_before_update: i64,
    pub sum_now: i64,
    pub snapshots: u64,
    /// The newest three snapshots, newest first, with what each changed.
    pub latest_snapshots: Vec<SnapshotEntry>,
}

/// One row of `ducklake_snapshots()`, as the examples list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SnapshotEntry {
    pub id: u64,
    pub changes: serde_json::Value,
}

impl Summary {
    /// Checks the numbers the example's statements must produce: 1,003 rows of which 1,000
    /// landed in Parquet, the update visible now and absent at the earlier version.
    fn verify(&self, printed: &str) -> Result<(), ConnectorError> {
        let ok = self.rows == 1003
            && self.data_files >= 1
            && self.sum_before_update == 499_503
            && self.sum_now == 500_503
            && self.snapshots >= 4
            && self.latest_snapshots.len() == 3
            && self.latest_snapshots.windows(2).all(|w| w[0].id > w[1].id)
            && self
                .latest_snapshots
                .iter()
                .all(|s| s.changes.as_object().is_some_and(|c| !c.is_empty()));
        if ok {
            Ok(())
        } else {
            Err(ConnectorError::WrongOutput {
                got: printed.to_owned(),
                expected: "1003 rows, at least 1 data file, sum_before_update 499503 (time travel), sum_now 500503, at least 4 snapshots, the newest 3 listed with their changes".into(),
            })
        }
    }
}

/// The result of running a program against a live server.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub language: &'static str,
    pub client: String,
    pub seconds: f64,
    pub summary: Summary,
}

/// Writes `program` to a scratch folder, runs it with `tools` and checks what it printed.
pub async fn check(
    connector: &dyn Connector,
    program: &Program,
    tools: &Toolchain,
) -> Result<CheckReport, ConnectorError> {
    let scratch = run::scratch(connector.language())?;
    program.write_to(scratch.path())?;
    let started = Instant::now();
    let stdout = connector.run(scratch.path(), tools).await?;
    let seconds = started.elapsed().as_secs_f64();
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let summary: Summary = serde_json::from_str(last).map_err(|_| ConnectorError::WrongOutput {
        got: last.to_owned(),
        expected: "one JSON summary line".into(),
    })?;
    summary.verify(last)?;
    Ok(CheckReport {
        language: connector.language(),
        client: pinned(connector.spec().client),
        seconds,
        summary,
    })
}

/// `text` with the placeholders `{duckdb}`, `{duckdb_crate}`, `{duckdb_go}` and `{node_api}`
/// replaced by the versions pinned in [`base::versions`]: no version is written twice.
pub(crate) fn pinned(text: &str) -> String {
    use base::versions as v;
    text.replace("{duckdb_crate}", v::DUCKDB_CRATE_VERSION)
        .replace("{duckdb_go}", v::DUCKDB_GO_VERSION)
        .replace("{node_api}", v::LIBDUCKDB_NPM_VERSION)
        .replace("{duckdb}", v::DUCKDB_VERSION)
}

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> ConnectorError {
    let action = action.into();
    move |error| ConnectorError::Io { action, error }
}

/// How long one step of a check may take: compiling DuckDB from source for Rust takes long.
const STEP_TIMEOUT: Duration = Duration::from_mins(45);

/// `doc` with each `<!-- program <lang> <file> -->` … `<!-- end -->` block filled with that
/// example file, as docs/connecting.md shows them.
pub fn fill_program_blocks(doc: &str) -> String {
    let mut out = doc.to_owned();
    for c in registry() {
        let (file, text) = c.spec().files[0];
        let begin = format!("<!-- program {} {file} -->\n", c.language());
        let Some(start) = out.find(&begin).map(|i| i + begin.len()) else {
            continue;
        };
        let Some(len) = out[start..].find("<!-- end -->") else {
            continue;
        };
        let block = format!("```{}\n{text}```\n", c.spec().highlight);
        out.replace_range(start..start + len, &block);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_connecting_shows_every_program_as_it_is() {
        let path = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("../../docs/connecting.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let fresh = fill_program_blocks(&doc);
        if std::env::var_os("DUCKLAKE_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &fresh).unwrap();
            return;
        }
        for c in registry() {
            assert!(
                doc.contains(&format!("<!-- program {} ", c.language())),
                "docs/connecting.md has no block for {}",
                c.language()
            );
        }
        assert!(
            doc == fresh,
            "docs/connecting.md differs from examples/: run `DUCKLAKE_UPDATE_DOCS=1 cargo test -p connectors docs_connecting`"
        );
    }

    /// Every example SETs what `client_settings` hands out, before its ATTACH.
    #[test]
    fn every_example_sets_the_client_settings_before_attach() {
        for c in registry() {
            let main = c.spec().files[0].1;
            let attach = main.find("ATTACH 'ducklake").unwrap();
            for setting in client_settings(16) {
                // The pool size is the program's CATALOG_POOL_MAX, in its own syntax.
                let fixed = setting.trim_end_matches("16");
                let at = main
                    .find(fixed)
                    .unwrap_or_else(|| panic!("examples/{} does not `{setting}`", c.language()));
                assert!(
                    at < attach,
                    "examples/{}: `{fixed}` after ATTACH",
                    c.language()
                );
            }
        }
    }

    /// The examples' own manifests name the versions `base::versions` pins, and no hint or
    /// client name is left with a placeholder.
    #[test]
    fn examples_pin_the_versions_of_base() {
        use base::versions as v;
        let file = |lang: &str, name: &str| {
            let c = registry()
                .into_iter()
                .find(|c| c.language() == lang)
                .unwrap();
            c.spec()
                .files
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("{lang} has no {name}"))
                .1
        };
        let go = file("go", "go.mod");
        assert!(
            go.contains(&format!(
                "github.com/duckdb/duckdb-go/v2 {}",
                v::DUCKDB_GO_VERSION
            )),
            "examples/go/go.mod and base::versions::DUCKDB_GO_VERSION disagree"
        );
        assert!(
            file("node", "package.json").contains(&format!(
                "\"@duckdb/node-api\": \"{}\"",
                v::LIBDUCKDB_NPM_VERSION
            )),
            "examples/node/package.json and base::versions::LIBDUCKDB_NPM_VERSION disagree"
        );
        assert!(
            file("rust", "Cargo.toml").contains(&format!(
                "duckdb = {{ version = \"={}\"",
                v::DUCKDB_CRATE_VERSION
            )),
            "examples/rust/Cargo.toml and base::versions::DUCKDB_CRATE_VERSION disagree"
        );
        for c in registry() {
            for text in [pinned(c.spec().client), pinned(c.spec().run_hint)] {
                assert!(
                    !text.contains('{'),
                    "{}: placeholder left in {text}",
                    c.language()
                );
            }
        }
    }

    fn remote() -> Target {
        Target {
            host: "catalog.internal".into(),
            port: 6543,
            user: "pipeline".into(),
            lake: "sales".into(),
            sslmode: "verify-full".into(),
            storage: Storage::S3Endpoint {
                endpoint: "minio.internal:9000".into(),
                region: "eu-west-1".into(),
                use_ssl: false,
            },
            pool_max: 12,
        }
    }

    #[test]
    fn the_example_target_renders_each_example_unchanged() {
        for c in registry() {
            let program = render(c.as_ref(), &Target::example()).unwrap();
            assert_eq!(program.main(), c.spec().files[0].1, "{}", c.language());
        }
    }

    #[test]
    fn every_setting_of_a_target_reaches_every_program() {
        for c in registry() {
            let program = render(c.as_ref(), &remote()).unwrap();
            let main = program.main();
            for (name, value) in remote().settings() {
                assert!(
                    main.contains(&c.setting(name, &value)),
                    "{}: {name} = {value}",
                    c.language()
                );
            }
            assert!(!main.contains("\"127.0.0.1\""), "{}", c.language());
        }
    }

    #[test]
    fn values_that_could_break_out_of_a_string_are_refused() {
        let mut t = remote();
        t.user = "x\" + os.system('rm') + \"".into();
        let err = render(&python::Python, &t).unwrap_err().to_string();
        assert!(err.contains("CATALOG_USER"), "{err}");
    }

    #[test]
    fn unknown_languages_name_the_known_ones() {
        let err = connector("cobol").err().unwrap().to_string();
        assert!(err.contains("python, go, cli, node, rust"), "{err}");
    }

    #[test]
    fn a_summary_with_wrong_numbers_is_refused() {
        let good = Summary {
            rows: 1003,
            data_files: 1,
            sum_before_update: 499_503,
            sum_now: 500_503,
            snapshots: 5,
            latest_snapshots: (3..6)
                .rev()
                .map(|id| SnapshotEntry {
                    id,
                    changes: serde_json::json!({ "tables_inserted_into": ["1"] }),
                })
                .collect(),
        };
        assert!(good.verify("").is_ok());
        let inlined_only = Summary {
            data_files: 0,
            ..good.clone()
        };
        assert!(inlined_only.verify("").is_err());
        let no_time_travel = Summary {
            sum_before_update: 500_503,
            ..good.clone()
        };
        assert!(no_time_travel.verify("").is_err());
        let unlisted = Summary {
            latest_snapshots: vec![],
            ..good
        };
        assert!(unlisted.verify("").is_err());
    }
}
