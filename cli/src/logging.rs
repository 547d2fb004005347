//! How `pubsubd` writes its log: to stderr, as text for people or JSON lines for log
//! collectors, filtered by `RUST_LOG` (default: info, with openraft's internals only
//! from warn up). Colour only when stderr is a terminal and `NO_COLOR` is unset.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is not set: one line per meaningful event at info;
/// openraft logs its whole state at start and every step of an election at info, so
/// only its warnings and errors show.
pub const DEFAULT_FILTER: &str = "info,openraft=warn";

/// The log format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people.
    #[default]
    Text,
    /// One JSON object per line, with the span fields of the event.
    Json,
}

/// Installs the process's log subscriber.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_ansi(false)
            .init(),
    }
}
