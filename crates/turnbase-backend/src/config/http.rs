//! The HTTP API's listener.

use std::net::SocketAddr;
use std::time::Duration;

use turnbase_core::config::{
    Reader, VarSpec, parse_byte_size, parse_duration, parse_positive_duration, parse_socket_addr,
};
use turnbase_core::cors::CorsOrigins;
use turnbase_core::var;

/// The HTTP API listener.
pub(super) const VARIABLES: &[VarSpec] = &[
    var!(
        "BACKEND_HTTP_ADDR",
        Some("127.0.0.1:8080"),
        "Address of the HTTP API."
    ),
    var!(
        "BACKEND_HTTP_BODY_LIMIT",
        Some("1MiB"),
        "Largest request body accepted (413 above it)."
    ),
    var!(
        "BACKEND_HTTP_REQUEST_TIMEOUT",
        Some("30s"),
        "Longest time a request may take (503 after it)."
    ),
    var!(
        "BACKEND_HTTP_CORS_ORIGINS",
        None,
        "Comma-separated origins allowed by CORS, or `*`; unset sends no CORS headers."
    ),
    var!(
        "BACKEND_HTTP_SHUTDOWN_TIMEOUT",
        Some("10s"),
        "Deadline for draining in-flight HTTP requests at shutdown."
    ),
    var!(
        "BACKEND_HTTP_DRAIN_GRACE",
        Some("500ms"),
        "After a stop signal, requests arriving on open keep-alive connections are still answered this long (with `Connection: close`) instead of being dropped."
    ),
    var!(
        "BACKEND_HTTP_WRITE_TIMEOUT",
        Some("30s"),
        "A write to a client that makes no progress this long resets the connection."
    ),
];

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub cors: CorsOrigins,
    pub shutdown_timeout: Duration,
    /// Header and write deadlines and the drain grace of the listener.
    pub serve: turnbase_core::serve::ServeOptions,
}

pub(super) fn read(r: &mut Reader<'_>) -> HttpConfig {
    HttpConfig {
        addr: r.get("BACKEND_HTTP_ADDR", parse_socket_addr),
        body_limit: r.get("BACKEND_HTTP_BODY_LIMIT", parse_body_limit),
        request_timeout: r.get("BACKEND_HTTP_REQUEST_TIMEOUT", parse_positive_duration),
        cors: r
            .optional("BACKEND_HTTP_CORS_ORIGINS", turnbase_core::cors::parse_cors)
            .unwrap_or(CorsOrigins::None),
        shutdown_timeout: r.get("BACKEND_HTTP_SHUTDOWN_TIMEOUT", parse_positive_duration),
        serve: turnbase_core::serve::ServeOptions {
            write_timeout: r.get("BACKEND_HTTP_WRITE_TIMEOUT", parse_positive_duration),
            drain_grace: r.get("BACKEND_HTTP_DRAIN_GRACE", parse_duration),
            ..turnbase_core::serve::ServeOptions::default()
        },
    }
}

fn parse_body_limit(text: &str) -> Result<usize, String> {
    let bytes = parse_byte_size(text)?;
    if bytes < 1024 {
        return Err(format!("{text:?} is too small; use at least 1KiB"));
    }
    usize::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
}
