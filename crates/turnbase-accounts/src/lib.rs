//! Turnbase accounts: passwordless sign-in by a mailed one-time code,
//! guest accounts, sessions behind a write-through cache, admin actions
//! with an audit log, the guest reaper, and GeoIP with per-country sign-in
//! counts. Nothing here knows HTTP; the backend's `api` module maps
//! [`AccountError`] to status codes.

mod batch;
pub mod cache;
pub mod geo;
pub mod names;
pub mod secret;
pub mod service;
pub mod workers;

pub use cache::CachedSession;
pub use geo::{GeoIp, TrustedProxies};
pub use names::{DeviceName, DisplayName};
pub use secret::{CodeKey, LoginCode, SessionToken};
pub use service::{
    AccountDetail, AccountError, AccountService, AccountsConfig, Actor, Client, Clock, SignedIn,
    system_clock,
};
pub use turnbase_core::limiter::{Rate, RateLimiter};
