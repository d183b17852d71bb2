//! Which names may name a lake or a user, and which paths may hold a lake's data.

use std::path::{Path, PathBuf};

use storage::DataPath;

/// What the server keeps in its home, besides lakes' data: PGDATA, the socket folder, secrets,
/// extensions, the backup lease, the serve lock. A data path may not hold or be inside any.
const HOME_STATE: &[&str] = &[
    "pgdata",
    "run",
    "secrets",
    "extensions",
    "pooler",
    "pooler.pid",
    "bin",
    "backup-lease.json",
    "serve.lock",
];

/// Why `path` may not be a lake's data path on a server whose home is `home`, if it may not:
/// deleting a lake's data (`lake drop --delete-data`, `gc`) must never reach the server's own
/// state. A local path may not be the home or hold it, nor be or lie inside what the server
/// keeps there ([`HOME_STATE`]); `<home>/lakes/<lake>/` (the default) and other folders of the
/// home are fine. Symbolic links are resolved where they exist.
pub fn data_path_conflict(home: &Path, path: &DataPath) -> Option<String> {
    let DataPath::Local(p) = path else {
        return None;
    };
    let home = resolve_existing(home);
    let p = resolve_existing(p);
    if home.starts_with(&p) {
        return Some(format!(
            "holds the server's home {} (PGDATA, secrets, backups' state): deleting the lake's data would delete the server",
            home.display()
        ));
    }
    let lakes = home.join("lakes");
    if p == lakes {
        return Some(format!(
            "is the folder of every default lake ({}): use {}/<lake>/",
            lakes.display(),
            lakes.display()
        ));
    }
    if let Some(state) = HOME_STATE
        .iter()
        .map(|s| home.join(s))
        .find(|s| p.starts_with(s))
    {
        return Some(format!(
            "is inside the server's own state {} (PGDATA, secrets, the socket): use {}/<lake>/ or a folder outside the home",
            state.display(),
            lakes.display()
        ));
    }
    None
}

/// `path` with its longest existing ancestor's symbolic links resolved.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(real) = std::fs::canonicalize(&cur) {
            return rest.iter().rev().fold(real, |acc: PathBuf, c| acc.join(c));
        }
        match (cur.file_name().map(ToOwned::to_owned), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The longest lake name: PostgreSQL's 63-byte identifiers must hold `<lake>_server`.
pub const MAX_LAKE_NAME: usize = 56;

/// Whether `name` may name a lake: an identifier of at most [`MAX_LAKE_NAME`] characters, not
/// a database PostgreSQL or this server keeps, not starting with `pg_`.
pub fn valid_lake_name(name: &str) -> bool {
    valid_identifier(name)
        && name.len() <= MAX_LAKE_NAME
        && !name.starts_with("pg_")
        && !name.starts_with("ducklake_")
        && !RESERVED_DATABASES.contains(&name)
}

/// True when one path is inside the other; local paths with their symbolic links resolved.
pub fn overlaps(a: &DataPath, b: &DataPath) -> bool {
    if let (DataPath::Local(a), DataPath::Local(b)) = (a, b) {
        let (a, b) = (resolve_existing(a), resolve_existing(b));
        return a.starts_with(&b) || b.starts_with(&a);
    }
    let (a, b) = (a.to_string(), b.to_string());
    a.starts_with(&b) || b.starts_with(&a)
}

pub const RESERVED_DATABASES: &[&str] = &["postgres", "template0", "template1"];

/// A name safe as a PostgreSQL identifier without quoting surprises.
pub fn valid_identifier(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
