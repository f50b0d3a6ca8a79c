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

use std::os::fd::OwnedFd;
use std::process::{ChildStderr, ChildStdin, ChildStdout};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long output may still arrive once the program and its group are gone: only a
/// process that left the group (setsid) can keep the pipes open that long.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Writes `payload` to the program's stdin, then closes it (abort the task to
/// stop writing).
pub(super) fn feed(stdin: Option<ChildStdin>, payload: Box<RawValue>) -> JoinHandle<()> {
    tokio::spawn(async move {
        // EPIPE (a program that does not read stdin) is not an error by itself.
        if let Some(Ok(mut tx)) = stdin.map(|fd| pipe::Sender::from_owned_fd(fd.into())) {
            let _ = tx.write_all(payload.get().as_bytes()).await;
        }
    })
}

/// The kept bytes of one pipe and the count of all it carried.
pub(super) type Captured = (Vec<u8>, u64);

/// Readers of the program's stdout and stderr.
pub(super) struct Capture {
    out: JoinHandle<Captured>,
    err: JoinHandle<Captured>,
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
        let out = tokio::spawn(read_capped(stdout.map(OwnedFd::from), cap, stop.clone()));
        let err = tokio::spawn(read_capped(stderr.map(OwnedFd::from), cap, stop.clone()));
        Capture { out, err, stop }
    }

    /// Stdout and stderr, once both pipes ended; call when the program has
    /// been reaped: what has not ended [`DRAIN_AFTER_EXIT`] later is cut off.
    pub(super) async fn finish(self) -> (Captured, Captured) {
        let Capture { out, err, stop } = self;
        let drained = async { (out.await.unwrap_or_default(), err.await.unwrap_or_default()) };
        tokio::pin!(drained);
        tokio::select! {
            both = &mut drained => both,
            _ = tokio::time::sleep(DRAIN_AFTER_EXIT) => { stop.cancel(); drained.await }
        }
    }
}

/// Reads a pipe to its end (or until `stop`), keeping the first `cap` bytes; returns
/// them with the total count. Reading on past the cap keeps the child from blocking.
async fn read_capped(fd: Option<OwnedFd>, cap: usize, stop: CancellationToken) -> (Vec<u8>, u64) {
    let (mut kept, mut total) = (Vec::new(), 0u64);
    let Some(Ok(mut rx)) = fd.map(pipe::Receiver::from_owned_fd) else {
        return (kept, total);
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = rx.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.cancelled() => break,
        };
        total += n as u64;
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
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
