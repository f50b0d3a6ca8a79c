//! Builds the handler each queue runs from its `handler = { … }` table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Builtin, Config, ConfigError, HandlerConfig, Problem};
use crate::error::{Error, Result};
use crate::handler::command::{resolve_program, CommandHandler, CommandSpec};
use crate::handler::http::{HttpHandler, HttpSpec};
use crate::handler::{Handler, JobContext, Outcome};

/// A handler and how long it may take to stop once told to.
pub struct Built {
    pub handler: Arc<dyn Handler>,
    pub grace: Duration,
}

const LIBRARY_GRACE: Duration = Duration::from_secs(5);

pub fn build(queue: &str, cfg: &HandlerConfig) -> Result<Built> {
    Ok(match cfg {
        HandlerConfig::Command(c) => {
            let mut argv = c.argv.clone();
            if let Some(first) = argv.first_mut() {
                let path = resolve_program(first).map_err(|e| {
                    refused(Problem::at(
                        &["queues", queue, "handler", "command"],
                        e.to_string(),
                    ))
                })?;
                *first = path.to_string_lossy().into_owned();
            }
            let spec = CommandSpec {
                argv,
                env: c.env.clone(),
                env_allow: c.env_allow.clone(),
                kill_grace: c.kill_grace,
                max_output_bytes: c.max_output,
                cwd: c.cwd.clone(),
            };
            // The handler kills its process group after kill_grace; wait a little longer.
            Built {
                handler: {
                    // Guarded from the first program on (see guard::start_early).
                    crate::handler::guard::start_early();
                    Arc::new(CommandHandler::new(spec))
                },
                grace: c.kill_grace + Duration::from_secs(2),
            }
        }
        HandlerConfig::Http(h) => {
            let handler = http_handler(h)
                .map_err(|e| refused(Problem::at(&["queues", queue, "handler", "http"], e)))?;
            Built {
                handler: Arc::new(handler),
                grace: LIBRARY_GRACE,
            }
        }
        HandlerConfig::Builtin(b) => {
            let handler: Arc<dyn Handler> = match b.name {
                Builtin::Noop => {
                    Arc::new(|_ctx: JobContext| async { Outcome::Done { result: None } })
                }
                Builtin::Fail => Arc::new(|_ctx: JobContext| async {
                    Outcome::Fail {
                        error: "the builtin \"fail\" handler fails every job".into(),
                    }
                }),
            };
            Built {
                handler,
                grace: LIBRARY_GRACE,
            }
        }
    })
}

fn http_handler(h: &crate::config::HttpHandler) -> std::result::Result<HttpHandler, String> {
    HttpHandler::new(HttpSpec {
        url: h.url.clone(),
        headers: h.headers.clone(),
        connect_timeout: h.connect_timeout,
        max_response_bytes: h.max_response,
    })
    .map_err(|e| e.to_string())
}

/// The error for one refused key (one `invalid configuration:` prefix).
fn refused(p: Problem) -> Error {
    Error::Config(p.to_string())
}

/// Reports, before the daemon starts, what it could not run: a handler
/// that cannot be built (a command that is not found, a bad URL), and
/// cron entries that do not parse. (Settings a version accepts but does not
/// enforce yet are refused here too, so that no operator relies on a limit
/// that does not hold; `rate_limit` and `group_concurrency` are enforced.)
pub fn check_runnable(config: &Config) -> Result<()> {
    runnable_problems(config).map_err(|e| Error::Config(e.to_string()))
}

/// [`check_runnable`]'s problems, each with its key path, so the caller can
/// say where each key was set (see [`crate::config::locate`]).
pub fn runnable_problems(config: &Config) -> std::result::Result<(), ConfigError> {
    let mut problems: Vec<Problem> = Vec::new();
    for (name, q) in &config.queues {
        let Some(h) = &q.handler else { continue };
        match h {
            HandlerConfig::Command(c) => {
                if let Some(Err(e)) = c.argv.first().map(|p| resolve_program(p)) {
                    problems.push(Problem::at(
                        &["queues", name, "handler", "command"],
                        e.to_string(),
                    ));
                }
            }
            HandlerConfig::Http(h) => {
                if let Err(e) = http_handler(h) {
                    problems.push(Problem::at(&["queues", name, "handler", "http"], e));
                }
            }
            HandlerConfig::Builtin(_) => {}
        }
    }
    if let Err(cron) = super::cron::entries(config) {
        problems.extend(cron);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::from_problems(problems))
    }
}

/// The library handlers registered with a [`super::WorkerBuilder`].
pub type Library = BTreeMap<String, Arc<dyn Handler>>;

pub fn library_grace() -> Duration {
    LIBRARY_GRACE
}
