//! The Turnbase gateway: the public edge. So far this crate holds the
//! gateway's client of the backend's push stream ([`push_client`]) and its
//! configuration ([`config`]); the gateway process arrives with its issue.

pub mod config;
pub mod push_client;

pub use config::PushClientConfig;
pub use push_client::{Backoff, Notice, PushClient, PushHandler};
