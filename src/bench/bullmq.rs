//! Runs `benches/bullmq/bench.js` (BullMQ's side of the same scenarios)
//! against the private server and reads its JSON.

use std::path::PathBuf;
use std::process::Stdio;

use serde::Deserialize;

use super::Options;
use redq::error::{Error, Result};

pub struct Runner {
    script: PathBuf,
}

/// What the script prints.
#[derive(Debug, Deserialize)]
pub struct Output {
    pub version: String,
    /// Scenario id → value, ids and units as in redq's rows.
    pub values: Vec<(String, f64)>,
}

/// Where the script lives: `REDQ_BENCH_BULLMQ_DIR`, else `benches/bullmq`
/// under the current directory, else under the crate's source directory.
fn script_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("REDQ_BENCH_BULLMQ_DIR").map(PathBuf::from),
        Some(PathBuf::from("benches/bullmq")),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/bullmq")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("bench.js").is_file())
}

impl Runner {
    /// Finds node and the script, or says why the comparison cannot run.
    pub fn find() -> std::result::Result<Runner, String> {
        match std::process::Command::new("node").arg("--version").output() {
            Ok(o) if o.status.success() => {}
            _ => return Err("node is not installed (BullMQ runs on Node.js)".into()),
        }
        let dir = script_dir().ok_or("benches/bullmq/bench.js not found (run from the repository, or set REDQ_BENCH_BULLMQ_DIR)")?;
        if !dir.join("node_modules/bullmq").is_dir() {
            return Err(format!(
                "bullmq is not installed: run `npm install --prefix {}`",
                dir.display()
            ));
        }
        Ok(Runner {
            script: dir.join("bench.js"),
        })
    }

    /// One run of the chosen scenarios (BullMQ has a–e; f–j are redq-only).
    pub async fn run(&self, url: &str, opts: &Options, letters: &str) -> Result<Output> {
        let conc = opts
            .concurrency
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let letters = letters
            .chars()
            .filter(|c| !matches!(c, 'f' | 'g' | 'h' | 'i' | 'j'))
            .map(String::from)
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(&self.script)
            .args(["--url", url])
            .args(["--jobs", &opts.jobs.to_string()])
            .args(["--concurrency", &conc])
            .args(["--latency-secs", &opts.latency_secs.to_string()])
            .args(["--scenarios", &letters])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .map_err(|e| Error::Config(format!("bench: cannot run node: {e}")))?;
        if !out.status.success() {
            return Err(Error::Config(format!(
                "bench: the BullMQ script failed ({})",
                out.status
            )));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            Error::Config(format!(
                "bench: the BullMQ script printed no valid JSON: {e}"
            ))
        })
    }
}
