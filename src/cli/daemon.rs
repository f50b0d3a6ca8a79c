//! `redq run` and `redq check-config`: the full configuration, validated.

use std::path::Path;

use crate::cli::{EXIT_CONFIG, EXIT_UNAVAILABLE};
use crate::config::{self, Config, LogFormat, Overrides};
use crate::daemon::{check_runnable, WorkerBuilder};
use crate::error::Error;

fn overrides(url: Option<&str>, prefix: Option<&str>) -> Overrides {
    let mut o = Overrides::new();
    if let Some(u) = url {
        o = o.set("redis.url", u);
    }
    if let Some(p) = prefix {
        o = o.set("redis.key_prefix", p);
    }
    o
}

fn load(path: Option<&Path>, o: &Overrides) -> Result<Config, u8> {
    let checked = config::load(path, o)
        .map_err(Error::from)
        .and_then(|c| check_runnable(&c).map(|()| c));
    checked.map_err(|e| {
        eprintln!("redq: {e}");
        EXIT_CONFIG
    })
}

/// `redq check-config`: 0 when the file would start, 78 otherwise.
pub fn check(path: Option<&Path>, url: Option<&str>, prefix: Option<&str>) -> u8 {
    match load(path, &overrides(url, prefix)) {
        Ok(c) => {
            let shown = path
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| config::DEFAULT_PATH.into());
            println!(
                "{shown}: ok ({} queues, {} pools)",
                c.queues.len(),
                c.pools.len()
            );
            0
        }
        Err(code) => code,
    }
}

fn init_logging(c: &Config) {
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
        LogFormat::Text => builder.try_init(),
    };
}

/// `redq run`: the daemon, until SIGTERM or SIGINT.
pub async fn run(path: Option<&Path>, url: Option<&str>, prefix: Option<&str>) -> u8 {
    let o = overrides(url, prefix);
    let c = match load(path, &o) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&c);
    // A handler's panic is a failed attempt, reported on the job; log it as
    // one line, without a backtrace that can stall a busy worker thread.
    std::panic::set_hook(Box::new(|info| tracing::error!("panic: {info}")));
    tracing::info!(redis = %crate::store::describe(&c.redis), version = env!("CARGO_PKG_VERSION"), "starting redq");
    let builder = WorkerBuilder::new(c)
        .reload_from(path.map(Path::to_path_buf), o)
        .with_signals();
    let daemon = match builder.start().await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return match e {
                Error::Config(_) | Error::InvalidName(_) => EXIT_CONFIG,
                e if e.is_transient() => EXIT_UNAVAILABLE,
                _ => 1,
            };
        }
    };
    match daemon.run().await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "stopped with an error");
            1
        }
    }
}
