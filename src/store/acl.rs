//! What a daemon's ACL user must be allowed, and checking a user against
//! it with `ACL DRYRUN` (`redq setup`).
//!
//! Redis checks every command a function or script runs against the
//! caller's ACL rules, so a daemon's user needs the commands its Lua runs
//! as much as those it sends. [`DAEMON_COMMANDS`] lists both, each as a
//! sample command line on a queue's keys: the commands the store sends (the
//! daemon, and the operator commands of the CLI), and every `redis.call` of
//! `src/lua/`. The daemon's ACL rules in docs/operating.md grant exactly
//! these, on the keys and channels under the key prefix; tests check that
//! the Lua calls nothing else and that the documented rules name the same
//! commands. `FUNCTION LOAD` is not among them: `redq setup` loads the
//! libraries (a daemon that may loads missing ones itself).

use super::Store;
use crate::error::Result;
use crate::keys::QueueKeys;
use crate::scripts::{self, SCRIPTS};

/// Every command a daemon sends or runs from Lua, as a sample command line:
/// `{base}` stands for a queue's base key `<prefix>:{<queue>}`, `{key}` for
/// one of its keys, `{fn}` for a function of the internal library, `{sha}`
/// for a script's SHA1. Subcommands are written `SCRIPT LOAD` (the rules
/// name them `script|load`).
pub const DAEMON_COMMANDS: &[&[&str]] = &[
    // Running the transitions and reading the public library's version.
    &["FCALL", "{fn}", "1", "{base}"],
    &["FCALL_RO", "redq_version", "0"],
    &["EVALSHA", "{sha}", "1", "{base}"],
    &["SCRIPT", "LOAD", "return 1"],
    // The server, the clock, waiting.
    &["PING"],
    &["INFO"],
    &["TIME"],
    &["BLPOP", "{key}", "1"],
    // `redq job --wait` and `Client::wait` (an outcome key).
    &["BLMOVE", "{key}", "{key}", "RIGHT", "RIGHT", "1"],
    &["SUBSCRIBE", "{base}:due"],
    &["UNSUBSCRIBE", "{base}:due"],
    &["PUBLISH", "{base}:due", "1"],
    // Atomic pipelines (the hand-off's end, resume, a job's view).
    &["MULTI"],
    &["EXEC"],
    // Keys.
    &["DEL", "{key}"],
    &["EXISTS", "{key}"],
    &["EXPIREAT", "{key}", "1"],
    &["PEXPIRE", "{key}", "1"],
    &["PTTL", "{key}"],
    &["GET", "{key}"],
    &["SET", "{key}", "1"],
    &["INCR", "{key}"],
    &["HDEL", "{key}", "f"],
    &["HEXISTS", "{key}", "f"],
    &["HGET", "{key}", "f"],
    &["HGETALL", "{key}"],
    &["HINCRBY", "{key}", "f", "1"],
    &["HINCRBYFLOAT", "{key}", "f", "1"],
    &["HMGET", "{key}", "f"],
    &["HSCAN", "{key}", "0"],
    &["HSET", "{key}", "f", "1"],
    &["HSETNX", "{key}", "f", "1"],
    &["LINDEX", "{key}", "0"],
    &["LLEN", "{key}"],
    &["LPOP", "{key}"],
    &["LPUSH", "{key}", "1"],
    &["LRANGE", "{key}", "0", "1"],
    &["LREM", "{key}", "1", "m"],
    &["LTRIM", "{key}", "0", "0"],
    &["RPOP", "{key}"],
    &["RPUSH", "{key}", "1"],
    &["SADD", "{key}", "m"],
    &["SMEMBERS", "{key}"],
    &["ZADD", "{key}", "1", "m"],
    &["ZCARD", "{key}"],
    &["ZCOUNT", "{key}", "0", "1"],
    &["ZLEXCOUNT", "{key}", "-", "+"],
    &["ZMSCORE", "{key}", "m"],
    &["ZRANGE", "{key}", "0", "1"],
    &["ZRANGEBYLEX", "{key}", "-", "+"],
    &["ZRANGEBYSCORE", "{key}", "0", "1"],
    &["ZREM", "{key}", "m"],
    &["ZREMRANGEBYSCORE", "{key}", "0", "1"],
    &["ZSCORE", "{key}", "m"],
    &["ZUNION", "1", "{key}"],
    &["XADD", "{key}", "*", "f", "1"],
    &["XREAD", "STREAMS", "{key}", "0"],
    &["XREVRANGE", "{key}", "+", "-"],
];

/// The ACL name of a sample's command: `hset`, `script|load`.
pub fn acl_name(sample: &[&str]) -> String {
    match sample {
        [cmd, sub, ..] if matches!(*cmd, "SCRIPT" | "CONFIG" | "FUNCTION") => {
            format!("{}|{}", cmd.to_lowercase(), sub.to_lowercase())
        }
        [cmd, ..] => cmd.to_lowercase(),
        [] => String::new(),
    }
}

/// What `ACL DRYRUN` said about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// The ACL names of the daemon's commands this user may not run on
    /// redq's keys and channels, each with Redis's reason.
    pub denied: Vec<(String, String)>,
    /// Whether it may `FUNCTION LOAD` (then a daemon loads missing libraries itself).
    pub may_load_functions: bool,
}

impl Store {
    /// The user this connection is authenticated as (`ACL WHOAMI`);
    /// `None` when this user may not ask.
    pub async fn whoami(&self) -> Result<Option<String>> {
        let me: redis::RedisResult<String> = redis::cmd("ACL")
            .arg("WHOAMI")
            .query_async(&mut self.connection())
            .await;
        match me {
            Ok(name) => Ok(Some(name)),
            Err(e) if e.code() == Some("NOPERM") => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `user` may run every command of [`DAEMON_COMMANDS`] on this
    /// store's keys, by `ACL DRYRUN` (which writes nothing); `None` when
    /// this connection's user may not run ACL DRYRUN. Fails when the user
    /// does not exist.
    pub async fn daemon_permissions(&self, user: &str) -> Result<Option<Permissions>> {
        let q = QueueKeys::new(self.prefix(), "redq-setup-check")?;
        let function = SCRIPTS.claim.function.clone();
        let sha = SCRIPTS.claim.script().get_hash().to_owned();
        let fill = |arg: &str| -> String {
            match arg {
                "{base}" => q.base().to_owned(),
                "{key}" => q.jobs().to_owned(),
                "{fn}" => function.clone(),
                "{sha}" => sha.clone(),
                "{base}:due" => format!("{}:due", q.base()),
                other => other.to_owned(),
            }
        };
        let mut con = self.connection();
        let mut denied = Vec::new();
        for sample in DAEMON_COMMANDS {
            let answer = dry_run(&mut con, user, sample.iter().map(|a| fill(a))).await;
            match answer {
                Err(e) if e.code() == Some("NOPERM") => return Ok(None),
                Err(e) => return Err(e.into()),
                Ok(None) => {}
                Ok(Some(reason)) => denied.push((acl_name(sample), reason)),
            }
        }
        let load = [
            "FUNCTION".to_owned(),
            "LOAD".to_owned(),
            scripts::library_source(),
        ];
        let may_load_functions = dry_run(&mut con, user, load).await?.is_none();
        Ok(Some(Permissions {
            denied,
            may_load_functions,
        }))
    }
}

/// `ACL DRYRUN user <command line>`: `None` when allowed, else the reason.
async fn dry_run(
    con: &mut super::cluster::Conn,
    user: &str,
    line: impl IntoIterator<Item = String>,
) -> redis::RedisResult<Option<String>> {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("DRYRUN").arg(user);
    for a in line {
        cmd.arg(a);
    }
    let answer: redis::Value = cmd.query_async(con).await?;
    Ok(match answer {
        redis::Value::Okay => None,
        redis::Value::SimpleString(s) if s == "OK" => None,
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        redis::Value::SimpleString(s) | redis::Value::VerbatimString { text: s, .. } => Some(s),
        other => Some(format!("{other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_are_named_as_acl_rules_name_them() {
        assert_eq!(acl_name(&["SCRIPT", "LOAD", "x"]), "script|load");
        assert_eq!(acl_name(&["HSET", "k", "f", "v"]), "hset");
    }

    /// Every command the Lua runs is in the list (Redis checks each against
    /// the caller's rules, so one missing would fail a transition midway).
    #[test]
    fn the_list_holds_every_command_the_lua_runs() {
        let listed: Vec<String> = DAEMON_COMMANDS.iter().map(|s| acl_name(s)).collect();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/lua");
        let mut files: Vec<std::path::PathBuf> = Vec::new();
        for d in [dir.to_owned(), format!("{dir}/lib")] {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "lua") {
                    files.push(p);
                }
            }
        }
        assert!(files.len() > 20, "{files:?}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, _) in text.match_indices("redis.call('") {
                let rest = &text[i + "redis.call('".len()..];
                let cmd = &rest[..rest.find('\'').unwrap()];
                assert!(
                    listed.contains(&cmd.to_lowercase()),
                    "{} runs {cmd}, which DAEMON_COMMANDS (and the daemon's ACL rules) lack",
                    f.display()
                );
            }
            assert!(!text.contains("redis.pcall("), "{}", f.display());
        }
    }
}
