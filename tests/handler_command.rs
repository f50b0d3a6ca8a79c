//! The command handler against real processes: stdin, environment, exit codes,
//! output caps, large payloads, time-out, cancellation, process-group clean-up,
//! and programs started by posix_spawn rather than a fork of the daemon.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::process::{alive, read_pids};
use common::wait::{eventually, secs};
use redq::handler::command::{resolve_program, CommandHandler, CommandRun, CommandSpec};
use redq::{Handler, JobContext, Outcome};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

/// Upper bound on any single run in these tests.
const BOUND: Duration = Duration::from_secs(60);

fn ctx(payload: &str) -> JobContext {
    JobContext {
        id: "job-1".into(),
        queue: "emails".into(),
        attempt: 2,
        tenant: Some("acme".into()),
        fence: 42,
        payload: RawValue::from_string(payload.into()).expect("test payload is JSON"),
        timeout: Duration::from_secs(30),
        cancel: CancellationToken::new(),
    }
}

fn sh(script: &str) -> CommandSpec {
    CommandSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

fn with_env(mut spec: CommandSpec, name: &str, value: &Path) -> CommandSpec {
    spec.env.insert(name.into(), value.display().to_string());
    spec
}

async fn run(spec: CommandSpec, ctx: JobContext) -> CommandRun {
    tokio::time::timeout(BOUND, CommandHandler::new(spec).run(ctx))
        .await
        .expect("run ended within the bound")
}

fn error_of(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Fail { error } | Outcome::Dead { error } | Outcome::Retry { error, .. } => error,
        Outcome::Done { .. } => panic!("expected a failure, got {outcome:?}"),
    }
}

/// Waits (bounded) until `pid` no longer runs (a zombie counts as gone).
async fn wait_gone(pid: i32) {
    eventually(&format!("pid {pid} to end"), secs(10), || async move {
        !alive(pid)
    })
    .await;
}

/// Waits (bounded) until the script has written the grandchild's pid to `file`.
async fn read_pid(file: &Path) -> i32 {
    eventually("the script to write its pid file", secs(10), || async {
        read_pids(file).map(|pids| pids[0])
    })
    .await
}

#[tokio::test]
async fn payload_arrives_intact_on_stdin_and_is_never_interpreted() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let payload = format!(
        r#"{{"text": "$(touch {m}) `touch {m}` ; \"q\" ünïcode \n", "n": [1, 2.5, null]}}"#,
        m = marker.display()
    );
    let out = dir.path().join("stdin");
    let spec = with_env(sh(r#"cat > "$OUT""#), "OUT", &out);
    let run = run(spec, ctx(&payload)).await;
    assert_eq!(run.outcome, Outcome::Done { result: None });
    assert_eq!(std::fs::read_to_string(&out).unwrap(), payload);
    assert!(!marker.exists(), "payload content was executed");
}

#[tokio::test]
async fn argv_is_passed_verbatim_without_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let tricky = format!("$(touch {})", marker.display());
    let argv = ["/usr/bin/printf", "%s|", &tricky, "a b", "*", "'"];
    let spec = CommandSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let run = run(spec, ctx("{}")).await;
    assert_eq!(
        run.outcome,
        Outcome::Done {
            result: Some(format!("{tricky}|a b|*|'|"))
        }
    );
    assert!(!marker.exists());
}

#[tokio::test]
async fn environment_holds_only_path_allowlist_config_and_job_vars() {
    // Edition 2021: set_var is safe; names are unique to this test.
    std::env::set_var("REDQ_REDIS__URL", "redis://user:secret@localhost");
    std::env::set_var("REDQ_TEST_ALLOWED", "passed through");
    std::env::set_var("REDQ_TEST_NOT_ALLOWED", "must not leak");
    let spec = CommandSpec {
        argv: vec!["env".into()],
        env: BTreeMap::from([("EXTRA".into(), "from config".into())]),
        env_allow: vec![
            "REDQ_TEST_ALLOWED".into(),
            "REDQ_TEST_UNSET_ANYWHERE".into(),
        ],
        ..Default::default()
    };
    let parse = |run: CommandRun| -> BTreeMap<String, String> {
        let Outcome::Done { result: Some(text) } = run.outcome else {
            panic!("env failed: {:?}", run.outcome)
        };
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    };
    let env = parse(run(spec.clone(), ctx("{}")).await);
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    let expected = [
        "EXTRA",
        "PATH",
        "REDQ_ATTEMPT",
        "REDQ_FENCE",
        "REDQ_JOB_ID",
        "REDQ_QUEUE",
        "REDQ_TENANT",
        "REDQ_TEST_ALLOWED",
        "REDQ_USAGE_FILE",
    ];
    assert_eq!(names, expected);
    assert_eq!(env["REDQ_JOB_ID"], "job-1");
    assert_eq!(env["REDQ_QUEUE"], "emails");
    assert_eq!(env["REDQ_ATTEMPT"], "2");
    assert_eq!(env["REDQ_TENANT"], "acme");
    assert_eq!(env["REDQ_FENCE"], "42");
    assert_eq!(env["EXTRA"], "from config");
    assert_eq!(env["REDQ_TEST_ALLOWED"], "passed through");

    let mut no_tenant = ctx("{}");
    no_tenant.tenant = None;
    assert_eq!(parse(run(spec, no_tenant).await)["REDQ_TENANT"], "");
}

#[tokio::test]
async fn exit_codes_map_to_outcomes() {
    let done = run(sh("echo hello"), ctx("{}")).await;
    assert_eq!(
        done.outcome,
        Outcome::Done {
            result: Some("hello\n".into())
        }
    );
    assert_eq!((done.exit_code, done.signal), (Some(0), None));
    assert!(
        done.wall > Duration::ZERO && done.max_rss_kib > 0,
        "{done:?}"
    );
    assert_eq!(
        run(sh("true"), ctx("{}")).await.outcome,
        Outcome::Done { result: None }
    );

    let retry = run(sh("echo try later >&2; exit 75"), ctx("{}")).await;
    assert_eq!(
        retry.outcome,
        Outcome::Fail {
            error: "exit code 75: try later".into()
        }
    );
    assert_eq!(retry.exit_code, Some(75));

    let dead = run(sh("echo bad input >&2; exit 65"), ctx("{}")).await;
    assert!(
        matches!(&dead.outcome, Outcome::Dead { error } if error.contains("exit code 65") && error.contains("bad input"))
    );

    let other = run(sh("exit 3"), ctx("{}")).await;
    assert_eq!(
        other.outcome,
        Outcome::Fail {
            error: "exit code 3".into()
        }
    );

    let killed = run(sh("kill -KILL $$"), ctx("{}")).await;
    assert!(
        error_of(&killed.outcome).contains("killed by signal 9 (SIGKILL)"),
        "{killed:?}"
    );
    assert_eq!(
        (killed.exit_code, killed.signal),
        (None, Some(libc::SIGKILL))
    );

    let handler = CommandHandler::new(sh("exit 65"));
    assert!(matches!(
        handler.handle(ctx("{}")).await,
        Outcome::Dead { .. }
    ));
}

#[tokio::test]
async fn output_is_capped_and_decoded_lossily() {
    let mut spec = sh(r"head -c 100000 /dev/zero | tr '\0' x; head -c 5000 /dev/zero >&2; exit 0");
    spec.max_output_bytes = 1000;
    let run1 = run(spec, ctx("{}")).await;
    let Outcome::Done { result: Some(text) } = &run1.outcome else {
        panic!("{:?}", run1.outcome)
    };
    assert_eq!(
        text,
        &format!("{}…[truncated 99000 bytes]", "x".repeat(1000))
    );
    assert_eq!((run1.stdout_bytes, run1.stderr_bytes), (100_000, 5000));

    let bad_utf8 = run(sh(r"printf '\377\376ok'"), ctx("{}")).await;
    assert_eq!(
        bad_utf8.outcome,
        Outcome::Done {
            result: Some("\u{FFFD}\u{FFFD}ok".into())
        }
    );
}

#[tokio::test]
async fn large_payload_and_large_output_do_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let payload = format!("\"{}\"", "a".repeat(9 * 1024 * 1024));
    // Writes 2 MB before it reads a byte of stdin: both pipes must be served at once.
    let spec = with_env(
        sh(r#"head -c 2000000 /dev/zero; wc -c > "$OUT""#),
        "OUT",
        &count,
    );
    let run = run(spec, ctx(&payload)).await;
    assert!(
        matches!(run.outcome, Outcome::Done { result: Some(_) }),
        "{:?}",
        run.exit_code
    );
    assert_eq!(run.stdout_bytes, 2_000_000);
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().trim(),
        payload.len().to_string()
    );
}

#[tokio::test]
async fn program_that_ignores_stdin_is_fine() {
    let payload = format!("\"{}\"", "a".repeat(1024 * 1024));
    let run = run(sh("echo ok"), ctx(&payload)).await;
    assert_eq!(
        run.outcome,
        Outcome::Done {
            result: Some("ok\n".into())
        }
    );
}

#[tokio::test]
async fn time_out_terminates_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let spec = with_env(
        sh(r#"sleep 1000 & echo $! > "$PIDFILE"; wait"#),
        "PIDFILE",
        &pidfile,
    );
    let mut job = ctx("{}");
    job.timeout = Duration::from_millis(500);
    let run = run(
        CommandSpec {
            kill_grace: Duration::from_secs(30),
            ..spec
        },
        job,
    )
    .await;
    assert!(
        error_of(&run.outcome).starts_with("timed out after 500ms"),
        "{:?}",
        run.outcome
    );
    assert_eq!(
        run.signal,
        Some(libc::SIGTERM),
        "SIGTERM sufficed; no need to wait for the grace"
    );
    wait_gone(read_pid(&pidfile).await).await;
}

#[tokio::test]
async fn time_out_kills_a_group_that_ignores_sigterm_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = r#"trap '' TERM; sleep 1000 & echo $! > "$PIDFILE"; wait"#;
    let spec = with_env(sh(script), "PIDFILE", &pidfile);
    let mut job = ctx("{}");
    job.timeout = Duration::from_millis(500);
    let run = run(
        CommandSpec {
            kill_grace: Duration::from_millis(300),
            ..spec
        },
        job,
    )
    .await;
    assert!(
        error_of(&run.outcome).contains("killed by signal 9 (SIGKILL)"),
        "{:?}",
        run.outcome
    );
    wait_gone(read_pid(&pidfile).await).await;
}

#[tokio::test]
async fn cancellation_stops_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let spec = with_env(
        sh(r#"sleep 1000 & echo $! > "$PIDFILE"; wait"#),
        "PIDFILE",
        &pidfile,
    );
    let job = ctx("{}");
    let cancel = job.cancel.clone();
    let task = tokio::spawn(run(spec, job));
    let grandchild = read_pid(&pidfile).await;
    cancel.cancel();
    let run = task.await.unwrap();
    assert!(
        error_of(&run.outcome).starts_with("cancelled: "),
        "{:?}",
        run.outcome
    );
    wait_gone(grandchild).await;
}

#[tokio::test]
async fn dropping_a_run_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let spec = with_env(
        sh(r#"sleep 1000 & echo $! > "$PIDFILE"; wait"#),
        "PIDFILE",
        &pidfile,
    );
    let task = tokio::spawn(run(spec, ctx("{}")));
    let grandchild = read_pid(&pidfile).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_gone(grandchild).await;
}

#[tokio::test]
async fn leftovers_in_the_group_die_when_the_program_exits() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // The background sleep keeps stdout open: the run must still end promptly.
    let spec = with_env(
        sh(r#"sleep 1000 & echo $! > "$PIDFILE"; echo done"#),
        "PIDFILE",
        &pidfile,
    );
    let run = run(spec, ctx("{}")).await;
    assert_eq!(
        run.outcome,
        Outcome::Done {
            result: Some("done\n".into())
        }
    );
    wait_gone(read_pid(&pidfile).await).await;
}

#[tokio::test]
async fn spawn_failures_name_the_program() {
    let missing = CommandSpec {
        argv: vec!["/nonexistent/redq-test-prog".into()],
        ..Default::default()
    };
    let error = error_of(&run(missing, ctx("{}")).await.outcome).to_string();
    assert!(
        error.contains("`/nonexistent/redq-test-prog`") && error.contains("No such file"),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    let not_exec = dir.path().join("script.sh");
    std::fs::write(&not_exec, "#!/bin/sh\necho hi\n").unwrap();
    let spec = CommandSpec {
        argv: vec![not_exec.display().to_string()],
        ..Default::default()
    };
    let error = error_of(&run(spec, ctx("{}")).await.outcome).to_string();
    assert!(
        error.contains("script.sh") && error.contains("chmod +x"),
        "{error}"
    );

    // posix_spawn, unlike execvp, runs no shell for a script without `#!`.
    let bare = dir.path().join("bare.sh");
    std::fs::write(&bare, "echo hi\n").unwrap();
    std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = CommandSpec {
        argv: vec![bare.display().to_string()],
        ..Default::default()
    };
    let error = error_of(&run(spec, ctx("{}")).await.outcome).to_string();
    assert!(
        error.contains("bare.sh") && error.contains("#!/bin/sh"),
        "{error}"
    );

    let empty = run(CommandSpec::default(), ctx("{}")).await;
    assert!(
        error_of(&empty.outcome).contains("argv is empty"),
        "{:?}",
        empty.outcome
    );
}

thread_local! {
    /// Forks made by this thread, counted by a `pthread_atfork` hook.
    static FORKS: Cell<u32> = const { Cell::new(0) };
}

unsafe extern "C" fn count_fork() {
    FORKS.with(|n| n.set(n.get() + 1));
}

/// A fork runs the `pthread_atfork` hooks in the forking thread; posix_spawn
/// (vfork and exec) runs none. The current-thread runtime spawns on this thread.
#[tokio::test]
async fn programs_start_by_posix_spawn_found_by_path_or_in_path_with_argv0_and_cwd_kept() {
    assert_eq!(
        unsafe { libc::pthread_atfork(Some(count_fork), None, None) },
        0
    );
    // The process's first spawn may fork the process guard, once.
    assert!(matches!(
        run(sh("true"), ctx("{}")).await.outcome,
        Outcome::Done { .. }
    ));
    let before = FORKS.with(Cell::get);
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    for program in ["sh", "/bin/sh"] {
        let spec = CommandSpec {
            argv: vec![
                program.into(),
                "-c".into(),
                r#"printf '%s %s' "$0" "$(pwd)""#.into(),
            ],
            cwd: Some(cwd.clone()),
            ..Default::default()
        };
        let run = run(spec, ctx("{}")).await;
        let expected = format!("{program} {}", cwd.display());
        assert_eq!(
            run.outcome,
            Outcome::Done {
                result: Some(expected)
            }
        );
    }
    assert_eq!(
        FORKS.with(Cell::get),
        before,
        "a program was started by fork"
    );
}

#[test]
fn resolve_program_checks_paths_and_path_lookup() {
    let sh = resolve_program("sh").unwrap();
    assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
    assert_eq!(resolve_program("/bin/sh").unwrap(), Path::new("/bin/sh"));

    let err = resolve_program("redq-no-such-program-xyz").unwrap_err();
    assert!(err.contains("not found in PATH"), "{err}");
    let err = resolve_program("/nonexistent/prog").unwrap_err();
    assert!(err.contains("/nonexistent/prog"), "{err}");
    assert!(resolve_program("bin/sh")
        .unwrap_err()
        .contains("relative path"));
    assert!(resolve_program("").unwrap_err().contains("empty"));
    assert!(resolve_program("/tmp")
        .unwrap_err()
        .contains("not a regular file"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, "data").unwrap();
    let err = resolve_program(file.to_str().unwrap()).unwrap_err();
    assert!(
        err.contains("not executable") && err.contains("chmod +x"),
        "{err}"
    );
}
