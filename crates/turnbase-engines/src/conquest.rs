//! Conquest: 2 to 16 players on a seeded map of planets, all moving at
//! once.
//!
//! Each turn every player sends fleets from planets they hold to planets in
//! range. Fleets travel one turn per [`SPEED`] units of distance (at least
//! one). At the resolution, in order: the turn's orders launch their
//! fleets; fleets due this turn land, joining their owner's planet or
//! fighting whoever holds it (battles are drawn from the turn's dice,
//! weighted by strength); every held planet produces ships; a player with no
//! planet and no fleet is out. The last player standing wins, or, at the
//! turn limit, whoever holds the most planets (then ships).
//!
//! A player sees the planets within range of their own (fog of war), their
//! own fleets, and enemy fleets bound for their planets. A seat that sends
//! no orders holds: its planets keep their ships.

use std::collections::BTreeMap;

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use turnbase_engine_kit::{
    Description, Game, Mode, Player, Problem, Report, Rng, SeatOptions, SeatStanding, Setting,
};

/// Distance a fleet covers per turn.
pub const SPEED: f64 = 5.0;
/// Ships on a home planet at the start.
pub const HOME_SHIPS: u64 = 20;
/// Closest two planets may be (squared distance).
const MIN_GAP_SQUARED: i64 = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub map_size: i64,
    pub planets: i64,
    pub turn_limit: i64,
    pub production_min: i64,
    pub production_max: i64,
    pub range: i64,
}

/// One order: send `ships` from planet `from` to planet `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send {
    pub from: u32,
    pub to: u32,
    pub ships: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Planet {
    pub x: i64,
    pub y: i64,
    pub production: u64,
    /// Seat index; `None` for a neutral planet.
    pub owner: Option<usize>,
    pub ships: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub id: u64,
    pub owner: usize,
    pub from: u32,
    pub to: u32,
    pub ships: u64,
    /// The turn at whose resolution it lands.
    pub arrives: u32,
}

/// One side of a battle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub owner: Option<usize>,
    pub before: u64,
    pub after: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Battle {
    pub planet: u32,
    /// The holder first, then the attackers by seat.
    pub sides: Vec<Side>,
    pub winner: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub settings: Settings,
    /// The open turn.
    pub turn: u32,
    pub planets: Vec<Planet>,
    pub fleets: Vec<Fleet>,
    pub next_fleet: u64,
    pub players: Vec<String>,
    pub out: Vec<bool>,
    /// Battles of the last resolution.
    pub battles: Vec<Battle>,
    /// Ships produced in the last resolution.
    pub produced: u64,
    pub winners: Option<Vec<usize>>,
}

/// The Conquest engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conquest;

impl State {
    fn distance_squared(&self, a: usize, b: usize) -> i64 {
        let (p, q) = (&self.planets[a], &self.planets[b]);
        (p.x - q.x).pow(2) + (p.y - q.y).pow(2)
    }

    fn in_range(&self, a: usize, b: usize) -> bool {
        self.distance_squared(a, b) <= self.settings.range.pow(2)
    }

    /// Turns a fleet takes from `a` to `b`.
    fn travel(&self, a: usize, b: usize) -> u32 {
        let distance = (self.distance_squared(a, b) as f64).sqrt();
        ((distance / SPEED).ceil() as u32).max(1)
    }

    fn sees(&self, seat: usize, planet: usize) -> bool {
        self.planets
            .iter()
            .enumerate()
            .any(|(own, p)| p.owner == Some(seat) && self.in_range(own, planet))
    }

    fn planets_of(&self, seat: usize) -> usize {
        self.planets
            .iter()
            .filter(|p| p.owner == Some(seat))
            .count()
    }

    /// Ships on the seat's planets and in its fleets.
    pub fn ships_of(&self, seat: usize) -> u64 {
        let docked: u64 = self
            .planets
            .iter()
            .filter(|p| p.owner == Some(seat))
            .map(|p| p.ships)
            .sum();
        let flying: u64 = self
            .fleets
            .iter()
            .filter(|f| f.owner == seat)
            .map(|f| f.ships)
            .sum();
        docked + flying
    }

    /// Every ship on the map, neutral ones included.
    pub fn total_ships(&self) -> u64 {
        self.planets.iter().map(|p| p.ships).sum::<u64>()
            + self.fleets.iter().map(|f| f.ships).sum::<u64>()
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.players.len()).filter(|&s| !self.out[s]).collect()
    }

    fn targets(&self, from: usize) -> Vec<u32> {
        (0..self.planets.len())
            .filter(|&to| to != from && self.in_range(from, to))
            .map(|to| to as u32)
            .collect()
    }

    /// Rank key: still in, planets, ships.
    fn strength(&self, seat: usize) -> (bool, usize, u64) {
        (!self.out[seat], self.planets_of(seat), self.ships_of(seat))
    }
}

fn seats_ranked_first(state: &State, among: &[usize]) -> Vec<usize> {
    let best = among.iter().map(|&s| state.strength(s)).max();
    among
        .iter()
        .copied()
        .filter(|&s| Some(state.strength(s)) == best)
        .collect()
}

impl Game for Conquest {
    type Settings = Settings;
    type State = State;
    type Order = Send;

    fn describe(&self) -> Description {
        Description {
            kind: "conquest",
            version: "1.0.0",
            title: "Conquest",
            mode: Mode::Simultaneous,
            min_players: 2,
            max_players: 16,
            bots: true,
            settings: vec![
                Setting::integer(
                    "map_size",
                    "Width and height of the square map",
                    20,
                    400,
                    60,
                ),
                Setting::integer("planets", "How many planets the map holds", 4, 500, 40),
                Setting::integer(
                    "turn_limit",
                    "The game ends after this turn; the most planets (then ships) wins",
                    5,
                    1000,
                    100,
                ),
                Setting::integer(
                    "production_min",
                    "Fewest ships a planet makes per turn",
                    0,
                    20,
                    1,
                ),
                Setting::integer(
                    "production_max",
                    "Most ships a planet makes per turn (home planets make this)",
                    1,
                    20,
                    5,
                ),
                Setting::integer(
                    "range",
                    "How far fleets fly and players see from their planets",
                    5,
                    400,
                    25,
                ),
            ],
            private_fields: vec!["/you/fleets", "/you/orders"],
        }
    }

    fn init(
        &self,
        settings: &Settings,
        players: &[Player],
        rng: &mut Rng,
    ) -> Result<State, Vec<Problem>> {
        let mut problems = Vec::new();
        if settings.production_min > settings.production_max {
            problems.push(Problem::new(
                "/production_min",
                format!(
                    "must not exceed production_max ({})",
                    settings.production_max
                ),
            ));
        }
        let count = settings.planets as usize;
        if count < players.len() {
            problems.push(Problem::new(
                "/planets",
                format!("{count} planets cannot hold {} home planets", players.len()),
            ));
        }
        // Each planet keeps a 2-unit gap, so the map must have room.
        if settings.map_size.pow(2) < 4 * settings.planets {
            problems.push(Problem::new(
                "/map_size",
                format!(
                    "a {0}×{0} map has no room for {1} planets; make it at least {2}",
                    settings.map_size,
                    settings.planets,
                    (4.0 * settings.planets as f64).sqrt().ceil()
                ),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut planets: Vec<Planet> = Vec::with_capacity(count);
        let mut attempts = 0;
        while planets.len() < count {
            attempts += 1;
            if attempts > count * 200 {
                return Err(vec![Problem::new(
                    "/map_size",
                    "the planets do not fit on this map; make it larger or use fewer planets",
                )]);
            }
            let x = rng.random_range(0..settings.map_size);
            let y = rng.random_range(0..settings.map_size);
            if planets
                .iter()
                .any(|p| (p.x - x).pow(2) + (p.y - y).pow(2) < MIN_GAP_SQUARED)
            {
                continue;
            }
            let production =
                rng.random_range(settings.production_min..=settings.production_max) as u64;
            let ships = production * 3 + rng.random_range(0..5u64);
            planets.push(Planet {
                x,
                y,
                production,
                owner: None,
                ships,
            });
        }
        let mut state = State {
            settings: settings.clone(),
            turn: 1,
            planets,
            fleets: Vec::new(),
            next_fleet: 1,
            players: players.iter().map(|p| p.player_id.clone()).collect(),
            out: vec![false; players.len()],
            battles: Vec::new(),
            produced: 0,
            winners: None,
        };
        // Homes far apart: the first drawn, each next the planet farthest
        // from every home chosen so far.
        let mut homes = vec![rng.random_range(0..count)];
        while homes.len() < players.len() {
            let next = (0..count)
                .filter(|p| !homes.contains(p))
                .max_by_key(|&p| {
                    let nearest = homes
                        .iter()
                        .map(|&h| state.distance_squared(p, h))
                        .min()
                        .unwrap_or(0);
                    (nearest, std::cmp::Reverse(p))
                })
                .expect("there are at least as many planets as players");
            homes.push(next);
        }
        for (seat, &home) in homes.iter().enumerate() {
            let planet = &mut state.planets[home];
            planet.owner = Some(seat);
            planet.ships = HOME_SHIPS;
            planet.production = settings.production_max as u64;
        }
        Ok(state)
    }

    fn to_move(&self, state: &State) -> Vec<usize> {
        if state.winners.is_some() {
            return Vec::new();
        }
        state.alive()
    }

    fn validate(&self, state: &State, seat: usize, orders: &[Send]) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut sent: BTreeMap<usize, u64> = BTreeMap::new();
        for (index, order) in orders.iter().enumerate() {
            let (from, to) = (order.from as usize, order.to as usize);
            let Some(source) = state.planets.get(from) else {
                problems.push(Problem::new(
                    format!("/{index}/from"),
                    format!("there is no planet {from}"),
                ));
                continue;
            };
            if source.owner != Some(seat) {
                problems.push(Problem::new(
                    format!("/{index}/from"),
                    format!("planet {from} is not yours"),
                ));
                continue;
            }
            if to >= state.planets.len() {
                problems.push(Problem::new(
                    format!("/{index}/to"),
                    format!("there is no planet {to}"),
                ));
            } else if to == from {
                problems.push(Problem::new(
                    format!("/{index}/to"),
                    "a fleet must leave its planet",
                ));
            } else if !state.in_range(from, to) {
                problems.push(Problem::new(
                    format!("/{index}/to"),
                    format!(
                        "planet {to} is out of range of planet {from} (range {})",
                        state.settings.range
                    ),
                ));
            }
            if order.ships == 0 {
                problems.push(Problem::new(
                    format!("/{index}/ships"),
                    "must be at least 1",
                ));
                continue;
            }
            let total = sent.entry(from).or_default();
            *total = total.saturating_add(order.ships);
            if *total > source.ships {
                problems.push(Problem::new(
                    format!("/{index}/ships"),
                    format!(
                        "planet {from} has {} ships; these orders send {}",
                        source.ships, *total
                    ),
                ));
            }
        }
        problems
    }

    fn resolve(&self, state: &mut State, orders: &[Option<Vec<Send>>], rng: &mut Rng) -> Report {
        let turn = state.turn;
        state.battles.clear();
        // 1. Launch. Orders were checked when sent; anything that no longer
        //    fits (it cannot: nothing moves between sending and resolving)
        //    is skipped rather than trusted.
        for (seat, seat_orders) in orders.iter().enumerate() {
            if seat >= state.players.len() || state.out[seat] {
                continue;
            }
            for order in seat_orders.iter().flatten() {
                let (from, to) = (order.from as usize, order.to as usize);
                let fits = state.planets.get(from).is_some_and(|p| {
                    p.owner == Some(seat) && p.ships >= order.ships && order.ships > 0
                }) && to < state.planets.len()
                    && to != from
                    && state.in_range(from, to);
                if !fits {
                    continue;
                }
                state.planets[from].ships -= order.ships;
                let arrives = turn + state.travel(from, to);
                state.fleets.push(Fleet {
                    id: state.next_fleet,
                    owner: seat,
                    from: order.from,
                    to: order.to,
                    ships: order.ships,
                    arrives,
                });
                state.next_fleet += 1;
            }
        }
        // 2. Landings, planet by planet.
        let (landing, flying): (Vec<Fleet>, Vec<Fleet>) =
            state.fleets.drain(..).partition(|f| f.arrives <= turn);
        state.fleets = flying;
        let mut by_planet: BTreeMap<u32, BTreeMap<usize, u64>> = BTreeMap::new();
        for fleet in landing {
            *by_planet
                .entry(fleet.to)
                .or_default()
                .entry(fleet.owner)
                .or_default() += fleet.ships;
        }
        for (planet_id, arrivals) in by_planet {
            land(state, planet_id, arrivals, rng);
        }
        // 3. Production.
        state.produced = 0;
        for planet in &mut state.planets {
            if planet.owner.is_some() {
                planet.ships += planet.production;
                state.produced += planet.production;
            }
        }
        // 4. Eliminations and the end.
        let mut events = Vec::new();
        let was_alive = state.alive();
        for &seat in &was_alive {
            if state.planets_of(seat) == 0 && !state.fleets.iter().any(|f| f.owner == seat) {
                state.out[seat] = true;
                events.push(
                    json!({"type": "eliminated", "player": state.players[seat], "turn": turn}),
                );
            }
        }
        let alive = state.alive();
        if alive.len() <= 1 || i64::from(turn) >= state.settings.turn_limit {
            let contenders = if alive.is_empty() { &was_alive } else { &alive };
            let winners = seats_ranked_first(state, contenders);
            events.push(json!({
                "type": "game_over",
                "turn": turn,
                "winners": winners.iter().map(|&s| state.players[s].clone()).collect::<Vec<_>>(),
            }));
            state.winners = Some(winners);
        }
        state.turn = turn + 1;
        let summaries = (0..state.players.len())
            .map(|seat| summary(state, seat, turn))
            .collect();
        Report { events, summaries }
    }

    fn winners(&self, state: &State) -> Option<Vec<usize>> {
        state.winners.clone()
    }

    fn standings(&self, state: &State) -> Vec<SeatStanding> {
        (0..state.players.len())
            .map(|seat| {
                let key = state.strength(seat);
                let ahead = (0..state.players.len())
                    .filter(|&other| state.strength(other) > key)
                    .count();
                SeatStanding {
                    rank: ahead as u32 + 1,
                    score: state.planets_of(seat) as i64,
                    out: state.out[seat],
                }
            })
            .collect()
    }

    fn view(&self, state: &State, seat: usize, pending: Option<&[Send]>) -> Value {
        let owner = |o: Option<usize>| o.map(|s| state.players[s].clone());
        let visible: Vec<usize> = (0..state.planets.len())
            .filter(|&p| state.sees(seat, p))
            .collect();
        let planets: Vec<Value> = visible
            .iter()
            .map(|&p| {
                let planet = &state.planets[p];
                json!({
                    "id": p, "x": planet.x, "y": planet.y, "production": planet.production,
                    "owner": owner(planet.owner), "ships": planet.ships,
                })
            })
            .collect();
        let fleets: Vec<Value> = state
            .fleets
            .iter()
            .filter(|f| f.owner == seat)
            .map(|f| json!({"id": f.id, "from": f.from, "to": f.to, "ships": f.ships, "arrives": f.arrives}))
            .collect();
        let incoming: Vec<Value> = state
            .fleets
            .iter()
            .filter(|f| {
                f.owner != seat && state.planets[f.to as usize].owner == Some(seat)
            })
            .map(|f| json!({"owner": state.players[f.owner], "to": f.to, "ships": f.ships, "arrives": f.arrives}))
            .collect();
        let battles: Vec<Value> = state
            .battles
            .iter()
            .filter(|b| visible.contains(&(b.planet as usize)))
            .map(|b| {
                json!({
                    "planet": b.planet,
                    "winner": owner(b.winner),
                    "sides": b.sides.iter().map(|s| json!({
                        "owner": owner(s.owner), "before": s.before, "after": s.after,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let players: Vec<Value> = (0..state.players.len())
            .map(|s| json!({"player_id": state.players[s], "out": state.out[s]}))
            .collect();
        json!({
            "turn": state.turn,
            "turn_limit": state.settings.turn_limit,
            "map_size": state.settings.map_size,
            "range": state.settings.range,
            "you": {
                "player_id": state.players[seat],
                "out": state.out[seat],
                "planets": state.planets_of(seat),
                "ships": state.ships_of(seat),
                "fleets": fleets,
                "orders": pending.map(|o| o.to_vec()).unwrap_or_default(),
            },
            "planets": planets,
            "incoming": incoming,
            "battles": battles,
            "players": players,
        })
    }

    fn options(&self, state: &State, seat: usize) -> SeatOptions<Send> {
        let mut choices = Vec::new();
        let mut example = None;
        for (id, planet) in state.planets.iter().enumerate() {
            if planet.owner != Some(seat) || planet.ships == 0 {
                continue;
            }
            let targets = state.targets(id);
            if targets.is_empty() {
                continue;
            }
            if example.is_none() {
                let nearest = targets
                    .iter()
                    .copied()
                    .min_by_key(|&t| (state.distance_squared(id, t as usize), t))
                    .expect("targets is not empty");
                example = Some(vec![Send {
                    from: id as u32,
                    to: nearest,
                    ships: planet.ships.div_ceil(2),
                }]);
            }
            choices.push(json!({"planet": id, "ships": planet.ships, "targets": targets}));
        }
        SeatOptions {
            options: json!({"planets": choices}),
            example,
        }
    }

    fn bot_orders(&self, state: &State, seat: usize, rng: &mut Rng) -> Vec<Send> {
        // Attack the cheapest visible planet in reach that the garrison can
        // take with a margin; keep a few ships home.
        let mut orders = Vec::new();
        let mut claimed: Vec<usize> = Vec::new();
        for (from, planet) in state.planets.iter().enumerate() {
            if planet.owner != Some(seat) || planet.ships <= 5 {
                continue;
            }
            let spare = planet.ships - 3;
            let best = state
                .targets(from)
                .into_iter()
                .map(|t| t as usize)
                .filter(|&t| state.planets[t].owner != Some(seat) && !claimed.contains(&t))
                .filter(|&t| state.planets[t].ships * 3 / 2 + 2 < spare)
                .min_by_key(|&t| {
                    let cost = state.planets[t].ships * 4 + state.distance_squared(from, t) as u64;
                    (cost, rng.random::<u16>())
                });
            if let Some(target) = best {
                claimed.push(target);
                orders.push(Send {
                    from: from as u32,
                    to: target as u32,
                    ships: spare,
                });
            }
        }
        orders
    }
}

/// Fleets land on `planet_id`: the holder's own ships join it; everyone
/// else fights until one side is left.
fn land(state: &mut State, planet_id: u32, arrivals: BTreeMap<usize, u64>, rng: &mut Rng) {
    let planet = &mut state.planets[planet_id as usize];
    let mut sides = vec![Side {
        owner: planet.owner,
        before: planet.ships,
        after: planet.ships,
    }];
    for (owner, ships) in arrivals {
        if Some(owner) == planet.owner {
            sides[0].before += ships;
            sides[0].after += ships;
        } else {
            sides.push(Side {
                owner: Some(owner),
                before: ships,
                after: ships,
            });
        }
    }
    if sides.len() == 1 {
        planet.ships = sides[0].after;
        return;
    }
    fight(&mut sides, rng);
    let holder_left = sides[0].after > 0;
    let survivor = sides.iter().position(|s| s.after > 0);
    let winner = match survivor {
        Some(index) if !holder_left => {
            planet.owner = sides[index].owner;
            planet.ships = sides[index].after;
            sides[index].owner
        }
        _ => {
            planet.ships = sides[0].after;
            planet.owner
        }
    };
    state.battles.push(Battle {
        planet: planet_id,
        sides,
        winner,
    });
}

/// Exchanges until at most one side has ships. Each exchange pits two
/// sides drawn by strength; the stronger is likelier to win it; the loser
/// loses an eighth of the smaller side (at least one ship), the winner half
/// that. Every exchange costs at least one ship, so it ends.
fn fight(sides: &mut [Side], rng: &mut Rng) {
    loop {
        let standing: Vec<usize> = (0..sides.len()).filter(|&i| sides[i].after > 0).collect();
        if standing.len() <= 1 {
            return;
        }
        let a = pick(sides, &standing, rng);
        let rest: Vec<usize> = standing.iter().copied().filter(|&i| i != a).collect();
        let b = pick(sides, &rest, rng);
        let (sa, sb) = (sides[a].after, sides[b].after);
        let (winner, loser) = if rng.random_range(0..sa + sb) < sa {
            (a, b)
        } else {
            (b, a)
        };
        let chunk = (sa.min(sb) / 8).max(1);
        sides[loser].after -= chunk.min(sides[loser].after);
        sides[winner].after -= (chunk / 2).min(sides[winner].after);
    }
}

/// One of `among`, drawn with weight by ships.
fn pick(sides: &[Side], among: &[usize], rng: &mut Rng) -> usize {
    let total: u64 = among.iter().map(|&i| sides[i].after).sum();
    let mut roll = rng.random_range(0..total);
    for &i in among {
        if roll < sides[i].after {
            return i;
        }
        roll -= sides[i].after;
    }
    among[among.len() - 1]
}

fn summary(state: &State, seat: usize, turn: u32) -> String {
    let fought = state
        .battles
        .iter()
        .filter(|b| b.sides.iter().any(|s| s.owner == Some(seat)))
        .count();
    let won = state
        .battles
        .iter()
        .filter(|b| b.winner == Some(seat) && b.sides.iter().any(|s| s.owner == Some(seat)))
        .count();
    let mut text = format!(
        "Turn {turn}: you hold {} and {}",
        counted(state.planets_of(seat) as u64, "planet"),
        counted(state.ships_of(seat), "ship")
    );
    if fought > 0 {
        text.push_str(&format!(
            "; {won} of {} won",
            counted(fought as u64, "battle")
        ));
    }
    text.push('.');
    if let Some(winners) = &state.winners {
        text.push_str(if winners.contains(&seat) {
            " The game is over: you won."
        } else {
            " The game is over."
        });
    } else if state.out[seat] {
        text.push_str(" You are out.");
    }
    text
}

fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
