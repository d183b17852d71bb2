//! The small base every crate of ducklake-catalog may depend on: the pinned versions users
//! depend on ([`versions`]), [`Secret`], SQL and libpq quoting, and one-line messages.
//!
//! It depends on nothing of ours and on no I/O library, so `health`, `connectors` and `xtask`
//! can use it without pulling in PostgreSQL, DuckDB or AWS.

pub mod duration;
pub mod recent;
pub mod secret;
pub mod versions;

pub use secret::Secret;

/// How log lines are written (`log.format`): the configuration names it, the tracing setup in
/// `health` applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON unless stdout is a terminal.
    Auto,
    Json,
    Text,
}

/// Folds a multi-line message (PostgreSQL, DuckDB and figment write several lines) into one.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Quotes `s` as a SQL string literal (standard_conforming_strings is on).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quotes `s` as a SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes `s` as a libpq connection-string value, only where libpq needs it.
pub fn conninfo_value(s: &str) -> String {
    if !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_the_quote_character() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(conninfo_value("plain"), "plain");
        assert_eq!(conninfo_value("a b'c\\"), "'a b\\'c\\\\'");
        assert_eq!(conninfo_value(""), "''");
    }

    #[test]
    fn one_line_folds_every_whitespace_run() {
        assert_eq!(
            one_line("ERROR:  x\n  DETAIL: y\t z"),
            "ERROR: x DETAIL: y z"
        );
    }
}
