//! The files a `redq run` process reads: a whole `workers.toml` with short
//! intervals, command handlers as tiny `/bin/sh` scripts (they find the
//! test's dir in `$OUT`), and atomic rewrites for reloads.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Lease settings of every test queue: a dead daemon's jobs come back within ~1s.
pub const FAST_LEASE: &str = "lease = \"1s\"\nlease_renew = \"200ms\"\n";

/// Writes an executable `/bin/sh` script.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A TOML basic string.
pub fn toml_str(s: impl AsRef<str>) -> String {
    format!("{:?}", s.as_ref())
}

/// `handler = { command = [script, args…], env = { OUT = dir }, … }`.
pub fn command_handler(script: &Path, args: &[&str], out: &Path, extra: &str) -> String {
    let argv: Vec<String> = std::iter::once(script.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(toml_str)
        .collect();
    format!(
        "{{ command = [{}], env = {{ OUT = {} }}{extra} }}",
        argv.join(", "),
        toml_str(out.display().to_string())
    )
}

/// A whole `workers.toml`: Redis, fast daemon intervals, JSON logs, `queues`.
pub fn config(url: &str, shutdown_timeout: &str, queues: &str) -> String {
    format!(
        "[redis]\nurl = {}\n\n[daemon]\nshutdown_timeout = {}\nreap_interval = \"100ms\"\n\
         inbox_poll = \"100ms\"\nlog_format = \"json\"\nlog_level = \"info\"\n\n{queues}",
        toml_str(url),
        toml_str(shutdown_timeout)
    )
}

/// Replaces a file in one step, so a reload never reads half of it.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// The `KEY=value` lines `env` printed.
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
