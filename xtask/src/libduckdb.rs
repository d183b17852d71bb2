//! The official DuckDB shared library the binaries link instead of compiling DuckDB from source
//! (about 40 minutes on 2 cores).
//!
//! `fetch` takes it from the npm package pinned in `versions.rs` (the same file the Node.js
//! client loads), checks the tarball's SHA-512 against the pin, and keeps `libduckdb.so` in
//! `<cache>/libduckdb/<npm version>/`. Cargo builds get that folder as `DUCKDB_LIB_DIR` (the
//! `duckdb` crate links it from there); `place` puts the library beside the binaries and test
//! executables in the target folder, where their `$ORIGIN` run path (`.cargo/config.toml`)
//! finds it, so nobody sets `LD_LIBRARY_PATH`. An install puts it in `../lib` of the binary.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _, Result};
use sha2::{Digest as _, Sha512};

use crate::{run, versions};

/// The library's file name.
pub(crate) const FILE: &str = "libduckdb.so";

/// The folder holding the verified `libduckdb.so`, fetched when missing.
pub(crate) fn fetch(cache: &Path) -> Result<PathBuf> {
    ensure!(
        versions::LIBDUCKDB_NPM_VERSION.starts_with(&format!("{}-", versions::DUCKDB_VERSION)),
        "versions.rs: LIBDUCKDB_NPM_VERSION {} is not a build of DuckDB {}: the library must be the engine the extension files are built for",
        versions::LIBDUCKDB_NPM_VERSION,
        versions::DUCKDB_VERSION
    );
    let dir = cache
        .join("libduckdb")
        .join(versions::LIBDUCKDB_NPM_VERSION);
    let stamp = dir.join(".sha512");
    if dir.join(FILE).is_file()
        && fs::read_to_string(&stamp).is_ok_and(|s| s == versions::LIBDUCKDB_NPM_SHA512)
    {
        return Ok(dir);
    }
    let spec = format!(
        "{}@{}",
        versions::LIBDUCKDB_NPM_PACKAGE,
        versions::LIBDUCKDB_NPM_VERSION
    );
    eprintln!("xtask: fetching the official libduckdb {spec} from npm");
    crate::clients::need(
        "npm",
        "install Node.js 18 or newer with npm (apt-get install npm)",
    )?;
    let scratch = cache.join("libduckdb").join(".download");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
    run(Command::new("npm")
        .args(["pack", "--silent", "--pack-destination"])
        .arg(&scratch)
        .arg(&spec)
        .current_dir(&scratch))?;
    let tarball = fs::read_dir(&scratch)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .with_context(|| format!("npm pack {spec} left no tarball in {}", scratch.display()))?;
    let digest = sha512_hex(&tarball)?;
    if digest != versions::LIBDUCKDB_NPM_SHA512 {
        bail!(
            "{spec}: the tarball's SHA-512 is {digest}, not the pinned {}; refusing it (versions.rs pins the library)",
            versions::LIBDUCKDB_NPM_SHA512
        );
    }
    run(Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&scratch)
        .arg(format!("package/{FILE}")))?;
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    fs::rename(scratch.join("package").join(FILE), dir.join(FILE))
        .with_context(|| format!("move {FILE} into {}", dir.display()))?;
    fs::write(&stamp, versions::LIBDUCKDB_NPM_SHA512).context("write the libduckdb stamp")?;
    let _ = fs::remove_dir_all(&scratch);
    Ok(dir)
}

fn sha512_hex(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// Puts the library where the `$ORIGIN` run path of the binaries (`<target>/release`) and of
/// the test executables (`<target>/release/deps`) finds it: a hard link, or a copy across
/// file systems.
pub(crate) fn place(lib_dir: &Path, target: &Path) -> Result<()> {
    let src = lib_dir.join(FILE);
    for profile in ["release", "debug"] {
        for sub in ["", "deps"] {
            let dir = target.join(profile).join(sub);
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            let dest = dir.join(FILE);
            let same = fs::metadata(&dest).ok().map(|m| m.len())
                == fs::metadata(&src).ok().map(|m| m.len());
            if same {
                continue;
            }
            let _ = fs::remove_file(&dest);
            if fs::hard_link(&src, &dest).is_err() {
                fs::copy(&src, &dest)
                    .with_context(|| format!("copy {} to {}", src.display(), dest.display()))?;
            }
        }
    }
    Ok(())
}
