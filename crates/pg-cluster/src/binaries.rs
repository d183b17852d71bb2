//! Finding the PostgreSQL server binaries and checking their major version.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ClusterError;
use base::versions::PG_MAJOR;

/// The PostgreSQL programs the supervisor runs.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bin_dir: PathBuf,
}

impl PgBinaries {
    /// `configured` (key `postgres.bin_dir`), else Debian's path, else `pg_config --bindir`.
    pub fn find(configured: Option<&Path>) -> Result<Self, ClusterError> {
        let candidates: Vec<(PathBuf, &str)> = if let Some(dir) = configured {
            vec![(dir.to_path_buf(), "postgres.bin_dir")]
        } else {
            let mut c = vec![(
                PathBuf::from(format!("/usr/lib/postgresql/{PG_MAJOR}/bin")),
                "Debian's path",
            )];
            if let Some(dir) = pg_config_bindir() {
                c.push((dir, "pg_config --bindir"));
            }
            c
        };
        for (dir, _) in &candidates {
            let bins = PgBinaries {
                bin_dir: dir.clone(),
            };
            if bins.postgres().is_file() && bins.initdb().is_file() {
                bins.check_major()?;
                return Ok(bins);
            }
        }
        let looked: Vec<String> = candidates
            .iter()
            .map(|(d, how)| format!("{} ({how})", d.display()))
            .collect();
        Err(ClusterError::BinariesMissing {
            looked: looked.join(", "),
        })
    }

    pub fn postgres(&self) -> PathBuf {
        self.bin_dir.join("postgres")
    }

    pub fn pg_basebackup(&self) -> PathBuf {
        self.bin_dir.join("pg_basebackup")
    }

    pub fn pg_controldata(&self) -> PathBuf {
        self.bin_dir.join("pg_controldata")
    }

    /// Whether this installation ships the `pg_stat_statements` module (Debian's
    /// `postgresql-15` does): the catalog then records what DuckLake clients run.
    pub fn has_pg_stat_statements(&self) -> bool {
        self.has_library("pg_stat_statements")
    }

    /// Whether the server's `lib` folder holds the module `name` (contrib: pg_stat_statements,
    /// passwordcheck, auth_delay).
    pub fn has_library(&self, name: &str) -> bool {
        self.bin_dir
            .parent()
            .is_some_and(|d| d.join(format!("lib/{name}.so")).is_file())
    }

    pub fn initdb(&self) -> PathBuf {
        self.bin_dir.join("initdb")
    }

    /// Runs `postgres --version` and checks it is PostgreSQL [`PG_MAJOR`].
    fn check_major(&self) -> Result<(), ClusterError> {
        let out = Command::new(self.postgres())
            .arg("--version")
            .env_clear()
            .output()
            .map_err(|e| ClusterError::Io {
                action: format!("run {} --version", self.postgres().display()),
                error: e,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let major = text
            .split_whitespace()
            .find_map(|w| w.split('.').next().and_then(|m| m.parse::<u32>().ok()));
        if major == Some(PG_MAJOR) {
            Ok(())
        } else {
            Err(ClusterError::WrongBinaries {
                bin_dir: self.bin_dir.clone(),
                found: text.trim().to_owned(),
            })
        }
    }
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}
