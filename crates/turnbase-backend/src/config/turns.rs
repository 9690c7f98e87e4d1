//! The turn scheduler: claim leases, how many turns resolve at once, and
//! the backoff of turns whose engine did not answer.

use turnbase_core::config::{
    Reader, VarSpec, parse_duration, parse_positive_duration, parse_usize_positive,
};
use turnbase_core::var;
use turnbase_turns::TurnsConfig;

pub(super) const VARIABLES: &[VarSpec] = &[
    var!(
        "BACKEND_TURNS_CLAIM_LEASE",
        Some("60s"),
        "How long a scheduler holds a claimed turn; if it dies, another backend takes the turn over when this runs out."
    ),
    var!(
        "BACKEND_TURNS_CONCURRENCY",
        Some("1024"),
        "Turns one backend resolves at once (each a light task; a turn waiting here for a slot is late)."
    ),
    var!(
        "BACKEND_TURNS_RETRY_BASE",
        Some("1s"),
        "First wait before calling an engine that did not resolve a turn again (doubling, with ±20% jitter)."
    ),
    var!(
        "BACKEND_TURNS_RETRY_MAX",
        Some("1m"),
        "Longest wait between attempts at resolving a turn whose engine does not answer."
    ),
    var!(
        "BACKEND_TURNS_LOOKAHEAD",
        Some("600ms"),
        "How far ahead of its due time the scheduler claims a turn; the resolve call still goes out at the due time, and orders are taken until then."
    ),
    var!(
        "BACKEND_TURNS_IDLE_RECHECK",
        Some("5s"),
        "Longest the scheduler sleeps without looking at the clocks (turns forced or extended on another backend are seen within it)."
    ),
];

pub(super) fn read(r: &mut Reader<'_>) -> TurnsConfig {
    let config = TurnsConfig {
        lease: r.get("BACKEND_TURNS_CLAIM_LEASE", parse_positive_duration),
        concurrency: r.get("BACKEND_TURNS_CONCURRENCY", parse_usize_positive),
        retry_base: r.get("BACKEND_TURNS_RETRY_BASE", parse_positive_duration),
        retry_max: r.get("BACKEND_TURNS_RETRY_MAX", parse_positive_duration),
        idle_recheck: r.get("BACKEND_TURNS_IDLE_RECHECK", parse_positive_duration),
        lookahead: r.get("BACKEND_TURNS_LOOKAHEAD", parse_duration),
    };
    if config.retry_max < config.retry_base {
        r.report(
            "BACKEND_TURNS_RETRY_MAX",
            format!(
                "must be at least BACKEND_TURNS_RETRY_BASE ({:?})",
                config.retry_base
            ),
        );
    }
    config
}
