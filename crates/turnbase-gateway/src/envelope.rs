//! Envelopes: what a client receives for each event. The envelope is JSON
//! `{id, user_id, device_session_id, kind, payload, event_id, request_id,
//! trace_id, published_at}`, signed as the exact bytes sent; the frame
//! around it carries the key id and the signature:
//!
//! `{"type":"event","id":…,"kid":…,"sig":…,"envelope":"<the envelope as a JSON string>"}`
//!
//! Carrying the envelope as a string keeps the signed bytes unambiguous:
//! a client verifies `sig` over the string's UTF-8 bytes, then parses it.

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use turnbase_push::received::ClientEvent;

use crate::signing::Signer;

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    user_id: uuid::fmt::Hyphenated,
    device_session_id: Option<uuid::fmt::Hyphenated>,
    kind: &'a str,
    payload: &'a serde_json::value::RawValue,
    event_id: &'a str,
    request_id: &'a str,
    trace_id: &'a str,
    published_at: String,
}

#[derive(Serialize)]
struct Frame<'a> {
    r#type: &'static str,
    id: &'a str,
    kid: &'a str,
    sig: &'a str,
    envelope: &'a str,
}

/// The signed frame for `event`, whose resumable id is `id`; `None` when
/// the payload is not JSON (the backend checks it, so this is a bug
/// elsewhere, logged by the caller).
pub fn signed_frame(
    signer: &Signer,
    id: &str,
    event: &ClientEvent,
    published_at_ms: i64,
) -> Option<Utf8Bytes> {
    let payload_text = std::str::from_utf8(&event.payload).ok()?;
    let payload: &serde_json::value::RawValue = serde_json::from_str(payload_text).ok()?;
    let published_at = chrono::DateTime::from_timestamp_millis(published_at_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let envelope = serde_json::to_string(&Envelope {
        id,
        user_id: event.user_id.hyphenated(),
        device_session_id: event.device_session_id.map(|s| s.hyphenated()),
        kind: event.kind.as_str(),
        payload,
        event_id: event.event_id.as_str(),
        request_id: event.request_id.as_str(),
        trace_id: event.trace_id.as_str(),
        published_at,
    })
    .ok()?;
    let sig = signer.sign(envelope.as_bytes());
    let frame = serde_json::to_string(&Frame {
        r#type: "event",
        id,
        kid: signer.kid(),
        sig: &sig,
        envelope: &envelope,
    })
    .ok()?;
    Some(Utf8Bytes::from(frame))
}

/// A control message: `{"type":…,"reason":…}`.
pub fn control(kind: &str, reason: &str) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::json!({ "type": kind, "reason": reason }).to_string())
}
