//! The Turnbase push pipeline: the `SubscribePush` contract ([`proto`]),
//! cursors ([`Cursor`]), the ring of recent events, the [`PushService`]
//! that domain services publish to, and its gRPC server ([`server`]).

pub mod cursor;
pub mod payload;
pub mod received;
pub mod ring;
pub mod server;
pub mod service;
pub mod wire;

/// Types and the gRPC client generated from `proto/turnbase/push/v1/push.proto`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod proto {
    tonic::include_proto!("turnbase.push.v1");
}

pub use cursor::{Cursor, CursorError};
pub use payload::{InvalidJson, JsonPayload};
pub use ring::RingLimits;
pub use service::{
    ClientEventInput, Opening, PublishError, PushConfig, PushService, SubscribeError, Subscription,
    SubscriptionEnd,
};
