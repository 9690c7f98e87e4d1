//! Reversi: two players, an 8×8 board, played one move at a time.
//!
//! Standard rules: a move must flip at least one of the opponent's discs
//! (every line of them closed by one of the mover's); a player with no
//! legal move passes automatically; the game ends when neither can move,
//! and the one with more discs wins (equal counts: both share first place).
//! The move clock's timeout rule is a setting: `pass` hands the move over,
//! `forfeit` ends the game with the late player losing.
//!
//! The board is two bitboards (bit `row * 8 + col`, `a1` = bit 0), so that
//! move generation is a handful of shifts per direction.

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use turnbase_engine_kit::{
    Description, Game, Mode, Player, Problem, Report, Rng, SeatOptions, SeatStanding, Setting,
};

/// Who moves first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum First {
    /// Drawn from the game's seed.
    Random,
    /// The first seat.
    FirstSeat,
}

/// What a move clock running out does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timeout {
    Pass,
    Forfeit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub first: First,
    pub timeout: Timeout,
}

/// One move: the square to play, `a1` to `h8`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Move {
    pub square: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Discs by seat: `discs[0]` is seat 0's.
    pub discs: [u64; 2],
    /// The seat playing black (who moved first).
    pub black: usize,
    /// The seat to move; `None` once over.
    pub to_move: Option<usize>,
    /// The seat that forfeited, if the game ended that way.
    pub forfeited: Option<usize>,
    pub timeout: Timeout,
    /// The last move played, for the views.
    pub last: Option<String>,
    /// Player ids, by seat (events and views name players by id).
    pub players: Vec<String>,
    /// Display names, by seat (summaries are read by people).
    #[serde(default)]
    pub names: Vec<String>,
}

/// The Reversi engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reversi;

const NOT_A: u64 = 0xfefe_fefe_fefe_fefe;
const NOT_H: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const DIRECTIONS: [i8; 8] = [1, -1, 8, -8, 9, 7, -7, -9];

fn shift(board: u64, direction: i8) -> u64 {
    match direction {
        1 => (board << 1) & NOT_A,
        -1 => (board >> 1) & NOT_H,
        8 => board << 8,
        -8 => board >> 8,
        9 => (board << 9) & NOT_A,
        7 => (board << 7) & NOT_H,
        -7 => (board >> 7) & NOT_A,
        _ => (board >> 9) & NOT_H,
    }
}

/// Every square `own` may play against `opponent`.
pub fn legal_moves(own: u64, opponent: u64) -> u64 {
    let empty = !(own | opponent);
    let mut moves = 0;
    for direction in DIRECTIONS {
        let mut line = shift(own, direction) & opponent;
        for _ in 0..5 {
            line |= shift(line, direction) & opponent;
        }
        moves |= shift(line, direction) & empty;
    }
    moves
}

/// The discs a move on `square` flips.
pub fn flips(own: u64, opponent: u64, square: u32) -> u64 {
    let mut flipped = 0;
    for direction in DIRECTIONS {
        let mut line = 0;
        let mut probe = shift(1 << square, direction);
        while probe & opponent != 0 {
            line |= probe;
            probe = shift(probe, direction);
        }
        if probe & own != 0 {
            flipped |= line;
        }
    }
    flipped
}

/// `d3` → bit 19.
pub fn parse_square(text: &str) -> Option<u32> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 {
        return None;
    }
    let col = bytes[0].to_ascii_lowercase().checked_sub(b'a')?;
    let row = bytes[1].checked_sub(b'1')?;
    (col < 8 && row < 8).then(|| u32::from(row) * 8 + u32::from(col))
}

pub fn square_name(square: u32) -> String {
    let col = char::from(b'a' + (square % 8) as u8);
    let row = char::from(b'1' + (square / 8) as u8);
    format!("{col}{row}")
}

fn squares(board: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |s| board & (1 << s) != 0)
}

impl State {
    fn legal_for(&self, seat: usize) -> u64 {
        legal_moves(self.discs[seat], self.discs[1 - seat])
    }

    fn color(&self, seat: usize) -> &'static str {
        if seat == self.black { "black" } else { "white" }
    }

    /// Whose move it is after `seat` acted: the other player if they can
    /// move, else `seat` again if it can, else nobody (the game is over).
    fn next_after(&self, seat: usize) -> Option<usize> {
        let other = 1 - seat;
        if self.legal_for(other) != 0 {
            Some(other)
        } else if self.legal_for(seat) != 0 {
            Some(seat)
        } else {
            None
        }
    }

    /// The seat's display name (its id for games stored before names were).
    fn name(&self, seat: usize) -> &str {
        self.names.get(seat).unwrap_or(&self.players[seat])
    }

    fn count(&self, seat: usize) -> u32 {
        self.discs[seat].count_ones()
    }
}

impl Game for Reversi {
    type Settings = Settings;
    type State = State;
    type Order = Move;

    fn describe(&self) -> Description {
        Description {
            kind: "reversi",
            version: "1.0.0",
            title: "Reversi",
            mode: Mode::Sequential,
            min_players: 2,
            max_players: 2,
            bots: true,
            settings: vec![
                Setting::choice(
                    "first",
                    "Who plays black and moves first: drawn from the seed, or the first seat",
                    &["random", "first_seat"],
                    "random",
                ),
                Setting::choice(
                    "timeout",
                    "When the move clock runs out: the late player passes, or forfeits the game",
                    &["pass", "forfeit"],
                    "pass",
                ),
            ],
            private_fields: vec![],
        }
    }

    fn init(
        &self,
        settings: &Settings,
        players: &[Player],
        rng: &mut Rng,
    ) -> Result<State, Vec<Problem>> {
        let black = match settings.first {
            First::FirstSeat => 0,
            First::Random => usize::from(rng.random::<bool>()),
        };
        // d5 and e4 black, d4 and e5 white.
        let black_discs = (1 << 35) | (1 << 28);
        let white_discs = (1 << 27) | (1 << 36);
        let mut discs = [0; 2];
        discs[black] = black_discs;
        discs[1 - black] = white_discs;
        Ok(State {
            discs,
            black,
            to_move: Some(black),
            forfeited: None,
            timeout: settings.timeout,
            last: None,
            players: players.iter().map(|p| p.player_id.clone()).collect(),
            names: players.iter().map(|p| p.name.clone()).collect(),
        })
    }

    fn to_move(&self, state: &State) -> Vec<usize> {
        state.to_move.into_iter().collect()
    }

    fn validate(&self, state: &State, seat: usize, orders: &[Move]) -> Vec<Problem> {
        if orders.len() != 1 {
            return vec![Problem::new(
                "",
                format!(
                    "send exactly one move, not {} (passing is automatic)",
                    orders.len()
                ),
            )];
        }
        let text = &orders[0].square;
        let Some(square) = parse_square(text) else {
            return vec![Problem::new(
                "/0/square",
                format!("{text:?} is not a square; use a1 to h8"),
            )];
        };
        let occupied = state.discs[0] | state.discs[1];
        if occupied & (1 << square) != 0 {
            return vec![Problem::new("/0/square", format!("{text} is occupied"))];
        }
        if flips(state.discs[seat], state.discs[1 - seat], square) == 0 {
            return vec![Problem::new(
                "/0/square",
                format!("{text} flips no disc, so it is not a legal move"),
            )];
        }
        Vec::new()
    }

    fn resolve(&self, state: &mut State, orders: &[Option<Vec<Move>>], _rng: &mut Rng) -> Report {
        let Some(mover) = state.to_move else {
            return Report::default();
        };
        let mut events = Vec::new();
        let name = state.players[mover].clone();
        let played = orders
            .get(mover)
            .and_then(|o| o.as_ref())
            .and_then(|o| o.first())
            .and_then(|m| parse_square(&m.square));
        match played {
            Some(square) => {
                let flipped = flips(state.discs[mover], state.discs[1 - mover], square);
                state.discs[mover] |= flipped | (1 << square);
                state.discs[1 - mover] &= !flipped;
                state.last = Some(square_name(square));
                events.push(json!({
                    "type": "move", "player": name, "square": square_name(square),
                    "flipped": flipped.count_ones(),
                }));
                state.to_move = state.next_after(mover);
            }
            None if state.timeout == Timeout::Forfeit => {
                events.push(json!({"type": "timeout", "player": name, "rule": "forfeit"}));
                state.forfeited = Some(mover);
                state.to_move = None;
            }
            None => {
                events.push(json!({"type": "timeout", "player": name, "rule": "pass"}));
                let other = 1 - mover;
                state.to_move = if state.legal_for(other) != 0 {
                    Some(other)
                } else {
                    Some(mover)
                };
            }
        }
        if let Some(next) = state.to_move
            && next == mover
            && played.is_some()
        {
            events.push(json!({"type": "pass", "player": state.players[1 - mover]}));
        }
        if state.to_move.is_none() {
            events.push(json!({
                "type": "game_over",
                "discs": {state.players[0].clone(): state.count(0), state.players[1].clone(): state.count(1)},
            }));
        }
        let summaries = (0..2)
            .map(|seat| summary(state, seat, mover, played))
            .collect();
        Report { events, summaries }
    }

    fn winners(&self, state: &State) -> Option<Vec<usize>> {
        if state.to_move.is_some() {
            return None;
        }
        if let Some(loser) = state.forfeited {
            return Some(vec![1 - loser]);
        }
        Some(match state.count(0).cmp(&state.count(1)) {
            std::cmp::Ordering::Greater => vec![0],
            std::cmp::Ordering::Less => vec![1],
            std::cmp::Ordering::Equal => vec![0, 1],
        })
    }

    fn standings(&self, state: &State) -> Vec<SeatStanding> {
        let score = |seat: usize| i64::from(state.count(seat));
        (0..2)
            .map(|seat| {
                let out = state.forfeited == Some(seat);
                let behind = state.forfeited == Some(seat)
                    || (state.forfeited.is_none() && score(seat) < score(1 - seat));
                SeatStanding {
                    rank: if behind { 2 } else { 1 },
                    score: score(seat),
                    out,
                }
            })
            .collect()
    }

    fn view(&self, state: &State, seat: usize, _pending: Option<&[Move]>) -> Value {
        // Rank 8 first, files a to h left to right, as a board is drawn.
        let board: Vec<String> = (0..8)
            .rev()
            .map(|row| {
                (0..8)
                    .map(|col| {
                        let bit = 1u64 << (row * 8 + col);
                        if state.discs[state.black] & bit != 0 {
                            'B'
                        } else if state.discs[1 - state.black] & bit != 0 {
                            'W'
                        } else {
                            '.'
                        }
                    })
                    .collect()
            })
            .collect();
        let legal: Vec<String> = if state.to_move == Some(seat) {
            squares(state.legal_for(seat)).map(square_name).collect()
        } else {
            Vec::new()
        };
        json!({
            "you": {"player_id": state.players[seat], "color": state.color(seat)},
            "board": board,
            "to_move": state.to_move.map(|s| state.players[s].clone()),
            "discs": {"black": state.count(state.black), "white": state.count(1 - state.black)},
            "last_move": state.last,
            "legal_moves": legal,
        })
    }

    fn options(&self, state: &State, seat: usize) -> SeatOptions<Move> {
        let moves: Vec<String> = if state.to_move == Some(seat) {
            squares(state.legal_for(seat)).map(square_name).collect()
        } else {
            Vec::new()
        };
        SeatOptions {
            example: moves.first().map(|square| {
                vec![Move {
                    square: square.clone(),
                }]
            }),
            options: json!({"moves": moves}),
        }
    }

    fn bot_orders(&self, state: &State, seat: usize, rng: &mut Rng) -> Vec<Move> {
        let own = state.discs[seat];
        let opponent = state.discs[1 - seat];
        let mut best: Vec<u32> = Vec::new();
        let mut most = 0;
        for square in squares(legal_moves(own, opponent)) {
            let count = flips(own, opponent, square).count_ones();
            if count > most {
                most = count;
                best.clear();
            }
            if count == most {
                best.push(square);
            }
        }
        if best.is_empty() {
            return Vec::new();
        }
        let pick = best[rng.random_range(0..best.len())];
        vec![Move {
            square: square_name(pick),
        }]
    }
}

fn summary(state: &State, seat: usize, mover: usize, played: Option<u32>) -> String {
    let who = if seat == mover {
        "You".to_string()
    } else {
        format!("{} ({})", state.name(mover), state.color(mover))
    };
    let what = match played {
        Some(square) => format!("{who} played {}", square_name(square)),
        None if state.forfeited.is_some() => format!("{who} ran out of time and forfeited"),
        None => format!("{who} ran out of time and passed"),
    };
    let next = match state.to_move {
        Some(next) if next == seat => "your move".to_string(),
        Some(next) => format!("{} to move", state.name(next)),
        None => {
            let (mine, theirs) = (state.count(seat), state.count(1 - seat));
            let outcome = if state.forfeited == Some(seat) {
                "you lost"
            } else if state.forfeited.is_some() || mine > theirs {
                "you won"
            } else if mine < theirs {
                "you lost"
            } else {
                "a draw"
            };
            format!("game over, {outcome} {mine}–{theirs}")
        }
    };
    format!("{what}; {next}.")
}
