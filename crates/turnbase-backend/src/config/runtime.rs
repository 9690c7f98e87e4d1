//! The game runtime: where engines run, the job pool, start deadlines and
//! the reconciler.

use std::path::Path;

use turnbase_core::config::{
    Reader, VarSpec, parse_positive_duration, parse_u32_positive, parse_usize_positive,
};
use turnbase_core::var;
use turnbase_runtime::{Placement, RuntimeConfig};

pub(super) const VARIABLES: &[VarSpec] = &[
    var!(
        "BACKEND_RUNTIME_PLACEMENT",
        Some("per_game"),
        "`per_game` (an engine process per game, for isolation) or `shared` (one per engine kind hosting all its games; `turnbase up`'s default)."
    ),
    var!(
        "BACKEND_RUNTIME_WORKER_POOL_SIZE",
        Some("4"),
        "Runtime jobs (engine starts and stops) run at once."
    ),
    var!(
        "BACKEND_RUNTIME_JOB_QUEUE_SIZE",
        Some("1000"),
        "Runtime jobs queued or running beyond which starting a game early is refused with 503 `runtime_busy`."
    ),
    var!(
        "BACKEND_RUNTIME_START_TIMEOUT",
        Some("30s"),
        "How long a started engine may take to announce its address and answer `/healthz`."
    ),
    var!(
        "BACKEND_RUNTIME_START_ATTEMPTS",
        Some("3"),
        "Attempts at starting a game's engine before the game goes back to its owner as `start_failed`."
    ),
    var!(
        "BACKEND_RUNTIME_RECONCILE_INTERVAL",
        Some("30s"),
        "How often the reconciler checks that the engines of running games answer, and restarts those that do not."
    ),
    var!(
        "BACKEND_RUNTIME_JOB_LEASE",
        Some("5m"),
        "How long a worker holds a runtime job before another backend may take it over."
    ),
];

/// `up` keeps engines dense: one process per kind.
pub(super) const UP_DEFAULTS: &[(&str, &str)] = &[("BACKEND_RUNTIME_PLACEMENT", "shared")];

pub(super) fn read(r: &mut Reader<'_>, data_dir: &Path) -> RuntimeConfig {
    let start_timeout = r.get("BACKEND_RUNTIME_START_TIMEOUT", parse_positive_duration);
    RuntimeConfig {
        placement: r.get("BACKEND_RUNTIME_PLACEMENT", |t| {
            Placement::parse(t).ok_or_else(|| format!("{t:?} is not one of per_game, shared"))
        }),
        engines_dir: data_dir.join("engines"),
        pool_size: r.get("BACKEND_RUNTIME_WORKER_POOL_SIZE", parse_usize_positive),
        queue_size: i64::try_from(r.get("BACKEND_RUNTIME_JOB_QUEUE_SIZE", parse_usize_positive))
            .unwrap_or(i64::MAX),
        start_timeout,
        start_attempts: r.get("BACKEND_RUNTIME_START_ATTEMPTS", parse_u32_positive),
        retry_base: std::time::Duration::from_secs(2),
        retry_max: std::time::Duration::from_secs(60),
        reconcile_interval: r.get(
            "BACKEND_RUNTIME_RECONCILE_INTERVAL",
            parse_positive_duration,
        ),
        lease: r.get("BACKEND_RUNTIME_JOB_LEASE", parse_positive_duration),
    }
}
