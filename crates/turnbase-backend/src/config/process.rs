//! The process as a whole: its shutdown deadline, logs, traces and
//! metrics.

use std::net::SocketAddr;
use std::time::Duration;

use turnbase_core::config::{Reader, VarSpec, parse_positive_duration, parse_socket_addr};
use turnbase_core::telemetry::{
    TelemetryConfig, parse_exporter, parse_log_format, parse_log_level,
};
use turnbase_core::var;

use super::parse_http_url;

/// The process: shutdown, logs, traces and metrics.
pub(super) const VARIABLES: &[VarSpec] = &[
    var!(
        "BACKEND_SHUTDOWN_TIMEOUT",
        Some("30s"),
        "Deadline for the whole shutdown; the smaller of this and a component's own deadline wins."
    ),
    var!(
        "BACKEND_LOG_FORMAT",
        Some("auto"),
        "`text`, `json`, or `auto` (text on a terminal, JSON otherwise)."
    ),
    var!(
        "BACKEND_LOG_LEVEL",
        Some("info"),
        "Log filter, e.g. `info` or `info,turnbase_store=debug`."
    ),
    var!(
        "BACKEND_OTEL_TRACES_EXPORTER",
        Some("none"),
        "Trace exporter: `none`, `stdout` or `otlp`."
    ),
    var!(
        "BACKEND_OTEL_METRICS_EXPORTER",
        Some("none"),
        "Metrics exporter: `none`, `stdout` or `otlp`."
    ),
    var!(
        "BACKEND_OTEL_EXPORTER_OTLP_ENDPOINT",
        Some("http://127.0.0.1:4318"),
        "OTLP/HTTP collector base URL for the `otlp` exporters."
    ),
    var!(
        "BACKEND_OTEL_METRICS_INTERVAL",
        Some("60s"),
        "How often the metrics exporter sends."
    ),
    var!(
        "BACKEND_METRICS_ADDR",
        None,
        "Address of the Prometheus `/metrics` listener; unset means no listener."
    ),
];

pub(super) fn read(r: &mut Reader<'_>) -> (Duration, TelemetryConfig, Option<SocketAddr>) {
    let shutdown_timeout = r.get("BACKEND_SHUTDOWN_TIMEOUT", parse_positive_duration);
    let metrics_addr = r.optional("BACKEND_METRICS_ADDR", parse_socket_addr);
    let telemetry = TelemetryConfig {
        service_name: "turnbase-backend",
        log_format: r.get("BACKEND_LOG_FORMAT", parse_log_format),
        log_level: r.get("BACKEND_LOG_LEVEL", parse_log_level),
        traces: r.get("BACKEND_OTEL_TRACES_EXPORTER", parse_exporter),
        metrics: r.get("BACKEND_OTEL_METRICS_EXPORTER", parse_exporter),
        otlp_endpoint: r.get("BACKEND_OTEL_EXPORTER_OTLP_ENDPOINT", parse_http_url),
        metrics_interval: r.get("BACKEND_OTEL_METRICS_INTERVAL", parse_positive_duration),
        prometheus: metrics_addr.is_some(),
    };
    (shutdown_timeout, telemetry, metrics_addr)
}
