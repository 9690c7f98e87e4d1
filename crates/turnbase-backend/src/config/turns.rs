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
        "BACKEND_TURNS_DISPATCH_NICE",
        Some("-15"),
        "Nice value (-20 to 19) of the thread that sends resolve calls at their due time; below 0 it goes ahead of busy engines and the backend's own work (needs CAP_SYS_NICE; without it the thread runs at the process's priority, with a note in the log)."
    ),
    var!(
        "BACKEND_TURNS_IDLE_RECHECK",
        Some("5s"),
        "Longest the scheduler sleeps without looking at the clocks (turns forced or extended on another backend are seen within it)."
    ),
];

fn parse_nice(text: &str) -> Result<i32, String> {
    match text.trim().parse::<i32>() {
        Ok(n) if (-20..=19).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a nice value from -20 to 19")),
    }
}

pub(super) fn read(r: &mut Reader<'_>) -> TurnsConfig {
    let config = TurnsConfig {
        lease: r.get("BACKEND_TURNS_CLAIM_LEASE", parse_positive_duration),
        concurrency: r.get("BACKEND_TURNS_CONCURRENCY", parse_usize_positive),
        retry_base: r.get("BACKEND_TURNS_RETRY_BASE", parse_positive_duration),
        retry_max: r.get("BACKEND_TURNS_RETRY_MAX", parse_positive_duration),
        idle_recheck: r.get("BACKEND_TURNS_IDLE_RECHECK", parse_positive_duration),
        lookahead: r.get("BACKEND_TURNS_LOOKAHEAD", parse_duration),
        dispatch_nice: r.get("BACKEND_TURNS_DISPATCH_NICE", parse_nice),
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

#[cfg(test)]
mod tests {
    use super::parse_nice;

    #[test]
    fn nice_values_are_those_the_kernel_takes() {
        assert_eq!(parse_nice("-15"), Ok(-15));
        assert_eq!(parse_nice("0"), Ok(0));
        assert_eq!(parse_nice("19"), Ok(19));
        assert_eq!(parse_nice("-20"), Ok(-20));
        for bad in ["-21", "20", "high", "", "1.5"] {
            assert!(parse_nice(bad).is_err(), "{bad:?}");
        }
    }
}
