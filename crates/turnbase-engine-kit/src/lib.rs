//! The Turnbase engine kit: write a game's rules, get an engine.
//!
//! An engine author implements [`Game`]: the settings, setting a game up
//! from a seed, checking a player's orders, resolving a turn, what one
//! player may see, and what a bot would order. The kit does the rest: the
//! engine protocol's HTTP server ([`server`]), hosting many games in one
//! process ([`host`]), one state file per game per turn written atomically
//! and synced before any answer ([`store`]), idempotent resolution,
//! per-turn deterministic randomness ([`rng`]), request limits, and
//! graceful shutdown. [`check`] is the conformance checker that tells any
//! engine, in any language, whether it keeps the protocol.
//!
//! Nothing in the kit knows a game's rules; nothing in a game knows HTTP or
//! files.

pub mod check;
pub mod host;
pub mod protocol;
pub mod rng;
pub mod server;
pub mod settings;
mod store;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use host::{Host, HostError};
pub use protocol::{Mode, Player, Problem};
pub use rand_chacha::ChaCha8Rng as Rng;
pub use settings::Setting;

/// What an engine tells the platform about its game, for the manifest.
#[derive(Debug, Clone)]
pub struct Description {
    /// The kind's name: lowercase letters, digits and `-`.
    pub kind: &'static str,
    pub version: &'static str,
    pub title: &'static str,
    pub mode: Mode,
    pub min_players: u32,
    pub max_players: u32,
    pub bots: bool,
    pub settings: Vec<Setting>,
    /// JSON pointers into a player's view holding that player's secrets.
    pub private_fields: Vec<&'static str>,
}

/// What a turn's resolution tells beyond the new state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Events every player may know about.
    pub events: Vec<Value>,
    /// One short text per seat (by seat index) for notifications; empty
    /// texts are left out.
    pub summaries: Vec<String>,
}

/// A seat's standing, by seat index.
#[derive(Debug, Clone, PartialEq)]
pub struct SeatStanding {
    pub rank: u32,
    pub score: i64,
    /// Out of the game (eliminated, forfeited).
    pub out: bool,
}

/// What a seat may order now.
#[derive(Debug, Clone, PartialEq)]
pub struct SeatOptions<O> {
    /// The game's description of the choices.
    pub options: Value,
    /// One valid set of orders, when the seat has any choice.
    pub example: Option<Vec<O>>,
}

/// A game's rules. Every method is pure: state in, state out, randomness
/// from the stream the kit passes, so that the kit can persist, replay and
/// retry freely.
///
/// Orders travel as a JSON list; each element is parsed into
/// [`Game::Order`] on its own, so a malformed order is reported with its
/// index before [`Game::validate`] sees the rest.
pub trait Game: Send + Sync + 'static {
    /// The settings, read from the manifest's settings object after the kit
    /// validated it against the schema and filled in the defaults.
    type Settings: DeserializeOwned + Serialize + Clone + Send + Sync;
    type State: DeserializeOwned + Serialize + Clone + Send + Sync;
    type Order: DeserializeOwned + Serialize + Clone + Send + Sync;

    fn describe(&self) -> Description;

    /// Sets a game up for `players` (seat index = position). Settings that
    /// the schema allows but that do not work together (a map too small for
    /// its planets) are refused with problems whose paths point into the
    /// settings.
    fn init(
        &self,
        settings: &Self::Settings,
        players: &[Player],
        rng: &mut Rng,
    ) -> Result<Self::State, Vec<Problem>>;

    /// Seats expected to act in the open turn; empty once finished.
    fn to_move(&self, state: &Self::State) -> Vec<usize>;

    /// Checks `seat`'s orders for the open turn. Problem paths are JSON
    /// pointers into the list of orders (`/2/ships`).
    fn validate(&self, state: &Self::State, seat: usize, orders: &[Self::Order]) -> Vec<Problem>;

    /// Resolves the open turn. `orders` has one entry per seat: `Some` for
    /// the orders to apply (sent by the player or chosen by the bot), `None`
    /// for a seat that sent nothing (the game's default: Conquest holds,
    /// Reversi applies its timeout rule). In sequential games a move is a
    /// resolution with only the mover's entry set.
    fn resolve(
        &self,
        state: &mut Self::State,
        orders: &[Option<Vec<Self::Order>>],
        rng: &mut Rng,
    ) -> Report;

    /// `Some(winners)` once the game is over.
    fn winners(&self, state: &Self::State) -> Option<Vec<usize>>;

    /// Every seat's standing, by seat index.
    fn standings(&self, state: &Self::State) -> Vec<SeatStanding>;

    /// What `seat` may see; `pending` is the seat's stored orders for the
    /// open turn (simultaneous games), shown back to that player only.
    fn view(&self, state: &Self::State, seat: usize, pending: Option<&[Self::Order]>) -> Value;

    fn options(&self, state: &Self::State, seat: usize) -> SeatOptions<Self::Order>;

    /// The orders the engine's bot gives for `seat` now. They must pass
    /// [`Game::validate`].
    fn bot_orders(&self, state: &Self::State, seat: usize, rng: &mut Rng) -> Vec<Self::Order>;
}
