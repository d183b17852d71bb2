//! `cargo xtask container [--tag T] [--smoke]`: the container image, built from
//! docker/Dockerfile, and its smoke test.
//!
//! The runtime stage is built from binaries compiled here (`--build-arg BINARIES=prebuilt`,
//! files staged in docker/prebuilt/), so no Rust image has to be pulled; users' `docker build`
//! runs the same Dockerfile's `build` stage instead. With a reachable Docker daemon, `docker
//! build` is used. Otherwise podman and buildah (installed from Debian when missing and running
//! as root) with a `CONTAINERS_CONF` written here: runc as the runtime and rlimits the sandbox
//! allows, never touching /etc. With podman the `debian:bookworm-slim` base comes from
//! `mmdebstrap` (minbase, docs and locales left out, as in Debian's slim images) and the
//! machine's configured Debian mirror, imported once, since no registry is reachable.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::support::checked_output;
use crate::{build_binary, cache_dir, is_root, run, versions, workspace_root};

/// The base image the Dockerfile's runtime stage starts from.
const BASE_IMAGE: &str = "debian:bookworm-slim";
const DEBIAN_RELEASE: &str = "bookworm";

/// What runs containers on this machine.
pub(crate) enum Engine {
    Docker,
    Podman { conf: PathBuf },
}

impl Engine {
    /// Docker when its daemon answers, else podman (installed when missing, as root).
    pub(crate) fn detect() -> Result<Engine> {
        if quiet(Command::new("docker").arg("info")) {
            return Ok(Engine::Docker);
        }
        let have = |tool: &str| quiet(Command::new(tool).arg("--version"));
        if !(have("podman") && have("buildah") && have("runc") && have("mmdebstrap")) {
            if !is_root() {
                bail!(
                    "no container engine: start a Docker daemon, or install podman, buildah, runc and mmdebstrap (`sudo apt-get install podman buildah runc mmdebstrap`)"
                );
            }
            eprintln!("xtask: installing podman, buildah, runc and mmdebstrap from Debian");
            run(Command::new("apt-get").args(["update", "-q"]))?;
            // With recommends: netavark (the network stack the smoke test was proven on,
            // instead of CNI), slirp4netns, fuse-overlayfs.
            run(Command::new("apt-get")
                .args(["install", "-y", "-q"])
                .args(["podman", "buildah", "runc", "mmdebstrap"])
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        }
        let dir = cache_dir().join("containers");
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let conf = dir.join("containers.conf");
        // crun fails on this kind of machine's hybrid cgroups; the sandbox caps rlimits below
        // what podman asks for by default.
        fs::write(
            &conf,
            "# Written by `cargo xtask container`.\n\
             [containers]\n\
             default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\n\
             runtime = \"runc\"\n",
        )
        .with_context(|| format!("write {}", conf.display()))?;
        Ok(Engine::Podman { conf })
    }

    /// `docker`, or `podman`/`buildah` with this engine's configuration.
    pub(crate) fn tool(&self, podman_tool: &str) -> Command {
        match self {
            Engine::Docker => Command::new("docker"),
            Engine::Podman { conf } => {
                let mut cmd = Command::new(podman_tool);
                cmd.env("CONTAINERS_CONF", conf);
                cmd
            }
        }
    }

    /// The command that runs, inspects and removes containers.
    pub(crate) fn cli(&self) -> Command {
        self.tool("podman")
    }

    pub(crate) fn is_podman(&self) -> bool {
        matches!(self, Engine::Podman { .. })
    }

    /// Runs a command of this engine; its output, or an error with its stderr.
    pub(crate) fn output(&self, args: &[&str]) -> Result<Output> {
        let tool = if self.is_podman() { "podman" } else { "docker" };
        checked_output(
            self.cli().args(args),
            &format!("`{tool} {}`", args.join(" ")),
        )
    }

    /// The `prebuilt` stage is committed as an untagged image of its own, and buildah keeps a
    /// working container on it after `COPY --from`; removes both (only ours, by their label).
    fn remove_prebuilt_stage(&self) {
        const LABEL: &str = "select.ducklake.catalog.stage";
        if self.is_podman() {
            let listed = self
                .tool("buildah")
                .args([
                    "containers",
                    "--noheading",
                    "--format",
                    "{{.ContainerID}} {{.ImageID}}",
                ])
                .output();
            for line in listed
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .lines()
            {
                let mut ids = line.split_whitespace();
                let (Some(container), Some(image)) = (ids.next(), ids.next()) else {
                    continue;
                };
                let format = format!("{{{{index .Labels \"{LABEL}\"}}}}");
                let is_ours = self
                    .output(&["image", "inspect", "--format", &format, image])
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "prebuilt");
                if is_ours {
                    let _ = self.tool("buildah").args(["rm", container]).output();
                }
            }
        }
        let _ = self.output(&[
            "image",
            "prune",
            "-f",
            "--filter",
            &format!("label={LABEL}=prebuilt"),
        ]);
    }

    /// Makes `debian:bookworm-slim` available to podman without a registry.
    fn ensure_base(&self) -> Result<()> {
        if !self.is_podman() || quiet(self.cli().args(["image", "exists", BASE_IMAGE])) {
            return Ok(());
        }
        let mirror = debian_mirror();
        eprintln!("xtask: creating {BASE_IMAGE} with mmdebstrap from {mirror}");
        let began = Instant::now();
        let dir = cache_dir().join("containers");
        let tar = dir.join(format!("{DEBIAN_RELEASE}-slim.tar"));
        let mut cmd = Command::new("mmdebstrap");
        cmd.args([
            "--variant=minbase",
            "--mode=root",
            "--format=tar",
            "--quiet",
        ]);
        for path in ["man", "locale", "info", "doc"] {
            cmd.arg(format!("--dpkgopt=path-exclude=/usr/share/{path}/*"));
        }
        cmd.arg("--dpkgopt=path-include=/usr/share/doc/*/copyright")
            .arg(DEBIAN_RELEASE)
            .arg(&tar)
            .arg(&mirror);
        run(&mut cmd)?;
        run(self
            .cli()
            .arg("import")
            .arg(&tar)
            .arg(format!("localhost/{BASE_IMAGE}")))?;
        let _ = fs::remove_file(&tar);
        eprintln!(
            "xtask: base image ready in {:.0} s",
            began.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// The image `container` builds unless told otherwise.
pub(crate) fn default_tag() -> String {
    format!("localhost/ducklake-catalog:{}", env!("CARGO_PKG_VERSION"))
}

pub(crate) fn container(args: &[String]) -> Result<()> {
    let mut tag = default_tag();
    let mut smoke = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tag" => tag.clone_from(it.next().context("--tag takes an image name")?),
            "--smoke" => smoke = true,
            other => {
                bail!("unknown option {other}; usage: cargo xtask container [--tag T] [--smoke]")
            }
        }
    }
    let deps = if smoke { Some(crate::deps()?) } else { None };
    build_and_smoke(&tag, deps.as_ref())
}

/// Builds the image as `tag`; with the test dependencies, runs the smoke test on it.
pub(crate) fn build_and_smoke(tag: &str, smoke: Option<&crate::Deps>) -> Result<()> {
    let engine = Engine::detect()?;
    let built = build(&engine, tag)?;
    if let Some(deps) = smoke {
        crate::container_smoke::smoke(&engine, tag, &deps.venv, &deps.extensions, &built)?;
    }
    Ok(())
}

/// What a build measured.
pub(crate) struct Built {
    pub(crate) build_secs: f64,
    pub(crate) size_bytes: u64,
}

/// Compiles the binaries, stages them with the extension files and builds the runtime stage.
fn build(engine: &Engine, tag: &str) -> Result<Built> {
    let root = workspace_root();
    let bin = build_binary(true)?;
    let began = Instant::now();
    engine.ensure_base()?;
    let staged = root.join("docker/prebuilt");
    for sub in ["bin", "lib", "extensions"] {
        let dir = staged.join(sub);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
        }
    }
    fs::create_dir_all(staged.join("bin")).context("create docker/prebuilt/bin")?;
    for name in ["ducklake-catalog", "ducklake-wal"] {
        let from = bin.with_file_name(name);
        fs::copy(&from, staged.join("bin").join(name))
            .with_context(|| format!("stage {}", from.display()))?;
    }
    // The official libduckdb the binary links, into /usr/local/lib (the binary's ../lib),
    // without its symbol table (the dynamic symbols it exports stay).
    fs::create_dir_all(staged.join("lib")).context("create docker/prebuilt/lib")?;
    let lib = staged.join("lib").join(crate::libduckdb::FILE);
    fs::copy(bin.with_file_name(crate::libduckdb::FILE), &lib)
        .with_context(|| format!("stage {}", crate::libduckdb::FILE))?;
    if Command::new("strip").arg("--version").output().is_ok() {
        run(Command::new("strip").arg("--strip-unneeded").arg(&lib))?;
    }
    // The same script the Dockerfile's build stage runs, so both paths install the same files.
    run(
        Command::new(env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(root.join("docker/fetch-extensions.py"))
            .args(["--version", versions::DUCKDB_VERSION, "--dest"])
            .arg(staged.join("extensions"))
            .arg("--cache")
            .arg(cache_dir().join("wheels")),
    )?;
    let build_args = [
        format!("VERSION={}", env!("CARGO_PKG_VERSION")),
        format!("DUCKDB_VERSION={}", versions::DUCKDB_VERSION),
        format!("DUCKLAKE_SPEC_VERSION={}", versions::DUCKLAKE_SPEC_VERSION),
        format!("PG_MAJOR={}", versions::PG_MAJOR),
        "BINARIES=prebuilt".to_owned(),
    ];
    let mut cmd = match engine {
        Engine::Docker => {
            let mut c = engine.tool("docker");
            c.arg("build");
            c
        }
        Engine::Podman { .. } => {
            let mut c = engine.tool("buildah");
            // chroot isolation lets RUN reach Debian's mirror here; the docker format keeps
            // HEALTHCHECK, which OCI image configs cannot hold.
            c.args(["build", "--isolation", "chroot", "--format", "docker"]);
            c
        }
    };
    cmd.args(["--target", "runtime", "-f"])
        .arg(root.join("docker/Dockerfile"))
        .args(["-t", tag]);
    for a in &build_args {
        cmd.args(["--build-arg", a]);
    }
    cmd.arg(&root);
    run(&mut cmd)?;
    engine.remove_prebuilt_stage();
    let build_secs = began.elapsed().as_secs_f64();
    let size = engine.output(&["image", "inspect", "--format", "{{.Size}}", tag])?;
    let size_bytes = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .context("read the image size")?;
    eprintln!(
        "xtask: built {tag}: {} MB, in {build_secs:.0} s (binaries compiled before)",
        size_bytes / 1_000_000
    );
    Ok(Built {
        build_secs,
        size_bytes,
    })
}

/// The Debian mirror apt uses here (deb822 `.sources` or `sources.list`), else deb.debian.org.
fn debian_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            if e.path().extension().is_some_and(|x| x == "sources") {
                texts.push(fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    texts.push(fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    for text in &texts {
        // deb822: a stanza with URIs and a plain release suite.
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(str::trim))
                    .map(str::to_owned)
            };
            if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) {
                if suites.split_whitespace().any(|s| s == DEBIAN_RELEASE) {
                    if let Some(uri) = uris.split_whitespace().next() {
                        return uri.to_owned();
                    }
                }
            }
        }
        // one-line format: deb [opts] URI SUITE COMPONENTS
        for line in text.lines() {
            let words: Vec<&str> = line
                .split_whitespace()
                .filter(|w| !w.starts_with('['))
                .collect();
            if words.len() >= 3 && words[0] == "deb" && words[2] == DEBIAN_RELEASE {
                return words[1].to_owned();
            }
        }
    }
    "http://deb.debian.org/debian".to_owned()
}

/// True when the command runs and succeeds; its output is discarded.
fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
