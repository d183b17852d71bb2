//! The roles a lake's users are members of.

use std::fmt;

use serde::Serialize;

/// What a user may do in one lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LakeRole {
    Reader,
    Writer,
    /// A writer that also owns the lake's DuckLake tables: only it (and the admin, a member of
    /// every lake's owner role) can alter or drop them, e.g. to run DuckLake's own migration.
    Owner,
}

impl LakeRole {
    pub fn name(self) -> &'static str {
        match self {
            LakeRole::Reader => "reader",
            LakeRole::Writer => "writer",
            LakeRole::Owner => "owner",
        }
    }

    /// Every role, least privilege first.
    pub const ALL: [LakeRole; 3] = [LakeRole::Reader, LakeRole::Writer, LakeRole::Owner];

    /// The group role of `lake` that grants this.
    pub fn group(self, lake: &str) -> String {
        format!("{lake}_{}", self.name())
    }
}

impl fmt::Display for LakeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
