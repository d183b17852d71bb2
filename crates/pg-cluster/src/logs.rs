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
pub(crate) async fn forward(stream: impl AsyncRead + Unpin, recent: RecentLines) {
    let mut lines = BufReader::new(stream).lines();
    let mut redactor = Redactor::default();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = redactor.line(&line);
        recent.push(&line);
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
        // A new record ends the last one, unless a constant is still open: a line inside it can
        // look like a record's prefix, and redacting too much is the safe side.
        if self.open.is_none() && parse(line).is_some() {
            self.active = false;
        }
        if !self.active && line.to_ascii_lowercase().contains("password") {
            self.active = true;
        }
        if !self.active {
            return line.to_owned();
        }
        let mut out = String::with_capacity(line.len());
        let mut rest = line;
        loop {
            if let Some(close) = self.open.clone() {
                let Some(end) = find_close(rest, &close) else {
                    out.push_str(base::secret::REDACTED);
                    return out;
                };
                out.push_str(base::secret::REDACTED);
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
        assert!(!r.line("  'multi").contains("multi"));
        assert!(!r
            .line("999|x|y|00000|LOG:  still-secret")
            .contains("still-secret"));
        assert!(!r.line("line-secret'").contains("line-secret"));
        let plain = "16|bob|lake|00000|LOG:  statement: SELECT 'visible'";
        assert_eq!(r.line(plain), plain);
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
