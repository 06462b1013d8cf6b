//! Crash points for the crash-recovery tests: `VHUB_CRASH_AT=<name>:<n>` makes the process abort
//! (no destructors, no flushing: as abrupt as SIGKILL) the `n`-th time it reaches point `name`.
//! Unset, a point costs one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("VHUB_CRASH_AT").ok()?;
            let (name, n) = spec.rsplit_once(':')?;
            Some(Armed {
                name: name.to_string(),
                at: n.parse().ok()?,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Mark a crash point.
pub fn point(name: &str) {
    if let Some(a) = armed()
        && a.name == name
        && a.hits.fetch_add(1, Ordering::Relaxed) + 1 == a.at
    {
        eprintln!("crash point {name} reached: aborting");
        std::process::abort();
    }
}
