//! `redq run`, `redq check-config` and `redq config`: the full
//! configuration, validated, from the file the command line names.
//!
//! Which file: `--config FILE`; else `workers.toml` in the working
//! directory, which must then exist (a daemon silently started from
//! defaults alone serves nothing); `--no-config` reads none on purpose
//! (defaults, `REDQ_…` variables and flags only).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::cli::EXIT_CONFIG;
use crate::config::{self, Config, Overrides};
use crate::daemon::{runnable_problems, WorkerBuilder};
use crate::error::Error;

/// The file and flags the command line gives.
pub struct Source<'a> {
    pub path: Option<&'a Path>,
    pub no_config: bool,
    pub url: Option<&'a str>,
    pub prefix: Option<&'a str>,
}

impl Source<'_> {
    fn overrides(&self) -> Overrides {
        let mut o = Overrides::new();
        if let Some(u) = self.url {
            o = o.set("redis.url", u);
        }
        if let Some(p) = self.prefix {
            o = o.set("redis.key_prefix", p);
        }
        o
    }

    /// The file to read (none with `--no-config`), or why there is none.
    fn file(&self) -> Result<Option<PathBuf>, String> {
        if self.no_config {
            return Ok(None);
        }
        if self.path.is_none() && !Path::new(config::DEFAULT_PATH).is_file() {
            let here = std::env::current_dir()
                .map(|d| d.join(config::DEFAULT_PATH).display().to_string())
                .unwrap_or_else(|_| config::DEFAULT_PATH.into());
            return Err(format!(
                "no configuration file: {here} does not exist; name one with --config FILE \
                 (the Debian package's is /etc/redq/workers.toml), or pass --no-config to use \
                 only the defaults, REDQ_… variables and flags"
            ));
        }
        config::file_to_read(self.path).map_err(|e| format!("invalid configuration: {e}"))
    }

    /// How the file is named in messages.
    fn shown(file: Option<&Path>) -> String {
        file.map_or_else(|| "(no file)".into(), |f| f.display().to_string())
    }
}

/// The validated configuration, with the handlers' programs resolved and
/// the cron entries read; or the exit code after printing every problem.
fn load(src: &Source) -> Result<(Config, Option<PathBuf>), u8> {
    let file = src.file().map_err(|e| {
        eprintln!("redq: {e}");
        EXIT_CONFIG
    })?;
    let o = src.overrides();
    let checked = config::load_layers(file.as_deref(), &o, &BTreeSet::new()).and_then(|c| {
        runnable_problems(&c)
            .map_err(|e| config::locate(e, file.as_deref(), &o))
            .map(|()| c)
    });
    match checked {
        Ok(c) => Ok((c, file)),
        Err(e) => {
            eprintln!("redq: {}", Error::from(e));
            Err(EXIT_CONFIG)
        }
    }
}

/// The warning for a configuration without queues.
const NO_QUEUES: &str = "no queues are configured: the daemon would start and run nothing; \
     add a [queues.<name>] table with a handler (see the example workers.toml)";

/// `redq check-config`: 0 when the file would start, 78 otherwise.
pub fn check(src: &Source) -> u8 {
    match load(src) {
        Ok((c, file)) => {
            println!(
                "{}: ok ({} queues, {} pools)",
                Source::shown(file.as_deref()),
                c.queues.len(),
                c.pools.len()
            );
            if c.queues.is_empty() {
                eprintln!("redq: warning: {NO_QUEUES}");
            }
            0
        }
        Err(code) => code,
    }
}

/// `redq config`: the effective configuration (defaults, file,
/// environment, flags) as TOML with secrets masked; then, if it would not
/// start, why (exit 78).
pub fn print(src: &Source) -> u8 {
    let file = match src.file() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("redq: {e}");
            return EXIT_CONFIG;
        }
    };
    let o = src.overrides();
    let c = match config::read_layers(file.as_deref(), &o) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("redq: {}", Error::from(e));
            return EXIT_CONFIG;
        }
    };
    let mut from = vec!["the defaults".to_owned()];
    if let Some(f) = &file {
        from.push(f.display().to_string());
    }
    let vars = super::show_config::config_variables();
    if !vars.is_empty() {
        from.push(format!("the environment ({})", vars.join(", ")));
    }
    let flags: Vec<&str> = [
        src.url.map(|_| "--redis-url"),
        src.prefix.map(|_| "--key-prefix"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !flags.is_empty() {
        from.push(format!("flags ({})", flags.join(", ")));
    }
    match super::show_config::to_toml(&c) {
        Ok(text) => {
            println!(
                "# The effective configuration of `redq run`, from {}; later ones win.\n\
                 # Secrets are shown as \"***\".\n",
                from.join(", then ")
            );
            print!("{text}");
        }
        Err(e) => {
            eprintln!("redq: cannot print the configuration: {e}");
            return 1;
        }
    }
    let checked = c
        .validate()
        .and_then(|()| runnable_problems(&c).map_err(|e| config::locate(e, file.as_deref(), &o)));
    match checked {
        Ok(()) => {
            if c.queues.is_empty() {
                eprintln!("redq: warning: {NO_QUEUES}");
            }
            0
        }
        Err(e) => {
            let e = config::locate(e, file.as_deref(), &o);
            eprintln!("redq: {}", Error::from(e));
            EXIT_CONFIG
        }
    }
}

/// `redq run`: the daemon, until SIGTERM or SIGINT.
pub async fn run(src: &Source<'_>) -> u8 {
    let (c, file) = match load(src) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    super::logging::init(&c);
    // A handler's panic is a failed attempt, reported on the job; log it as
    // one line, without a backtrace that can stall a busy worker thread.
    std::panic::set_hook(Box::new(|info| tracing::error!("panic: {info}")));
    tracing::info!(
        redis = %crate::store::describe(&c.redis),
        config = %Source::shown(file.as_deref()),
        version = env!("CARGO_PKG_VERSION"),
        "starting redq"
    );
    let builder = WorkerBuilder::new(c)
        .reload_from(file, src.overrides())
        .with_signals();
    let daemon = match builder.start().await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            // A queue name the daemon refuses comes from the configuration.
            return match e {
                Error::InvalidName(_) => EXIT_CONFIG,
                e => crate::cli::exit_code(&e),
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
