//! The guard process itself: what runs in the child forked by [`super::fork_guard`].
//!
//! The daemon is multithreaded, so after the fork only async-signal-safe calls
//! are allowed here: another thread may have held the allocator's or any other
//! lock at the fork. So this code never allocates (the [`Table`] was allocated
//! before the fork), never logs, never panics (no unchecked index, no overflow),
//! and ends with `_exit`, never running the daemon's destructors or exit hooks.
//!
//! Protocol (daemon to guard, one way): a stream of native-endian `pid_t`s; a
//! positive one registers that process group, a negative one unregisters it.
//! End of file means the daemon is gone: every registered group gets SIGKILL.

use std::io;
use std::os::fd::RawFd;

/// Process ids are below this on Linux (`PID_MAX_LIMIT` on 64-bit) and on the BSDs.
const PID_LIMIT: usize = 1 << 22;
/// Pause after each read, so that messages gather in the socket and one read
/// takes many. Why: woken for every message, the guard cost two wake-ups per
/// job (a register and an unregister), each a context switch here and a
/// wake-up, often an inter-processor interrupt, in the daemon's `send` (issue
/// 19 profiled the command handler at 1.5k jobs/s). Nothing is lost by reading
/// late: the daemon's death is the end of the stream, after every message it
/// sent, so only the kill comes up to this much later.
const READ_PAUSE: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 10_000_000,
};

/// One bit per possible process group id: 512 KiB, in zero pages mapped lazily.
pub(super) struct Table(Vec<u64>);

impl Table {
    pub(super) fn new() -> Table {
        Table(vec![0u64; PID_LIMIT / 64])
    }

    fn set(&mut self, pgid: usize, on: bool) {
        if let Some(word) = self.0.get_mut(pgid / 64) {
            let bit = 1u64 << (pgid % 64);
            *word = if on { *word | bit } else { *word & !bit };
        }
    }
}

/// Runs the guard on the socket end `sock` until the daemon is gone, then exits.
///
/// # Safety
/// Call only in a freshly forked child, with `sock` its end of the socket pair.
pub(super) unsafe fn run(sock: RawFd, table: &mut Table) -> ! {
    detach(sock);
    let mut buf = [0u8; 4096];
    let mut have = 0;
    loop {
        let room = &mut buf[have..];
        let n = libc::read(sock, room.as_mut_ptr().cast(), room.len());
        if n == 0 {
            break;
        }
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        have += n as usize;
        let whole = have - have % 4;
        for record in buf[..whole].chunks_exact(4) {
            let value = libc::pid_t::from_ne_bytes([record[0], record[1], record[2], record[3]]);
            table.set(value.unsigned_abs() as usize, value > 0);
        }
        buf.copy_within(whole..have, 0);
        have -= whole;
        // An interrupted pause just reads sooner.
        libc::nanosleep(&READ_PAUSE, std::ptr::null_mut());
    }
    // The daemon is gone: every group still registered dies with it. Never ids 0
    // and 1: kill(0) is our own group, kill(-1) every process we may signal.
    for (i, &word) in table.0.iter().enumerate() {
        for b in (0..64).filter(|b| word & (1u64 << b) != 0) {
            let pgid = (i * 64 + b) as libc::pid_t;
            if pgid > 1 {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
    libc::_exit(0)
}

/// Cuts the guard loose from what it inherited from the daemon.
unsafe fn detach(sock: RawFd) {
    // The daemon's signal handlers would run daemon code here (signal-hook's would
    // even write to the daemon's own pipe): back to the defaults. The signals meant
    // for the daemon or its process group (a terminal's, systemd's SIGTERM to the
    // whole unit) are ignored: the guard must outlive the daemon, and exits after it.
    let mut action: libc::sigaction = std::mem::zeroed();
    action.sa_sigaction = libc::SIG_DFL;
    for sig in 1..65 {
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
    action.sa_sigaction = libc::SIG_IGN;
    let ignored = [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGPIPE,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ];
    for sig in ignored {
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
    let mut mask: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut mask);
    libc::sigprocmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
    // A group of its own, so a SIGKILL to the daemon's group does not take it too.
    libc::setpgid(0, 0);
    // Only the daemon may hold its end (EOF is the death notice), and copies of
    // the daemon's sockets and pipes here would keep them open after it closes them.
    close_all_but(sock);
    #[cfg(target_os = "linux")]
    libc::prctl(libc::PR_SET_NAME, c"redq-guard".as_ptr());
}

/// Closes every descriptor except `keep`.
unsafe fn close_all_but(keep: RawFd) {
    #[cfg(target_os = "linux")]
    {
        let close_range = |first: libc::c_int, last: libc::c_uint| {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                last,
                0 as libc::c_uint,
            ) == 0
        };
        let below = keep == 0 || close_range(0, (keep - 1) as libc::c_uint);
        if below && close_range(keep + 1, libc::c_uint::MAX) {
            return;
        }
    }
    // No close_range (kernels before 5.9): one close per possible descriptor.
    let mut limit: libc::rlimit = std::mem::zeroed();
    let max = match libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) {
        0 => limit.rlim_cur.min(1 << 20) as RawFd,
        _ => 1 << 16,
    };
    for fd in (0..max).filter(|&fd| fd != keep) {
        libc::close(fd);
    }
}
