//! One table says what each signal does; the handler only forwards.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// What the supervisor is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop claiming, drain running jobs, release the rest, exit 0.
    /// A second one ends the drain at once.
    Shutdown,
    /// Re-read the config file and apply queue settings.
    Reload,
}

pub const TABLE: &[(i32, Action)] = &[
    (SIGTERM, Action::Shutdown),
    (SIGINT, Action::Shutdown),
    (SIGHUP, Action::Reload),
];

/// Installs the handlers; each signal becomes an [`Action`] sent on `tx`.
pub fn listen(tx: mpsc::UnboundedSender<Action>) -> std::io::Result<()> {
    for (sig, action) in TABLE {
        let mut stream = signal(SignalKind::from_raw(*sig))?;
        let (tx, action) = (tx.clone(), *action);
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(action).is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}
