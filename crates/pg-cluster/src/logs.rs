//! Re-emits PostgreSQL's stderr as structured tracing events.
//!
//! PostgreSQL writes `log_line_prefix` = [`LINE_PREFIX`] before each message, so a line reads
//! `pid|user|database|sqlstate|SEVERITY:  message`. Continuation lines (a multi-line statement)
//! carry no prefix and are emitted as they are.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The `log_line_prefix` the managed configuration sets.
pub(super) const LINE_PREFIX: &str = "%p|%u|%d|%e|";

/// How many of PostgreSQL's last lines are kept to explain a failed start.
const KEEP: usize = 20;

/// The constraint DuckLake's optimistic commits collide on: two writers insert the same next
/// snapshot id, one fails with a unique violation and retries.
const SNAPSHOT_KEY: &str = "\"ducklake_snapshot_pkey\"";

/// What PostgreSQL's log says that the metrics count, per database: commit conflicts
/// (unique violations on `ducklake_snapshot`'s key, which DuckLake then retries). Shared by
/// every start of one cluster, so counts survive a PostgreSQL restart.
#[derive(Debug, Clone, Default)]
pub struct LogEvents {
    conflicts: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
}

impl LogEvents {
    /// Commit conflicts per database since the server started.
    pub fn conflicts(&self) -> std::collections::BTreeMap<String, u64> {
        self.conflicts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn count(&self, line: &str) {
        let Some(p) = parse(line) else { return };
        // A lake user could raise such an error itself; it would only move its own lake's
        // counter, which it can move anyway by committing concurrently.
        if p.sqlstate == "23505" && p.severity == "ERROR" && p.message.contains(SNAPSHOT_KEY) {
            *self
                .conflicts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(p.database.to_owned())
                .or_default() += 1;
        }
    }
}

/// The last lines PostgreSQL wrote, shared with the start-up error path.
#[derive(Debug, Clone)]
pub(crate) struct RecentLines(base::recent::RecentLines);

impl Default for RecentLines {
    fn default() -> Self {
        RecentLines(base::recent::RecentLines::new(KEEP))
    }
}

impl RecentLines {
    fn push(&self, line: &str) {
        self.0.push(line);
    }

    /// The kept lines that carry a severity worth showing, joined on one line.
    pub(crate) fn summary(&self) -> String {
        let lines = self.0.lines();
        let important: Vec<&str> = lines
            .iter()
            .map(|l| parse(l).map_or(l.as_str(), |p| p.message))
            .filter(|m| !m.is_empty())
            .collect();
        let tail = &important[important.len().saturating_sub(3)..];
        if tail.is_empty() {
            "(no output)".into()
        } else {
            tail.join(" / ")
        }
    }

    /// True when a kept line says the address is in use.
    pub(crate) fn mentions(&self, needle: &str) -> bool {
        self.0.mentions(needle)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Parsed<'a> {
    pid: &'a str,
    user: &'a str,
    database: &'a str,
    sqlstate: &'a str,
    severity: &'a str,
    message: &'a str,
}

fn parse(line: &str) -> Option<Parsed<'_>> {
    let mut parts = line.splitn(5, '|');
    let pid = parts.next()?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (user, database, sqlstate, rest) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let (severity, message) = rest.split_once(":  ")?;
    Some(Parsed {
        pid,
        user,
        database,
        sqlstate,
        severity,
        message,
    })
}

/// Reads `stream` to its end, emitting one tracing event per line, passwords redacted.
pub(crate) async fn forward(
    stream: impl AsyncRead + Unpin,
    recent: RecentLines,
    events: LogEvents,
) {
    let mut lines = BufReader::new(stream).lines();
    let mut redactor = Redactor::default();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = redactor.line(&line);
        recent.push(&line);
        events.count(&line);
        emit(&line);
    }
}

/// Hides the string constants of every log record that mentions a password: with
/// `log_statement` on, PostgreSQL logs a user's own `ALTER ROLE … PASSWORD '…'` as typed (the
/// server itself only ever sends SCRAM verifiers). A record is a prefixed line and the
/// continuation lines after it; quoted (`'…'`, `E'…'`) and dollar-quoted constants are
/// replaced, also when they span lines.
#[derive(Debug, Default)]
struct Redactor {
    /// The record mentions a password.
    active: bool,
    /// Inside a constant that continues on the next line: its closing quote.
    open: Option<String>,
}

impl Redactor {
    fn line(&mut self, line: &str) -> String {
        // A new record ends the last one, and any constant left open in it: PostgreSQL starts
        // every further line of a message with a tab, so no line inside a constant parses as a
        // record. An unbalanced quote (a user can log one) blinds its own record at most.
        if parse(line).is_some() {
            self.active = false;
            self.open = None;
        }
        if !self.active && line.to_ascii_lowercase().contains("password") {
            self.active = true;
        }
        // Constants are followed in every record, so one opened before the record mentions a
        // password (a `$body$` before a `rolpassword`) is known when it closes.
        let redact = self.active;
        let mut out = String::with_capacity(line.len());
        let mut rest = line;
        loop {
            if let Some(close) = self.open.clone() {
                let Some(end) = find_close(rest, &close) else {
                    out.push_str(if redact { base::secret::REDACTED } else { rest });
                    return out;
                };
                out.push_str(if redact {
                    base::secret::REDACTED
                } else {
                    &rest[..end]
                });
                out.push_str(&close);
                rest = &rest[end + close.len()..];
                self.open = None;
            }
            let next_single = rest.find('\'');
            let next_dollar = dollar_tag(rest);
            let (start, close) = match (next_single, next_dollar) {
                (Some(q), Some((d, _))) if q < d => (q, "'".to_owned()),
                (Some(q), None) => (q, "'".to_owned()),
                (_, Some((d, tag))) => (d, tag),
                (None, None) => {
                    out.push_str(rest);
                    return out;
                }
            };
            out.push_str(&rest[..start + close.len()]);
            rest = &rest[start + close.len()..];
            self.open = Some(close);
        }
    }
}

/// The end of a constant closed by `close` in `s` (a doubled `''` is a quote inside it).
fn find_close(s: &str, close: &str) -> Option<usize> {
    if close != "'" {
        return s.find(close);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            if bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The first dollar-quote opener (`$$` or `$tag$`) in `s`: its position and the tag.
fn dollar_tag(s: &str) -> Option<(usize, String)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let mut j = i + 1;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'$' && !(j > i + 1 && bytes[i + 1].is_ascii_digit())
            {
                return Some((i, s[i..=j].to_owned()));
            }
        }
        i += 1;
    }
    None
}

fn emit(line: &str) {
    let Some(p) = parse(line) else {
        tracing::info!(target: "postgres", "{line}");
        return;
    };
    macro_rules! ev {
        ($lvl:expr) => {
            tracing::event!(target: "postgres", $lvl, pg_pid = p.pid, pg_user = p.user,
                pg_database = p.database, sqlstate = p.sqlstate, severity = p.severity,
                "{}", p.message)
        };
    }
    match p.severity {
        "ERROR" | "FATAL" | "PANIC" => ev!(tracing::Level::ERROR),
        "WARNING" => ev!(tracing::Level::WARN),
        s if s.starts_with("DEBUG") => ev!(tracing::Level::DEBUG),
        _ => ev!(tracing::Level::INFO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_lines_are_split_into_fields() {
        let p = parse("4242|admin|lakehouse|42P01|ERROR:  relation \"x\" does not exist").unwrap();
        assert_eq!(p.pid, "4242");
        assert_eq!(p.user, "admin");
        assert_eq!(p.database, "lakehouse");
        assert_eq!(p.sqlstate, "42P01");
        assert_eq!(p.severity, "ERROR");
        assert_eq!(p.message, "relation \"x\" does not exist");
        let p = parse("17||||LOG:  database system is ready to accept connections").unwrap();
        assert_eq!((p.user, p.severity), ("", "LOG"));
        assert!(parse("\tcontinuation of a statement").is_none());
    }

    #[test]
    fn commit_conflicts_are_counted_per_database() {
        let e = LogEvents::default();
        e.count("51|w|sales|23505|ERROR:  duplicate key value violates unique constraint \"ducklake_snapshot_pkey\"");
        e.count("52|w|sales|23505|ERROR:  duplicate key value violates unique constraint \"ducklake_snapshot_pkey\"");
        e.count("53|w|hr|23505|ERROR:  duplicate key value violates unique constraint \"ducklake_snapshot_pkey\"");
        // Other unique violations, other severities and unprefixed lines are not conflicts.
        e.count(
            "54|w|sales|23505|ERROR:  duplicate key value violates unique constraint \"t_pkey\"",
        );
        e.count("55|w|sales|00000|LOG:  ducklake_snapshot_pkey");
        e.count("\tducklake_snapshot_pkey");
        let c = e.conflicts();
        assert_eq!(c.get("sales"), Some(&2));
        assert_eq!(c.get("hr"), Some(&1));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn passwords_never_reach_the_log() {
        let mut r = Redactor::default();
        for (line, secret) in [
            (
                "12|bob|lake|00000|LOG:  statement: ALTER ROLE bob PASSWORD 'hunter2-x'",
                "hunter2-x",
            ),
            (
                "13|bob|lake|00000|LOG:  statement: alter role bob password $p$tops3cret$p$",
                "tops3cret",
            ),
            (
                "14|bob|lake|00000|LOG:  statement: ALTER ROLE bob PASSWORD 'it''s-s3cret'",
                "s-s3cret",
            ),
        ] {
            let out = r.line(line);
            assert!(!out.contains(secret), "{out}");
            assert!(
                out.contains("ALTER ROLE") || out.contains("alter role"),
                "{out}"
            );
        }
        assert!(r
            .line("15|bob|lake|00000|LOG:  statement: ALTER ROLE bob PASSWORD")
            .contains("PASSWORD"));
        // PostgreSQL starts each further line of a message with a tab: a line of a constant
        // that looks like a record is still inside it.
        assert!(!r.line("\t'multi").contains("multi"));
        assert!(!r
            .line("\t999|x|y|00000|LOG:  still-secret")
            .contains("still-secret"));
        assert!(!r.line("\tline-secret'").contains("line-secret"));
        let plain = "16|bob|lake|00000|LOG:  statement: SELECT 'visible'";
        assert_eq!(r.line(plain), plain);
    }

    #[test]
    fn a_function_body_before_the_word_password_does_not_blind_the_log() {
        // What the pooler's lookup function logs (log_statement = ddl): the body opens with a
        // dollar quote before `rolpassword` appears; the record ends, and later records are
        // shown as they are.
        let mut r = Redactor::default();
        let record = [
            "7|su|sales|00000|LOG:  statement: CREATE FUNCTION f() RETURNS text",
            "\t  LANGUAGE sql AS $body$",
            "\t  SELECT rolpassword FROM pg_authid WHERE rolname = 'bob'",
            "\t$body$;",
        ];
        let out: Vec<String> = record.iter().map(|l| r.line(l)).collect();
        assert!(!out[2].contains("bob"), "{out:?}");
        let later = "8|w|sales|23505|ERROR:  duplicate key value violates unique constraint \"ducklake_snapshot_pkey\"";
        assert_eq!(r.line(later), later);
        // A record with an unbalanced quote blinds nothing after it either.
        r.line("9|w|sales|P0001|ERROR:  it's a trap: password");
        let next = "10|w|sales|00000|LOG:  statement: SELECT 'visible'";
        assert_eq!(r.line(next), next);
    }

    #[test]
    fn summary_keeps_the_last_messages() {
        let r = RecentLines::default();
        r.push("1||||LOG:  starting");
        r.push("1||||FATAL:  could not bind IPv4 address \"127.0.0.1\": Address already in use");
        assert!(r.summary().ends_with("Address already in use"));
        assert!(r.mentions("Address already in use"));
    }
}
