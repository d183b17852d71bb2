//! Re-emits PostgreSQL's stderr as structured tracing events.
//!
//! PostgreSQL writes `log_line_prefix` = [`LINE_PREFIX`] before each message, so a line reads
//! `pid|user|database|sqlstate|SEVERITY:  message`. Continuation lines (a multi-line statement)
//! carry no prefix and are emitted as they are.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The `log_line_prefix` the managed configuration sets.
pub(super) const LINE_PREFIX: &str = "%p|%u|%d|%e|";

/// How many of PostgreSQL's last lines are kept to explain a failed start.
const KEEP: usize = 20;

/// The last lines PostgreSQL wrote, shared with the start-up error path.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecentLines(Arc<Mutex<VecDeque<String>>>);

impl RecentLines {
    fn push(&self, line: &str) {
        let mut q = self.0.lock().expect("log buffer lock is never poisoned");
        if q.len() == KEEP {
            q.pop_front();
        }
        q.push_back(line.to_owned());
    }

    /// The kept lines that carry a severity worth showing, joined on one line.
    pub(crate) fn summary(&self) -> String {
        let q = self.0.lock().expect("log buffer lock is never poisoned");
        let important: Vec<&str> = q
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
        let q = self.0.lock().expect("log buffer lock is never poisoned");
        q.iter().any(|l| l.contains(needle))
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

/// Reads `stream` to its end, emitting one tracing event per line.
pub(crate) async fn forward(stream: impl AsyncRead + Unpin, recent: RecentLines) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        recent.push(&line);
        emit(&line);
    }
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
    fn summary_keeps_the_last_messages() {
        let r = RecentLines::default();
        r.push("1||||LOG:  starting");
        r.push("1||||FATAL:  could not bind IPv4 address \"127.0.0.1\": Address already in use");
        assert!(r.summary().ends_with("Address already in use"));
        assert!(r.mentions("Address already in use"));
    }
}
