//! `redq usage`: what handlers reported (plus job counts and run time), summed
//! per queue and tenant over a range of UTC days.

use clap::Args;

use crate::cli::Target;
use crate::client::Client;
use crate::error::Result;
use crate::inspect::{self, UsageTotals};
use crate::usage::{self, Day};

/// Days `--since` goes back by default (today included makes 31 days).
const DEFAULT_DAYS_BACK: i64 = 30;

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this queue [default: every registered and configured queue]
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this tenant (jobs without one are counted as "-")
    #[arg(long)]
    pub tenant: Option<String>,
    /// First UTC day counted, YYYY-MM-DD [default: 30 days ago]
    #[arg(long, value_parser = usage::parse_day)]
    pub since: Option<Day>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// What `redq usage --json` prints.
#[derive(Debug, serde::Serialize)]
struct Report<'a> {
    since: String,
    until: String,
    totals: &'a [UsageTotals],
}

pub async fn run(client: &Client, target: &Target, args: UsageArgs) -> Result<u8> {
    let queues = match args.queue {
        Some(q) => vec![q],
        None => {
            let mut all = client.queues().await?;
            all.extend(target.configured_queues.iter().cloned());
            all.sort();
            all.dedup();
            all
        }
    };
    let until = Day::today();
    let since = args
        .since
        .unwrap_or(until.plus(-DEFAULT_DAYS_BACK))
        .max(until.plus(1 - usage::MAX_DAYS));
    let totals = inspect::totals(
        client.store(),
        &queues,
        args.tenant.as_deref(),
        since,
        until,
    )
    .await?;
    if args.json {
        let report = Report {
            since: since.to_string(),
            until: until.to_string(),
            totals: &totals,
        };
        let text = serde_json::to_string_pretty(&report).map_err(|e| {
            crate::error::Error::protocol("usage", format!("cannot encode JSON: {e}"))
        })?;
        println!("{text}");
        return Ok(0);
    }
    println!("usage from {since} to {until} (UTC days)");
    if totals.is_empty() {
        println!("no usage recorded");
        return Ok(0);
    }
    println!(
        "{:<24} {:<24} {:<24} {:>16}",
        "QUEUE", "TENANT", "NAME", "TOTAL"
    );
    for t in &totals {
        for (name, value) in &t.usage {
            println!(
                "{:<24} {:<24} {:<24} {:>16}",
                t.queue,
                t.tenant.escape_debug().to_string(),
                name,
                format!("{value}")
            );
        }
    }
    Ok(0)
}
