//! The `redq` binary: parse arguments, set up logging, hand over to the library.
//!
//! It adds one command to the library's command line, `redq bench`, whose code
//! ([`bench`]) only this binary compiles: see that module for why.

mod bench;

use clap::{CommandFactory, FromArgMatches, Subcommand};

// The commands the binary has and the library does not, listed after the
// library's. (A doc comment here would replace the program's own description
// in `redq --help`.)
#[derive(Debug, Subcommand)]
enum Own {
    /// Measure enqueue and processing speed on a private redis-server
    Bench(bench::Args),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let matches = Own::augment_subcommands(redq::cli::Cli::command()).get_matches();
    let code = match matches.subcommand_name() {
        Some(name) if Own::has_subcommand(name) => {
            match Own::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()) {
                Own::Bench(args) => bench::main(args).await,
            }
        }
        _ => {
            let cli = redq::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
            redq::cli::main(cli).await
        }
    };
    std::process::ExitCode::from(code)
}
