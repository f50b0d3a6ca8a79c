//! The harness every integration test shares. Each test starts its own
//! `redis-server` on a free port (never the Redis on 6379) and waits on
//! signals or bounded polls, never on fixed sleeps.
//!
//! - [`acl`]: the ACL users docs/operating.md documents, as `ACL SETUSER` arguments.
//! - [`server`]: the private `redis-server` (start, kill, restart, `redis-cli`,
//!   connections, `INFO` counts), free ports; `REDQ_TEST_REDIS_SERVER` runs
//!   another server program (Valkey, another Redis) and its tools.
//! - [`wait`]: bounded waits: [`wait::eventually`] (async), [`wait::wait_for`]
//!   (blocking), [`wait::within`]; the host's clock.
//! - [`snapshot`]: a queue's whole state read at once.
//! - [`producers`]: `FCALL` and `LPUSH` as a foreign producer; [`producers::job`].
//! - [`store`]: the store's transitions driven by hand.
//! - [`embedded`]: the daemon in-process (`WorkerBuilder`).
//! - [`process`]: the `redq` binary as a process (commands, `redq run`, pids).
//! - [`workers`]: the `workers.toml` and handler scripts such a process reads.
//! - [`http`]: a daemon's `/metrics`, `/healthz` and `/readyz`.
//! - [`proxy`]: a TCP proxy that cuts a daemon off the way networks fail.
//! - [`sentinel`]: a primary, a replica and three sentinels; failovers.
//! - [`browser`]: headless Chromium through chromedriver (the dashboard's tests).
//! - [`watch`]: `redq watch` as a process, its output read line by line.
#![allow(dead_code)]

pub mod acl;
pub mod browser;
pub mod cluster;
pub mod embedded;
pub mod http;
pub mod process;
pub mod producers;
pub mod proxy;
pub mod sentinel;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod tls;
pub mod wait;
pub mod watch;
pub mod workers;
