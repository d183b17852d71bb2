//! One tracing setup for the process: JSON lines in containers, human text on a terminal.

use std::io::IsTerminal;

use base::LogFormat;
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
            .try_init()
    } else {
        builder.with_target(true).try_init()
    };
    result.map_err(|e| TracingError(e.to_string()))
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
