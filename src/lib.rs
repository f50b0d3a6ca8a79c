//! redq: a background job queue and worker daemon on Redis.
//!
//! Layout (one concept per file):
//! - [`keys`]: the one place that builds Redis key names (`<prefix>:{<queue>}:…`).
//! - [`job`]: the job document producers send, its validation, and the stored record.
//! - [`scripts`]: builds the Lua: the transitions (`src/lua/*.lua`) on the
//!   shared library (`src/lua/lib/`), and the `redq` Redis Function library.
//! - [`store`]: the one place that talks to Redis: a typed method per
//!   transition and per read, every value format, every connection.
//! - [`inspect`] (in the store): read-only views of jobs, queues, the dead set, usage.
//! - [`daemon`]: the worker daemon (`redq run`), also embeddable.
//! - [`usage`], [`transfer`]: the usage and export formats.
//! - [`observe`]: metrics and health.
//! - [`dashboard`]: the web UI `redq dashboard` serves.
//! - [`client`]: the producer API (enqueue, inspect, stats) used by Rust programs and the CLI.
//! - [`config`]: `workers.toml`, read with figment and validated.
//! - [`handler`]: what a job runs: command, HTTP, or Rust code.
//! - [`lock`], [`leader`]: distributed locks, and a renewed leader lease built on them.
//! - [`error`]: the library's error type.
//!
//! The `redq` binary (`src/main.rs`) runs [`cli`] and adds one command of its
//! own, `redq bench` (`src/bench/`), which is not part of this library.

pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod error;
pub mod handler;
pub mod job;
pub mod keys;
pub mod leader;
pub mod lock;
pub mod observe;
pub mod scripts;
pub mod store;
pub mod transfer;
pub mod usage;

pub use client::Client;
pub use error::{Error, Result};
pub use handler::{Handler, JobContext, Outcome};
pub use job::NewJob;
pub use store::inspect;
