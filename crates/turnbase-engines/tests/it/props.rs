//! Property tests of the two rule sets, driven through the `Game` trait.

use proptest::prelude::*;
use rand::Rng as _;
use rand::SeedableRng as _;
use turnbase_engine_kit::rng::{Purpose, stream};
use turnbase_engine_kit::{Game, Player};
use turnbase_engines::conquest::{Conquest, Send, Settings, State};
use turnbase_engines::reversi::{self, Move, Reversi};

fn players(n: usize) -> Vec<Player> {
    (0..n)
        .map(|i| Player {
            player_id: format!("p{i}"),
            name: format!("P{i}"),
            bot: false,
        })
        .collect()
}

fn conquest(seed: u64, seats: usize, planets: i64, map_size: i64) -> State {
    let settings = Settings {
        map_size,
        planets,
        turn_limit: 40,
        production_min: 0,
        production_max: 6,
        range: 22,
    };
    Conquest
        .init(
            &settings,
            &players(seats),
            &mut stream(seed, 0, Purpose::Init),
        )
        .expect("settings that fit")
}

/// Orders for turn `state.turn`: bots for even seats, the example for odd
/// ones on turns divisible by 3, otherwise nothing (hold).
fn conquest_orders(state: &State, seed: u64) -> Vec<Option<Vec<Send>>> {
    let mut dice = stream(seed, state.turn, Purpose::Bots);
    Conquest
        .to_move(state)
        .into_iter()
        .fold(vec![None; state.players.len()], |mut all, seat| {
            all[seat] = if seat % 2 == 0 {
                Some(Conquest.bot_orders(state, seat, &mut dice))
            } else if state.turn.is_multiple_of(3) {
                Conquest.options(state, seat).example
            } else {
                None
            };
            all
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn conquest_ships_come_only_from_production_and_go_only_in_battle(
        seed in any::<u64>(), seats in 2usize..7, extra in 0i64..20, turns in 1u32..25,
    ) {
        let mut state = conquest(seed, seats, seats as i64 + extra, 50);
        for _ in 0..turns {
            if state.winners.is_some() { break; }
            let orders = conquest_orders(&state, seed);
            for (seat, seat_orders) in orders.iter().enumerate() {
                if let Some(o) = seat_orders {
                    prop_assert_eq!(Conquest.validate(&state, seat, o), vec![], "seat {} sent invalid orders", seat);
                }
            }
            let before = state.total_ships();
            let mut dice = stream(seed, state.turn, Purpose::Resolve);
            Conquest.resolve(&mut state, &orders, &mut dice);
            let produced: u64 = state.planets.iter().filter(|p| p.owner.is_some()).map(|p| p.production).sum();
            prop_assert_eq!(produced, state.produced);
            let mut destroyed = 0;
            for battle in &state.battles {
                for side in &battle.sides {
                    prop_assert!(side.after <= side.before, "a side gained ships in battle: {:?}", battle);
                    destroyed += side.before - side.after;
                }
            }
            prop_assert_eq!(state.total_ships(), before + produced - destroyed);
        }
    }

    #[test]
    fn conquest_replays_identically_from_seed_and_orders(seed in any::<u64>(), seats in 2usize..6) {
        let play = || {
            let mut state = conquest(seed, seats, 20, 45);
            let mut log = Vec::new();
            for _ in 0..12 {
                let orders = conquest_orders(&state, seed);
                let mut dice = stream(seed, state.turn, Purpose::Resolve);
                let report = Conquest.resolve(&mut state, &orders, &mut dice);
                log.push(report.summaries);
            }
            (state, log)
        };
        let (first, first_log) = play();
        let (second, second_log) = play();
        prop_assert_eq!(first, second);
        prop_assert_eq!(first_log, second_log);
    }

    #[test]
    fn conquest_views_hold_only_planets_in_sight(seed in any::<u64>(), seats in 2usize..6, turns in 0u32..10) {
        let mut state = conquest(seed, seats, 25, 60);
        for _ in 0..turns {
            let orders = conquest_orders(&state, seed);
            let mut dice = stream(seed, state.turn, Purpose::Resolve);
            Conquest.resolve(&mut state, &orders, &mut dice);
        }
        let range2 = state.settings.range.pow(2);
        for seat in 0..seats {
            let view = Conquest.view(&state, seat, None);
            let shown: Vec<usize> = view["planets"].as_array().expect("planets").iter()
                .map(|p| p["id"].as_u64().expect("id") as usize).collect();
            for (id, planet) in state.planets.iter().enumerate() {
                let in_sight = state.planets.iter().any(|own| own.owner == Some(seat)
                    && (own.x - planet.x).pow(2) + (own.y - planet.y).pow(2) <= range2);
                prop_assert_eq!(shown.contains(&id), in_sight, "planet {} for seat {}", id, seat);
            }
            for fleet in view["incoming"].as_array().expect("incoming") {
                let to = fleet["to"].as_u64().expect("to") as usize;
                prop_assert_eq!(state.planets[to].owner, Some(seat));
            }
            let own = view["you"]["fleets"].as_array().expect("fleets").len();
            prop_assert_eq!(own, state.fleets.iter().filter(|f| f.owner == seat).count());
        }
    }

    #[test]
    fn reversi_moves_agree_with_a_naive_reference(seed in any::<u64>()) {
        let mut dice = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let own: u64 = dice.random::<u64>() & dice.random::<u64>();
        let opponent: u64 = dice.random::<u64>() & !own;
        prop_assert_eq!(reversi::legal_moves(own, opponent), naive_moves(own, opponent));
        for square in 0..64 {
            if (own | opponent) & (1 << square) == 0 {
                prop_assert_eq!(reversi::flips(own, opponent, square), naive_flips(own, opponent, square), "square {}", square);
            }
        }
    }

    #[test]
    fn reversi_discs_follow_the_rules_and_bots_play_legally(seed in any::<u64>()) {
        let mut state = Reversi
            .init(&reversi::Settings { first: reversi::First::Random, timeout: reversi::Timeout::Pass },
                  &players(2), &mut stream(seed, 0, Purpose::Init))
            .expect("init");
        let mut turn = 1;
        while let Some(mover) = state.to_move {
            let orders = Reversi.bot_orders(&state, mover, &mut stream(seed, turn, Purpose::Bots));
            prop_assert_eq!(Reversi.validate(&state, mover, &orders), vec![]);
            let square = reversi::parse_square(&orders[0].square).expect("a square");
            let flipped = reversi::flips(state.discs[mover], state.discs[1 - mover], square).count_ones();
            let (mine, theirs) = (state.discs[mover].count_ones(), state.discs[1 - mover].count_ones());
            let mut all = vec![None, None];
            all[mover] = Some(orders);
            Reversi.resolve(&mut state, &all, &mut stream(seed, turn, Purpose::Resolve));
            prop_assert_eq!(state.discs[mover].count_ones(), mine + flipped + 1);
            prop_assert_eq!(state.discs[1 - mover].count_ones(), theirs - flipped);
            prop_assert_eq!(state.discs[0] & state.discs[1], 0);
            if let Some(next) = state.to_move {
                prop_assert!(reversi::legal_moves(state.discs[next], state.discs[1 - next]) != 0, "the side to move has a move");
            } else {
                for seat in 0..2 {
                    prop_assert_eq!(reversi::legal_moves(state.discs[seat], state.discs[1 - seat]), 0);
                }
            }
            turn += 1;
            prop_assert!(turn <= 61, "a game has at most 60 moves");
        }
        prop_assert!(Reversi.winners(&state).is_some());
    }
}

/// Square by square, direction by direction, the way the rules are told.
fn naive_flips(own: u64, opponent: u64, square: u32) -> u64 {
    let (row, col) = ((square / 8) as i32, (square % 8) as i32);
    let mut flipped = 0;
    for (dr, dc) in [
        (0, 1),
        (0, -1),
        (1, 0),
        (-1, 0),
        (1, 1),
        (1, -1),
        (-1, 1),
        (-1, -1),
    ] {
        let mut line = 0u64;
        let (mut r, mut c) = (row + dr, col + dc);
        while (0..8).contains(&r) && (0..8).contains(&c) {
            let bit = 1u64 << (r * 8 + c);
            if opponent & bit != 0 {
                line |= bit;
            } else {
                if own & bit != 0 {
                    flipped |= line;
                }
                break;
            }
            r += dr;
            c += dc;
        }
    }
    flipped
}

fn naive_moves(own: u64, opponent: u64) -> u64 {
    (0..64)
        .filter(|&s| (own | opponent) & (1 << s) == 0 && naive_flips(own, opponent, s) != 0)
        .fold(0, |all, s| all | (1 << s))
}

#[test]
fn reversi_refuses_bad_moves_precisely() {
    let state = Reversi
        .init(
            &reversi::Settings {
                first: reversi::First::FirstSeat,
                timeout: reversi::Timeout::Pass,
            },
            &players(2),
            &mut stream(1, 0, Purpose::Init),
        )
        .expect("init");
    let cases = [
        (vec!["d4"], "/0/square", "d4 is occupied"),
        (
            vec!["a1"],
            "/0/square",
            "a1 flips no disc, so it is not a legal move",
        ),
        (
            vec!["z9"],
            "/0/square",
            "\"z9\" is not a square; use a1 to h8",
        ),
        (
            vec!["d3", "c4"],
            "",
            "send exactly one move, not 2 (passing is automatic)",
        ),
        (
            vec![],
            "",
            "send exactly one move, not 0 (passing is automatic)",
        ),
    ];
    for (squares, path, reason) in cases {
        let orders: Vec<Move> = squares
            .iter()
            .map(|s| Move {
                square: s.to_string(),
            })
            .collect();
        let problems = Reversi.validate(&state, 0, &orders);
        assert_eq!(
            problems,
            vec![turnbase_engine_kit::Problem::new(path, reason)],
            "{squares:?}"
        );
    }
}

#[test]
fn conquest_refuses_bad_orders_precisely() {
    let state = conquest(9, 2, 12, 40);
    let home = state
        .planets
        .iter()
        .position(|p| p.owner == Some(0))
        .expect("a home");
    let theirs = state
        .planets
        .iter()
        .position(|p| p.owner == Some(1))
        .expect("their home");
    let target = (0..state.planets.len())
        .find(|&t| {
            t != home
                && (state.planets[t].x - state.planets[home].x).pow(2)
                    + (state.planets[t].y - state.planets[home].y).pow(2)
                    <= 22 * 22
        })
        .expect("a planet in range");
    let send = |from: usize, to: usize, ships: u64| Send {
        from: from as u32,
        to: to as u32,
        ships,
    };
    let cases = [
        (
            vec![send(theirs, home, 1)],
            "/0/from",
            format!("planet {theirs} is not yours"),
        ),
        (
            vec![send(99, home, 1)],
            "/0/from",
            "there is no planet 99".to_string(),
        ),
        (
            vec![send(home, 99, 1)],
            "/0/to",
            "there is no planet 99".to_string(),
        ),
        (
            vec![send(home, home, 1)],
            "/0/to",
            "a fleet must leave its planet".to_string(),
        ),
        (
            vec![send(home, target, 0)],
            "/0/ships",
            "must be at least 1".to_string(),
        ),
        (
            vec![send(home, target, 15), send(home, target, 6)],
            "/1/ships",
            format!("planet {home} has 20 ships; these orders send 21"),
        ),
    ];
    for (orders, path, reason) in cases {
        assert_eq!(
            Conquest.validate(&state, 0, &orders),
            vec![turnbase_engine_kit::Problem::new(path, reason.clone())],
            "{reason}"
        );
    }
}
