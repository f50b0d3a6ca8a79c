//! A queue's `handler`: what its jobs run, written as one inline table with
//! exactly one kind key —
//!
//! ```toml
//! handler = { command = ["/usr/local/bin/send-email", "--quiet"], kill_grace = "10s" }
//! handler = { http = "http://127.0.0.1:8080/jobs", headers = { Authorization = "Bearer x" } }
//! handler = { builtin = "noop" }
//! ```
//!
//! The table is read into `RawHandler` (all keys optional, unknown keys
//! refused) and then checked into the typed [`HandlerConfig`], so a missing or
//! doubled kind, or a key of another kind, is refused with the handler's path.
//! Whether `command[0]` exists is checked where the command is resolved, not here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::error::Problems;

/// A queue's handler; see the module docs for the TOML form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawHandler", into = "RawHandler")]
pub enum HandlerConfig {
    Command(CommandHandler),
    Http(HttpHandler),
    Builtin(BuiltinHandler),
}

/// `handler = { command = [...] }`: run a program, the payload on stdin.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandHandler {
    /// Program and arguments; no shell is involved.
    pub argv: Vec<String>,
    /// Variables set for the program. Default none.
    pub env: BTreeMap<String, String>,
    /// Variables passed through from the daemon's environment. Default none.
    pub env_allow: Vec<String>,
    /// Between SIGTERM and SIGKILL on time-out. Default 10s.
    pub kill_grace: Duration,
    /// Working directory. Default: the daemon's.
    pub cwd: Option<PathBuf>,
    /// Bytes of stdout kept as the result (and of stderr as the error). Default 65536.
    pub max_output: usize,
    /// Overrides the queue's `timeout`.
    pub timeout: Option<Duration>,
}

/// `handler = { http = "..." }`: POST the job to a URL.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpHandler {
    pub url: String,
    /// Extra request headers. Default none.
    pub headers: BTreeMap<String, String>,
    /// Default 5s.
    pub connect_timeout: Duration,
    /// Bytes of response body kept as the result. Default 65536.
    pub max_response: usize,
    /// Overrides the queue's `timeout`.
    pub timeout: Option<Duration>,
}

/// `handler = { builtin = "noop" }`: a handler inside the daemon, for smoke tests.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltinHandler {
    pub name: Builtin,
    /// Overrides the queue's `timeout`.
    pub timeout: Option<Duration>,
}

/// The built-in handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builtin {
    /// Succeeds at once.
    Noop,
    /// Fails every attempt.
    Fail,
}

pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl HandlerConfig {
    /// The handler's own `timeout`, which overrides the queue's.
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            HandlerConfig::Command(c) => c.timeout,
            HandlerConfig::Http(h) => h.timeout,
            HandlerConfig::Builtin(b) => b.timeout,
        }
    }

    pub(super) fn check(&self, at: &[&str], p: &mut Problems) {
        let key = |k: &'static str| [at, &[k]].concat();
        if self.timeout().is_some_and(|t| t.is_zero()) {
            p.push(&key("timeout"), "must be more than 0s");
        }
        match self {
            HandlerConfig::Command(c) => {
                if c.argv.first().is_none_or(|a| a.is_empty()) {
                    p.push(
                        &key("command"),
                        "must name a program: [\"/path/to/program\", \"arg\", ...]",
                    );
                }
                for name in c.env.keys().chain(&c.env_allow) {
                    if name.is_empty() || name.contains(['=', '\0']) {
                        p.push(
                            &key("env"),
                            format!("{name:?} is not a valid environment variable name"),
                        );
                    }
                }
                p.check(c.max_output > 0, &key("max_output"), "must be at least 1");
            }
            HandlerConfig::Http(h) => {
                let rest = h
                    .url
                    .strip_prefix("http://")
                    .or_else(|| h.url.strip_prefix("https://"));
                if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                    p.push(
                        &key("http"),
                        format!("{:?} must be an http:// or https:// URL with a host", h.url),
                    );
                }
                for name in h.headers.keys() {
                    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                        p.push(
                            &key("headers"),
                            format!("{name:?} is not a valid header name"),
                        );
                    }
                }
                p.check(
                    !h.connect_timeout.is_zero(),
                    &key("connect_timeout"),
                    "must be more than 0s",
                );
                p.check(
                    h.max_response > 0,
                    &key("max_response"),
                    "must be at least 1",
                );
            }
            HandlerConfig::Builtin(_) => {}
        }
    }
}

/// The handler table as written: every key optional, unknown keys refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHandler {
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    builtin: Option<Builtin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env_allow: Option<Vec<String>>,
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    kill_grace: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cwd: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<BTreeMap<String, String>>,
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    connect_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_response: Option<usize>,
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    timeout: Option<Duration>,
}

impl TryFrom<RawHandler> for HandlerConfig {
    type Error = String;

    fn try_from(r: RawHandler) -> Result<Self, String> {
        let kinds: Vec<&str> = [
            ("command", r.command.is_some()),
            ("http", r.http.is_some()),
            ("builtin", r.builtin.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if kinds.len() != 1 {
            let found = if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(" and ")
            };
            return Err(format!(
                "exactly one of `command`, `http` or `builtin` must be set (found {found}), \
                 e.g. handler = {{ command = [\"/path/to/program\"] }}"
            ));
        }
        let kind = kinds[0];
        let foreign = |keys: &[(&str, bool)], owner: &str| -> Result<(), String> {
            match keys.iter().find(|(_, set)| *set) {
                Some((k, _)) => Err(format!(
                    "`{k}` applies to {owner} handlers only, not to a `{kind}` handler"
                )),
                None => Ok(()),
            }
        };
        let command_keys = [
            ("env", r.env.is_some()),
            ("env_allow", r.env_allow.is_some()),
            ("kill_grace", r.kill_grace.is_some()),
            ("cwd", r.cwd.is_some()),
            ("max_output", r.max_output.is_some()),
        ];
        let http_keys = [
            ("headers", r.headers.is_some()),
            ("connect_timeout", r.connect_timeout.is_some()),
            ("max_response", r.max_response.is_some()),
        ];
        if kind != "command" {
            foreign(&command_keys, "command")?;
        }
        if kind != "http" {
            foreign(&http_keys, "http")?;
        }
        Ok(if let Some(argv) = r.command {
            HandlerConfig::Command(CommandHandler {
                argv,
                env: r.env.unwrap_or_default(),
                env_allow: r.env_allow.unwrap_or_default(),
                kill_grace: r.kill_grace.unwrap_or(DEFAULT_KILL_GRACE),
                cwd: r.cwd,
                max_output: r.max_output.unwrap_or(DEFAULT_MAX_OUTPUT),
                timeout: r.timeout,
            })
        } else if let Some(url) = r.http {
            HandlerConfig::Http(HttpHandler {
                url,
                headers: r.headers.unwrap_or_default(),
                connect_timeout: r.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                max_response: r.max_response.unwrap_or(DEFAULT_MAX_OUTPUT),
                timeout: r.timeout,
            })
        } else {
            HandlerConfig::Builtin(BuiltinHandler {
                name: r.builtin.expect("kind is builtin"),
                timeout: r.timeout,
            })
        })
    }
}

impl From<HandlerConfig> for RawHandler {
    fn from(h: HandlerConfig) -> Self {
        match h {
            HandlerConfig::Command(c) => RawHandler {
                command: Some(c.argv),
                env: Some(c.env).filter(|e| !e.is_empty()),
                env_allow: Some(c.env_allow).filter(|e| !e.is_empty()),
                kill_grace: Some(c.kill_grace),
                cwd: c.cwd,
                max_output: Some(c.max_output),
                timeout: c.timeout,
                ..RawHandler::default()
            },
            HandlerConfig::Http(h) => RawHandler {
                http: Some(h.url),
                headers: Some(h.headers).filter(|e| !e.is_empty()),
                connect_timeout: Some(h.connect_timeout),
                max_response: Some(h.max_response),
                timeout: h.timeout,
                ..RawHandler::default()
            },
            HandlerConfig::Builtin(b) => RawHandler {
                builtin: Some(b.name),
                timeout: b.timeout,
                ..RawHandler::default()
            },
        }
    }
}
