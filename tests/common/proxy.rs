//! A TCP proxy in front of the test's redis-server, to cut one daemon off
//! the way networks fail: [`Fault::Blackhole`] keeps every connection open
//! and forwards nothing (a partition: calls hang until their time-outs),
//! [`Fault::Reset`] resets every connection and each new one (a peer that
//! answers with RST). [`Proxy::heal`] forwards again.
//!
//! Threads, blocking sockets and a 20 ms read time-out, so each pump sees a
//! change of fault within that time. Dropping the proxy stops its threads.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forward both ways.
    None = 0,
    /// Keep connections open, forward nothing, accept new ones into the void.
    Blackhole = 1,
    /// Reset every connection, existing and new.
    Reset = 2,
    /// The proxy is dropped: every thread ends.
    Stopped = 3,
}

pub struct Proxy {
    pub port: u16,
    fault: Arc<AtomicU8>,
}

fn fault_of(v: &AtomicU8) -> Fault {
    match v.load(Ordering::Acquire) {
        0 => Fault::None,
        1 => Fault::Blackhole,
        2 => Fault::Reset,
        _ => Fault::Stopped,
    }
}

/// Closes `s` with a reset instead of a FIN (SO_LINGER with a zero time-out)
/// once its last handle is dropped.
fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

impl Proxy {
    /// Starts forwarding a free local port to `127.0.0.1:<upstream>`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let f = fault.clone();
        std::thread::spawn(move || loop {
            match fault_of(&f) {
                Fault::Stopped => return,
                now => match listener.accept() {
                    Ok((client, _)) => accept(client, upstream, now, &f),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                },
            }
        });
        Proxy { port, fault }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::Release);
    }

    pub fn heal(&self) {
        self.set(Fault::None);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Fault::Stopped);
    }
}

fn accept(client: TcpStream, upstream: u16, fault: Fault, f: &Arc<AtomicU8>) {
    client.set_nonblocking(false).unwrap();
    match fault {
        Fault::Reset => reset_on_close(&client),
        Fault::Blackhole => {
            // Held open, read and dropped, until the proxy stops.
            let f = f.clone();
            std::thread::spawn(move || pump(client, None, &f));
        }
        _ => {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            for (from, to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let f = f.clone();
                std::thread::spawn(move || pump(from, Some(to), &f));
            }
        }
    }
}

/// Copies `from` to `to` while forwarding; drops what it reads in a
/// blackhole; resets both ends on a reset.
fn pump(mut from: TcpStream, mut to: Option<TcpStream>, f: &AtomicU8) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match fault_of(f) {
            Fault::Stopped => return,
            Fault::Reset => {
                reset_on_close(&from);
                if let Some(t) = &to {
                    reset_on_close(t);
                }
                return;
            }
            _ => {}
        }
        match from.read(&mut buf) {
            Ok(0) => {
                if let Some(t) = &to {
                    let _ = t.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => {
                if fault_of(f) == Fault::None {
                    if let Some(t) = &mut to {
                        if t.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}
