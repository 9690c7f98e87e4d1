//! Building blocks shared by the Turnbase processes (backend now, gateway
//! later): configuration parsing, the component lifecycle, readiness flags,
//! telemetry, and the HTTP conventions every listener follows.

pub mod config;
pub mod http;
pub mod lifecycle;
pub mod readiness;
pub mod telemetry;
