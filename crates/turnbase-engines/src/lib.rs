//! Turnbase's reference games, each a set of rules on the engine kit:
//! [`conquest`] (simultaneous, 2–16 players) and [`reversi`] (sequential,
//! 2 players). Both play bot seats.
//!
//! They ship as one binary, `turnbase-engines <game>`: one link step on
//! small build machines, one image for the runtime's Docker driver, and the
//! kit's server code once on disk; each process still hosts one kind.

pub mod conquest;
pub mod reversi;

/// The manifests the reference engines serve (with the kit's default
/// limits), for a platform that registers them without starting them.
pub fn manifests() -> Vec<turnbase_engine_kit::protocol::Manifest> {
    use turnbase_engine_kit::host::{DEFAULT_LIMITS, manifest_of};
    vec![
        manifest_of(&conquest::Conquest, DEFAULT_LIMITS),
        manifest_of(&reversi::Reversi, DEFAULT_LIMITS),
    ]
}
