//! `turnbase push tail`: subscribes to a backend's push stream and prints
//! every message as one JSON line, for operators and scripts.

use serde_json::{Value, json};
use turnbase_push::proto::push_client::PushClient;
use turnbase_push::proto::push_event::Kind as EventKind;
use turnbase_push::proto::push_message::Kind as Msg;
use turnbase_push::proto::{GatewaySubscribeRequest, PushEvent, PushMessage, stale};

/// Runs until the stream ends or Ctrl-C (or SIGTERM). Exit codes: 0 on a signal, 1 when
/// the stream cannot be opened or ends with an error. `secret` is the
/// backend's internal secret, which its push listener asks of subscribers.
pub async fn tail(url: &str, secret: &str, cursor: Option<String>, client_id: String) -> i32 {
    // Caught from the start, so that a Ctrl-C right after the first line
    // ends the tail cleanly.
    let mut caught = turnbase_core::lifecycle::ShutdownSignals::listen();
    let mut client = match PushClient::connect(url.to_string()).await {
        Ok(c) => c.max_decoding_message_size(16 * 1024 * 1024),
        Err(e) => {
            eprintln!("turnbase: cannot connect to {url}: {e}");
            return 1;
        }
    };
    let mut request = tonic::Request::new(GatewaySubscribeRequest {
        gateway_client_id: client_id,
        cursor: cursor.unwrap_or_default(),
    });
    match turnbase_push::server::authorization(secret) {
        Ok(value) => {
            request.metadata_mut().insert("authorization", value);
        }
        Err(e) => {
            eprintln!("turnbase: BACKEND_INTERNAL_TOKEN: {e}");
            return 2;
        }
    }
    let mut stream = match client.subscribe_push(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            eprintln!(
                "turnbase: subscribe failed: {:?}: {}",
                status.code(),
                status.message()
            );
            return 1;
        }
    };
    loop {
        let next = tokio::select! {
            next = stream.message() => next,
            () = caught.next() => return 0,
        };
        match next {
            Ok(Some(message)) => println!("{}", to_json(&message)),
            Ok(None) => {
                eprintln!("turnbase: the push stream ended");
                return 1;
            }
            Err(status) => {
                eprintln!(
                    "turnbase: the push stream ended: {:?}: {}",
                    status.code(),
                    status.message()
                );
                return 1;
            }
        }
    }
}

/// The JSON form of one message: an object with a single key naming its kind.
pub fn to_json(message: &PushMessage) -> Value {
    match &message.kind {
        Some(Msg::Resumed(r)) => json!({ "resumed": { "head": r.head } }),
        Some(Msg::Stale(s)) => {
            let reason = stale::Reason::try_from(s.reason)
                .map(|r| {
                    r.as_str_name()
                        .trim_start_matches("REASON_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_else(|_| s.reason.to_string());
            json!({ "stale": {
                "reason": reason,
                "requested": s.requested,
                "oldest": s.oldest,
                "head": s.head,
                "lost": s.lost,
            }})
        }
        Some(Msg::Heartbeat(h)) => json!({ "heartbeat": { "head": h.head } }),
        Some(Msg::Events(e)) => {
            json!({ "events": e.events.iter().map(event_json).collect::<Vec<_>>() })
        }
        None => json!({ "unknown": {} }),
    }
}

fn event_json(event: &PushEvent) -> Value {
    let published_at = chrono::DateTime::from_timestamp_millis(event.published_at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let mut out = json!({ "cursor": event.cursor, "published_at": published_at });
    match &event.kind {
        Some(EventKind::ClientEvent(c)) => {
            let payload = serde_json::from_slice::<Value>(&c.payload).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&c.payload).into_owned())
            });
            out["client_event"] = json!({
                "user_id": c.user_id,
                "device_session_id": c.device_session_id,
                "kind": c.kind,
                "payload": payload,
                "event_id": c.event_id,
                "request_id": c.request_id,
                "trace_id": c.trace_id,
            });
        }
        Some(EventKind::SessionInvalidation(s)) => {
            out["session_invalidation"] = json!({
                "user_id": s.user_id,
                "device_session_id": s.device_session_id,
                "reason": s.reason,
            });
        }
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnbase_push::proto::{ClientEvent, Events, SessionInvalidation, Stale};

    #[test]
    fn messages_as_json_lines() {
        let events = PushMessage {
            kind: Some(Msg::Events(Events {
                events: vec![
                    PushEvent {
                        cursor: "00000000000000ab.1".into(),
                        published_at_ms: 1_764_000_000_000,
                        kind: Some(EventKind::ClientEvent(ClientEvent {
                            user_id: "u1".into(),
                            device_session_id: None,
                            kind: "game.turn".into(),
                            payload: br#"{"turn":3}"#.to_vec().into(),
                            event_id: "e1".into(),
                            request_id: "r1".into(),
                            trace_id: "t1".into(),
                        })),
                    },
                    PushEvent {
                        cursor: "00000000000000ab.2".into(),
                        published_at_ms: 1_764_000_000_001,
                        kind: Some(EventKind::SessionInvalidation(SessionInvalidation {
                            user_id: "u1".into(),
                            device_session_id: Some("s1".into()),
                            reason: "revoked".into(),
                        })),
                    },
                ],
            })),
        };
        assert_eq!(
            to_json(&events).to_string(),
            concat!(
                r#"{"events":[{"client_event":{"device_session_id":null,"event_id":"e1","kind":"game.turn","#,
                r#""payload":{"turn":3},"request_id":"r1","trace_id":"t1","user_id":"u1"},"#,
                r#""cursor":"00000000000000ab.1","published_at":"2025-11-24T16:00:00.000Z"},"#,
                r#"{"cursor":"00000000000000ab.2","published_at":"2025-11-24T16:00:00.001Z","#,
                r#""session_invalidation":{"device_session_id":"s1","reason":"revoked","user_id":"u1"}}]}"#
            )
        );
        let stale = PushMessage {
            kind: Some(Msg::Stale(Stale {
                reason: stale::Reason::UnknownEpoch as i32,
                requested: "x".into(),
                oldest: String::new(),
                head: "h".into(),
                lost: 0,
            })),
        };
        assert_eq!(
            to_json(&stale).to_string(),
            r#"{"stale":{"head":"h","lost":0,"oldest":"","reason":"unknown_epoch","requested":"x"}}"#
        );
    }
}
