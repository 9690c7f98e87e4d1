//! Hosting games: the protocol's operations on top of a [`Game`]'s rules
//! and the engine's files, without HTTP.
//!
//! Each game has its own lock; operations on different games run side by
//! side. A game is read from disk the first time it is asked for after a
//! start and kept in memory from then on. Every change is on disk before
//! the operation returns, so the server answers only what a crash cannot
//! undo. Operations block (they sync files): the server runs them on the
//! blocking pool.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::{
    self, GameState, InitRequest, Limits, Manifest, Mode, Options, OrdersAnswer, Player, Problem,
    Resolution, Standing, View,
};
use crate::rng::{self, Purpose};
use crate::settings;
use crate::store::{self, Files};
use crate::{Game, SeatStanding};

/// The default request limits.
pub const DEFAULT_LIMITS: Limits = Limits {
    max_body_bytes: 256 * 1024,
    max_orders_per_turn: 1000,
};

/// Why an operation was refused; the server maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// 404 `game_not_found`.
    #[error("no game {0:?} is hosted here")]
    UnknownGame(String),
    /// 404 `player_not_found`.
    #[error("game {game:?} has no player {player:?}")]
    UnknownPlayer { game: String, player: String },
    /// 400 `invalid_id`.
    #[error("{0:?} is not a valid id: use 1 to 64 ASCII letters, digits, '-' or '_'")]
    InvalidId(String),
    /// 409 with a code: the request does not fit the game's current state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 422 with a code and per-field details.
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        details: Vec<Problem>,
    },
    /// 500: the engine's files failed it.
    #[error("storage failed: {0}")]
    Storage(#[from] std::io::Error),
}

impl HostError {
    fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        HostError::Conflict {
            code,
            message: message.into(),
        }
    }

    fn invalid(code: &'static str, message: impl Into<String>, details: Vec<Problem>) -> Self {
        HostError::Invalid {
            code,
            message: message.into(),
            details,
        }
    }
}

type Result<T> = std::result::Result<T, HostError>;

/// `game.json`: what the game was created from, settings filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Setup {
    seed: u64,
    settings: Value,
    players: Vec<Player>,
}

/// `seats.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seats {
    bots: Vec<bool>,
}

/// `turn-NNNNNN.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize",
    deserialize = "S: serde::de::DeserializeOwned"
))]
struct TurnFile<S> {
    turn: u32,
    state: S,
    /// The resolution of the previous turn.
    resolution: Option<Resolution>,
}

/// A game in memory.
struct Hosted<G: Game> {
    setup: Setup,
    bots: Vec<bool>,
    turn: u32,
    state: G::State,
    /// Stored orders of the open turn, by seat (simultaneous games).
    orders: Vec<Option<Vec<G::Order>>>,
    last: Option<Resolution>,
}

/// A game's place in the table; `None` when it is not (or no longer) on
/// disk.
struct Slot<G: Game> {
    loaded: bool,
    retired: bool,
    game: Option<Hosted<G>>,
}

/// The manifest an engine of `rules` serves with `limits`.
pub fn manifest_of<G: Game>(rules: &G, limits: Limits) -> Manifest {
    let described = rules.describe();
    Manifest {
        protocol: protocol::PROTOCOL_VERSION,
        kind: described.kind.to_string(),
        version: described.version.to_string(),
        title: described.title.to_string(),
        mode: described.mode,
        min_players: described.min_players,
        max_players: described.max_players,
        bots: described.bots,
        settings_schema: settings::schema(&described.settings),
        private_fields: described
            .private_fields
            .iter()
            .map(|p| p.to_string())
            .collect(),
        limits,
    }
}

/// Many games of one kind, hosted by one engine process.
pub struct Host<G: Game> {
    rules: G,
    manifest: Manifest,
    files: Files,
    table: Mutex<HashMap<String, Arc<Mutex<Slot<G>>>>>,
}

impl<G: Game> Host<G> {
    /// Hosts the games kept under `data_dir` (created when missing).
    pub fn open(rules: G, data_dir: &Path, limits: Limits) -> Result<Self> {
        let manifest = manifest_of(&rules, limits);
        Ok(Host {
            rules,
            manifest,
            files: Files::open(data_dir)?,
            table: Mutex::new(HashMap::new()),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn rules(&self) -> &G {
        &self.rules
    }

    /// How many games have a folder on disk.
    pub fn games_on_disk(&self) -> usize {
        self.files.count()
    }

    /// `POST /games/{game}/init`: `Ok((created, state))`.
    #[tracing::instrument(skip_all, fields(game = %game))]
    pub fn init(&self, game: &str, request: InitRequest) -> Result<(bool, GameState)> {
        let setup = self.check_setup(request)?;
        self.with_slot(game, |slot| {
            if let Some(hosted) = &slot.game {
                if hosted.setup == setup {
                    return Ok((false, self.public_state(game, hosted)));
                }
                return Err(HostError::conflict(
                    "game_exists",
                    format!("game {game:?} exists with a different setup; delete it first or use another id"),
                ));
            }
            let parsed: G::Settings = serde_json::from_value(setup.settings.clone()).map_err(|err| {
                HostError::invalid(
                    "invalid_settings",
                    "the settings do not fit the game",
                    vec![Problem::new("/settings", err.to_string())],
                )
            })?;
            let mut dice = rng::stream(setup.seed, 0, Purpose::Init);
            let state = self
                .rules
                .init(&parsed, &setup.players, &mut dice)
                .map_err(|problems| {
                    let details = problems
                        .into_iter()
                        .map(|p| Problem::new(format!("/settings{}", p.path), p.reason))
                        .collect();
                    HostError::invalid("invalid_settings", "the settings cannot make a game", details)
                })?;
            let seats = setup.players.len();
            let bots: Vec<bool> = setup.players.iter().map(|p| p.bot).collect();
            self.files.create_game_dir(game)?;
            store::write_json(&self.files.seats_file(game), &Seats { bots: bots.clone() })?;
            store::write_json(
                &self.files.turn_file(game, 1),
                &TurnFile {
                    turn: 1,
                    state: &state,
                    resolution: None,
                },
            )?;
            // Written last: a game exists once its setup is on disk.
            store::write_json(&self.files.game_file(game), &setup)?;
            let hosted = Hosted {
                setup,
                bots,
                turn: 1,
                state,
                orders: vec![None; seats],
                last: None,
            };
            let answer = self.public_state(game, &hosted);
            slot.game = Some(hosted);
            tracing::info!(seats, "game set up");
            Ok((true, answer))
        })
    }

    /// Validates an init request and fills in the settings' defaults.
    fn check_setup(&self, request: InitRequest) -> Result<Setup> {
        let mut details = Vec::new();
        let count = request.players.len() as u32;
        if count < self.manifest.min_players || count > self.manifest.max_players {
            details.push(Problem::new(
                "/players",
                format!(
                    "{count} player{}; this game takes {} to {}",
                    if count == 1 { "" } else { "s" },
                    self.manifest.min_players,
                    self.manifest.max_players
                ),
            ));
        }
        for (index, player) in request.players.iter().enumerate() {
            if !protocol::valid_id(&player.player_id) {
                details.push(Problem::new(
                    format!("/players/{index}/player_id"),
                    "use 1 to 64 ASCII letters, digits, '-' or '_'",
                ));
            } else if request.players[..index]
                .iter()
                .any(|p| p.player_id == player.player_id)
            {
                details.push(Problem::new(
                    format!("/players/{index}/player_id"),
                    "appears twice",
                ));
            }
            let name_len = player.name.chars().count();
            if !(1..=64).contains(&name_len) || player.name.chars().any(char::is_control) {
                details.push(Problem::new(
                    format!("/players/{index}/name"),
                    "must be 1 to 64 characters with no control characters",
                ));
            }
            if player.bot && !self.manifest.bots {
                details.push(Problem::new(
                    format!("/players/{index}/bot"),
                    "this engine does not play bot seats",
                ));
            }
        }
        let settings = match settings::apply(&self.manifest.settings_schema, &request.settings) {
            Ok(settings) => Some(settings),
            Err(problems) => {
                details.extend(
                    problems
                        .into_iter()
                        .map(|p| Problem::new(format!("/settings{}", p.path), p.reason)),
                );
                None
            }
        };
        match settings {
            Some(settings) if details.is_empty() => Ok(Setup {
                seed: request.seed,
                settings,
                players: request.players,
            }),
            _ => Err(HostError::invalid(
                "invalid_init",
                "the game cannot be set up from this request",
                details,
            )),
        }
    }

    /// `PUT /games/{game}/players/{player}/orders`.
    #[tracing::instrument(skip_all, fields(game = %game, player = %player, turn))]
    pub fn orders(
        &self,
        game: &str,
        player: &str,
        turn: u32,
        orders: Value,
        dry_run: bool,
    ) -> Result<OrdersAnswer> {
        tracing::Span::current().record("turn", turn);
        self.with_game(game, |hosted| {
            let seat = seat_of(game, hosted, player)?;
            self.check_open(hosted, turn)?;
            if !self.rules.to_move(&hosted.state).contains(&seat) {
                return Err(HostError::conflict(
                    "not_your_move",
                    format!("{player} is not expected to act in turn {}", hosted.turn),
                ));
            }
            if hosted.bots[seat] {
                return Err(HostError::conflict(
                    "seat_played_by_bot",
                    format!("the engine's bot plays {player}'s seat; hand it back with PUT …/control first"),
                ));
            }
            let parsed = self.parse_orders(&hosted.state, seat, orders)?;
            let count = parsed.len();
            if dry_run {
                return Ok(OrdersAnswer {
                    turn,
                    stored: false,
                    count,
                    resolution: None,
                });
            }
            match self.manifest.mode {
                Mode::Simultaneous => {
                    store::write_json(&self.files.orders_file(game, turn, seat), &parsed)?;
                    hosted.orders[seat] = Some(parsed);
                    Ok(OrdersAnswer {
                        turn,
                        stored: true,
                        count,
                        resolution: None,
                    })
                }
                Mode::Sequential => {
                    let mut all = vec![None; hosted.setup.players.len()];
                    all[seat] = Some(parsed);
                    let resolution = self.advance(game, hosted, all)?;
                    Ok(OrdersAnswer {
                        turn,
                        stored: true,
                        count,
                        resolution: Some(resolution),
                    })
                }
            }
        })
    }

    /// Parses each order on its own, then asks the rules.
    fn parse_orders(&self, state: &G::State, seat: usize, orders: Value) -> Result<Vec<G::Order>> {
        let Value::Array(items) = orders else {
            return Err(HostError::invalid(
                "invalid_orders",
                "orders must be a JSON list",
                vec![Problem::new("/orders", "must be a list of orders")],
            ));
        };
        let limit = self.manifest.limits.max_orders_per_turn as usize;
        if items.len() > limit {
            return Err(HostError::invalid(
                "too_many_orders",
                format!("{} orders; at most {limit} per turn", items.len()),
                vec![Problem::new("/orders", format!("at most {limit} orders"))],
            ));
        }
        let mut parsed = Vec::with_capacity(items.len());
        let mut problems = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match serde_json::from_value::<G::Order>(item) {
                Ok(order) => parsed.push(order),
                Err(err) => {
                    problems.push(Problem::new(format!("/orders/{index}"), err.to_string()))
                }
            }
        }
        if problems.is_empty() {
            problems = self
                .rules
                .validate(state, seat, &parsed)
                .into_iter()
                .map(|p| Problem::new(format!("/orders{}", p.path), p.reason))
                .collect();
        }
        if problems.is_empty() {
            Ok(parsed)
        } else {
            let message = match problems.len() {
                1 => format!("1 problem with the orders: {}", problems[0].reason),
                n => format!("{n} problems with the orders"),
            };
            Err(HostError::invalid("invalid_orders", message, problems))
        }
    }

    /// `POST /games/{game}/turns/{turn}/resolve`. A turn already resolved
    /// answers its stored resolution again.
    #[tracing::instrument(skip_all, fields(game = %game, turn))]
    pub fn resolve(&self, game: &str, turn: u32) -> Result<Resolution> {
        tracing::Span::current().record("turn", turn);
        self.with_game(game, |hosted| {
            if turn >= 1 && turn < hosted.turn {
                if let Some(last) = hosted.last.as_ref().filter(|r| r.turn == turn) {
                    return Ok(last.clone());
                }
                let stored: Option<TurnFile<G::State>> =
                    store::read_json(&self.files.turn_file(game, turn + 1))?;
                return stored.and_then(|file| file.resolution).ok_or_else(|| {
                    HostError::Storage(std::io::Error::other(format!(
                        "the resolution of turn {turn} is missing from disk"
                    )))
                });
            }
            self.check_open(hosted, turn)?;
            let to_move = self.rules.to_move(&hosted.state);
            let mut dice = rng::stream(hosted.setup.seed, turn, Purpose::Bots);
            let seats = hosted.setup.players.len();
            let mut orders = Vec::with_capacity(seats);
            for seat in 0..seats {
                let waited_for = to_move.contains(&seat);
                let entry = if waited_for && hosted.bots[seat] {
                    Some(self.rules.bot_orders(&hosted.state, seat, &mut dice))
                } else if waited_for && self.manifest.mode == Mode::Simultaneous {
                    hosted.orders[seat].take()
                } else {
                    None
                };
                orders.push(entry);
            }
            self.advance(game, hosted, orders)
        })
    }

    /// Resolves the open turn with `orders`, persists the next turn, and
    /// moves the game on in memory only once that is on disk.
    fn advance(
        &self,
        game: &str,
        hosted: &mut Hosted<G>,
        orders: Vec<Option<Vec<G::Order>>>,
    ) -> Result<Resolution> {
        let turn = hosted.turn;
        let mut state = hosted.state.clone();
        let mut dice = rng::stream(hosted.setup.seed, turn, Purpose::Resolve);
        let report = self.rules.resolve(&mut state, &orders, &mut dice);
        let players = &hosted.setup.players;
        let winners = self.rules.winners(&state);
        let finished = winners.is_some();
        let id = |seat: usize| players[seat].player_id.clone();
        let resolution = Resolution {
            turn,
            next_turn: (!finished).then_some(turn + 1),
            to_move: self.rules.to_move(&state).into_iter().map(id).collect(),
            finished,
            winners: winners.unwrap_or_default().into_iter().map(id).collect(),
            standings: standings(players, self.rules.standings(&state), finished),
            summaries: report
                .summaries
                .into_iter()
                .enumerate()
                .filter(|(seat, text)| *seat < players.len() && !text.is_empty())
                .map(|(seat, text)| (id(seat), text))
                .collect(),
            events: report.events,
        };
        store::write_json(
            &self.files.turn_file(game, turn + 1),
            &TurnFile {
                turn: turn + 1,
                state: &state,
                resolution: Some(resolution.clone()),
            },
        )?;
        hosted.turn = turn + 1;
        hosted.state = state;
        hosted.orders = vec![None; players.len()];
        hosted.last = Some(resolution.clone());
        tracing::info!(finished, "turn resolved");
        Ok(resolution)
    }

    fn check_open(&self, hosted: &Hosted<G>, turn: u32) -> Result<()> {
        if self.rules.winners(&hosted.state).is_some() {
            return Err(HostError::conflict(
                "game_over",
                format!("the game ended after turn {}", hosted.turn - 1),
            ));
        }
        if turn != hosted.turn {
            return Err(HostError::conflict(
                "wrong_turn",
                format!("turn {} is open, not turn {turn}", hosted.turn),
            ));
        }
        Ok(())
    }

    /// `GET /games/{game}/players/{player}/view[?turn=n]`: now, or after
    /// turn `n` was resolved (`n = 0`: as the game was set up).
    pub fn view(&self, game: &str, player: &str, after: Option<u32>) -> Result<View> {
        self.with_game(game, |hosted| {
            let seat = seat_of(game, hosted, player)?;
            match after {
                None => Ok(View {
                    turn: hosted.turn,
                    view: self
                        .rules
                        .view(&hosted.state, seat, hosted.orders[seat].as_deref()),
                }),
                Some(done) if done.checked_add(1) == Some(hosted.turn) => Ok(View {
                    turn: hosted.turn,
                    view: self.rules.view(&hosted.state, seat, None),
                }),
                Some(done) if done < hosted.turn => {
                    let stored: Option<TurnFile<G::State>> =
                        store::read_json(&self.files.turn_file(game, done + 1))?;
                    let stored = stored.ok_or_else(|| {
                        HostError::Storage(std::io::Error::other(format!(
                            "the state after turn {done} is missing from disk"
                        )))
                    })?;
                    Ok(View {
                        turn: stored.turn,
                        view: self.rules.view(&stored.state, seat, None),
                    })
                }
                Some(done) => Err(HostError::conflict(
                    "turn_not_resolved",
                    format!(
                        "turn {done} has not been resolved; turn {} is open",
                        hosted.turn
                    ),
                )),
            }
        })
    }

    /// `GET /games/{game}/state`.
    pub fn state(&self, game: &str) -> Result<GameState> {
        self.with_game(game, |hosted| Ok(self.public_state(game, hosted)))
    }

    /// `GET /games/{game}/players/{player}/options`.
    pub fn options(&self, game: &str, player: &str) -> Result<Options> {
        self.with_game(game, |hosted| {
            let seat = seat_of(game, hosted, player)?;
            let to_move = self.rules.winners(&hosted.state).is_none()
                && self.rules.to_move(&hosted.state).contains(&seat);
            let choices = self.rules.options(&hosted.state, seat);
            let example = if to_move {
                choices
                    .example
                    .map(|orders| serde_json::to_value(orders).map_err(std::io::Error::other))
                    .transpose()?
            } else {
                None
            };
            Ok(Options {
                turn: hosted.turn,
                to_move,
                nothing_to_order: example.is_none(),
                options: choices.options,
                example,
            })
        })
    }

    /// `PUT /games/{game}/players/{player}/control`.
    #[tracing::instrument(skip_all, fields(game = %game, player = %player))]
    pub fn control(&self, game: &str, player: &str, bot: bool) -> Result<GameState> {
        self.with_game(game, |hosted| {
            let seat = seat_of(game, hosted, player)?;
            if bot && !self.manifest.bots {
                return Err(HostError::invalid(
                    "bots_unsupported",
                    "this engine does not play bot seats",
                    vec![Problem::new("/bot", "must be false for this engine")],
                ));
            }
            if hosted.bots[seat] != bot {
                let mut bots = hosted.bots.clone();
                bots[seat] = bot;
                store::write_json(&self.files.seats_file(game), &Seats { bots: bots.clone() })?;
                hosted.bots = bots;
                tracing::info!(bot, "seat control changed");
            }
            Ok(self.public_state(game, hosted))
        })
    }

    /// `DELETE /games/{game}`: only a finished game may be forgotten.
    #[tracing::instrument(skip_all, fields(game = %game))]
    pub fn delete(&self, game: &str) -> Result<()> {
        self.with_slot(game, |slot| {
            let hosted = slot
                .game
                .as_ref()
                .ok_or_else(|| HostError::UnknownGame(game.to_string()))?;
            if self.rules.winners(&hosted.state).is_none() {
                return Err(HostError::conflict(
                    "game_not_finished",
                    format!("game {game:?} is still being played (turn {})", hosted.turn),
                ));
            }
            self.files.remove_game(game)?;
            slot.game = None;
            tracing::info!("game forgotten");
            Ok(())
        })
    }

    fn public_state(&self, game: &str, hosted: &Hosted<G>) -> GameState {
        let players = &hosted.setup.players;
        let winners = self.rules.winners(&hosted.state);
        let finished = winners.is_some();
        let id = |seat: usize| players[seat].player_id.clone();
        GameState {
            game: game.to_string(),
            kind: self.manifest.kind.clone(),
            turn: hosted.turn,
            to_move: self
                .rules
                .to_move(&hosted.state)
                .into_iter()
                .map(id)
                .collect(),
            finished,
            winners: winners.unwrap_or_default().into_iter().map(id).collect(),
            standings: standings(players, self.rules.standings(&hosted.state), finished),
            bots: (0..players.len())
                .filter(|&s| hosted.bots[s])
                .map(id)
                .collect(),
        }
    }

    /// The game's slot in the table, created empty on first use.
    fn slot(&self, game: &str) -> Result<Arc<Mutex<Slot<G>>>> {
        if !protocol::valid_id(game) {
            return Err(HostError::InvalidId(game.to_string()));
        }
        let mut table = lock(&self.table);
        Ok(Arc::clone(table.entry(game.to_string()).or_insert_with(
            || {
                Arc::new(Mutex::new(Slot {
                    loaded: false,
                    retired: false,
                    game: None,
                }))
            },
        )))
    }

    /// Runs `f` on the hosted game under its lock; 404 when there is none.
    fn with_game<R>(&self, game: &str, f: impl FnOnce(&mut Hosted<G>) -> Result<R>) -> Result<R> {
        self.with_slot(game, |slot| match slot.game.as_mut() {
            Some(hosted) => f(hosted),
            None => Err(HostError::UnknownGame(game.to_string())),
        })
    }

    /// Runs `f` on the game's slot under its lock, reading the game from
    /// disk when this is its first use. A slot left without a game is
    /// retired from the table, so that asking for unknown ids costs no
    /// memory; a caller that finds its slot retired starts again.
    fn with_slot<R>(&self, game: &str, f: impl FnOnce(&mut Slot<G>) -> Result<R>) -> Result<R> {
        loop {
            let shared = self.slot(game)?;
            let mut slot = lock(&shared);
            if slot.retired {
                continue;
            }
            if !slot.loaded {
                slot.game = self.load(game)?;
                slot.loaded = true;
            }
            let result = f(&mut slot);
            if slot.game.is_none() {
                slot.retired = true;
                let mut table = lock(&self.table);
                if table
                    .get(game)
                    .is_some_and(|kept| Arc::ptr_eq(kept, &shared))
                {
                    table.remove(game);
                }
            }
            return result;
        }
    }

    fn load(&self, game: &str) -> Result<Option<Hosted<G>>> {
        let Some(setup) = store::read_json::<Setup>(&self.files.game_file(game))? else {
            return Ok(None);
        };
        let seats = setup.players.len();
        let bots = store::read_json::<Seats>(&self.files.seats_file(game))?
            .map(|s| s.bots)
            .filter(|bots| bots.len() == seats)
            .unwrap_or_else(|| setup.players.iter().map(|p| p.bot).collect());
        let turn = self.files.latest_turn(game)?.ok_or_else(|| {
            std::io::Error::other(format!("game {game:?} has a setup but no turn file"))
        })?;
        let file: TurnFile<G::State> = store::read_json(&self.files.turn_file(game, turn))?
            .ok_or_else(|| std::io::Error::other("a turn file vanished while loading"))?;
        let mut orders = Vec::with_capacity(seats);
        for seat in 0..seats {
            orders.push(store::read_json::<Vec<G::Order>>(
                &self.files.orders_file(game, turn, seat),
            )?);
        }
        Ok(Some(Hosted {
            setup,
            bots,
            turn,
            state: file.state,
            orders,
            last: file.resolution,
        }))
    }
}

fn seat_of<G: Game>(game: &str, hosted: &Hosted<G>, player: &str) -> Result<usize> {
    hosted
        .setup
        .players
        .iter()
        .position(|p| p.player_id == player)
        .ok_or_else(|| HostError::UnknownPlayer {
            game: game.to_string(),
            player: player.to_string(),
        })
}

fn standings(players: &[Player], seats: Vec<SeatStanding>, finished: bool) -> Vec<Standing> {
    let mut out: Vec<Standing> = seats
        .into_iter()
        .zip(players)
        .map(|(s, p)| Standing {
            player_id: p.player_id.clone(),
            rank: s.rank,
            score: s.score,
            status: if s.out {
                "out"
            } else if finished {
                "finished"
            } else {
                "playing"
            }
            .to_string(),
        })
        .collect();
    out.sort_by_key(|s| s.rank);
    out
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a game's rules poisons only that game's lock; the
    // data behind it is replaced wholesale or not at all, so it stays
    // consistent and the lock may be taken again.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
