//! How frametap's binaries (`frametap-agent`, `frametap-api`) log: one line per event
//! on stderr, as text or JSON, filtered by `FRAMETAP_LOG` (default `info`).
//!
//! Colour codes only go to a terminal: logs that end up in a file or in journald must
//! stay plain text. Durations are logged in milliseconds rounded to two decimals, as
//! numbers, so a line reads `duration_ms=11.01` rather than `11.005443999999999`.
use std::{ffi::OsStr, io::IsTerminal as _, time::Duration};

use serde::{Deserialize, Serialize};

/// Log lines as text or as one JSON object per line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Install the global subscriber: stderr, `FRAMETAP_LOG` filter, `format`.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FRAMETAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = colour_wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// ANSI colours only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
pub fn colour_wanted(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// A duration for a log line: milliseconds, rounded to two decimals. The result is
/// the shortest f64 for those digits, so it prints as `11.01` in text and in JSON.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
        assert!(!colour_wanted(false, Some(OsStr::new(""))));
    }

    #[test]
    fn durations_are_milliseconds_with_two_decimals() {
        // The value from the report: 11.005443999999999 ms.
        let d = Duration::from_nanos(11_005_444);
        assert_eq!(millis(d), 11.01);
        assert_eq!(format!("{:?}", millis(d)), "11.01");
        assert_eq!(serde_json::json!(millis(d)).to_string(), "11.01");
        assert_eq!(
            format!("{:?}", millis(Duration::from_micros(3_370))),
            "3.37"
        );
        assert_eq!(format!("{:?}", millis(Duration::from_nanos(4_999))), "0.0");
        assert_eq!(millis(Duration::from_nanos(5_000)), 0.01);
        assert_eq!(millis(Duration::from_secs(90)), 90_000.0);
        assert_eq!(
            format!("{:?}", millis(Duration::from_nanos(123_456_789_012))),
            "123456.79"
        );
    }
}
