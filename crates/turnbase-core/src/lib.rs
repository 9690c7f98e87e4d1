//! Building blocks shared by the Turnbase processes (backend and gateway):
//! configuration parsing, the component lifecycle, readiness flags, CORS,
//! telemetry, rate limiting, and the HTTP conventions every listener
//! follows.

pub mod backoff;
pub mod config;
pub mod cors;
pub mod http;
pub mod lifecycle;
pub mod limiter;
pub mod private_fs;
pub mod readiness;
pub mod serve;
pub mod telemetry;
pub mod worker;
