//! Session tokens resolved through the backend's internal API (over the
//! gateway's pool of backend connections), with a short-lived cache that
//! revocations clear at once. Concurrent lookups of one token share a
//! single request, so a resync that re-checks every connection asks the
//! backend once per session, not once per connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use turnbase_core::config::Secret;
use uuid::Uuid;

use crate::upstream::Upstream;

/// A session as the backend resolved it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Session {
    pub account_id: Uuid,
    pub session_id: Uuid,
    pub display_name: String,
    pub role: String,
    pub is_guest: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("missing, unknown or revoked session token")]
    Unauthorized,
    #[error("the backend cannot resolve sessions right now: {0}")]
    Unavailable(String),
}

pub struct Resolver {
    upstream: Arc<Upstream>,
    secret: Secret<String>,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Session, Instant)>>,
    /// Lookups under way, by token hash: later callers wait for the first.
    inflight: Mutex<HashMap<[u8; 32], Arc<Lookup>>>,
    /// Bumped by every revocation or clear, so that an answer the backend
    /// gave before one is not cached after it.
    generation: AtomicU64,
}

type Lookup = tokio::sync::OnceCell<Result<Session, ResolveError>>;

/// Entries the cache holds before expired ones are swept.
const SWEEP_ABOVE: usize = 100_000;

impl Resolver {
    pub fn new(upstream: Arc<Upstream>, secret: Secret<String>, ttl: Duration) -> Self {
        Self {
            upstream,
            secret,
            ttl,
            cache: Mutex::default(),
            inflight: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Session, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session of `token`, from the cache while fresh; otherwise from
    /// the backend, sharing the request with concurrent lookups of it.
    pub async fn resolve(&self, token: &str) -> Result<Session, ResolveError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((session, at)) = self.lock().get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(session.clone());
        }
        let lookup = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let mut first = false;
        let answer = lookup
            .get_or_init(|| {
                first = true;
                async {
                    let generation = self.generation.load(Ordering::SeqCst);
                    let answer = self.ask(token).await;
                    if let Ok(session) = &answer {
                        let mut cache = self.lock();
                        // Checked under the cache lock, which revocations
                        // take too: nothing revoked meanwhile is cached.
                        if self.generation.load(Ordering::SeqCst) == generation {
                            if cache.len() >= SWEEP_ABOVE {
                                let ttl = self.ttl;
                                cache.retain(|_, (_, at)| at.elapsed() < ttl);
                            }
                            cache.insert(key, (session.clone(), Instant::now()));
                        }
                    }
                    answer
                }
            })
            .await
            .clone();
        if first {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if inflight.get(&key).is_some_and(|l| Arc::ptr_eq(l, &lookup)) {
                inflight.remove(&key);
            }
        }
        answer
    }

    /// Changes whenever a session is forgotten or the cache cleared: a
    /// lookup that saw another value may predate a revocation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Asks the backend, bypassing the cache.
    pub async fn ask(&self, token: &str) -> Result<Session, ResolveError> {
        let body = serde_json::json!({ "token": token }).to_string();
        let request = http::Request::post("/api/v1/internal/sessions/resolve")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.secret.expose()),
            )
            .body(Body::from(body))
            .map_err(|e| ResolveError::Unavailable(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.upstream.send(request))
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
        self.invalidate(|_| true);
    }

    /// Drops one session (or, with `None`, every session of the account).
    pub fn forget(&self, account: Uuid, session: Option<Uuid>) {
        self.invalidate(|s| s.account_id == account && session.is_none_or(|id| id == s.session_id));
    }

    /// Drops the cached sessions `doomed` picks, and makes every lookup
    /// that may have started before this one miss. The order matters:
    /// lookups under way are forgotten first (later callers start their
    /// own), then the generation moves on, in the same critical section
    /// as the cache change. So a caller that saw the new generation can
    /// neither join an older lookup nor find an older cache entry, and a
    /// caller that saw the old one checks again.
    fn invalidate(&self, doomed: impl Fn(&Session) -> bool) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let mut cache = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        cache.retain(|_, (s, _)| !doomed(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A stand-in for the backend's resolve endpoint that answers slowly
    /// (so that lookups overlap) and counts what it was asked.
    async fn slow_backend(asked: Arc<AtomicUsize>, session: Session) -> String {
        let app = axum::Router::new().route(
            "/api/v1/internal/sessions/resolve",
            axum::routing::post(move || {
                let (asked, session) = (asked.clone(), session.clone());
                async move {
                    asked.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    axum::Json(serde_json::json!({
                        "account_id": session.account_id,
                        "session_id": session.session_id,
                        "display_name": session.display_name,
                        "role": session.role,
                        "is_guest": session.is_guest,
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn session() -> Session {
        Session {
            account_id: Uuid::now_v7(),
            session_id: Uuid::now_v7(),
            display_name: "Ann".into(),
            role: "player".into(),
            is_guest: true,
        }
    }

    /// A resolver in front of [`slow_backend`]: the count of requests it
    /// made, the session it gets, the resolver.
    async fn slow_resolver() -> (Arc<AtomicUsize>, Session, Arc<Resolver>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let expected = session();
        let url = slow_backend(asked.clone(), expected.clone()).await;
        let resolver = Arc::new(Resolver::new(
            Upstream::new(&url).expect("backend URL"),
            Secret::new("secret".to_string()),
            Duration::from_secs(60),
        ));
        (asked, expected, resolver)
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_token_share_one_request() {
        let (asked, expected, resolver) = slow_resolver().await;
        let lookups: Vec<_> = (0..50)
            .map(|_| {
                let resolver = resolver.clone();
                tokio::spawn(async move { resolver.resolve("token-a").await })
            })
            .collect();
        for lookup in lookups {
            assert_eq!(lookup.await.expect("join").expect("resolved"), expected);
        }
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "one request for 50 lookups"
        );
        resolver.resolve("token-a").await.expect("cached");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "then served from the cache"
        );
        resolver.resolve("token-b").await.expect("resolved");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "another token is its own lookup"
        );
    }

    #[tokio::test]
    async fn an_answer_from_before_a_revocation_is_not_cached() {
        let (asked, expected, resolver) = slow_resolver().await;
        let lookup = {
            let resolver = resolver.clone();
            tokio::spawn(async move { resolver.resolve("token-a").await })
        };
        // The revocation arrives while the backend is still answering.
        while asked.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        resolver.forget(expected.account_id, Some(expected.session_id));
        lookup.await.expect("join").expect("answered");
        resolver.resolve("token-a").await.expect("resolved");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "the answer given before the revocation was not kept"
        );
    }
}
