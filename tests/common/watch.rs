//! `redq watch` as a process: its output lines on channels, read until a
//! line matches (bounded by [`WAIT`]); killed on drop.
//!
//! Where Redis is comes first (`--redis-url <url>`, or `--config <file>` for
//! a cluster or Sentinel), then `watch <queue>` and the watch's own flags.

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use super::process::redq;
use super::wait::{wait_for, WAIT};

/// A `redq watch` process, killed on drop, with its output lines on channels.
pub struct Watch {
    pub child: Child,
    /// `None` once the test closed it (a reader that went away).
    pub stdout: Option<mpsc::Receiver<String>>,
    pub stderr: mpsc::Receiver<String>,
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Watch {
    /// Starts `redq <redis> watch <queue> <args>` and waits until it is
    /// reading (`redq: watching` on stderr).
    pub fn start(redis: &[&str], queue: &str, args: &[&str]) -> Watch {
        let mut w = Watch::spawn(redis, queue, args);
        w.stderr_until(|l| l.contains("redq: watching"));
        w
    }

    /// Starts `redq <redis> watch <queue> <args>`.
    pub fn spawn(redis: &[&str], queue: &str, args: &[&str]) -> Watch {
        let mut child = redq()
            .args(redis)
            .args(["watch", queue])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redq binary");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Watch {
            child,
            stdout: Some(stdout),
            stderr,
        }
    }

    /// Reads stderr until a line matches; returns the lines read.
    pub fn stderr_until(&mut self, want: impl Fn(&str) -> bool) -> Vec<String> {
        read_until(&self.stderr, want, "stderr")
    }

    /// Reads stdout until a line matches; returns the lines read.
    pub fn stdout_until(&mut self, want: impl Fn(&str) -> bool) -> Vec<String> {
        read_until(self.stdout.as_ref().unwrap(), want, "stdout")
    }

    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, sig) };
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_for("redq watch to exit", WAIT, || {
            self.child.try_wait().unwrap()
        })
    }
}

fn read_until(rx: &mpsc::Receiver<String>, want: impl Fn(&str) -> bool, what: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = want(&line);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!("redq watch {what}: no matching line; saw {seen:#?}"),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
