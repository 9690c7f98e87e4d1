//! The engines' client: one pooled HTTP client, a deadline per kind of
//! call, and each call's duration as `engine_request_duration_seconds`.
//! Calls carry the current trace context. Every call here is idempotent in the protocol (health, manifest, and
//! init, which answers the same body the same way), so a caller may retry
//! any of them.

use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use serde::de::DeserializeOwned;
use turnbase_engine_kit::protocol::{GameState, InitRequest, Manifest};
use uuid::Uuid;

/// Deadlines by kind of call.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(5);
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct EngineClient {
    http: reqwest::Client,
    duration: Histogram<f64>,
}

/// Why a call failed, for the job's error and the admin API.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{call}: cannot reach the engine: {reason}")]
    Unreachable { call: &'static str, reason: String },
    #[error("{call}: the engine answered {status}: {body}")]
    Refused {
        call: &'static str,
        status: u16,
        body: String,
    },
    #[error("{call}: the answer does not fit the protocol: {reason}")]
    Garbled { call: &'static str, reason: String },
}

impl EngineClient {
    pub fn new(meter: &Meter) -> EngineClient {
        EngineClient {
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            duration: meter
                .f64_histogram("engine_request_duration")
                .with_unit("s")
                .with_description("Time of one call to an engine, by call")
                .with_boundaries(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .build(),
        }
    }

    /// Whether the engine at `base` answers `/healthz` with 200.
    pub async fn healthy(&self, base: &str) -> bool {
        let started = Instant::now();
        let ok = matches!(
            self.http
                .get(format!("{base}/healthz"))
                .timeout(HEALTH_TIMEOUT)
                .send()
                .await,
            Ok(r) if r.status().is_success()
        );
        self.observe("healthz", started);
        ok
    }

    pub async fn manifest(&self, base: &str) -> Result<Manifest, CallError> {
        let request = self
            .http
            .get(format!("{base}/manifest"))
            .timeout(MANIFEST_TIMEOUT);
        self.call("manifest", request).await
    }

    /// Initialises `game` (idempotent for the same body).
    pub async fn init(
        &self,
        base: &str,
        game: Uuid,
        body: &InitRequest,
    ) -> Result<GameState, CallError> {
        let request = self
            .http
            .post(format!("{base}/games/{game}/init"))
            .json(body)
            .timeout(INIT_TIMEOUT);
        self.call("init", request).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        call: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        // The engine continues the caller's trace (W3C traceparent), as the
        // gateway's forwarded requests do.
        let mut headers = reqwest::header::HeaderMap::new();
        turnbase_core::http::inject_trace_context(&mut headers);
        let answer = request.headers(headers).send().await;
        let result = async {
            let response = answer.map_err(|e| CallError::Unreachable {
                call,
                reason: e.to_string(),
            })?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| CallError::Unreachable {
                call,
                reason: e.to_string(),
            })?;
            if !status.is_success() {
                return Err(CallError::Refused {
                    call,
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned(),
                });
            }
            serde_json::from_slice(&bytes).map_err(|e| CallError::Garbled {
                call,
                reason: e.to_string(),
            })
        }
        .await;
        self.observe(call, started);
        result
    }

    fn observe(&self, call: &'static str, started: Instant) {
        self.duration.record(
            started.elapsed().as_secs_f64(),
            &[KeyValue::new("call", call)],
        );
    }
}
