//! The push service and its gRPC listener.

use std::net::SocketAddr;
use std::time::Duration;

use turnbase_core::config::{Reader, VarSpec, parse_positive_duration, parse_socket_addr};
use turnbase_core::var;
use turnbase_push::{PushConfig, RingLimits};

use turnbase_core::config::{parse_size_positive, parse_usize_positive};

/// The push service and its gRPC listener.
pub(super) const VARIABLES: &[VarSpec] = &[
    var!(
        "BACKEND_GRPC_PUSH_ADDR",
        Some("127.0.0.1:8081"),
        "Address of the gRPC push listener that gateways subscribe to."
    ),
    var!(
        "BACKEND_GRPC_PUSH_SHUTDOWN_TIMEOUT",
        Some("5s"),
        "Deadline for push streams to deliver what was published and end at shutdown."
    ),
    var!(
        "BACKEND_FRESHNESS_WINDOW",
        None,
        "How long published events stay resumable in the push ring. Required (`turnbase up` uses `5m`)."
    ),
    var!(
        "BACKEND_PUSH_RING_CAPACITY",
        Some("65536"),
        "Most events the push ring holds."
    ),
    var!(
        "BACKEND_PUSH_RING_MAX_BYTES",
        Some("64MiB"),
        "Most encoded bytes the push ring holds."
    ),
    var!(
        "BACKEND_PUSH_MAX_PAYLOAD_BYTES",
        Some("64KiB"),
        "Largest JSON payload of one push event."
    ),
    var!(
        "BACKEND_PUSH_HEARTBEAT_INTERVAL",
        Some("15s"),
        "Idle time after which a push stream gets a heartbeat."
    ),
];

#[derive(Debug, Clone)]
pub struct GrpcPushConfig {
    pub addr: SocketAddr,
    pub shutdown_timeout: Duration,
    pub service: PushConfig,
}

pub(super) fn read(r: &mut Reader<'_>) -> GrpcPushConfig {
    let freshness_window = r.required("BACKEND_FRESHNESS_WINDOW", parse_positive_duration);
    GrpcPushConfig {
        addr: r.get("BACKEND_GRPC_PUSH_ADDR", parse_socket_addr),
        shutdown_timeout: r.get(
            "BACKEND_GRPC_PUSH_SHUTDOWN_TIMEOUT",
            parse_positive_duration,
        ),
        service: PushConfig {
            ring: RingLimits {
                capacity: r.get("BACKEND_PUSH_RING_CAPACITY", parse_usize_positive),
                max_bytes: r.get("BACKEND_PUSH_RING_MAX_BYTES", parse_size_positive),
                max_age: freshness_window.unwrap_or(Duration::from_secs(1)),
            },
            max_payload_bytes: r.get("BACKEND_PUSH_MAX_PAYLOAD_BYTES", parse_size_positive),
            heartbeat_interval: r.get("BACKEND_PUSH_HEARTBEAT_INTERVAL", parse_positive_duration),
            ..PushConfig::with_window(Duration::from_secs(1))
        },
    }
}
