//! Frames: `PushMessage`s already encoded to protobuf bytes.
//!
//! Each event is encoded once, at publish time, as a `PushEvent`. A batch
//! frame is then assembled by writing the `PushMessage.events` and
//! `Events.events` field headers around those shared bytes, so serving a
//! thousand subscribers copies bytes but never re-encodes an event.

use std::sync::Arc;

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::Message as _;
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::proto;
use crate::ring::Entry;

/// An encoded `PushMessage`, ready for the wire.
#[derive(Debug, Clone)]
pub struct Frame(pub Bytes);

/// The key of a length-delimited field: `(number << 3) | 2`.
const fn len_key(field: u8) -> u8 {
    (field << 3) | 2
}
/// `PushMessage.events` is field 3; `Events.events` is field 1;
/// `PushEvent.cursor` is field 1.
const MESSAGE_EVENTS_KEY: u8 = len_key(3);
const EVENTS_EVENT_KEY: u8 = len_key(1);
const EVENT_CURSOR_KEY: u8 = len_key(1);

impl Frame {
    pub fn message(message: &proto::PushMessage) -> Frame {
        Frame(Bytes::from(message.encode_to_vec()))
    }

    /// A `PushMessage { events: Events { events: [...] } }` from encoded events.
    pub fn events(batch: &[Arc<Entry>]) -> Frame {
        let inner: usize = batch
            .iter()
            .map(|e| 1 + encoded_len_varint(e.encoded.len() as u64) + e.encoded.len())
            .sum();
        let mut buf = BytesMut::with_capacity(1 + encoded_len_varint(inner as u64) + inner);
        buf.put_u8(MESSAGE_EVENTS_KEY);
        encode_varint(inner as u64, &mut buf);
        for e in batch {
            buf.put_u8(EVENTS_EVENT_KEY);
            encode_varint(e.encoded.len() as u64, &mut buf);
            buf.put_slice(&e.encoded);
        }
        Frame(buf.freeze())
    }
}

/// Encodes a `PushEvent` whose other fields are already in `rest` (encoded
/// without a cursor) by putting the cursor field in front, which is where
/// a protobuf encoder would put field 1.
pub fn event_with_cursor(cursor: &str, rest: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(
        1 + encoded_len_varint(cursor.len() as u64) + cursor.len() + rest.len(),
    );
    buf.put_u8(EVENT_CURSOR_KEY);
    encode_varint(cursor.len() as u64, &mut buf);
    buf.put_slice(cursor.as_bytes());
    buf.put_slice(rest);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::EventKind;
    use tokio::time::Instant;

    fn event(cursor: &str, kind: &str) -> proto::PushEvent {
        proto::PushEvent {
            cursor: cursor.into(),
            published_at_ms: 1_700_000_000_000,
            kind: Some(proto::push_event::Kind::ClientEvent(proto::ClientEvent {
                user_id: "u".into(),
                device_session_id: None,
                kind: kind.into(),
                payload: Bytes::from_static(br#"{"a":1}"#),
                event_id: "e".into(),
                request_id: String::new(),
                trace_id: "t".into(),
            })),
        }
    }

    #[test]
    fn hand_assembled_frames_decode_like_prost_encoded_ones() {
        let events = [
            event("00000000000000ab.1", "x"),
            event("00000000000000ab.2", "y"),
        ];
        let entries: Vec<Arc<Entry>> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut rest = e.clone();
                rest.cursor.clear();
                Arc::new(Entry {
                    seq: i as u64 + 1,
                    at: Instant::now(),
                    kind: EventKind::ClientEvent,
                    encoded: event_with_cursor(&e.cursor, &rest.encode_to_vec()),
                })
            })
            .collect();
        let frame = Frame::events(&entries);
        let decoded = proto::PushMessage::decode(frame.0).expect("valid protobuf");
        let expected = proto::PushMessage {
            kind: Some(proto::push_message::Kind::Events(proto::Events {
                events: events.to_vec(),
            })),
        };
        assert_eq!(decoded, expected);
        // Byte-for-byte what prost itself would send.
        assert_eq!(Frame::events(&entries).0, expected.encode_to_vec());
    }
}
