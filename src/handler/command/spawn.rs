//! Starting a command program: the `std::process::Command` for one attempt,
//! and the check of `argv[0]` that `redq check-config` and the daemon's start
//! make ([`resolve_program`]).
//!
//! Invariants:
//! - The environment is built from nothing: `PATH`, the `env_allow` names
//!   copied from redq's own environment, the configured `env`, and the
//!   `REDQ_*` variables of the job. redq's secrets never reach the program.
//! - The payload is never on the command line, and `argv` runs without a shell.
//! - The program gets a process group of its own (its pid), which
//!   [`super::process`] signals and the guard kills if the daemon dies.
//! - Programs start by posix_spawn, not a fork of the daemon: no `pre_exec`
//!   hook, and no shell is tried for a script without its `#!` line. So a bare
//!   `argv[0]` is looked up here, in the program's `PATH`, since std forks to
//!   search a `PATH` set for the child.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::CommandSpec;
use crate::handler::JobContext;

/// `PATH` given to programs when redq itself has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The command with its clean environment, own process group and `stdin`.
pub(super) fn command(
    spec: &CommandSpec,
    ctx: &JobContext,
    usage_file: Option<&Path>,
    stdin: Stdio,
) -> io::Result<std::process::Command> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "argv is empty"));
    };
    let bad_name = |name: &str| name.is_empty() || name.contains(['=', '\0']);
    if let Some(name) = spec.env.keys().chain(&spec.env_allow).find(|n| bad_name(n)) {
        let msg =
            format!("invalid environment variable name {name:?} (empty, or contains '=' or NUL)");
        return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    }
    let path = program_path();
    let found = match program.contains('/') {
        true => PathBuf::from(program),
        false => find_in_path(program, &path)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?,
    };
    let mut cmd = std::process::Command::new(found);
    cmd.arg0(program).args(args).env_clear().env("PATH", path);
    for name in &spec.env_allow {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.envs(&spec.env)
        .env("REDQ_JOB_ID", &ctx.id)
        .env("REDQ_QUEUE", &ctx.queue)
        .env("REDQ_ATTEMPT", ctx.attempt.to_string())
        .env("REDQ_TENANT", ctx.tenant.as_deref().unwrap_or(""))
        .env("REDQ_FENCE", ctx.fence.to_string());
    if let Some(path) = usage_file {
        cmd.env("REDQ_USAGE_FILE", path);
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    Ok(cmd)
}

/// The error text of a program that could not start, with a hint for the usual causes.
pub(super) fn spawn_error(program: &str, e: io::Error) -> String {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) => {
            "; check the path in argv[0] (and cwd), or that the program is in PATH"
        }
        Some(libc::EACCES) => {
            "; check that the program is executable (chmod +x) and its directory readable"
        }
        Some(libc::ENOEXEC) => "; a script needs a first line such as `#!/bin/sh`",
        _ => "",
    };
    format!("cannot start program `{program}`: {e}{hint}")
}

/// Checks that `argv0` names a program that can run: an absolute path to an executable
/// file, or a bare name found in `PATH`. Returns the path that will run.
pub fn resolve_program(argv0: &str) -> Result<PathBuf, String> {
    if argv0.is_empty() {
        return Err("argv[0] is empty; set argv = [\"/path/to/program\", …]".into());
    }
    if argv0.contains('/') {
        let path = Path::new(argv0);
        if !path.is_absolute() {
            return Err(format!(
                "program `{argv0}` is a relative path, which depends on the daemon's working \
                 directory; give an absolute path or a bare name found in PATH"
            ));
        }
        return check_executable(path).map(|()| path.to_path_buf());
    }
    let search = program_path();
    find_in_path(argv0, &search).ok_or_else(|| {
        format!(
            "program `{argv0}` was not found in PATH ({}); install it, or give its absolute path",
            search.to_string_lossy()
        )
    })
}

/// The `PATH` programs get: redq's own, or [`DEFAULT_PATH`] when it has none.
fn program_path() -> std::ffi::OsString {
    std::env::var_os("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PATH.into())
}

/// The first executable file `name` in the absolute directories of `search`.
fn find_in_path(name: &str, search: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| check_executable(candidate).is_ok())
}

fn check_executable(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("program `{shown}` cannot be used: {e}; check the path"))?;
    if !meta.is_file() {
        return Err(format!(
            "program `{shown}` is not a regular file; give the path of the program itself"
        ));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "program `{shown}` is not executable; run `chmod +x {shown}` or fix the path"
        ));
    }
    Ok(())
}
