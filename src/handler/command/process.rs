//! A started program's process group, from its registration with the guard
//! to its reaping: signals on time-out and cancellation, and the child's
//! resource usage from `wait4`.
//!
//! Invariants:
//! - The program leads a process group of its own, so a signal reaches
//!   whatever it started too (a wrapper script's children).
//! - The child is reaped here, by `wait4`, which also yields its resource
//!   usage. Before reaping, the exit is seen with `waitid(WNOWAIT)`, the rest
//!   of the group gets SIGKILL (a job's processes never outlive it) and the
//!   group is unregistered from the guard.
//! - The exit is awaited on a pidfd (Linux 5.3+), which the runtime's epoll
//!   reports readable when the child has exited; only where there is none
//!   (another OS, an old kernel, no descriptor left) does a blocking thread
//!   wait in `waitid`. Why: a thread per running program, woken at each exit
//!   and handing the result back to the runtime, is two context switches per
//!   job (issue 19 profiled the command handler at concurrency 50).
//! - The group is only ever signalled (or unregistered from the guard) while
//!   the child is unreaped, so its id cannot have been reused by another
//!   process.
//! - Dropping a [`Running`] before the child ended (its task aborted) kills
//!   the group.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[cfg(target_os = "linux")]
use std::os::fd::{FromRawFd, OwnedFd};
#[cfg(target_os = "linux")]
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::handler::guard;

/// Why the program was stopped before it exited by itself.
pub(super) enum Stop {
    Timeout(Duration),
    Cancel,
}

/// What reaping returns: the wait status and the child's resource usage.
pub(super) type Reaped = io::Result<(libc::c_int, libc::rusage)>;

/// A program being watched: its group, how its exit is awaited, and the kill on drop.
pub(super) struct Running {
    group: Arc<Group>,
    waiter: Waiter,
    _kill_on_drop: KillOnDrop,
}

/// How the child's exit is awaited.
enum Waiter {
    /// Readable once the child has exited; no thread waits.
    #[cfg(target_os = "linux")]
    Pidfd(AsyncFd<OwnedFd>),
    /// A blocking thread in `waitid`, where there is no pidfd.
    Thread(JoinHandle<Reaped>),
}

impl Running {
    /// Puts a just-spawned child's group under the guard and starts awaiting
    /// its exit.
    pub(super) fn watch(child: &std::process::Child) -> Running {
        let (pid, reaped) = (child.id() as libc::pid_t, Mutex::new(false));
        guard::register(pid);
        let group = Arc::new(Group { pid, reaped });
        let _kill_on_drop = KillOnDrop(group.clone());
        let waiter = match pidfd(pid) {
            Some(fd) => fd,
            None => Waiter::Thread(tokio::task::spawn_blocking({
                let group = group.clone();
                move || {
                    group.exited(true)?;
                    group.reap()
                }
            })),
        };
        Running {
            group,
            waiter,
            _kill_on_drop,
        }
    }

    /// The child's wait status and resource usage, once it has exited. Cancel
    /// safe: the reaping itself happens within one poll.
    async fn reaped(&mut self) -> Reaped {
        match &mut self.waiter {
            #[cfg(target_os = "linux")]
            Waiter::Pidfd(fd) => loop {
                let mut ready = fd.readable().await?;
                if self.group.exited(false)? {
                    return self.group.reap();
                }
                ready.clear_ready();
            },
            Waiter::Thread(thread) => thread.await.map_err(io::Error::from)?,
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
        let early = tokio::select! {
            reaped = self.reaped() => Ok(reaped),
            _ = tokio::time::sleep(timeout) => Err(Stop::Timeout(timeout)),
            _ = cancel.cancelled() => Err(Stop::Cancel),
        };
        match early {
            Ok(reaped) => (None, reaped),
            Err(stop) => {
                self.group.signal(libc::SIGTERM);
                match tokio::time::timeout(kill_grace, self.reaped()).await {
                    Ok(reaped) => (Some(stop), reaped),
                    Err(_) => {
                        self.group.signal(libc::SIGKILL);
                        (Some(stop), self.reaped().await)
                    }
                }
            }
        }
    }
}

/// A pidfd for the unreaped child `pid`, registered with the runtime; `None`
/// where that is not possible (then a thread waits instead).
#[cfg(target_os = "linux")]
fn pidfd(pid: libc::pid_t) -> Option<Waiter> {
    // SAFETY: plain syscall; `pid` is our unreaped child, so it names that process.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = libc::c_int::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an OwnedFd stays open, and the same descriptor, for as long as
    // the AsyncFd that owns it.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .ok()
        .map(Waiter::Pidfd)
}

#[cfg(not(target_os = "linux"))]
fn pidfd(_pid: libc::pid_t) -> Option<Waiter> {
    None
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

    /// Whether the child has exited (it stays unreaped); with `block`, waits
    /// until it has.
    fn exited(&self, block: bool) -> io::Result<bool> {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
        while unsafe { libc::waitid(libc::P_PID, self.pid as libc::id_t, &mut info, flags) } == -1 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                guard::unregister(self.pid); // Not our child to wait for, nor our group.
                return Err(e);
            }
        }
        if block {
            return Ok(true);
        }
        // With WNOHANG, a child that has not exited leaves `info` zeroed.
        // SAFETY: waitid filled `info` (or left it zeroed), so si_pid is readable.
        #[cfg(target_os = "linux")]
        return Ok(unsafe { info.si_pid() } != 0);
        // Only the pidfd waiter asks without blocking, and it is Linux's.
        #[cfg(not(target_os = "linux"))]
        unreachable!("no pidfd outside Linux")
    }

    /// Kills what the exited child left in its group, then reaps it.
    fn reap(&self) -> Reaped {
        let mut reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        // The child is a zombie now: the group id stays ours to signal and to unregister.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        guard::unregister(self.pid);
        // SAFETY: a zeroed rusage is a valid out-parameter for wait4.
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
