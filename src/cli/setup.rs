//! `redq setup`: loads (or upgrades) redq's two function libraries on one
//! Redis and writes nothing else; checks the server (version, eviction
//! policy, persistence) and a user's permissions; prints what it found and
//! did, one line per topic. Deploy scripts run it once per Redis and
//! release, as a user that may `FUNCTION LOAD`, so that the daemon's and
//! producers' users need not (see [`crate::store::acl`]).
//!
//! `--check` writes nothing. `--daemon-user NAME` checks that user's rules
//! (by `ACL DRYRUN`, which the connecting user must be allowed); without it
//! the connecting user is checked when it may run ACL DRYRUN.
//!
//! Exit codes: 0 both libraries are current (after loading them) and the
//! checked user may run what the daemon needs; 1 otherwise, each reason
//! printed (a library missing, out of date or refused, a server without
//! functions, a command the user lacks); 69 Redis unreachable.

use std::time::Duration;

use crate::cli::{Target, EXIT_UNAVAILABLE};
use crate::error::{Error, Result};
use crate::scripts;
use crate::store::{InternalLibrary, PublicLibrary, Severity, Store};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What `redq setup` prints: (topic, text) lines, and whether all is well.
struct Report {
    lines: Vec<(String, String)>,
    ok: bool,
}

impl Report {
    fn line(&mut self, topic: impl Into<String>, text: impl Into<String>) {
        self.lines.push((topic.into(), text.into()));
    }

    fn problem(&mut self, topic: impl Into<String>, text: impl Into<String>) {
        self.ok = false;
        self.line(topic, text);
    }

    fn print(&self) {
        let width = self.lines.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
        for (topic, text) in &self.lines {
            println!("{:width$}  {text}", format!("{topic}:"), width = width + 1);
        }
    }
}

pub async fn run(target: &Target, check: bool, daemon_user: Option<&str>) -> u8 {
    let mut report = Report {
        lines: Vec::new(),
        ok: true,
    };
    let done = match target.store(CONNECT_TIMEOUT, COMMAND_TIMEOUT).await {
        Ok(store) => setup(&store, target, check, daemon_user, &mut report).await,
        Err(e) => Err(e),
    };
    report.print();
    match done {
        Ok(()) if report.ok => 0,
        Ok(()) => 1,
        Err(e) => {
            eprintln!("redq: {e}");
            if e.is_transient() {
                EXIT_UNAVAILABLE
            } else {
                1
            }
        }
    }
}

async fn setup(
    store: &Store,
    target: &Target,
    check: bool,
    daemon_user: Option<&str>,
    report: &mut Report,
) -> Result<()> {
    let facts = store.server_facts().await?;
    let at = format!("at {} (key prefix {})", store.shown_url(), target.prefix);
    for f in facts.findings() {
        match f.severity {
            Severity::Ok if f.topic == "redis" => report.line(f.topic, format!("{} {at}", f.text)),
            Severity::Ok => report.line(f.topic, f.text),
            Severity::Warn => report.line(f.topic, format!("warning: {}", f.text)),
            Severity::Refuse => report.problem(f.topic, f.text),
        }
    }
    if !facts.functions {
        report.problem("done", "nothing loaded");
        return Ok(());
    }
    public(store, check, report).await?;
    internal(store, check, report).await?;
    permissions(store, daemon_user, report).await?;
    let verdict = match (report.ok, check) {
        (true, true) => "both function libraries are current",
        (true, false) => "both function libraries are current; nothing else was written",
        (false, _) => "not ready: see above",
    };
    report.line("done", verdict);
    Ok(())
}

const AT_MAXMEMORY: &str =
    "not loaded: Redis is at maxmemory and refused it; run `redq setup` again once it has room";

/// Why a load failed, for an operator; `Err` for the failures setup cannot report.
fn refused(e: Error) -> Result<String> {
    if e.is_no_perm() {
        Ok(
            "not loaded: this user may not FUNCTION LOAD; run `redq setup` as a user that may \
            (e.g. the default user, or one with +function|load)"
                .to_owned(),
        )
    } else if e.is_oom() {
        Ok(AT_MAXMEMORY.to_owned())
    } else if e.is_transient() {
        Err(e)
    } else {
        Ok(format!("not loaded: {e}"))
    }
}

async fn public(store: &Store, check: bool, report: &mut Report) -> Result<()> {
    let topic = "library redq";
    let found = store.public_library().await?;
    let was = match &found {
        PublicLibrary::Current => {
            report.line(topic, format!("current ({})", scripts::library_version()));
            return Ok(());
        }
        PublicLibrary::Missing => "missing".to_owned(),
        PublicLibrary::Other(v) => format!("version {v}"),
        PublicLibrary::Unknown => "unknown (this user may not FCALL_RO redq_version)".to_owned(),
    };
    if check {
        report.problem(
            topic,
            format!("{was}: `redq setup` loads {}", scripts::library_version()),
        );
        return Ok(());
    }
    match store.load_public_library().await {
        Ok(()) => report.line(
            topic,
            format!("loaded {} (was {was})", scripts::library_version()),
        ),
        Err(e) => report.problem(topic, format!("{was}; {}", refused(e)?)),
    }
    Ok(())
}

async fn internal(store: &Store, check: bool, report: &mut Report) -> Result<()> {
    let topic = format!("library {}", scripts::internal_library_name());
    let was = match store.internal_library().await? {
        InternalLibrary::Loaded => {
            report.line(topic, "current");
            return Ok(());
        }
        InternalLibrary::Missing => "missing",
        InternalLibrary::Unknown => "unknown (this user may not FCALL_RO it)",
    };
    if check {
        report.problem(topic, format!("{was}: `redq setup` loads it"));
        return Ok(());
    }
    match store.load_internal_library().await {
        Ok(true) => report.line(topic, format!("loaded (was {was})")),
        Ok(false) => report.problem(topic, format!("{was}; {AT_MAXMEMORY}")),
        Err(e) => report.problem(topic, format!("{was}; {}", refused(e)?)),
    }
    Ok(())
}

async fn permissions(store: &Store, daemon_user: Option<&str>, report: &mut Report) -> Result<()> {
    let user = match daemon_user {
        Some(u) => u.to_owned(),
        None => match store.whoami().await? {
            Some(u) => u,
            None => {
                report.line(
                    "permissions",
                    "not checked: this user may not run ACL WHOAMI (an admin can: `redq setup --check --daemon-user NAME`)",
                );
                return Ok(());
            }
        },
    };
    let topic = format!("user {user}");
    let checked = match store.daemon_permissions(&user).await {
        Ok(p) => p,
        Err(e) if !e.is_transient() && daemon_user.is_some() => {
            report.problem(topic, format!("cannot check: {e}"));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let Some(p) = checked else {
        let text = "not checked: this user may not run ACL DRYRUN (an admin can: `redq setup --check --daemon-user NAME`)";
        if daemon_user.is_some() {
            report.problem(topic, text);
        } else {
            report.line(topic, text);
        }
        return Ok(());
    };
    let load = if p.may_load_functions {
        "may load function libraries"
    } else {
        "may not load function libraries (run `redq setup` after each upgrade and after Redis loses its functions)"
    };
    if p.denied.is_empty() {
        report.line(
            topic,
            format!("may run every command the daemon needs on redq's keys; {load}"),
        );
    } else {
        let names: Vec<&str> = p.denied.iter().map(|(n, _)| n.as_str()).collect();
        report.problem(
            topic,
            format!(
                "may not run what the daemon needs: {} (first refusal: {}); see the ACL rules in docs/operating.md; {load}",
                names.join(" "),
                p.denied[0].1
            ),
        );
    }
    Ok(())
}
