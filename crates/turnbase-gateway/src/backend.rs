//! The gateway's HTTP client of the backend: one pooled client for
//! forwarding requests (bodies streamed both ways) and for resolving
//! session tokens through the internal API, with a short-lived cache that
//! revocations clear at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use turnbase_core::config::Secret;
use uuid::Uuid;

pub type HttpClient = Client<HttpConnector, Body>;

/// A new pooled HTTP/1.1 client.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// A session as the backend resolved it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Session {
    pub account_id: Uuid,
    pub session_id: Uuid,
    pub display_name: String,
    pub role: String,
    pub is_guest: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("missing, unknown or revoked session token")]
    Unauthorized,
    #[error("the backend cannot resolve sessions right now: {0}")]
    Unavailable(String),
}

pub struct Resolver {
    client: HttpClient,
    url: String,
    secret: Secret<String>,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Session, Instant)>>,
}

/// Entries the cache holds before expired ones are swept.
const SWEEP_ABOVE: usize = 100_000;

impl Resolver {
    pub fn new(
        client: HttpClient,
        backend_url: &str,
        secret: Secret<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            client,
            url: format!("{backend_url}/api/v1/internal/sessions/resolve"),
            secret,
            ttl,
            cache: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Session, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session of `token`, from the cache while fresh.
    pub async fn resolve(&self, token: &str) -> Result<Session, ResolveError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((session, at)) = self.lock().get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(session.clone());
        }
        let session = self.ask(token).await?;
        let mut cache = self.lock();
        if cache.len() >= SWEEP_ABOVE {
            let ttl = self.ttl;
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        cache.insert(key, (session.clone(), Instant::now()));
        Ok(session)
    }

    /// Asks the backend, bypassing the cache.
    pub async fn ask(&self, token: &str) -> Result<Session, ResolveError> {
        let body = serde_json::json!({ "token": token }).to_string();
        let request = http::Request::post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.secret.expose()),
            )
            .body(Body::from(body))
            .map_err(|e| ResolveError::Unavailable(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .map_err(|_| ResolveError::Unavailable("timed out".into()))?
            .map_err(|e| ResolveError::Unavailable(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ResolveError::Unavailable(e.to_string()))?
            .to_bytes();
        match status.as_u16() {
            200 => serde_json::from_slice(&bytes)
                .map_err(|e| ResolveError::Unavailable(format!("unexpected answer: {e}"))),
            401 if bytes.windows(8).any(|w| w == b"gateways") => Err(ResolveError::Unavailable(
                "the backend refused GATEWAY_INTERNAL_TOKEN".into(),
            )),
            401 => Err(ResolveError::Unauthorized),
            other => Err(ResolveError::Unavailable(format!("status {other}"))),
        }
    }

    /// Forgets every session (after events were lost upstream, revocations
    /// may be among them).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Drops one session (or, with `None`, every session of the account).
    pub fn forget(&self, account: Uuid, session: Option<Uuid>) {
        self.lock().retain(|_, (s, _)| {
            s.account_id != account || session.is_some_and(|id| id != s.session_id)
        });
    }
}
