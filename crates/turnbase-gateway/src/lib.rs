//! The Turnbase gateway: the public edge. It forwards the REST API to the
//! backend ([`edge`]), holds clients' WebSocket and SSE connections
//! ([`hub`]) fed by the backend's push stream ([`push_client`]), and signs
//! every envelope it delivers ([`signing`], [`envelope`]).

pub mod app;
pub mod backend;
pub mod config;
pub mod edge;
pub mod envelope;
pub mod hub;
pub mod push_client;
pub mod signing;
pub mod upstream;
pub mod web;

pub use app::{Gateway, StartOptions};
pub use config::{GatewayConfig, Profile, PushClientConfig};
pub use push_client::{Notice, PushClient, PushHandler};
