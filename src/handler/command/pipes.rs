//! The program's pipes: the payload written to its stdin, and its stdout and
//! stderr read to their end, keeping at most a cap of each.
//!
//! Invariants:
//! - Output is read to its end even past the cap, so a program that writes a
//!   lot never blocks on a full pipe; the count of bytes covers all of it.
//! - Once the program and its group are gone, output may still arrive for
//!   [`DRAIN_AFTER_EXIT`]: only a process that left the group (setsid) can
//!   hold the pipes open that long, and it is not waited for.
//! - A program that does not read its stdin is fine (EPIPE is ignored).

use std::io;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{ChildStderr, ChildStdout, Stdio};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long output may still arrive once the program and its group are gone: only a
/// process that left the group (setsid) can keep the pipes open that long.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
/// The least a read of output asks for (a pipe holds 64 KiB by default).
const READ_CHUNK: usize = 16 * 1024;

/// The program's stdin: a pipe that already holds the payload (as much of it as
/// the pipe takes, 64 KiB by default) and is closed behind it when all fit.
/// Returns the read end for the program, and what is left to [`feed`] once it runs.
///
/// Why before the spawn: a payload that fits (nearly all do) then needs no
/// task, no registration with the runtime and no write after the start.
pub(super) fn stdin(payload: &RawValue) -> io::Result<(Stdio, Option<Rest>)> {
    let (rx, mut tx) = io::pipe()?;
    // Non-blocking on the write end only: the program reads a blocking stdin.
    // SAFETY: plain fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(tx.as_raw_fd(), libc::F_GETFL) };
    if flags == -1
        || unsafe { libc::fcntl(tx.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } == -1
    {
        return Err(io::Error::last_os_error());
    }
    let bytes = payload.get().as_bytes();
    let mut written = 0;
    while written < bytes.len() {
        match tx.write(&bytes[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    let rest = (written < bytes.len()).then(|| Rest {
        tx: tx.into(),
        payload: payload.to_owned(),
        written,
    });
    Ok((Stdio::from(rx), rest))
}

/// What did not fit in the stdin pipe before the program started.
pub(super) struct Rest {
    tx: OwnedFd,
    payload: Box<RawValue>,
    written: usize,
}

/// Writes the rest of the payload to the program's stdin, then closes it
/// (abort the task to stop writing).
pub(super) fn feed(rest: Rest) -> JoinHandle<()> {
    tokio::spawn(async move {
        // EPIPE (a program that does not read stdin) is not an error by itself.
        if let Ok(mut tx) = pipe::Sender::from_owned_fd(rest.tx) {
            let _ = tx
                .write_all(&rest.payload.get().as_bytes()[rest.written..])
                .await;
        }
    })
}

/// The kept bytes of one pipe and the count of all it carried.
pub(super) type Captured = (Vec<u8>, u64);

/// The reader of the program's stdout and stderr: one task for both pipes
/// (a task per pipe was one more spawn and wake-up per run).
pub(super) struct Capture {
    both: JoinHandle<(Captured, Captured)>,
    stop: CancellationToken,
}

impl Capture {
    /// Starts reading both pipes, keeping up to `cap` bytes of each.
    pub(super) fn start(
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
        cap: usize,
    ) -> Capture {
        let stop = CancellationToken::new();
        let out = read_capped(stdout.map(OwnedFd::from), cap, stop.clone());
        let err = read_capped(stderr.map(OwnedFd::from), cap, stop.clone());
        let both = tokio::spawn(async move { tokio::join!(out, err) });
        Capture { both, stop }
    }

    /// Stdout and stderr, once both pipes ended; call when the program has
    /// been reaped: what has not ended [`DRAIN_AFTER_EXIT`] later is cut off.
    pub(super) async fn finish(self) -> (Captured, Captured) {
        let Capture { mut both, stop } = self;
        tokio::select! {
            both = &mut both => both.unwrap_or_default(),
            _ = tokio::time::sleep(DRAIN_AFTER_EXIT) => {
                stop.cancel();
                both.await.unwrap_or_default()
            }
        }
    }
}

/// Reads a pipe to its end (or until `stop`), keeping the first `cap` bytes; returns
/// them with the total count. Reading on past the cap keeps the child from blocking.
///
/// Bytes are read straight into the kept buffer, which grows as output comes, and
/// past the cap into a scratch buffer made only then: most programs write little
/// or nothing, and two zeroed 64 KiB buffers per run were a visible part of the
/// daemon's CPU per job in issue 19's profile.
async fn read_capped(fd: Option<OwnedFd>, cap: usize, stop: CancellationToken) -> (Vec<u8>, u64) {
    let (mut kept, mut total) = (Vec::new(), 0u64);
    let Some(Ok(mut rx)) = fd.map(pipe::Receiver::from_owned_fd) else {
        return (kept, total);
    };
    let mut scratch = Vec::new();
    loop {
        let room = cap.saturating_sub(kept.len());
        let into = if room > 0 {
            // Reads fill at most the spare capacity: what is reserved here,
            // doubling as output grows.
            kept.reserve(room.min(READ_CHUNK.max(kept.len())));
            &mut kept
        } else {
            scratch.clear();
            scratch.reserve(READ_CHUNK);
            &mut scratch
        };
        let n = tokio::select! {
            read = rx.read_buf(into) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.cancelled() => break,
        };
        total += n as u64;
    }
    kept.truncate(cap);
    (kept, total)
}

/// Lossy UTF-8 text of `kept`, marked when the cap dropped part of `total`.
pub(super) fn capped_text(kept: &[u8], total: u64) -> String {
    let mut text = String::from_utf8_lossy(kept).into_owned();
    let dropped = total.saturating_sub(kept.len() as u64);
    if dropped > 0 {
        text.push_str(&format!("…[truncated {dropped} bytes]"));
    }
    text
}
