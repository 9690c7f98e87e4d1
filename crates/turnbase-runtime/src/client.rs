//! The engines' client: one pooled HTTP client, a deadline per kind of
//! call, and each call's duration as `engine_request_duration_seconds`.
//! Calls carry the current trace context. Every call here is idempotent in the protocol (health, manifest, and
//! init, which answers the same body the same way), so a caller may retry
//! any of them.

use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use serde::de::DeserializeOwned;
use turnbase_engine_kit::protocol::{
    ControlRequest, GameState, InitRequest, Manifest, Options, OrdersRequest, Resolution,
};
use uuid::Uuid;

/// Deadlines by kind of call.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(5);
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);
const PLAY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct EngineClient {
    http: reqwest::Client,
    duration: Histogram<f64>,
}

/// An engine's answer as it came.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl Answer {
    /// The protocol's error code of a refusal (`wrong_turn`, …).
    pub fn error_code(&self) -> Option<String> {
        error_code(&self.body)
    }
}

fn error_code(body: &[u8]) -> Option<String> {
    let parsed: turnbase_engine_kit::protocol::ErrorBody = serde_json::from_slice(body).ok()?;
    Some(parsed.error.code)
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

impl CallError {
    /// The protocol's error code when the engine refused.
    pub fn code(&self) -> Option<String> {
        match self {
            CallError::Refused { body, .. } => error_code(body.as_bytes()),
            _ => None,
        }
    }
}

/// An answer of the protocol, decoded.
fn decode<T: DeserializeOwned>(call: &'static str, bytes: bytes::Bytes) -> Result<T, CallError> {
    serde_json::from_slice(&bytes).map_err(|e| CallError::Garbled {
        call,
        reason: e.to_string(),
    })
}

/// A resolve call's answer, as [`EngineClient::resolve_undecoded`] gave it.
pub fn decode_resolution(bytes: bytes::Bytes) -> Result<Resolution, CallError> {
    decode("resolve", bytes)
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

    /// Resolves turn `turn` of `game` (idempotent by turn number).
    pub async fn resolve(
        &self,
        base: &str,
        game: Uuid,
        turn: u32,
    ) -> Result<Resolution, CallError> {
        decode_resolution(self.resolve_undecoded(base, game, turn).await?)
    }

    /// Hands `player`'s seat to the engine's bot, or back.
    pub async fn control(
        &self,
        base: &str,
        game: Uuid,
        player: Uuid,
        bot: bool,
    ) -> Result<GameState, CallError> {
        let request = self
            .http
            .put(format!("{base}/games/{game}/players/{player}/control"))
            .json(&ControlRequest { bot })
            .timeout(PLAY_TIMEOUT);
        self.call("control", request).await
    }

    pub async fn state(&self, base: &str, game: Uuid) -> Result<GameState, CallError> {
        let request = self
            .http
            .get(format!("{base}/games/{game}/state"))
            .timeout(PLAY_TIMEOUT);
        self.call("state", request).await
    }

    pub async fn options(
        &self,
        base: &str,
        game: Uuid,
        player: Uuid,
    ) -> Result<Options, CallError> {
        let request = self
            .http
            .get(format!("{base}/games/{game}/players/{player}/options"))
            .timeout(PLAY_TIMEOUT);
        self.call("options", request).await
    }

    /// Sends `player`'s orders; the engine's answer as it came (status and
    /// body), for the backend to read or pass on.
    pub async fn orders(
        &self,
        base: &str,
        game: Uuid,
        player: Uuid,
        body: &OrdersRequest,
    ) -> Result<Answer, CallError> {
        let request = self
            .http
            .put(format!("{base}/games/{game}/players/{player}/orders"))
            .json(body)
            .timeout(PLAY_TIMEOUT);
        self.raw("orders", request).await
    }

    /// `player`'s view now, or after turn `turn`; the answer as it came.
    pub async fn view(
        &self,
        base: &str,
        game: Uuid,
        player: Uuid,
        turn: Option<u32>,
    ) -> Result<Answer, CallError> {
        let query = turn.map(|t| format!("?turn={t}")).unwrap_or_default();
        let request = self
            .http
            .get(format!("{base}/games/{game}/players/{player}/view{query}"))
            .timeout(PLAY_TIMEOUT);
        self.raw("view", request).await
    }

    async fn raw(
        &self,
        call: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, CallError> {
        let started = Instant::now();
        let mut headers = reqwest::header::HeaderMap::new();
        turnbase_core::http::inject_trace_context(&mut headers);
        let result = async {
            let response =
                request
                    .headers(headers)
                    .send()
                    .await
                    .map_err(|e| CallError::Unreachable {
                        call,
                        reason: e.to_string(),
                    })?;
            let status = response.status().as_u16();
            let body = response.bytes().await.map_err(|e| CallError::Unreachable {
                call,
                reason: e.to_string(),
            })?;
            Ok(Answer { status, body })
        }
        .await;
        self.observe(call, started);
        result
    }

    async fn call<T: DeserializeOwned>(
        &self,
        call: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        decode(call, self.fetch(call, request).await?)
    }

    /// Sends a call and reads its answer whole; a refusal is an error.
    async fn fetch(
        &self,
        call: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, CallError> {
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
                    body: String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned(),
                });
            }
            Ok(bytes)
        }
        .await;
        self.observe(call, started);
        result
    }

    /// [`EngineClient::resolve`] without decoding the answer: the caller
    /// decodes it with [`decode_resolution`], where it likes (the turn
    /// dispatcher keeps its thread for sending).
    pub async fn resolve_undecoded(
        &self,
        base: &str,
        game: Uuid,
        turn: u32,
    ) -> Result<bytes::Bytes, CallError> {
        let request = self
            .http
            .post(format!("{base}/games/{game}/turns/{turn}/resolve"))
            .timeout(RESOLVE_TIMEOUT);
        self.fetch("resolve", request).await
    }

    fn observe(&self, call: &'static str, started: Instant) {
        self.duration.record(
            started.elapsed().as_secs_f64(),
            &[KeyValue::new("call", call)],
        );
    }
}
