//! Deterministic randomness: every random draw of a game comes from its seed
//! and the turn number, so that the same seed and orders always give the
//! same game, and a turn replayed after a crash draws exactly what it drew
//! the first time.

use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;

/// What a stream is used for; each gets its own so that, say, a bot
/// thinking longer never shifts the dice of the battle that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Setting the game up (turn 0).
    Init,
    /// Resolving a turn.
    Resolve,
    /// Bots choosing their orders.
    Bots,
}

/// The random stream for `purpose` in `turn` of the game seeded `seed`:
/// ChaCha8 keyed by the seed, one stream number per (turn, purpose).
pub fn stream(seed: u64, turn: u32, purpose: Purpose) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let lane = match purpose {
        Purpose::Init => 0,
        Purpose::Resolve => 1,
        Purpose::Bots => 2,
    };
    rng.set_stream(u64::from(turn) << 2 | lane);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    fn draws(mut rng: ChaCha8Rng) -> Vec<u32> {
        (0..4).map(|_| rng.random()).collect()
    }

    #[test]
    fn same_inputs_same_draws_and_streams_differ() {
        assert_eq!(
            draws(stream(7, 3, Purpose::Resolve)),
            draws(stream(7, 3, Purpose::Resolve))
        );
        let others = [
            stream(8, 3, Purpose::Resolve),
            stream(7, 4, Purpose::Resolve),
            stream(7, 3, Purpose::Bots),
        ];
        for other in others {
            assert_ne!(draws(stream(7, 3, Purpose::Resolve)), draws(other));
        }
    }
}
