//! The `redq` binary: parse arguments, set up logging, hand over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = redq::cli::Cli::parse();
    std::process::ExitCode::from(redq::cli::main(cli).await)
}
