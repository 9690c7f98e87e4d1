//! The Turnbase backend process: its configuration ([`config`]), HTTP API
//! ([`api`]) and the wiring that starts and stops its components ([`app`]).

pub mod api;
pub mod app;
pub mod config;
mod runtime_wiring;

pub use app::{App, open_database};
pub use config::Config;
