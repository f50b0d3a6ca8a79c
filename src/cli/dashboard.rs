//! `redq dashboard`: serves the web UI ([`crate::dashboard`]) until SIGINT
//! or SIGTERM. Reads Redis through the store like every other command, so it
//! works on one Redis, behind Sentinel and on a cluster.

use std::path::Path;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::cli::{Target, EXIT_CONFIG, EXIT_UNAVAILABLE};
use crate::dashboard::{self, Options, DEFAULT_LISTEN};

/// Time-outs of the dashboard's Redis connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Address to serve on; a non-loopback one needs --listen-public and --token
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR:PORT")]
    pub listen: String,
    /// Allow a non-loopback --listen (requires --token)
    #[arg(long)]
    pub listen_public: bool,
    /// Access token (at least 16 characters) every request must carry, as the
    /// HTTP Basic password or a Bearer token
    #[arg(long, env = "REDQ_DASHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Hide job payloads and results (they may hold personal data)
    #[arg(long)]
    pub redact_payloads: bool,
}

pub async fn run(
    config: Option<&Path>,
    target: &Target,
    url: Option<&str>,
    prefix: Option<&str>,
    args: DashboardArgs,
) -> u8 {
    let token = args.token.filter(|t| !t.is_empty());
    let addr = match dashboard::check_listen(&args.listen, args.listen_public, token.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("redq: {e}");
            return EXIT_CONFIG;
        }
    };
    let store = match target.store(CONNECT_TIMEOUT, COMMAND_TIMEOUT).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("redq: {e}");
            return if e.is_transient() {
                EXIT_UNAVAILABLE
            } else {
                1
            };
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("redq: --listen: cannot listen on {addr}: {e}");
            return EXIT_CONFIG;
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    let opts = Options {
        configured_queues: target.configured_queues.clone(),
        cron: cron_entries(config, url, prefix),
        token,
        redact_payloads: args.redact_payloads,
    };
    eprintln!(
        "redq: dashboard on http://{bound}/ (Redis {})",
        store.shown_url()
    );
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        on_signal.cancel();
    });
    match dashboard::serve(listener, store, opts, stop).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("redq: dashboard: {e}");
            1
        }
    }
}

/// The config file's `[[cron]]` entries (read, not validated: the cron page
/// shows what the daemons were given), or why they could not be read.
fn cron_entries(
    config: Option<&Path>,
    url: Option<&str>,
    prefix: Option<&str>,
) -> Result<Vec<crate::config::CronConfig>, String> {
    let mut o = crate::config::Overrides::new();
    if let Some(u) = url {
        o = o.set("redis.url", u);
    }
    if let Some(p) = prefix {
        o = o.set("redis.key_prefix", p);
    }
    crate::config::read(config, &o)
        .map(|c| c.cron)
        .map_err(|e| e.to_string())
}
