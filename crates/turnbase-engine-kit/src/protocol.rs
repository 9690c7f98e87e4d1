//! The engine protocol's wire types, version 1 (`docs/engine-protocol.md`).
//!
//! These are the JSON bodies an engine sends and receives. The kit's server
//! speaks them, the conformance checker reads them, and the backend will
//! use them as the engine's client. Nothing here knows a game's rules.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// How a game's turns advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Everyone sends orders; a turn resolves them together on a schedule.
    Simultaneous,
    /// Players move in an order the engine decides; each move resolves at
    /// once, under a move clock.
    Sequential,
}

/// `GET /manifest`: what the engine plays and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub protocol: u32,
    /// The kind's name, e.g. `conquest`: lowercase letters, digits and `-`.
    pub kind: String,
    pub version: String,
    pub title: String,
    pub mode: Mode,
    pub min_players: u32,
    pub max_players: u32,
    /// Whether the engine can play a seat itself (bot seats, absent players).
    pub bots: bool,
    /// JSON Schema of the settings, in the subset `settings` documents; every
    /// property has a default.
    pub settings_schema: Value,
    /// JSON pointers into a player's view that hold that player's own
    /// secrets; no other player's view may contain them.
    #[serde(default)]
    pub private_fields: Vec<String>,
    pub limits: Limits,
}

/// What the engine refuses beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub max_orders_per_turn: u32,
}

/// One seat of a game, as the platform names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Player {
    pub player_id: String,
    pub name: String,
    #[serde(default)]
    pub bot: bool,
}

/// `POST /games/{game}/init`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    pub seed: u64,
    #[serde(default = "empty_object")]
    pub settings: Value,
    pub players: Vec<Player>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// `PUT /games/{game}/players/{player}/orders`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersRequest {
    pub turn: u32,
    /// A list of orders; each element's shape is the game's.
    pub orders: Value,
}

/// The answer to an orders call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersAnswer {
    pub turn: u32,
    /// Whether the orders were kept (false for a dry run).
    pub stored: bool,
    /// How many orders the player now has for the turn.
    pub count: usize,
    /// Sequential engines apply a move at once and answer with its
    /// resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
}

/// `PUT /games/{game}/players/{player}/control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    pub bot: bool,
}

/// A seat's place in the game.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standing {
    pub player_id: String,
    /// 1 is first; tied players share a rank.
    pub rank: u32,
    /// The game's score (Conquest: planets held; Reversi: discs).
    pub score: i64,
    /// `playing`, `out` (eliminated) or `finished`.
    pub status: String,
}

/// The result of resolving one turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    pub turn: u32,
    /// The turn now open; `None` once the game is over.
    pub next_turn: Option<u32>,
    /// Player ids expected to act in the next turn.
    pub to_move: Vec<String>,
    pub finished: bool,
    /// Set when finished: every player ranked first.
    pub winners: Vec<String>,
    pub standings: Vec<Standing>,
    /// A short text per player, for notifications: player id → text.
    pub summaries: std::collections::BTreeMap<String, String>,
    /// What every player may know happened.
    pub events: Vec<Value>,
}

/// `GET /games/{game}/state`: public, no secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GameState {
    pub game: String,
    pub kind: String,
    pub turn: u32,
    pub to_move: Vec<String>,
    pub finished: bool,
    pub winners: Vec<String>,
    pub standings: Vec<Standing>,
    /// Player ids whose seat the engine plays.
    pub bots: Vec<String>,
}

/// `GET /games/{game}/players/{player}/options`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub turn: u32,
    /// Whether the player is expected to act this turn.
    pub to_move: bool,
    /// True when the player has nothing they could order: the platform does
    /// not wait for, remind or extend such a seat.
    pub nothing_to_order: bool,
    /// The game's description of the choices.
    pub options: Value,
    /// One valid set of orders the player could send now, when there is one,
    /// so that generic tools (the checker, a client's "suggest") can act.
    pub example: Option<Value>,
}

/// `GET /games/{game}/players/{player}/view`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    /// The turn the view shows the start of.
    pub turn: u32,
    pub view: Value,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Problem>,
}

/// One precise complaint about a request: where (a JSON pointer into the
/// request body) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub path: String,
    pub reason: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Whether `id` may name a game or a player: 1 to 64 of ASCII letters,
/// digits, `-` and `_` (so that it is safe as a file name and in a URL).
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_file_and_url_safe() {
        assert!(valid_id("0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"));
        assert!(valid_id("g_1"));
        for bad in ["", "..", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?} should be refused");
        }
    }
}
