//! One tracing setup for the process: JSON lines in containers, human text on a terminal.

use std::io::IsTerminal;

use base::LogFormat;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// The log filter could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid configuration key `log.level`: {0}; use e.g. `info` or `info,catalog_server=debug`"
)]
pub struct TracingError(String);

/// Installs the global subscriber, writing to stdout. Call once, from `main`.
pub fn init_tracing(format: LogFormat, level: &str) -> Result<(), TracingError> {
    let filter = EnvFilter::try_new(level).map_err(|e| TracingError(e.to_string()))?;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(tracing_subscriber::fmt::time::SystemTime);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .with(Problems)
            .try_init()
    } else {
        builder.with_target(true).finish().with(Problems).try_init()
    };
    result.map_err(|e| TracingError(e.to_string()))
}

/// How many of the server's last warnings and errors are kept for the status page.
const PROBLEMS_KEPT: usize = 20;

fn problems() -> &'static base::recent::RecentLines {
    static KEPT: std::sync::OnceLock<base::recent::RecentLines> = std::sync::OnceLock::new();
    KEPT.get_or_init(|| base::recent::RecentLines::new(PROBLEMS_KEPT))
}

/// The server's last warnings and errors, oldest first: `<RFC 3339 time> <LEVEL> <target>:
/// <message>`. PostgreSQL's and PgBouncer's own lines are left out (a client's failed
/// statement is not the server's problem, and its text can carry the client's data).
pub fn recent_problems() -> Vec<String> {
    problems().lines()
}

/// Keeps every WARN and ERROR event's message in [`recent_problems`].
struct Problems;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Problems {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::WARN
            || matches!(meta.target(), "postgres" | "pgbouncer")
            || meta.target().starts_with("tokio_postgres")
        {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        problems().push(&format!(
            "{} {} {}: {}",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            meta.level(),
            meta.target(),
            message.0
        ));
    }
}

/// An event's `message` field, with its other fields after it as `key=value`.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// Installs a subscriber writing human text to stderr, for one-shot commands whose stdout is
/// their result (`restore`, `backup verify`).
pub fn init_stderr_tracing(level: &str) -> Result<(), TracingError> {
    let filter = EnvFilter::try_new(level).map_err(|e| TracingError(e.to_string()))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init()
        .map_err(|e| TracingError(e.to_string()))
}
