//! The usage file: how a command program reports what a job cost.
//!
//! `REDQ_USAGE_FILE` names an empty file made for one attempt (private, 0600,
//! a fresh name in [`dir`]: `TMPDIR`, else `/dev/shm`, else the temp
//! directory). The program may write a JSON object of
//! numbers to it (`{"tokens": 812, "cost_usd": 0.0031}`); redq reads it once
//! the program has ended and deletes it.
//!
//! Invariants: a bad usage file never fails the job: one that is not such an
//! object, is larger than [`MAX_USAGE_FILE_BYTES`], or is not a regular file
//! any more is ignored with a warning, and entries that are not numbers are
//! dropped one by one. Reading never follows a symlink nor blocks on a FIFO
//! put in the file's place. The file is deleted when its [`UsageFile`] drops,
//! read or not.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::handler::Usage;

/// Largest usage file read; a larger one is ignored with a warning.
pub const MAX_USAGE_FILE_BYTES: u64 = 64 * 1024;

/// The empty file named by `REDQ_USAGE_FILE` for one attempt; deleted on drop.
pub(super) struct UsageFile {
    path: PathBuf,
}

impl UsageFile {
    /// Creates a fresh, private (0600) file in the temp directory.
    pub(super) fn create() -> io::Result<UsageFile> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = dir();
        let mut last = None;
        for _ in 0..8 {
            let name = format!(
                "redq-usage-{}-{}-{:016x}.json",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed),
                rand::random::<u64>()
            );
            let path = dir.join(name);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(UsageFile { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free usage file name")))
    }

    /// The path given to the program as `REDQ_USAGE_FILE`.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what the program reported; problems are logged and yield no usage.
    /// The file is opened without following symlinks and without blocking (a FIFO
    /// put in its place cannot stall the worker), and must be a regular file.
    pub(super) fn read(self) -> Usage {
        // Most programs report nothing: an empty regular file (looked at without
        // following a symlink) needs no open, fstat, read and close.
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.is_file() && meta.len() == 0 => return Usage::new(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Usage::new(),
            _ => {}
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Usage::new(),
            Err(e) => {
                tracing::warn!(error = %e, "usage file cannot be opened; usage ignored");
                return Usage::new();
            }
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            tracing::warn!(
                "usage file was replaced by something that is not a regular file; usage ignored"
            );
            return Usage::new();
        }
        let mut text = Vec::new();
        if let Err(e) = (&mut file)
            .take(MAX_USAGE_FILE_BYTES + 1)
            .read_to_end(&mut text)
        {
            tracing::warn!(error = %e, "usage file cannot be read; usage ignored");
            return Usage::new();
        }
        if text.len() as u64 > MAX_USAGE_FILE_BYTES {
            tracing::warn!(
                limit = MAX_USAGE_FILE_BYTES,
                "usage file is larger than the limit; usage ignored"
            );
            return Usage::new();
        }
        parse_usage_file(&text)
    }
}

impl Drop for UsageFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where usage files are made, chosen once: `TMPDIR` when the operator set
/// it; else, on Linux, `/dev/shm` when the daemon may write there; else the
/// temp directory.
///
/// Why not simply the temp directory: one file made and deleted per attempt
/// is the largest part of what a short program costs the daemon when `/tmp`
/// is on disk. Measured on ext4 (issue 19): create, open, read and unlink
/// took ~120 µs of kernel CPU per file (the journal, and ext4's inode
/// allocator skipping the inodes it deleted moments before), against ~13 µs
/// on tmpfs. `/dev/shm` is tmpfs on Linux, also inside the systemd unit
/// (`ProtectSystem=strict` leaves `/dev` writable, `PrivateDevices=` keeps
/// `/dev/shm`); the file is as private there (0600, a fresh unguessable name).
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if std::env::var_os("TMPDIR").is_some_and(|d| !d.is_empty()) {
            return std::env::temp_dir();
        }
        let shm = Path::new("/dev/shm");
        if cfg!(target_os = "linux") && writable_dir(shm) {
            return shm.to_path_buf();
        }
        std::env::temp_dir()
    })
}

/// Whether `dir` is a directory this process may create files in.
fn writable_dir(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; access only reads it.
    dir.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0
}

/// The numbers of a usage file's JSON object. Empty text is no usage; anything
/// but an object is ignored with a warning; so is each entry that is not a number.
pub fn parse_usage_file(text: &[u8]) -> Usage {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Usage::new();
    }
    let doc = match serde_json::from_slice::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(doc)) => doc,
        Ok(_) => {
            tracing::warn!(
                "usage file does not hold a JSON object such as {{\"tokens\": 12}}; usage ignored"
            );
            return Usage::new();
        }
        Err(e) => {
            tracing::warn!(error = %e, "usage file is not valid JSON; usage ignored");
            return Usage::new();
        }
    };
    let mut usage = Usage::new();
    for (name, value) in doc {
        match value.as_f64().filter(|n| n.is_finite()) {
            Some(n) => {
                usage.insert(name, n);
            }
            None => tracing::warn!(name = %name, "usage entry is not a number; it is ignored"),
        }
    }
    usage
}
