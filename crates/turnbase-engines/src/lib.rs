//! Turnbase's reference games, each a set of rules on the engine kit:
//! [`conquest`] (simultaneous, 2–16 players) and [`reversi`] (sequential,
//! 2 players). Both play bot seats.
//!
//! They ship as one binary, `turnbase-engines <game>`: one link step on
//! small build machines, one image for the runtime's Docker driver, and the
//! kit's server code once on disk; each process still hosts one kind.

pub mod conquest;
pub mod reversi;
