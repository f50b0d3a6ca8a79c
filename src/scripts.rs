//! The Lua transitions and the two Redis Function libraries.
//!
//! Each transition is one file in `src/lua/`, with a contract header
//! (purpose, KEYS and the derived keys it touches, ARGV, returns). The
//! helpers they share live in `src/lua/lib/`, one file per idea (key names,
//! pending jobs, records, leases, events, retention, hand-off, parking,
//! document checks, ...), each opening with what it holds, the keys and
//! value formats it owns and its invariants. `LIBRARY` lists them in the
//! order they are joined: a Lua `local` is visible only below its
//! declaration, so each file comes after the files it uses. Each transition
//! exists in two forms built here from the same text:
//! - a function of the internal library `redqi_<hash>` (the library files
//!   once, then each body as a function's callback), which is how the store
//!   runs it (`Store::run_with`: FCALL, loading the library when Redis says
//!   the function is not found);
//! - an EVAL script (library files + body, self-contained), for Redis
//!   without functions, for a Redis at maxmemory that refuses to load the
//!   library, and for the few callers that pass their own keys.
//!   `redis::Script` sends EVALSHA and loads the script on NOSCRIPT.
//!
//! The transitions are listed once, in the `transitions!` invocation below:
//! name (its file `src/lua/<name>.lua`, its function `<library>_<name>`, its
//! field of [`Scripts`]) and whether it runs at `maxmemory`. The macro makes
//! from that one list the [`Scripts`] struct, the table of bodies the
//! internal library is built from, and [`SCRIPTS`]. A field per transition,
//! rather than an enum and a lookup, keeps the store's choice typed and
//! checked by the compiler (`self.run(|s| &s.claim, ...)`) at no cost per
//! call, and leaves the store's callers as they were. Adding a transition:
//! its file, one line in the list, its `Store` method.
//!
//! The public `redq` library (`FCALL redq_enqueue`) is for producers in
//! other languages: the library files and `functions.lua`; it is versioned
//! and replaced as a whole.

use std::sync::{LazyLock, OnceLock};

use redis::Script;

/// The shared library files (`src/lua/lib/<name>.lua`), in the order they
/// are joined: each only uses names declared in the files above it.
const LIBRARY: [(&str, &str); 16] = [
    ("keys", include_str!("lua/lib/keys.lua")),
    ("common", include_str!("lua/lib/common.lua")),
    ("events", include_str!("lua/lib/events.lua")),
    ("record", include_str!("lua/lib/record.lua")),
    ("pending", include_str!("lua/lib/pending.lua")),
    ("scheduled", include_str!("lua/lib/scheduled.lua")),
    ("lease", include_str!("lua/lib/lease.lua")),
    ("outcome", include_str!("lua/lib/outcome.lua")),
    ("retention", include_str!("lua/lib/retention.lua")),
    ("handoff", include_str!("lua/lib/handoff.lua")),
    ("doc", include_str!("lua/lib/doc.lua")),
    ("new_jobs", include_str!("lua/lib/new_jobs.lua")),
    ("parking", include_str!("lua/lib/parking.lua")),
    ("limits", include_str!("lua/lib/limits.lua")),
    ("usage", include_str!("lua/lib/usage.lua")),
    ("cancel", include_str!("lua/lib/cancel.lua")),
];

const FUNCTIONS: &str = include_str!("lua/functions.lua");

/// The library files joined, each after a line naming it: the text every
/// EVAL script starts with, and the internal and public libraries too.
fn library() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        LIBRARY
            .iter()
            .map(|(name, text)| format!("-- lib/{name}.lua\n{text}\n"))
            .collect()
    });
    &TEXT
}

/// One transition, in both of its forms.
pub struct Transition {
    pub name: &'static str,
    /// Its body, without the library.
    body: &'static str,
    /// The same text as an EVAL script (library + body), made on first use
    /// ([`Transition::script`]).
    script: OnceLock<Script>,
    /// Its function in the internal library ([`internal_library_source`]).
    pub function: String,
}

impl Transition {
    /// The transition as an EVAL script (library + body), for Redis without
    /// functions and for callers that pass their own keys. Made when first
    /// asked for: each is the whole library again (~70 KB), ~1 MB for all
    /// of them, which a daemon whose Redis runs functions never needs.
    pub fn script(&self) -> &Script {
        self.script
            .get_or_init(|| Script::new(&format!("{}\n{}", library(), self.body)))
    }
}

fn transition(name: &'static str, body: &'static str) -> Transition {
    Transition {
        name,
        body,
        script: OnceLock::new(),
        function: function_name(name),
    }
}

/// The function of transition `name` in the internal library.
fn function_name(name: &str) -> String {
    format!("{}_{name}", internal_library_name())
}

/// Declares the transitions from one list: `name: allow_oom`, where
/// `allow_oom` says whether it must run when Redis is at `maxmemory` (it
/// frees memory or keeps leases alive: see `allow_when_full` in
/// `lib/common.lua`).
macro_rules! transitions {
    ($($name:ident: $allow_oom:literal,)*) => {
        /// Every internal transition, built once; a field per transition,
        /// named after its file and the `Store` method that runs it.
        pub struct Scripts {
            $(pub $name: Transition,)*
        }

        /// Each transition: its name, its body (without the library) and
        /// whether it runs at `maxmemory`.
        const BODIES: &[(&str, &str, bool)] = &[
            $((
                stringify!($name),
                include_str!(concat!("lua/", stringify!($name), ".lua")),
                $allow_oom,
            ),)*
        ];

        pub static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
            $($name: transition(
                stringify!($name),
                include_str!(concat!("lua/", stringify!($name), ".lua")),
            ),)*
        });
    };
}

transitions! {
    enqueue: false,
    claim: true,
    complete: true,
    fail: true,
    extend: true,
    release: true,
    reap: true,
    dead_retry: false,
    dead_purge: true,
    import: false,
    cron_enqueue: false,
    promote: true,
    configure: true,
    cancel: true,
}

/// FNV-1a, 64 bits: stable across builds and platforms.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The name of the internal library: `redqi_<hash of its Lua>`. The
/// transitions run as its functions (`FCALL redqi_<hash>_claim ...`), so
/// the library files run once when the library loads, not on every call as
/// they do for an EVAL script (measured: ~7 µs of Redis's time per call when
/// warm, ~30 µs when Redis was idle and its caches cold, as at a steady
/// trickle of single enqueues). The name changes with the Lua, so daemons
/// of two versions sharing a Redis during a rolling upgrade each find their
/// own functions instead of replacing each other's; a library of a version
/// no longer running can be removed with `FUNCTION DELETE`.
pub fn internal_library_name() -> &'static str {
    static NAME: LazyLock<String> = LazyLock::new(|| {
        let mut parts = vec![library()];
        parts.extend(BODIES.iter().map(|(_, body, _)| *body));
        format!("redqi_{:016x}", fnv(&parts))
    });
    &NAME
}

/// The internal library's source, as `FUNCTION LOAD` takes it: the library
/// files once, then each transition's body as the callback of its function
/// (called with the same KEYS and ARGV as the EVAL script), and
/// [`internal_version_function`].
pub fn internal_library_source() -> String {
    let mut src = format!("#!lua name={}\n{}\n", internal_library_name(), library());
    src.push_str(&format!(
        "redis.register_function {{ function_name = '{}', flags = {{ 'no-writes' }}, callback = function() return '{}' end }}\n",
        internal_version_function(),
        internal_library_name(),
    ));
    for &(name, body, allow_oom) in BODIES {
        let flags = if allow_oom { "{ 'allow-oom' }" } else { "{}" };
        src.push_str(&format!(
            "-- {name}.lua\nredis.register_function {{ function_name = '{function}', flags = {flags}, callback = function(KEYS, ARGV)\n{body}\nend }}\n",
            function = function_name(name),
        ));
    }
    src
}

/// The internal library's one function that is not a transition:
/// `FCALL_RO <it> 0` answers the library's name, so a process that may not
/// load functions can tell whether the library is there without writing.
pub fn internal_version_function() -> String {
    function_name("version")
}

/// The version of the function library: a hash of its source, so any change
/// to the Lua reloads it and an unchanged one is never reloaded.
pub fn library_version() -> String {
    let h = fnv(&[library(), FUNCTIONS]);
    format!("{}-{h:016x}", env!("CARGO_PKG_VERSION"))
}

/// The library's source, as `FUNCTION LOAD` takes it.
pub fn library_source() -> String {
    format!(
        "#!lua name=redq\nlocal REDQ_LIBRARY_VERSION = '{}'\n{}\n{FUNCTIONS}",
        library_version(),
        library()
    )
}

/// What `Store::ensure_library` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryStatus {
    /// The library with this version was already loaded.
    Current,
    /// It was missing or older and has been (re)loaded.
    Loaded,
    /// Redis is older than 7.0 and has no functions; only the inbox protocol works.
    Unsupported,
}
