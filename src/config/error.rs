//! [`ConfigError`]: every problem found in a configuration, one per line,
//! each naming the key path (`queues.emails.concurrency: …`) and, when known,
//! where the bad value came from (the file, a `REDQ_…` variable, a flag).
//!
//! Reading collects every unknown key and ill-typed value (see `read.rs`);
//! the cross-field checks in `validate` collect every problem through [`Problems`].

use std::fmt;

use figment::error::{Kind, OneOf};

/// One refused key: its dotted path (empty for file-level problems), why,
/// and where the value came from when known ("in workers.toml, line 12",
/// "from environment variable REDQ_A__B", "from command-line flag").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
    pub origin: Option<String>,
    /// The path's keys, unjoined (list indexes as numbers).
    pub(crate) segments: Vec<String>,
}

impl Problem {
    /// A problem with the key at `segments`.
    pub fn at<S: AsRef<str>>(segments: &[S], message: impl Into<String>) -> Problem {
        Problem {
            path: key_path(segments),
            message: message.into(),
            origin: None,
            segments: segments.iter().map(|s| s.as_ref().to_owned()).collect(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.origin, self.path.is_empty()) {
            // A file-level problem (TOML syntax): its message may span lines, so the origin goes first.
            (Some(origin), true) => write!(f, "{origin}: {}", self.message),
            (None, true) => f.write_str(&self.message),
            (Some(origin), false) => write!(f, "{}: {} ({origin})", self.path, self.message),
            (None, false) => write!(f, "{}: {}", self.path, self.message),
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
            problems: vec![Problem::at::<&str>(&[], message)],
        }
    }

    pub(crate) fn from_problems(problems: Vec<Problem>) -> Self {
        ConfigError { problems }
    }

    /// Every problem found, taking them out.
    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
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
        let problems = errors
            .into_iter()
            .map(|e| problem_from_figment(&e))
            .collect();
        ConfigError { problems }
    }
}

pub(super) fn problem_from_figment(e: &figment::Error) -> Problem {
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
    let mut p = Problem::at(&path, message.trim_end());
    p.origin = origin(e, &path);
    p
}

/// Where the bad value came from, when figment says: "in workers.toml",
/// "from environment variable REDQ_A__B", "from command-line flag".
fn origin(e: &figment::Error, path: &[String]) -> Option<String> {
    let md = e.metadata.as_ref()?;
    if let Some(figment::Source::File(file)) = &md.source {
        return Some(format!("in {}", file.display()));
    }
    if md.name.contains("environment variable") {
        let var: Vec<String> = path.iter().map(|k| k.to_ascii_uppercase()).collect();
        let var = format!("{}{}", super::ENV_PREFIX, var.join(super::ENV_SEPARATOR));
        return Some(format!("from environment variable {var}"));
    }
    (md.name == super::OVERRIDE_SOURCE).then(|| format!("from {}", super::OVERRIDE_SOURCE))
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
        self.0.push(Problem::at(path, message));
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
