//! The library's error type.
//!
//! Messages name the queue, job, field or key involved and say what to do.
//! [`Error::is_transient`] tells errors worth retrying (Redis unreachable,
//! busy, failing over) from permanent ones (bad input, bad config).

/// Result with redq's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job document or enqueue option broke a rule; the message names the field and the rule.
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// A queue name, job id or other name that becomes part of a key broke the character rules.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The configuration was refused; the message names the key path.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The Redis server cannot run redq (no functions: older than 7.0); the
    /// message names the version and the versions redq supports.
    #[error("{0}")]
    Unsupported(String),
    /// Redis answered with an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A write reached the primary but not the replicas `redis.wait_replicas`
    /// asks for within `redis.wait_timeout`: a failover now could lose it.
    #[error("{0}")]
    NotReplicated(String),
    /// There is no outcome to wait for: the job is unknown (and keeps no
    /// outcome), or it keeps none (no `outcome_ttl_ms`, no queue
    /// `outcome_ttl`); the message says which and what to do.
    #[error("{0}")]
    NoOutcome(String),
    /// Redis answered something a redq script never returns: a redq bug or foreign data in redq's keys.
    #[error("unexpected reply from Redis ({context}): {detail}")]
    Protocol {
        context: &'static str,
        detail: String,
    },
}

impl Error {
    /// The same error again, for one more of the callers it concerns (a
    /// batch that failed as a whole): same variant and message, so
    /// [`Error::is_transient`] answers the same.
    pub fn shared(&self) -> Error {
        match self {
            Error::InvalidJob(m) => Error::InvalidJob(m.clone()),
            Error::InvalidName(m) => Error::InvalidName(m.clone()),
            Error::Config(m) => Error::Config(m.clone()),
            Error::NotReplicated(m) => Error::NotReplicated(m.clone()),
            Error::NoOutcome(m) => Error::NoOutcome(m.clone()),
            Error::Unsupported(m) => Error::Unsupported(m.clone()),
            Error::Redis(e) => Error::Redis(match (e.code(), e.detail()) {
                (Some(code), Some(detail)) => {
                    redis::RedisError::from((e.kind(), "redis error", format!("{code} {detail}")))
                }
                _ => redis::RedisError::from((e.kind(), "redis error", e.to_string())),
            }),
            Error::Protocol { context, detail } => Error::Protocol {
                context,
                detail: detail.clone(),
            },
        }
    }

    /// True when trying again later may succeed (connection lost, Redis busy or loading, failover).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                            | redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
                            | redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown)
                            | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
                            // A primary demoted by a failover: the shared
                            // connection is dropped, and the next call finds
                            // the new primary.
                            | redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                    )
            }
            // Written, but not yet where it must be: the same call again
            // (enqueue by id is idempotent, a fenced completion too) may succeed.
            Error::NotReplicated(_) => true,
            _ => false,
        }
    }

    /// True when Redis refused a write for being at `maxmemory` (noeviction).
    pub fn is_oom(&self) -> bool {
        matches!(self, Error::Redis(e) if e.code() == Some("OOM"))
    }

    /// True when Redis refused a command because the user's ACL rules do
    /// not allow it (`NOPERM`), e.g. `FUNCTION LOAD` for a least-privilege
    /// daemon or producer.
    pub fn is_no_perm(&self) -> bool {
        matches!(self, Error::Redis(e) if e.code() == Some("NOPERM"))
    }

    pub(crate) fn protocol(context: &'static str, detail: impl Into<String>) -> Self {
        Error::Protocol {
            context,
            detail: detail.into(),
        }
    }
}
