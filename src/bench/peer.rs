//! The other queues `redq bench --compare` measures redq against, each a
//! program of its own run against the private server: BullMQ's
//! `benches/bullmq/bench.js` under node, ChasquiMQ's `benches/chasquimq`
//! binary (a Cargo project of its own, built on demand).
//!
//! Every peer speaks one protocol: the arguments `--url`, `--jobs`,
//! `--concurrency`, `--latency-secs`, `--scenarios` (only the letters it
//! has), and one JSON document on stdout, `{"version": …, "values": [[id,
//! value], …]}`, with redq's row ids and units; its log goes to stderr. A
//! peer that is not installed, or whose Redis is too old, is skipped with
//! the reason ([`Runner::find`]) and redq's numbers still print.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;

use serde::Deserialize;

use super::Options;
use redq::error::{Error, Result};

/// The scenarios the peers have (f–j are redq's alone).
const PEER_SCENARIOS: &str = "abcde";

/// A queue to compare with (`--compare`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// BullMQ, on Node.js (`benches/bullmq`).
    #[value(name = "bullmq")]
    BullMq,
    /// ChasquiMQ's Rust engine (`benches/chasquimq`); needs Redis 8.6.
    #[value(name = "chasquimq")]
    ChasquiMq,
}

impl Peer {
    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Peer::BullMq => "BullMQ",
            Peer::ChasquiMq => "ChasquiMQ",
        }
    }

    /// The oldest Redis it runs on, when it needs a newer one than redq.
    fn min_redis(self) -> Option<(u32, u32)> {
        match self {
            Peer::BullMq => None,
            Peer::ChasquiMq => Some((8, 6)),
        }
    }
}

/// How to start a peer found installed.
pub struct Runner {
    peer: Peer,
    program: OsString,
    /// Arguments before the common ones (node's script).
    first_args: Vec<OsString>,
}

/// What a peer prints.
#[derive(Debug, Deserialize)]
pub struct Output {
    pub version: String,
    /// Scenario id → value, ids and units as in redq's rows.
    pub values: Vec<(String, f64)>,
}

/// The first of `candidates` for which `found` holds: an environment
/// variable's path, else `rel` under the current directory, else under the
/// crate's source directory (a binary run from elsewhere in the repository).
fn locate(env: &str, rel: &str, found: impl Fn(&PathBuf) -> bool) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os(env).map(PathBuf::from),
        Some(PathBuf::from(rel)),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)),
    ];
    candidates.into_iter().flatten().find(found)
}

/// "8.6.3" → (8, 6).
fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

impl Runner {
    /// Finds the peer's program, or says why the comparison cannot run on
    /// this machine or on a server of `redis_version`.
    pub fn find(peer: Peer, redis_version: &str) -> std::result::Result<Runner, String> {
        if let Some((major, minor)) = peer.min_redis() {
            if major_minor(redis_version) < (major, minor) {
                return Err(format!(
                    "{} needs Redis {major}.{minor} or newer and the private server is {redis_version} \
                     (point REDQ_BENCH_REDIS_SERVER at a newer redis-server)",
                    peer.name()
                ));
            }
        }
        match peer {
            Peer::BullMq => Runner::bullmq(),
            Peer::ChasquiMq => Runner::chasquimq(),
        }
    }

    fn bullmq() -> std::result::Result<Runner, String> {
        match std::process::Command::new("node").arg("--version").output() {
            Ok(o) if o.status.success() => {}
            _ => return Err("node is not installed (BullMQ runs on Node.js)".into()),
        }
        let dir = locate("REDQ_BENCH_BULLMQ_DIR", "benches/bullmq", |d| {
            d.join("bench.js").is_file()
        })
        .ok_or("benches/bullmq/bench.js not found (run from the repository, or set REDQ_BENCH_BULLMQ_DIR)")?;
        if !dir.join("node_modules/bullmq").is_dir() {
            return Err(format!(
                "bullmq is not installed: run `npm install --prefix {}`",
                dir.display()
            ));
        }
        Ok(Runner {
            peer: Peer::BullMq,
            program: "node".into(),
            first_args: vec![dir.join("bench.js").into_os_string()],
        })
    }

    fn chasquimq() -> std::result::Result<Runner, String> {
        let bin = locate(
            "REDQ_BENCH_CHASQUIMQ_BIN",
            "benches/chasquimq/target/release/redq-bench-chasquimq",
            |p| p.is_file(),
        )
        .ok_or(
            "its bench program is not built: run `cargo build --release --manifest-path \
             benches/chasquimq/Cargo.toml` in the repository (or set REDQ_BENCH_CHASQUIMQ_BIN)",
        )?;
        Ok(Runner {
            peer: Peer::ChasquiMq,
            program: bin.into_os_string(),
            first_args: Vec::new(),
        })
    }

    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// One run of the chosen scenarios (those the peers have).
    pub async fn run(&self, url: &str, opts: &Options, letters: &str) -> Result<Output> {
        let name = self.peer.name();
        let conc = opts
            .concurrency
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let letters = letters
            .chars()
            .filter(|c| PEER_SCENARIOS.contains(*c))
            .map(String::from)
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.first_args)
            .args(["--url", url])
            .args(["--jobs", &opts.jobs.to_string()])
            .args(["--concurrency", &conc])
            .args(["--latency-secs", &opts.latency_secs.to_string()])
            .args(["--scenarios", &letters])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let out = cmd.output().await.map_err(|e| {
            Error::Config(format!(
                "bench: cannot run {}: {e}",
                self.program.to_string_lossy()
            ))
        })?;
        if !out.status.success() {
            return Err(Error::Config(format!(
                "bench: the {name} side failed ({})",
                out.status
            )));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            Error::Config(format!("bench: the {name} side printed no valid JSON: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chasquimq_is_skipped_on_a_redis_older_than_8_6() {
        let why = Runner::find(Peer::ChasquiMq, "7.0.15").err().unwrap();
        assert!(why.contains("Redis 8.6"), "{why}");
        assert!(major_minor("8.6.3") >= (8, 6));
        assert!(major_minor("10.0.0") >= (8, 6));
        assert!(major_minor("8.4.0") < (8, 6));
    }
}
