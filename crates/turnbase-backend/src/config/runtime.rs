//! The game runtime: where engines run, the job pool, start deadlines and
//! the reconciler.

use std::path::Path;

use turnbase_core::config::{
    Reader, VarSpec, parse_byte_size, parse_duration, parse_positive_duration, parse_u32_positive,
    parse_usize_positive,
};
use turnbase_core::var;
use turnbase_runtime::{Placement, RuntimeConfig};

pub(super) const VARIABLES: &[VarSpec] = &[
    var!(
        "BACKEND_RUNTIME_DRIVER",
        Some("process"),
        "`process` (engines as child processes on this machine) or `docker` (a container per game through the Docker Engine API)."
    ),
    var!(
        "BACKEND_DOCKER_HOST",
        Some("unix:///var/run/docker.sock"),
        "The Docker Engine API for the `docker` driver: `unix:///path` or `http://host:port`."
    ),
    var!(
        "BACKEND_RUNTIME_DOCKER_NETWORK",
        Some("turnbase-engines"),
        "The Docker network engine containers join (created when missing); the backend reaches them there."
    ),
    var!(
        "BACKEND_RUNTIME_CPUS",
        Some("1"),
        "CPUs each engine container may use (`docker` driver)."
    ),
    var!(
        "BACKEND_RUNTIME_MEMORY",
        Some("512MiB"),
        "Memory each engine container may use (`docker` driver)."
    ),
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
        "BACKEND_RUNTIME_KEEP_FINISHED",
        Some("168h"),
        "How long a finished or cancelled game's engine data is kept before it is removed (the turn history stays in the backend)."
    ),
    var!(
        "BACKEND_RUNTIME_JOB_LEASE",
        Some("5m"),
        "How long a worker holds a runtime job before another backend may take it over."
    ),
];

/// The `docker` driver's settings.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    pub host: String,
    pub network: String,
    pub limits: turnbase_runtime::docker::Limits,
}

/// The runtime: its own settings and, for the `docker` driver, Docker's.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub service: RuntimeConfig,
    /// `None` for the `process` driver.
    pub docker: Option<DockerSettings>,
}

/// `up` keeps engines dense: one process per kind.
pub(super) const UP_DEFAULTS: &[(&str, &str)] = &[("BACKEND_RUNTIME_PLACEMENT", "shared")];

pub(super) fn read(r: &mut Reader<'_>, data_dir: &Path) -> RuntimeSettings {
    let docker = r.get("BACKEND_RUNTIME_DRIVER", |t| match t {
        "process" => Ok(false),
        "docker" => Ok(true),
        other => Err(format!("{other:?} is not one of process, docker")),
    });
    let host = r.get("BACKEND_DOCKER_HOST", parse_docker_host);
    let network = r.get("BACKEND_RUNTIME_DOCKER_NETWORK", |t| {
        if t.is_empty()
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            Err(format!("{t:?} is not a Docker network name"))
        } else {
            Ok(t.to_string())
        }
    });
    let cpus = r.get("BACKEND_RUNTIME_CPUS", |t| match t.parse::<f64>() {
        Ok(n) if n > 0.0 && n <= 256.0 => Ok(n),
        _ => Err(format!("{t:?} is not a number of CPUs above 0")),
    });
    let memory = r.get("BACKEND_RUNTIME_MEMORY", parse_byte_size);
    let start_timeout = r.get("BACKEND_RUNTIME_START_TIMEOUT", parse_positive_duration);
    let service = RuntimeConfig {
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
        keep_finished: r.get("BACKEND_RUNTIME_KEEP_FINISHED", parse_duration),
    };
    RuntimeSettings {
        service,
        docker: docker.then(|| DockerSettings {
            host,
            network,
            limits: turnbase_runtime::docker::Limits {
                cpus,
                memory_bytes: i64::try_from(memory).unwrap_or(i64::MAX),
            },
        }),
    }
}

fn parse_docker_host(text: &str) -> Result<String, String> {
    if text.starts_with("unix:///") || text.starts_with("http://") {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is neither unix:///path nor http://host:port"
        ))
    }
}
