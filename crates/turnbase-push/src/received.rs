//! The subscriber's side of the wire: `PushMessage`s decoded without
//! copying.
//!
//! A batch of events arrives as one buffer. Decoding it with the generated
//! types makes a `String` for every text field of every event (cursor, user
//! id, kind, ids) and a parse of each afterwards; here each event's cursor
//! and user ids are parsed straight from the buffer, and its payload and
//! texts stay slices of that one buffer.

use bytes::{Buf, Bytes};
use prost::Message as _;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use uuid::Uuid;

use crate::cursor::Cursor;
use crate::proto;

/// UTF-8 text held as a slice of a received frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(Bytes);

impl Text {
    fn new(bytes: Bytes) -> Result<Text, DecodeError> {
        std::str::from_utf8(&bytes).map_err(|_| DecodeError("text is not UTF-8"))?;
        Ok(Text(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Checked when made; the fallback is never taken.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A message of the stream, as a subscriber handles it.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Resumed(proto::Resumed),
    Stale(proto::Stale),
    Events(EventBatch),
    Heartbeat(proto::Heartbeat),
    /// A message kind this subscriber does not know (a newer backend).
    Unknown,
}

/// One event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub cursor: Cursor,
    pub published_at_ms: i64,
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    Client(ClientEvent),
    SessionInvalidation {
        user_id: Uuid,
        device_session_id: Option<Uuid>,
        reason: Text,
    },
    /// An event kind this subscriber does not know.
    Unknown,
    /// An event whose body does not decode (its place in the sequence is
    /// known, so the subscriber can skip it and go on).
    Malformed(DecodeError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientEvent {
    pub user_id: Uuid,
    pub device_session_id: Option<Uuid>,
    pub kind: Text,
    pub payload: Bytes,
    pub event_id: Text,
    pub request_id: Text,
    pub trace_id: Text,
}

/// A frame that is not a valid `PushMessage` of this contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed push message: {0}")]
pub struct DecodeError(&'static str);

impl From<prost::DecodeError> for DecodeError {
    fn from(_: prost::DecodeError) -> Self {
        DecodeError("not protobuf")
    }
}

/// The path of `SubscribePush`.
const SUBSCRIBE_PATH: &str = "/turnbase.push.v1.Push/SubscribePush";

/// Opens `SubscribePush` on `channel`; the stream's messages are decoded
/// with [`decode`]. Messages longer than `max_message` bytes end the
/// stream with an error.
pub async fn subscribe(
    channel: tonic::transport::Channel,
    request: tonic::Request<proto::GatewaySubscribeRequest>,
    max_message: usize,
) -> Result<tonic::Streaming<Received>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(max_message);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("the push service is not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_static(SUBSCRIBE_PATH);
    Ok(grpc
        .server_streaming(request, path, ReceivedCodec)
        .await?
        .into_inner())
}

/// Encodes the request with prost; decodes messages with [`decode`].
#[derive(Debug, Clone, Copy, Default)]
struct ReceivedCodec;

impl Codec for ReceivedCodec {
    type Encode = proto::GatewaySubscribeRequest;
    type Decode = Received;
    type Encoder = ReceivedCodec;
    type Decoder = ReceivedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        ReceivedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        ReceivedCodec
    }
}

impl Encoder for ReceivedCodec {
    type Item = proto::GatewaySubscribeRequest;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(format!("cannot encode the request: {e}")))
    }
}

impl Decoder for ReceivedCodec {
    type Item = Received;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Received>, Self::Error> {
        // The message's bytes, split off the receive buffer without a copy.
        let frame = src.copy_to_bytes(src.remaining());
        decode(frame)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// Decodes one `PushMessage`.
///
/// The frame is walked as a plain slice; only what an event keeps (its
/// payload and its texts) becomes a `Bytes` of the frame, so an
/// event costs two or three reference counts on the frame rather than one
/// per field looked at.
pub fn decode(frame: Bytes) -> Result<Received, DecodeError> {
    let mut received = Received::Unknown;
    let mut buf: &[u8] = &frame;
    while buf.has_remaining() {
        let (tag, wire) = decode_key(&mut buf)?;
        match (tag, wire) {
            (3, WireType::LengthDelimited) => {
                let events = take_len(&mut buf)?;
                let start = frame.len() - buf.len() - events.len();
                received = Received::Events(EventBatch::new(&frame, start, events)?);
            }
            (1 | 2 | 4, WireType::LengthDelimited) => {
                let body = take_len(&mut buf)?;
                received = match tag {
                    1 => Received::Resumed(proto::Resumed::decode(body)?),
                    2 => Received::Stale(proto::Stale::decode(body)?),
                    _ => Received::Heartbeat(proto::Heartbeat::decode(body)?),
                };
            }
            _ => skip(&mut buf, tag, wire)?,
        }
    }
    Ok(received)
}

/// The events of one `EventBatch` message, decoded one at a time as they
/// are taken: no list of decoded events is built, and each event goes
/// from the frame to its handler without being moved through one. The
/// batch's outline (each event's key and length) is checked when the
/// message is decoded; an event whose own fields do not decode is an
/// error when it is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBatch {
    frame: Bytes,
    /// Where in `frame` the next event's key is, and where the batch ends.
    at: usize,
    end: usize,
    /// Events not taken yet.
    left: usize,
}

impl EventBatch {
    /// The batch whose bytes are `batch`, found at `start` in `frame`.
    fn new(frame: &Bytes, start: usize, batch: &[u8]) -> Result<EventBatch, DecodeError> {
        let mut left = 0;
        let mut buf = batch;
        while buf.has_remaining() {
            if next_field_event(&mut buf)?.is_some() {
                left += 1;
            }
        }
        Ok(EventBatch {
            frame: frame.clone(),
            at: start,
            end: start + batch.len(),
            left,
        })
    }

    /// Events not taken yet.
    pub fn len(&self) -> usize {
        self.left
    }

    pub fn is_empty(&self) -> bool {
        self.left == 0
    }
}

impl Iterator for EventBatch {
    type Item = Result<Event, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.left > 0 {
            let mut buf = self.frame.get(self.at..self.end)?;
            let outcome = next_field_event(&mut buf);
            self.at = self.end - buf.len();
            match outcome {
                Ok(Some(event)) => {
                    self.left -= 1;
                    return Some(decode_event(&self.frame, event));
                }
                Ok(None) => {}
                Err(e) => {
                    // Checked when the batch was made: not expected.
                    self.left = 0;
                    return Some(Err(e));
                }
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for EventBatch {}

/// Reads the next field of an `EventBatch`: the bytes of an event, or
/// `None` for a field that is not one (skipped).
fn next_field_event<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, DecodeError> {
    let (tag, wire) = decode_key(buf)?;
    if (tag, wire) == (1, WireType::LengthDelimited) {
        take_len(buf).map(Some)
    } else {
        skip(buf, tag, wire).map(|()| None)
    }
}

fn decode_event(frame: &Bytes, mut buf: &[u8]) -> Result<Event, DecodeError> {
    let mut cursor = None;
    let mut published_at_ms = 0;
    let mut body = EventBody::Unknown;
    while buf.has_remaining() {
        let (tag, wire) = decode_key(&mut buf)?;
        match (tag, wire) {
            (1, WireType::LengthDelimited) => {
                let text = take_len(&mut buf)?;
                let text =
                    std::str::from_utf8(text).map_err(|_| DecodeError("cursor is not UTF-8"))?;
                cursor = Some(Cursor::parse(text).map_err(|_| DecodeError("malformed cursor"))?);
            }
            (2, WireType::Varint) => {
                // int64 travels as its two's-complement bits.
                published_at_ms = decode_varint(&mut buf)? as i64;
            }
            (3, WireType::LengthDelimited) => {
                body = decode_client_event(frame, take_len(&mut buf)?)
                    .map_or_else(EventBody::Malformed, EventBody::Client);
            }
            (4, WireType::LengthDelimited) => {
                body = decode_invalidation(frame, take_len(&mut buf)?)
                    .unwrap_or_else(EventBody::Malformed);
            }
            _ => skip(&mut buf, tag, wire)?,
        }
    }
    Ok(Event {
        cursor: cursor.ok_or(DecodeError("an event without a cursor"))?,
        published_at_ms,
        body,
    })
}

/// `part` (a slice of `frame`) as text sharing the frame's memory.
fn text_of(frame: &Bytes, part: &[u8]) -> Result<Text, DecodeError> {
    Text::new(frame.slice_ref(part))
}

fn decode_client_event(frame: &Bytes, mut buf: &[u8]) -> Result<ClientEvent, DecodeError> {
    let mut user_id = None;
    let mut event = ClientEvent {
        user_id: Uuid::nil(),
        device_session_id: None,
        kind: Text::default(),
        payload: Bytes::new(),
        event_id: Text::default(),
        request_id: Text::default(),
        trace_id: Text::default(),
    };
    while buf.has_remaining() {
        let (tag, wire) = decode_key(&mut buf)?;
        if wire != WireType::LengthDelimited || !(1..=7).contains(&tag) {
            skip(&mut buf, tag, wire)?;
            continue;
        }
        let value = take_len(&mut buf)?;
        match tag {
            1 => user_id = Some(uuid(value)?),
            2 => event.device_session_id = Some(uuid(value)?),
            3 => event.kind = text_of(frame, value)?,
            4 => event.payload = frame.slice_ref(value),
            5 => event.event_id = text_of(frame, value)?,
            6 => event.request_id = text_of(frame, value)?,
            _ => event.trace_id = text_of(frame, value)?,
        }
    }
    event.user_id = user_id.ok_or(DecodeError("a client event without a user id"))?;
    Ok(event)
}

fn decode_invalidation(frame: &Bytes, mut buf: &[u8]) -> Result<EventBody, DecodeError> {
    let (mut user_id, mut device_session_id, mut reason) = (None, None, Text::default());
    while buf.has_remaining() {
        let (tag, wire) = decode_key(&mut buf)?;
        if wire != WireType::LengthDelimited || !(1..=3).contains(&tag) {
            skip(&mut buf, tag, wire)?;
            continue;
        }
        let value = take_len(&mut buf)?;
        match tag {
            1 => user_id = Some(uuid(value)?),
            2 => device_session_id = Some(uuid(value)?),
            _ => reason = text_of(frame, value)?,
        }
    }
    Ok(EventBody::SessionInvalidation {
        user_id: user_id.ok_or(DecodeError("an invalidation without a user id"))?,
        device_session_id,
        reason,
    })
}

fn uuid(text: &[u8]) -> Result<Uuid, DecodeError> {
    Uuid::try_parse_ascii(text).map_err(|_| DecodeError("a user or session id is not a UUID"))
}

/// The next length-delimited value, as a slice of `buf` (no copy).
fn take_len<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = decode_varint(buf)?;
    let len = usize::try_from(len).map_err(|_| DecodeError("length out of range"))?;
    if len > buf.len() {
        return Err(DecodeError("a field runs past the end of its message"));
    }
    let (value, rest) = buf.split_at(len);
    *buf = rest;
    Ok(value)
}

fn skip(buf: &mut &[u8], tag: u32, wire: WireType) -> Result<(), DecodeError> {
    skip_field(wire, tag, buf, DecodeContext::default())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{
        ClientEventFields, Frame, finish_event, reserve_client_event, reserve_event,
    };

    const EPOCH: u64 = 0xabcd_0000_0000_0001;

    fn client(seq: u64, session: Option<Uuid>, payload: &[u8]) -> Bytes {
        finish_event(
            reserve_client_event(&ClientEventFields {
                published_at_ms: 1_700_000_000_000 + seq as i64,
                user_id: Uuid::from_u128(9),
                device_session_id: session,
                kind: "game.turn_resolved",
                payload,
                event_id: "ev",
                request_id: "",
                trace_id: "tr",
            }),
            Cursor::new(EPOCH, seq),
        )
    }

    #[test]
    fn batches_decode_to_what_prost_decodes() {
        let invalidation = finish_event(
            reserve_event(&proto::PushEvent {
                cursor: String::new(),
                published_at_ms: -3,
                kind: Some(proto::push_event::Kind::SessionInvalidation(
                    proto::SessionInvalidation {
                        user_id: Uuid::from_u128(5).to_string(),
                        device_session_id: Some(Uuid::from_u128(6).to_string()),
                        reason: "revoked".into(),
                    },
                )),
            }),
            Cursor::new(EPOCH, 3),
        );
        let frame = Frame::events(vec![
            client(1, None, br#"{"a":1}"#),
            client(2, Some(Uuid::from_u128(4)), b""),
            invalidation,
        ])
        .to_bytes();
        let by_prost = proto::PushMessage::decode(frame.clone()).expect("prost decodes");
        let Some(proto::push_message::Kind::Events(expected)) = by_prost.kind else {
            panic!("events")
        };
        let Received::Events(batch) = decode(frame).expect("decodes") else {
            panic!("events")
        };
        assert_eq!(batch.len(), expected.events.len());
        let events: Vec<Event> = batch
            .collect::<Result<_, _>>()
            .expect("every event decodes");
        assert_eq!(events.len(), expected.events.len());
        for (got, want) in events.iter().zip(&expected.events) {
            assert_eq!(got.cursor.to_string(), want.cursor);
            assert_eq!(got.published_at_ms, want.published_at_ms);
            match (&got.body, &want.kind) {
                (EventBody::Client(g), Some(proto::push_event::Kind::ClientEvent(w))) => {
                    assert_eq!(g.user_id.to_string(), w.user_id);
                    assert_eq!(
                        g.device_session_id.map(|s| s.to_string()),
                        w.device_session_id
                    );
                    assert_eq!(g.kind.as_str(), w.kind);
                    assert_eq!(g.payload, w.payload);
                    assert_eq!(g.event_id.as_str(), w.event_id);
                    assert_eq!(g.request_id.as_str(), w.request_id);
                    assert_eq!(g.trace_id.as_str(), w.trace_id);
                }
                (
                    EventBody::SessionInvalidation {
                        user_id,
                        device_session_id,
                        reason,
                    },
                    Some(proto::push_event::Kind::SessionInvalidation(w)),
                ) => {
                    assert_eq!(user_id.to_string(), w.user_id);
                    assert_eq!(
                        device_session_id.map(|s| s.to_string()),
                        w.device_session_id
                    );
                    assert_eq!(reason.as_str(), w.reason);
                }
                other => panic!("kinds differ: {other:?}"),
            }
        }
    }

    #[test]
    fn other_messages_decode_and_unknown_fields_are_skipped() {
        let stale = proto::PushMessage {
            kind: Some(proto::push_message::Kind::Stale(proto::Stale {
                reason: 3,
                requested: "x".into(),
                oldest: String::new(),
                head: Cursor::new(EPOCH, 9).to_string(),
                lost: 4,
            })),
        };
        let Received::Stale(s) = decode(Bytes::from(stale.encode_to_vec())).expect("decodes")
        else {
            panic!("stale")
        };
        assert_eq!((s.reason, s.lost), (3, 4));
        let resumed = proto::PushMessage {
            kind: Some(proto::push_message::Kind::Resumed(proto::Resumed {
                head: "h".into(),
            })),
        };
        assert_eq!(
            decode(Bytes::from(resumed.encode_to_vec())),
            Ok(Received::Resumed(proto::Resumed { head: "h".into() }))
        );
        // A field this contract does not have (number 9, varint) before the
        // events: skipped.
        let mut frame = vec![9 << 3, 1];
        frame.extend_from_slice(&Frame::events(vec![client(7, None, b"1")]).to_bytes());
        let Received::Events(mut batch) = decode(Bytes::from(frame)).expect("decodes") else {
            panic!("events")
        };
        assert_eq!(batch.next().expect("one").expect("decodes").cursor.seq, 7);
        assert!(batch.next().is_none());
        assert_eq!(decode(Bytes::new()), Ok(Received::Unknown));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let good = Frame::events(vec![client(1, None, br#"{"a":1}"#)]).to_bytes();
        // Every truncation of a valid frame, and every single-byte change.
        // Events are decoded as they are taken: take them all.
        let take_all = |frame: Bytes| {
            if let Ok(Received::Events(batch)) = decode(frame) {
                let expected = batch.len();
                assert_eq!(batch.count(), expected, "every event counted is given");
            }
        };
        for end in 0..good.len() {
            take_all(good.slice(..end));
        }
        for i in 0..good.len() {
            for b in [0u8, 0x7f, 0x80, 0xff] {
                let mut bad = good.to_vec();
                bad[i] = b;
                take_all(Bytes::from(bad));
            }
        }
        assert!(decode(good.slice(..good.len() - 1)).is_err());
        // A cursor that is not one.
        let mut bad = proto::PushEvent::decode(client(1, None, b"1")).expect("decodes");
        bad.cursor = "nope".into();
        let frame = Frame::events(vec![Bytes::from(bad.encode_to_vec())]).to_bytes();
        let Ok(Received::Events(mut batch)) = decode(frame) else {
            panic!("the batch's outline decodes")
        };
        assert_eq!(batch.next(), Some(Err(DecodeError("malformed cursor"))));
        // A body that does not decode: the event keeps its place.
        let mut bad = proto::PushEvent::decode(client(2, None, b"1")).expect("decodes");
        if let Some(proto::push_event::Kind::ClientEvent(c)) = &mut bad.kind {
            c.user_id = "not-a-uuid".into();
        }
        let frame = Frame::events(vec![Bytes::from(bad.encode_to_vec())]).to_bytes();
        let Ok(Received::Events(mut batch)) = decode(frame) else {
            panic!("the frame decodes")
        };
        let event = batch.next().expect("one").expect("its place decodes");
        assert_eq!(event.cursor.seq, 2);
        assert_eq!(
            event.body,
            EventBody::Malformed(DecodeError("a user or session id is not a UUID"))
        );
    }
}
