//! Frames: `PushMessage`s already encoded to protobuf bytes.
//!
//! Each event is encoded once, at publish time, as a `PushEvent`. A batch
//! frame is then assembled by writing the `PushMessage.events` and
//! `Events.events` field headers around those shared bytes, so serving a
//! thousand subscribers copies bytes but never re-encodes an event.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use prost::encoding::{encode_varint, encoded_len_varint};
use uuid::Uuid;

use crate::cursor::{Cursor, MAX_LEN};
use crate::proto;

/// A `PushMessage` ready for the wire: either encoded whole, or a batch of
/// events encoded once each, whose field headers are written around them
/// as the frame goes out (so the shared event bytes are copied once, into
/// the transport's buffer).
#[derive(Debug, Clone)]
pub enum Frame {
    Message(Bytes),
    Events(Vec<Bytes>),
}

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
        Frame::Message(Bytes::from(message.encode_to_vec()))
    }

    /// A `PushMessage { events: Events { events: [...] } }` from encoded events.
    pub fn events(batch: Vec<Bytes>) -> Frame {
        Frame::Events(batch)
    }

    /// Writes the frame's protobuf encoding into `out`.
    pub fn write_to(&self, out: &mut impl BufMut) {
        match self {
            Frame::Message(bytes) => out.put_slice(bytes),
            Frame::Events(batch) => {
                let inner: usize = batch
                    .iter()
                    .map(|e| 1 + encoded_len_varint(e.len() as u64) + e.len())
                    .sum();
                out.put_u8(MESSAGE_EVENTS_KEY);
                encode_varint(inner as u64, out);
                for e in batch {
                    out.put_u8(EVENTS_EVENT_KEY);
                    encode_varint(e.len() as u64, out);
                    out.put_slice(e);
                }
            }
        }
    }

    /// The frame as one buffer (tests and tools; the server streams it).
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.write_to(&mut buf);
        buf.freeze()
    }
}

/// Prepares the encoding of a `PushEvent` whose fields other than the
/// cursor are `rest` (encoded without a cursor): the buffer keeps room in
/// front for the cursor field, which [`finish_event`] fills in once the
/// sequence number is known, without copying `rest` again.
pub fn reserve_event(rest: &impl prost::Message) -> BytesMut {
    let mut buf = BytesMut::with_capacity(CURSOR_ROOM + rest.encoded_len());
    buf.resize(CURSOR_ROOM, 0);
    // Encoding into a buffer sized by `encoded_len` cannot run out of room.
    let _ = rest.encode(&mut buf);
    buf
}

/// The fields of a client event, borrowed from whoever publishes it.
#[derive(Debug, Clone, Copy)]
pub struct ClientEventFields<'a> {
    pub published_at_ms: i64,
    pub user_id: Uuid,
    pub device_session_id: Option<Uuid>,
    pub kind: &'a str,
    pub payload: &'a [u8],
    pub event_id: &'a str,
    pub request_id: &'a str,
    pub trace_id: &'a str,
}

/// Length of the hyphenated text form of a UUID.
const UUID_TEXT: usize = 36;

/// Encoded size of a length-delimited field with a one-byte key; proto3
/// leaves an empty string or bytes field out, unless it is `optional`.
fn text_len(len: usize, always: bool) -> usize {
    if len == 0 && !always {
        0
    } else {
        1 + encoded_len_varint(len as u64) + len
    }
}

fn put_text(out: &mut BytesMut, field: u8, value: &[u8], always: bool) {
    if value.is_empty() && !always {
        return;
    }
    out.put_u8(len_key(field));
    encode_varint(value.len() as u64, out);
    out.put_slice(value);
}

fn put_uuid(out: &mut BytesMut, field: u8, id: Uuid) {
    let mut text = [0u8; UUID_TEXT];
    id.hyphenated().encode_lower(&mut text);
    put_text(out, field, &text, true);
}

/// [`reserve_event`] for a client event, written field by field: the same
/// bytes prost would produce for the `PushEvent` (without cursor), but with
/// one allocation and no intermediate strings.
pub fn reserve_client_event(e: &ClientEventFields<'_>) -> BytesMut {
    let body = text_len(UUID_TEXT, true)
        + e.device_session_id.map_or(0, |_| text_len(UUID_TEXT, true))
        + text_len(e.kind.len(), false)
        + text_len(e.payload.len(), false)
        + text_len(e.event_id.len(), false)
        + text_len(e.request_id.len(), false)
        + text_len(e.trace_id.len(), false);
    let at = if e.published_at_ms == 0 {
        0
    } else {
        1 + encoded_len_varint(e.published_at_ms as u64)
    };
    let mut buf = BytesMut::with_capacity(CURSOR_ROOM + at + text_len(body, true));
    buf.resize(CURSOR_ROOM, 0);
    if e.published_at_ms != 0 {
        // `PushEvent.published_at_ms`: field 2, varint (an int64 is sent
        // as its two's-complement 64 bits).
        buf.put_u8(2 << 3);
        encode_varint(e.published_at_ms as u64, &mut buf);
    }
    // `PushEvent.client_event`: field 3.
    buf.put_u8(len_key(3));
    encode_varint(body as u64, &mut buf);
    put_uuid(&mut buf, 1, e.user_id);
    if let Some(session) = e.device_session_id {
        put_uuid(&mut buf, 2, session);
    }
    put_text(&mut buf, 3, e.kind.as_bytes(), false);
    put_text(&mut buf, 4, e.payload, false);
    put_text(&mut buf, 5, e.event_id.as_bytes(), false);
    put_text(&mut buf, 6, e.request_id.as_bytes(), false);
    put_text(&mut buf, 7, e.trace_id.as_bytes(), false);
    buf
}

/// Room for the cursor field: key, one-byte length, at most 37 bytes.
const CURSOR_ROOM: usize = 2 + MAX_LEN;

/// Writes the cursor field in front of a buffer from [`reserve_event`].
pub fn finish_event(mut buf: BytesMut, cursor: Cursor) -> Bytes {
    let mut text = [0u8; MAX_LEN];
    let len = cursor.write_text(&mut text);
    let start = CURSOR_ROOM - 2 - len;
    buf[start] = EVENT_CURSOR_KEY;
    // At most 37, so the length is a one-byte varint.
    buf[start + 1] = len as u8;
    buf[start + 2..CURSOR_ROOM].copy_from_slice(&text[..len]);
    buf.freeze().slice(start..)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn client_events_written_by_hand_are_what_prost_writes() {
        let user = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let session = Uuid::from_u128(7);
        let payload = vec![b'x'; 300];
        let cases = [
            (
                1_700_000_000_123,
                Some(session),
                "game.turn_resolved",
                &payload[..],
                "e1",
                "r",
                "t",
            ),
            (0, None, "k", &b"{}"[..], "", "", ""),
            (-5, Some(session), "", &b""[..], "", "req", ""),
        ];
        for (at, session, kind, payload, event_id, request_id, trace_id) in cases {
            let by_prost = proto::PushEvent {
                cursor: String::new(),
                published_at_ms: at,
                kind: Some(proto::push_event::Kind::ClientEvent(proto::ClientEvent {
                    user_id: user.to_string(),
                    device_session_id: session.map(|s| s.to_string()),
                    kind: kind.into(),
                    payload: Bytes::copy_from_slice(payload),
                    event_id: event_id.into(),
                    request_id: request_id.into(),
                    trace_id: trace_id.into(),
                })),
            };
            let by_hand = reserve_client_event(&ClientEventFields {
                published_at_ms: at,
                user_id: user,
                device_session_id: session,
                kind,
                payload,
                event_id,
                request_id,
                trace_id,
            });
            assert_eq!(by_hand.capacity(), by_hand.len(), "sized exactly");
            assert_eq!(by_hand, reserve_event(&by_prost), "case {kind:?}");
        }
    }

    #[test]
    fn hand_assembled_frames_decode_like_prost_encoded_ones() {
        let events = [
            event("00000000000000ab.1", "x"),
            event("00000000000000ab.2", "y"),
        ];
        let entries: Vec<Bytes> = events
            .iter()
            .map(|e| {
                let mut rest = e.clone();
                rest.cursor.clear();
                let cursor = Cursor::parse(&e.cursor).expect("test cursors parse");
                finish_event(reserve_event(&rest), cursor)
            })
            .collect();
        let frame = Frame::events(entries.clone());
        let decoded = proto::PushMessage::decode(frame.to_bytes()).expect("valid protobuf");
        let expected = proto::PushMessage {
            kind: Some(proto::push_message::Kind::Events(proto::Events {
                events: events.to_vec(),
            })),
        };
        assert_eq!(decoded, expected);
        // Byte-for-byte what prost itself would send.
        assert_eq!(Frame::events(entries).to_bytes(), expected.encode_to_vec());
    }
}
