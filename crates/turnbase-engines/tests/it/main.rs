//! The reference engines' tests: one binary (link time on two cores).

mod conformance;
mod crash;
mod edge;
mod openapi;
mod props;
mod transcripts;

use serde_json::{Value, json};
use turnbase_engine_kit::Host;
use turnbase_engine_kit::host::DEFAULT_LIMITS;
use turnbase_engine_kit::protocol::InitRequest;

/// A host over a fresh data folder, kept alive with it.
pub struct World<G: turnbase_engine_kit::Game> {
    pub host: Host<G>,
    pub dir: tempfile::TempDir,
}

pub fn world<G: turnbase_engine_kit::Game>(rules: G) -> World<G> {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let host = Host::open(rules, dir.path(), DEFAULT_LIMITS).expect("host opens");
    World { host, dir }
}

/// An init request for `players` named p1…pN (bots where asked).
pub fn setup(seed: u64, settings: Value, bots: &[bool]) -> InitRequest {
    let players = bots
        .iter()
        .enumerate()
        .map(|(i, bot)| json!({"player_id": format!("p{}", i + 1), "name": format!("Player {}", i + 1), "bot": bot}))
        .collect();
    serde_json::from_value(
        json!({"seed": seed, "settings": settings, "players": Value::Array(players)}),
    )
    .expect("a well-formed init request")
}

/// The path of the engines binary cargo built for these tests.
pub fn engines_bin() -> &'static str {
    env!("CARGO_BIN_EXE_turnbase-engines")
}
