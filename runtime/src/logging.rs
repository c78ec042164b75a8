//! Structured logging with a level that can be changed while the process runs.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A validated log filter.
#[derive(Clone, Debug)]
pub struct LogLevel(String);

/// Why logging could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The level is not a level or filter directive.
    #[error("invalid log level {level:?}: {reason}")]
    Level {
        /// What was given.
        level: String,
        /// What the parser said.
        reason: String,
    },
    /// A global logger was already installed.
    #[error("logging is already initialised: {0}")]
    AlreadyInitialised(String),
    /// The logger is gone (the process is shutting down).
    #[error("cannot change the log level: {0}")]
    Reload(String),
}

impl LogLevel {
    /// Parses `error|warn|info|debug|trace` or any tracing filter directive.
    pub fn parse(level: &str) -> Result<Self, LoggingError> {
        EnvFilter::try_new(level).map_err(|e| LoggingError::Level {
            level: level.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self(level.to_owned()))
    }

    fn filter(&self) -> EnvFilter {
        // Parsed successfully in `parse`.
        EnvFilter::try_new(&self.0).unwrap_or_else(|_| EnvFilter::new("info"))
    }
}

/// The installed logger; keeps the handle that changes its level.
#[derive(Clone, Debug)]
pub struct Logging {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl Logging {
    /// Installs the global logger. Call once, first thing in `main`.
    pub fn init(level: &str, format: LogFormat) -> Result<Self, LoggingError> {
        let level = LogLevel::parse(level)?;
        let (filter, handle) = reload::Layer::new(level.filter());
        let registry = tracing_subscriber::registry().with(filter);
        let result = match format {
            LogFormat::Text => registry
                .with(tracing_subscriber::fmt::layer().with_target(true))
                .try_init(),
            LogFormat::Json => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true),
                )
                .try_init(),
        };
        result.map_err(|e| LoggingError::AlreadyInitialised(e.to_string()))?;
        Ok(Self { handle })
    }

    /// Changes the level of the running logger.
    pub fn set_level(&self, level: &str) -> Result<(), LoggingError> {
        let level = LogLevel::parse(level)?;
        self.handle
            .reload(level.filter())
            .map_err(|e| LoggingError::Reload(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_parse_and_nonsense_does_not() {
        for ok in [
            "info",
            "debug",
            "warn,kube=debug",
            "ferrolb_controller=trace",
        ] {
            assert!(LogLevel::parse(ok).is_ok(), "{ok}");
        }
        let err = LogLevel::parse("info,kube=loud").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid log level \"info,kube=loud\""),
            "{err}"
        );
    }
}
