//! `cargo xtask`: the project's build system.
//!
//! - `cargo xtask deps`: install what the builds, the tests and a local `serve` need, from the
//!   package registries only: the official DuckDB shared library the binaries link (npm, pinned
//!   and checked, see `libduckdb`), PostgreSQL 15 (Debian, when missing and running as root), a Python venv
//!   with the pinned `duckdb` client and CLI, its extension wheels and `moto[server]`, and a DuckDB
//!   extension directory assembled from those wheels. Idempotent and quick when done.
//! - `cargo xtask test [ARGS…]`: `deps`, the client examples' dependencies (npm, Go modules,
//!   crates.io; see `clients`), then `cargo test --workspace` with the test environment set,
//!   then `container --smoke`. The README's test command. Arguments go to
//!   `cargo test` and skip the container test; `--no-container` skips it alone.
//! - `cargo xtask ci`: `cargo fmt --check`, `clippy`, then `test`.
//! - `cargo xtask clippy`: `cargo clippy --release --all-targets -D warnings` with the libduckdb.
//! - `cargo xtask serve [ARGS…]`: `deps`, then `cargo run --release -p ducklake-catalog -- serve`.
//! - `cargo xtask container [--tag T] [--smoke]`: the container image from docker/Dockerfile,
//!   and with `--smoke` the image run for real against moto S3 (see `container_smoke`).
//! - `cargo xtask bench startup [--runs N] [--debug]`: cold start, warm restart and idle memory
//!   of `serve`, measured side by side.
//! - `cargo xtask bench catalog [--scales 10000,30000,100000] [--runs N] [--writers N]`: the
//!   tuned catalog against stock PostgreSQL for DuckLake's own queries (see `xtask_bench::catalog`).
//! - `cargo xtask bench maintenance [--objects N] [--orphans N]`: our orphan scan against
//!   DuckDB's, and commit latency before and after catalog garbage cleanup.
//! - `cargo xtask bench clients [--connections N] [--writers N] [--commits N]`: 1,000 client
//!   connections, 32 writers and a fresh client's ATTACH, pooled against direct.
//! - `cargo xtask bench metrics [--lakes N] [--writers N]`: commit throughput with a 1 s
//!   `/metrics` scrape against none, and the scrape time at 50 lakes.
//! - `cargo xtask bench durability [--commits N] [--restore-gb G] [--skip-walg]`: RPO, archive
//!   write overhead and restore time against moto S3.
//!
//! - `cargo xtask bench failover [--writers N] [--seconds S] [--commits N]`: a primary and a
//!   hot standby: RTO against restore-on-replace, RPO, zero-loss commit latency, replay lag.
//!
//! Builds go to a persistent target directory outside the clone (`CARGO_TARGET_DIR`, default
//! `~/.cache/ducklake-catalog/target`) and link the prebuilt libduckdb (`DUCKDB_LIB_DIR`), so
//! no build compiles DuckDB's C++ sources.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// The benchmarks that run the release binary against the test dependencies, by name
/// (`startup` builds its own binaries).
type Bench = fn(&[String], &Path, &Path, &Path) -> Result<()>;
const BENCHES: &[(&str, Bench)] = &[
    ("durability", xtask_bench::durability::durability),
    ("failover", xtask_bench_failover::failover),
    ("catalog", xtask_bench::catalog::catalog),
    ("clients", xtask_bench::clients::clients),
    ("metrics", xtask_bench::metrics::metrics),
    ("maintenance", xtask_bench::maintenance::maintenance),
];
const BENCH_USAGE: &str =
    "usage: cargo xtask bench startup|durability|failover|catalog|clients|metrics|maintenance [ARGS…]";

mod clients;
mod container;
mod container_smoke;
mod libduckdb;

use xtask_bench::support;

// The one place versions are pinned. `base` links nothing (catalog-server would need libduckdb
// before `deps` fetched it).
use base::versions;

fn main() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let (cmd, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(c, r)| (c.as_str(), r));
    match cmd {
        "deps" => deps().map(|_| ()),
        "test" => test(rest),
        "ci" => ci(rest),
        "clippy" => clippy(),
        "serve" => serve(rest),
        "container" => container::container(rest),
        "bench" => match rest.split_first() {
            Some((what, args)) if what == "startup" => {
                let deps = deps()?;
                xtask_bench::startup::startup(args, &deps.extensions, build_binary)
            }
            Some((what, args)) => {
                let Some((_, bench)) = BENCHES.iter().find(|(name, _)| name == what) else {
                    bail!("unknown bench `{what}`; {BENCH_USAGE}")
                };
                let deps = deps()?;
                let bin = build_binary(true)?;
                bench(args, &deps.venv, &deps.extensions, &bin)
            }
            None => bail!("{BENCH_USAGE}"),
        },
        _ => {
            eprintln!("usage: cargo xtask <deps|test|ci|clippy|serve|bench|container> [ARGS…]");
            if cmd == "help" || cmd == "--help" {
                Ok(())
            } else {
                bail!("unknown xtask command `{cmd}`")
            }
        }
    }
}

/// Where test dependencies and the shared target directory live.
fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("DUCKLAKE_CATALOG_CACHE") {
        return PathBuf::from(dir);
    }
    let home = env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("ducklake-catalog")
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| cache_dir().join("target"), PathBuf::from)
}

/// The clone xtask was run from. `cargo run` names it at run time; the compile-time path is only
/// a fallback, since one shared target directory may hold an xtask built from another clone.
fn workspace_root() -> PathBuf {
    env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// What `deps` installed.
struct Deps {
    venv: PathBuf,
    extensions: PathBuf,
    pg_bin: PathBuf,
}

/// The prebuilt libduckdb, fetched and placed in the target folder: what every cargo build
/// that links DuckDB needs first.
fn libduckdb() -> Result<PathBuf> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("create {}", cache.display()))?;
    let dir = libduckdb::fetch(&cache)?;
    libduckdb::place(&dir, &target_dir())?;
    Ok(dir)
}

fn deps() -> Result<Deps> {
    libduckdb()?;
    let pg_bin = postgres()?;
    pgbouncer()?;
    browser()?;
    let cache = cache_dir();
    let venv = python_venv(&cache)?;
    let extensions = extension_dir(&cache)?;
    Ok(Deps {
        venv,
        extensions,
        pg_bin,
    })
}

fn postgres() -> Result<PathBuf> {
    let bin = PathBuf::from(format!("/usr/lib/postgresql/{}/bin", versions::PG_MAJOR));
    if bin.join("postgres").is_file() {
        return Ok(bin);
    }
    if !is_root() {
        bail!(
            "PostgreSQL {} is not installed: run `sudo apt-get install postgresql-{}` (or run this as root)",
            versions::PG_MAJOR,
            versions::PG_MAJOR
        );
    }
    eprintln!(
        "xtask: installing postgresql-{} from Debian",
        versions::PG_MAJOR
    );
    // No default cluster: the product runs its own; a system-wide PG must not start.
    fs::create_dir_all("/etc/postgresql-common").context("create /etc/postgresql-common")?;
    fs::write(
        "/etc/postgresql-common/createcluster.conf",
        "create_main_cluster = false\n",
    )
    .context("write createcluster.conf")?;
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .arg(format!("postgresql-{}", versions::PG_MAJOR))
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(bin)
}

/// Debian's PgBouncer, for `[pooler]` and its tests; installed without starting Debian's own
/// instance (which would take port 6432).
fn pgbouncer() -> Result<PathBuf> {
    let bin = PathBuf::from("/usr/sbin/pgbouncer");
    if bin.is_file() {
        return Ok(bin);
    }
    if !is_root() {
        bail!("PgBouncer is not installed: run `sudo apt-get install pgbouncer` (or run this as root)");
    }
    eprintln!("xtask: installing pgbouncer from Debian");
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        fs::write(policy, "#!/bin/sh\nexit 101\n").context("write policy-rc.d")?;
        run(Command::new("chmod").args(["0755", "/usr/sbin/policy-rc.d"]))?;
    }
    let installed = run(Command::new("apt-get").arg("update").arg("-q")).and_then(|()| {
        run(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "pgbouncer",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    if ours {
        let _ = fs::remove_file(policy);
    }
    installed?;
    Ok(bin)
}

/// Debian's chromium and chromium-driver, for the status page's browser test.
fn browser() -> Result<()> {
    if Path::new("/usr/bin/chromium").is_file() && Path::new("/usr/bin/chromedriver").is_file() {
        return Ok(());
    }
    if !is_root() {
        bail!("chromium is not installed: run `sudo apt-get install chromium chromium-driver` (or run this as root)");
    }
    eprintln!("xtask: installing chromium and chromium-driver from Debian");
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "chromium",
            "chromium-driver",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The pinned Python requirements, one per line.
fn requirements() -> String {
    let v = versions::DUCKDB_VERSION;
    let reqs = [
        format!("duckdb=={v}"),
        format!("duckdb-cli=={v}"),
        format!("moto[server]=={}", versions::MOTO_VERSION),
        format!("cfn-lint=={}", versions::CFN_LINT_VERSION),
        format!("selenium=={}", versions::SELENIUM_VERSION),
    ];
    // The extension files come from their wheels through `extension_dir`, not the venv.
    reqs.join("\n") + "\n"
}

fn python_venv(cache: &Path) -> Result<PathBuf> {
    let venv = cache.join("venv");
    venv_with(&venv, &requirements())?;
    Ok(venv)
}

/// Makes (or keeps, when its requirements are unchanged) a venv at `venv` with `wanted`
/// installed from PyPI.
fn venv_with(venv: &Path, wanted: &str) -> Result<()> {
    let stamp = venv.join("ducklake-catalog-requirements.txt");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && venv.join("bin/python").is_file() {
        return Ok(());
    }
    eprintln!("xtask: creating a Python venv in {}", venv.display());
    let python = env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if !Command::new(&python)
        .args(["-m", "venv", "--clear"])
        .arg(venv)
        .status()
        .is_ok_and(|s| s.success())
    {
        if !is_root() {
            bail!("`{python} -m venv` failed: install python3-venv (apt-get install python3-venv)");
        }
        run(Command::new("apt-get").args(["install", "-y", "-q", "python3-venv"]))?;
        run(Command::new(&python)
            .args(["-m", "venv", "--clear"])
            .arg(venv))?;
    }
    let req_file = venv.join("requirements.txt");
    fs::write(&req_file, wanted).context("write requirements.txt")?;
    run(Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&req_file))?;
    fs::write(&stamp, wanted).context("write the venv stamp")?;
    Ok(())
}

/// The extension files of the pinned engine in DuckDB's directory layout, taken out of their
/// PyPI wheels by `docker/fetch-extensions.py` (the script the image build runs; it checks each
/// wheel's sha256 and keeps the wheels in the cache): all `serve` needs besides the binary.
fn extension_dir(cache: &Path) -> Result<PathBuf> {
    let root = cache.join("extensions");
    let dest = root
        .join(format!("v{}", versions::DUCKDB_VERSION))
        .join(versions::DUCKDB_PLATFORM);
    if versions::DUCKDB_EXTENSIONS
        .iter()
        .all(|(_, file)| dest.join(format!("{file}.duckdb_extension")).is_file())
    {
        return Ok(root);
    }
    eprintln!(
        "xtask: fetching the DuckDB {} extension files from PyPI",
        versions::DUCKDB_VERSION
    );
    run(
        Command::new(env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(workspace_root().join("docker/fetch-extensions.py"))
            .args(["--version", versions::DUCKDB_VERSION, "--dest"])
            .arg(&root)
            .arg("--cache")
            .arg(cache.join("wheels"))
            .args(
                versions::DUCKDB_EXTENSIONS
                    .iter()
                    .map(|(wheel, file)| format!("{wheel}:{file}")),
            ),
    )?;
    Ok(root)
}

/// Copies `wheels`' extension files at engine version `v` from `venv` into `root`, in the
/// layout DuckDB's `extension_directory` has.
fn copy_extensions(root: &Path, venv: &Path, v: &str, wheels: &[(&str, &str)]) -> Result<()> {
    let dest = root.join(format!("v{v}")).join(versions::DUCKDB_PLATFORM);
    fs::create_dir_all(&dest).with_context(|| format!("create {}", dest.display()))?;
    let site = site_packages(venv)?;
    for (wheel, file) in wheels {
        let src = site
            .join(format!("duckdb_extension_{wheel}"))
            .join("extensions")
            .join(format!("v{v}"))
            .join(format!("{wheel}.duckdb_extension"));
        let target = dest.join(format!("{file}.duckdb_extension"));
        let same =
            fs::metadata(&target).ok().map(|m| m.len()) == fs::metadata(&src).ok().map(|m| m.len());
        if !same {
            fs::copy(&src, &target)
                .with_context(|| format!("copy {} to {}", src.display(), target.display()))?;
        }
    }
    Ok(())
}

fn site_packages(venv: &Path) -> Result<PathBuf> {
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .context("ask the venv for its site-packages")?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .env(
            "DUCKDB_LIB_DIR",
            cache_dir()
                .join("libduckdb")
                .join(versions::LIBDUCKDB_NPM_VERSION),
        );
    // `cargo run` gave xtask its own package's variables. Passed on, they change what some
    // build scripts see (ring tracks CARGO_MANIFEST_DIR), which would rebuild dependencies
    // whenever builds alternate between xtask and a plain `cargo`.
    for (name, _) in env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
        ]
        .iter()
        .any(|p| name.starts_with(p))
        {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

/// Every test: `cargo test --workspace`, then the container smoke test. With arguments (a test
/// filter, `--no-container`) only the cargo tests run.
fn test(args: &[String]) -> Result<()> {
    let no_container = args.iter().any(|a| a == "--no-container");
    let args: Vec<&String> = args.iter().filter(|a| *a != "--no-container").collect();
    // Release, like the binaries the image ships: one build of the dependencies serves clippy,
    // the tests, the container and the benchmarks. The build starts first and compiles while
    // the test dependencies download (a cold machine spends minutes on each).
    libduckdb()?;
    let building = Background::start(
        cargo()
            .args(["test", "--workspace", "--release", "--no-run"])
            .args(&args),
    )?;
    let deps = deps()?;
    // Only the tests need the other languages' clients; `serve` needs none of them.
    let clients = clients::install(&cache_dir())?;
    building.wait()?;
    let mut cmd = cargo();
    // Every test binary runs even after one fails: one CI run shows every failure.
    cmd.args(["test", "--workspace", "--release", "--no-fail-fast"])
        .args(&args);
    cmd.env("DUCKLAKE_TEST_VENV", &deps.venv)
        .env("DUCKLAKE_TEST_EXTENSIONS", &deps.extensions)
        .env("DUCKLAKE_TEST_PG_BIN", &deps.pg_bin)
        .env("DUCKLAKE_TEST_CLIENTS", &clients);
    let tested = run(&mut cmd);
    let screenshot = target_dir().join("tmp/status-page.png");
    if screenshot.is_file() {
        println!(
            "status page screenshot (browser test): {}",
            screenshot.display()
        );
    }
    tested?;
    if no_container || !args.is_empty() {
        return Ok(());
    }
    container::build_and_smoke(&container::default_tag(), Some(&deps))
        .context("the container smoke test (`cargo xtask test --no-container` skips it)")
}

fn ci(args: &[String]) -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    clippy()?;
    test(args)
}

/// `cargo clippy -D warnings` on every target, in release like the tests (one build of the
/// dependencies serves both).
fn clippy() -> Result<()> {
    libduckdb()?;
    run(cargo().args([
        "clippy",
        "--release",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn serve(args: &[String]) -> Result<()> {
    // Build both binaries (serve installs the ducklake-wal helper from beside itself) while
    // PostgreSQL and the extension files install. Serving needs none of the tests' Python
    // tools (moto, cfn-lint), so no venv is made here.
    libduckdb()?;
    let building =
        Background::start(cargo().args(["build", "-p", "ducklake-catalog", "--release"]))?;
    postgres()?;
    let extensions = extension_dir(&cache_dir())?;
    building.wait()?;
    let bin = target_dir().join("release").join("ducklake-catalog");
    let mut cmd = Command::new(bin);
    // xtask's own cache override shares the server's variable prefix but is no config key.
    cmd.arg("serve")
        .args(args)
        .env_remove("DUCKLAKE_CATALOG_CACHE");
    if env::var_os("DUCKLAKE_CATALOG_DUCKDB__EXTENSION_DIRECTORY").is_none() {
        cmd.env("DUCKLAKE_CATALOG_DUCKDB__EXTENSION_DIRECTORY", &extensions);
    }
    run(&mut cmd)
}

/// Builds the `ducklake-catalog` and `ducklake-wal` binaries; returns the first one's path.
fn build_binary(release: bool) -> Result<PathBuf> {
    libduckdb()?;
    let mut cmd = cargo();
    cmd.args(["build", "-p", "ducklake-catalog"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join("ducklake-catalog"))
}

/// A command running beside the next steps (a build while dependencies download).
struct Background {
    child: std::process::Child,
    what: String,
}

impl Background {
    fn start(cmd: &mut Command) -> Result<Background> {
        let what = format!("{cmd:?}");
        let child = cmd.spawn().with_context(|| format!("run {what}"))?;
        Ok(Background { child, what })
    }

    fn wait(mut self) -> Result<()> {
        let status = self
            .child
            .wait()
            .with_context(|| format!("wait for {}", self.what))?;
        if !status.success() {
            bail!("{} failed: {status}", self.what);
        }
        Ok(())
    }
}

impl Drop for Background {
    /// A step after the start failed: the command goes too (after `wait` it has ended).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
