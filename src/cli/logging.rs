//! How `redq run` writes its log to stderr: JSON or text, and for text
//! whether to colour it and to stamp each line with the time.
//!
//! - Colour (ANSI escapes) only when stderr is a terminal and `NO_COLOR` is
//!   unset or empty (<https://no-color.org>): a file, a pipe or journald
//!   gets plain text.
//! - Under systemd, when stderr is the journal stream (`JOURNAL_STREAM`
//!   names stderr's device and inode, as systemd documents), lines carry no
//!   time of their own: journald stamps each one.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use crate::config::{Config, LogFormat};

/// What the text format adds to a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextStyle {
    /// ANSI colours.
    pub ansi: bool,
    /// A timestamp at the start of each line.
    pub timestamps: bool,
}

/// What [`TextStyle::detect`] looks at, so that it can be tested without a
/// terminal or a journal.
#[derive(Debug, Clone, Default)]
pub struct Surroundings {
    /// Whether stderr is a terminal.
    pub terminal: bool,
    /// `NO_COLOR`, when set.
    pub no_color: Option<String>,
    /// `JOURNAL_STREAM` (`<device>:<inode>`), when set.
    pub journal_stream: Option<String>,
    /// stderr's `(device, inode)`, when it could be read.
    pub stderr_id: Option<(u64, u64)>,
}

impl Surroundings {
    /// This process's stderr and environment.
    pub fn of_this_process() -> Surroundings {
        let stderr = std::io::stderr();
        let stderr_id = stderr
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::fs::File::from)
            .and_then(|f| f.metadata().ok())
            .map(|m| (m.dev(), m.ino()));
        Surroundings {
            terminal: stderr.is_terminal(),
            no_color: std::env::var("NO_COLOR").ok(),
            journal_stream: std::env::var("JOURNAL_STREAM").ok(),
            stderr_id,
        }
    }

    /// Whether stderr is the journal's stream.
    fn journald(&self) -> bool {
        let (Some(stream), Some((dev, ino))) = (&self.journal_stream, self.stderr_id) else {
            return false;
        };
        match stream.split_once(':') {
            Some((d, i)) => d.parse() == Ok(dev) && i.parse() == Ok(ino),
            None => false,
        }
    }
}

impl TextStyle {
    pub fn detect(s: &Surroundings) -> TextStyle {
        let journald = s.journald();
        let no_color = s.no_color.as_deref().is_some_and(|v| !v.is_empty());
        TextStyle {
            ansi: s.terminal && !no_color && !journald,
            timestamps: !journald,
        }
    }
}

/// Installs the global subscriber for `redq run` (a second call does nothing).
pub fn init(c: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&c.daemon.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match c.daemon.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => {
            let style = TextStyle::detect(&Surroundings::of_this_process());
            let builder = builder.with_ansi(style.ansi);
            if style.timestamps {
                builder.try_init()
            } else {
                builder.without_time().try_init()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style(terminal: bool, no_color: Option<&str>, journal: Option<&str>) -> TextStyle {
        TextStyle::detect(&Surroundings {
            terminal,
            no_color: no_color.map(str::to_owned),
            journal_stream: journal.map(str::to_owned),
            stderr_id: Some((8, 1234)),
        })
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let plain = TextStyle {
            ansi: false,
            timestamps: true,
        };
        assert_eq!(
            style(true, None, None),
            TextStyle {
                ansi: true,
                timestamps: true
            }
        );
        assert_eq!(style(false, None, None), plain, "a file or a pipe");
        assert_eq!(style(true, Some("1"), None), plain, "NO_COLOR=1");
        assert!(
            style(true, Some(""), None).ansi,
            "an empty NO_COLOR counts as unset"
        );
    }

    #[test]
    fn the_journal_gets_plain_lines_without_timestamps() {
        let journald = TextStyle {
            ansi: false,
            timestamps: false,
        };
        assert_eq!(style(false, None, Some("8:1234")), journald);
        assert_eq!(style(true, None, Some("8:1234")), journald);
        // Inherited by a process whose stderr is elsewhere: not the journal.
        assert!(style(false, None, Some("8:999")).timestamps);
        assert!(style(false, None, Some("garbage")).timestamps);
    }
}
