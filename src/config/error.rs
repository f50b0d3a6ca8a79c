//! [`ConfigError`]: every problem found in a configuration, one per line,
//! each naming the key path (`queues.emails.concurrency: …`) and, when known,
//! where the bad value came from (the file, a `REDQ_…` variable, a flag).
//!
//! Deserialization (figment + serde) stops at the first problem; the
//! cross-field checks in `validate` collect every problem through [`Problems`].

use std::fmt;

use figment::error::{Kind, OneOf};

/// One refused key: its dotted path (empty for file-level problems) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A refused configuration: one or more [`Problem`]s, displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    /// A problem that is not about one key (unreadable file, …).
    pub fn other(message: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![Problem {
                path: String::new(),
                message: message.into(),
            }],
        }
    }

    /// Every problem found, in the order found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for crate::Error {
    fn from(e: ConfigError) -> Self {
        crate::Error::Config(e.to_string())
    }
}

impl From<figment::Error> for ConfigError {
    fn from(errors: figment::Error) -> Self {
        let problems = errors.into_iter().map(problem_from_figment).collect();
        ConfigError { problems }
    }
}

fn problem_from_figment(e: figment::Error) -> Problem {
    let mut path = e.path.clone();
    let message = match &e.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!("unknown key; expected {}", OneOf(expected))
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field) {
                path.push(field.to_string());
            }
            "missing (this key is required)".to_string()
        }
        Kind::UnknownVariant(found, expected) => {
            format!("unknown value {found:?}; expected {}", OneOf(expected))
        }
        kind => kind.to_string(),
    };
    let message = message.trim_end().to_string();
    match origin(&e, &path) {
        // A file-level problem (TOML syntax): its message may span lines, so the origin goes first.
        Some((_, source)) if path.is_empty() => Problem {
            path: String::new(),
            message: format!("{source}: {message}"),
        },
        Some((preposition, source)) => Problem {
            path: key_path(&path),
            message: format!("{message} ({preposition} {source})"),
        },
        None => Problem {
            path: key_path(&path),
            message,
        },
    }
}

/// Where the bad value came from: ("in", "workers.toml"),
/// ("from", "environment variable REDQ_A__B"), ("from", "command-line flag").
fn origin(e: &figment::Error, path: &[String]) -> Option<(&'static str, String)> {
    let md = e.metadata.as_ref()?;
    if let Some(figment::Source::File(file)) = &md.source {
        return Some(("in", file.display().to_string()));
    }
    if md.name.contains("environment variable") {
        let var: Vec<String> = path.iter().map(|k| k.to_ascii_uppercase()).collect();
        let var = format!("{}{}", super::ENV_PREFIX, var.join(super::ENV_SEPARATOR));
        return Some(("from", format!("environment variable {var}")));
    }
    (md.name == super::OVERRIDE_SOURCE).then(|| ("from", super::OVERRIDE_SOURCE.to_string()))
}

/// Joins key segments with `.`, quoting those that are not bare TOML keys
/// (`queues."mail.out".concurrency`), and writes list indexes as `[n]`.
pub fn key_path<S: AsRef<str>>(segments: &[S]) -> String {
    let mut out = String::new();
    for (i, seg) in segments.iter().enumerate() {
        let seg = seg.as_ref();
        let bare = !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let index = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
        // `queues` is a table at the top level, a list inside a pool.
        let after_list = i > 0
            && is_list(segments[i - 1].as_ref())
            && !(i == 1 && segments[0].as_ref() == "queues");
        if index && after_list {
            out.push_str(&format!("[{seg}]"));
            continue;
        }
        if i > 0 {
            out.push('.');
        }
        if bare {
            out.push_str(seg);
        } else {
            out.push_str(&format!("{seg:?}"));
        }
    }
    out
}

/// Keys whose value is a list, so a numeric segment after them is an index.
fn is_list(key: &str) -> bool {
    matches!(key, "cron" | "command" | "queues" | "env_allow")
}

/// Collects problems during validation so all of them are reported at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Records that the key at `path` (segments, joined by [`key_path`]) broke a rule.
    pub fn push<S: AsRef<str>>(&mut self, path: &[S], message: impl Into<String>) {
        self.0.push(Problem {
            path: key_path(path),
            message: message.into(),
        });
    }

    /// Records a problem unless `ok`.
    pub fn check<S: AsRef<str>>(&mut self, ok: bool, path: &[S], message: impl Into<String>) {
        if !ok {
            self.push(path, message);
        }
    }

    pub fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: self.0 })
        }
    }
}
