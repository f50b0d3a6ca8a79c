//! Process guard: when the daemon dies, by any means (SIGKILL included), every
//! process group it started for a job is killed, grandchildren included.
//!
//! Why a separate process: nothing in a process that got SIGKILL runs again, so
//! only another process can clean up after it. `PR_SET_PDEATHSIG` reaches only
//! the direct child, not what a wrapper script starts, and needs a `pre_exec`
//! hook, which makes std fork the whole daemon for every spawn instead of using
//! posix_spawn. Why not a spawner process that starts the
//! programs itself: the daemon stays their parent, so it reaps them with `wait4`
//! (exit status and resource usage) and signals a group only while its leader is
//! unreaped, with no descriptors to pass and no status to send back.
//!
//! How:
//! - One guard per process, forked when the daemon builds its first command
//!   handler ([`start_early`]), or else at the first registration: a fork,
//!   not an exec of `redq`, since library users embed the daemon in binaries
//!   of their own. What runs in the child, and why it may only
//!   make async-signal-safe calls, is in [`child`].
//! - The two are joined by a socket pair. The daemon's end is close-on-exec, so
//!   programs never inherit it, and the guard closes every descriptor but its own
//!   end, so the kernel closes the daemon's end exactly when the daemon ends: end
//!   of file on the guard's end is the death notice, for every way of dying. (Not
//!   `PR_SET_PDEATHSIG`: it follows the forking *thread*, and tokio ends idle ones.)
//! - [`register`] after each spawn and [`unregister`] before each reap send the
//!   group id as 4 bytes (negated to unregister): no reply, no round trip.
//! - At end of file the guard SIGKILLs every group still registered, then exits.
//!   It reads at most every 10 ms (messages wait in the socket meantime), so
//!   that it is not woken twice per job: the kill comes up to 10 ms after the
//!   daemon's death.
//! - The daemon keeps the set of running groups itself. A watcher thread notices
//!   when the guard ends (its end of the socket closes), reaps it, logs it and
//!   starts a new one, which is told every running group. A guard that does not
//!   take a message within [`SEND_TIMEOUT`] is killed and replaced the same way.
//!
//! Invariants:
//! - A group is unregistered before its leader is reaped (while a zombie still
//!   holds its id), so the guard never kills an id reused by another process.
//! - Only the watcher reaps the guard, under the state lock; a stuck guard is
//!   killed under the same lock, so its pid is never signalled once reaped.
//!
//! Limits:
//! - A SIGKILL in the microseconds between a spawn's return and its registration
//!   leaves that job's group running. Under systemd, `KillMode=mixed` (the unit's
//!   setting) kills what is left in the unit's cgroup when the daemon dies.
//! - The guard is a copy-on-write image of the process at the fork: pages the
//!   daemon writes afterwards are copied, so it can come to hold as much memory
//!   as the daemon had then (started at the first spawn, that is little).
//! - If the guard cannot be started (fork fails), programs still run, unguarded;
//!   an error says so, and a start is tried again at a later spawn.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

mod child;

/// How long a message may wait for room in the socket before the guard is
/// deemed stuck (stopped, or starved) and replaced.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Wait before trying again to start a guard that could not be started, and
/// before starting a third after two that each ended within this time of their
/// start (so a guard that dies at once, say by a seccomp filter, is no fork loop).
const RETRY_START: Duration = Duration::from_secs(5);
/// A dead guard is an EPIPE for `send`, never a SIGPIPE for the daemon.
#[cfg(target_os = "linux")]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(target_os = "linux"))]
const SEND_FLAGS: libc::c_int = 0;

/// What the daemon knows: the running groups and the current guard.
struct State {
    live: BTreeSet<libc::pid_t>,
    guard: Option<Guard>,
    /// When a start last failed; none is tried for [`RETRY_START`] after it.
    failed_at: Option<Instant>,
    /// Counts guards started, so a watcher knows whether its guard is current.
    started: u64,
    /// Whether the last guard that ended had run for less than [`RETRY_START`].
    last_short: bool,
}

struct Guard {
    pid: libc::pid_t,
    sock: Arc<UnixStream>,
    number: u64,
    started_at: Instant,
}

static STATE: Mutex<State> = Mutex::new(State {
    live: BTreeSet::new(),
    guard: None,
    failed_at: None,
    started: 0,
    last_short: false,
});

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the guard now if none runs, so that the first program started is
/// guarded from its first instant (the daemon calls it when it builds a
/// command handler). Without it the guard starts at the first spawn, and a
/// daemon killed during that fork would leave the first job's group alone.
pub(crate) fn start_early() {
    let mut state = state();
    if state.guard.is_none() && state.failed_at.is_none_or(|at| at.elapsed() >= RETRY_START) {
        start(&mut state);
    }
}

/// Puts the group `pgid` (a just-spawned child's own group) under the guard,
/// starting the guard if none runs.
pub(crate) fn register(pgid: libc::pid_t) {
    let mut state = state();
    state.live.insert(pgid);
    if state.guard.is_none() {
        let due = state.failed_at.is_none_or(|at| at.elapsed() >= RETRY_START);
        if due {
            // The new guard is told every live group, this one included.
            start(&mut state);
            return;
        }
    }
    tell(&state, pgid);
}

/// Takes the group `pgid` from the guard; call before its leader is reaped.
pub(crate) fn unregister(pgid: libc::pid_t) {
    let mut state = state();
    state.live.remove(&pgid);
    tell(&state, -pgid);
}

/// Sends one message to the current guard, if any. A guard that has ended is
/// replaced by its watcher; one that does not take the message is killed, so
/// that its watcher replaces it.
fn tell(state: &State, message: libc::pid_t) {
    let Some(guard) = &state.guard else { return };
    let Err(e) = send(&guard.sock, message) else {
        return;
    };
    if !matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) {
        tracing::error!(pid = guard.pid, error = %e,
            "the process guard does not take messages; killing it so that a new one starts");
        // SAFETY: plain syscall; only the watcher reaps the guard, under the
        // lock held here, so the pid is still the guard's.
        unsafe { libc::kill(guard.pid, libc::SIGKILL) };
    }
}

fn send(sock: &UnixStream, message: libc::pid_t) -> io::Result<()> {
    let bytes = message.to_ne_bytes();
    loop {
        // SAFETY: `bytes` is valid for its length.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                SEND_FLAGS,
            )
        };
        match n {
            n if n == bytes.len() as isize => return Ok(()),
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            -1 => return Err(io::Error::last_os_error()),
            _ => return Err(io::Error::other("the message was cut short")),
        }
    }
}

/// Starts a guard, tells it every live group and watches it; logs a failure.
fn start(state: &mut State) {
    let (pid, sock) = match fork_guard() {
        Ok(forked) => forked,
        Err(e) => {
            state.failed_at = Some(Instant::now());
            tracing::error!(error = %e,
                "cannot start the process guard: programs run unguarded, and if the daemon \
                 is killed their processes outlive it; check the process and memory limits");
            return;
        }
    };
    state.started += 1;
    state.failed_at = None;
    let (sock, number) = (Arc::new(sock), state.started);
    let watched = sock.clone();
    let watcher = std::thread::Builder::new()
        .name("redq-guard-watch".into())
        .spawn(move || watch(watched, pid, number));
    if let Err(e) = watcher {
        tracing::warn!(error = %e, "cannot watch the process guard; if it dies, no new one starts");
    }
    let started_at = Instant::now();
    state.guard = Some(Guard {
        pid,
        sock,
        number,
        started_at,
    });
    tracing::debug!(pid, "process guard started");
    for &pgid in &state.live {
        tell(state, pgid);
    }
}

/// Waits until the guard's end of the socket closes (the guard has ended),
/// reaps the guard and, if it is still the current one, starts a new one.
fn watch(sock: Arc<UnixStream>, pid: libc::pid_t, number: u64) {
    let mut fd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // The guard never writes: the socket becomes readable only at its end.
    // SAFETY: one valid pollfd.
    while unsafe { libc::poll(&mut fd, 1, -1) } == -1 {
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            tracing::warn!("cannot watch the process guard; if it dies, no new one starts");
            return;
        }
    }
    let mut state = state();
    let mut status = 0;
    // SAFETY: the guard is our child and reaped nowhere else.
    while unsafe { libc::waitpid(pid, &mut status, 0) } == -1
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    let Some(guard) = state.guard.take_if(|g| g.number == number) else {
        return;
    };
    let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    tracing::warn!(
        pid,
        ?signal,
        running = state.live.len(),
        "the process guard ended; starting a new one and telling it every running job"
    );
    let short = guard.started_at.elapsed() < RETRY_START;
    if !(short && state.last_short) {
        state.last_short = short;
        return start(&mut state);
    }
    state.failed_at = Some(Instant::now());
    drop(state);
    tracing::error!(wait = ?RETRY_START,
        "the process guard keeps ending soon after its start; programs run unguarded until the next one");
    std::thread::sleep(RETRY_START);
    let mut state = self::state();
    if state.guard.is_none() {
        start(&mut state);
    }
}

/// Forks the guard; returns its pid and the daemon's end of the socket.
fn fork_guard() -> io::Result<(libc::pid_t, UnixStream)> {
    let (daemon_end, guard_end) = UnixStream::pair()?;
    daemon_end.set_write_timeout(Some(SEND_TIMEOUT))?;
    // Allocated here, since the child must not allocate; the parent drops it.
    let mut table = child::Table::new();
    let fd = guard_end.as_raw_fd();
    // SAFETY: the child runs `child::run`, which never returns and makes only
    // async-signal-safe calls.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => unsafe { child::run(fd, &mut table) },
        pid => Ok((pid, daemon_end)),
    }
}
