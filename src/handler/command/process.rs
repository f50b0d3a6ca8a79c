//! A started program's process group, from its registration with the guard
//! to its reaping: signals on time-out and cancellation, and the child's
//! resource usage from `wait4`.
//!
//! Invariants:
//! - The program leads a process group of its own, so a signal reaches
//!   whatever it started too (a wrapper script's children).
//! - The child is reaped here, by `wait4` on a blocking thread, which also
//!   yields its resource usage. Before reaping, the exit is seen with
//!   `waitid(WNOWAIT)`, the rest of the group gets SIGKILL (a job's processes
//!   never outlive it) and the group is unregistered from the guard.
//! - The group is only ever signalled (or unregistered from the guard) while
//!   the child is unreaped, so its id cannot have been reused by another
//!   process.
//! - Dropping a [`Running`] before the child ended (its task aborted) kills
//!   the group.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::handler::guard;

/// Why the program was stopped before it exited by itself.
pub(super) enum Stop {
    Timeout(Duration),
    Cancel,
}

/// What the blocking reaper returns: the wait status and the child's resource usage.
pub(super) type Reaped = io::Result<(libc::c_int, libc::rusage)>;

/// A program being watched: its group, the blocking reaper, and the kill on drop.
pub(super) struct Running {
    group: Arc<Group>,
    waiter: JoinHandle<Reaped>,
    _kill_on_drop: KillOnDrop,
}

impl Running {
    /// Puts a just-spawned child's group under the guard and starts reaping
    /// it on a blocking thread.
    pub(super) fn watch(child: &std::process::Child) -> Running {
        let (pid, reaped) = (child.id() as libc::pid_t, Mutex::new(false));
        guard::register(pid);
        let group = Arc::new(Group { pid, reaped });
        let _kill_on_drop = KillOnDrop(group.clone());
        let waiter = tokio::task::spawn_blocking({
            let group = group.clone();
            move || group.wait()
        });
        Running {
            group,
            waiter,
            _kill_on_drop,
        }
    }

    /// Waits for the child to end by itself, or stops its group on time-out or
    /// cancellation: SIGTERM, then SIGKILL after the grace.
    pub(super) async fn wait(
        &mut self,
        timeout: Duration,
        cancel: &CancellationToken,
        kill_grace: Duration,
    ) -> (Option<Stop>, Reaped) {
        let (group, waiter) = (&self.group, &mut self.waiter);
        let early = tokio::select! {
            reaped = &mut *waiter => Ok(reaped),
            _ = tokio::time::sleep(timeout) => Err(Stop::Timeout(timeout)),
            _ = cancel.cancelled() => Err(Stop::Cancel),
        };
        let (stop, reaped) = match early {
            Ok(reaped) => (None, reaped),
            Err(stop) => {
                group.signal(libc::SIGTERM);
                match tokio::time::timeout(kill_grace, &mut *waiter).await {
                    Ok(reaped) => (Some(stop), reaped),
                    Err(_) => {
                        group.signal(libc::SIGKILL);
                        (Some(stop), waiter.await)
                    }
                }
            }
        };
        (
            stop,
            reaped.map_err(io::Error::from).and_then(|reaped| reaped),
        )
    }
}

/// The child's process group (its id is the child's pid) and whether the child is reaped.
struct Group {
    pid: libc::pid_t,
    reaped: Mutex<bool>,
}

impl Group {
    /// Signals the whole group, unless the child is reaped (its id may then be reused).
    fn signal(&self, sig: libc::c_int) {
        let reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        if !*reaped {
            // SAFETY: plain syscall; the unreaped child keeps the group id ours.
            unsafe { libc::kill(-self.pid, sig) };
        }
    }

    /// Blocks until the child exits, kills what it left in its group, then reaps it.
    fn wait(&self) -> io::Result<(libc::c_int, libc::rusage)> {
        // SAFETY: zeroed siginfo_t/rusage are valid out-parameters for waitid/wait4.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOWAIT;
        while unsafe { libc::waitid(libc::P_PID, self.pid as libc::id_t, &mut info, flags) } == -1 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                guard::unregister(self.pid); // Not our child to wait for, nor our group.
                return Err(e);
            }
        }
        let mut reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        // The child is a zombie now: the group id stays ours to signal and to unregister.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        guard::unregister(self.pid);
        let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
        while unsafe { libc::wait4(self.pid, &mut status, 0, &mut usage) } == -1 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        *reaped = true;
        Ok((status, usage))
    }
}

/// Kills the group if `run` is dropped before the child ended (e.g. its task aborted).
struct KillOnDrop(Arc<Group>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.signal(libc::SIGKILL);
    }
}

/// A `timeval` of `rusage` as a duration.
pub(super) fn duration_of(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

/// The peak resident set of `rusage`, KiB.
pub(super) fn max_rss_kib(usage: &libc::rusage) -> u64 {
    let rss = usage.ru_maxrss.max(0) as u64;
    // Darwin reports bytes, Linux and the BSDs KiB.
    if cfg!(target_vendor = "apple") {
        rss / 1024
    } else {
        rss
    }
}

/// `15 (SIGTERM)`, or the bare number of a signal not named here.
pub(super) fn signal_name(sig: libc::c_int) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGXCPU => "SIGXCPU",
        _ => return format!("{sig}"),
    };
    format!("{sig} ({name})")
}
