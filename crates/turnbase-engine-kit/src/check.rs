//! The conformance checker: runs the engine protocol's checks against any
//! running engine, whatever it is written in, and reports each as pass,
//! fail (with the precise reason) or skip.
//!
//! It plays real games on the engine: it sets one up, sends bad and good
//! orders, resolves turns twice over, compares views between players, and
//! — when it started the engine itself ([`Spawned`]) — kills the engine
//! with SIGKILL, starts it again and checks that every game, view and
//! resolution survived.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use crate::protocol::{self, GameState, Manifest, Mode, Options, OrdersAnswer, Resolution, View};
use crate::settings;

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: &'static str,
    pub outcome: Outcome,
}

/// Every check's result, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub results: Vec<CheckResult>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.results
            .iter()
            .all(|r| !matches!(r.outcome, Outcome::Fail(_)))
    }

    pub fn failures(&self) -> Vec<&CheckResult> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
            .collect()
    }

    /// The pass/fail table, one line per check, and a total.
    pub fn table(&self) -> String {
        let width = self.results.iter().map(|r| r.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for result in &self.results {
            let (mark, note) = match &result.outcome {
                Outcome::Pass => ("PASS", String::new()),
                Outcome::Fail(why) => ("FAIL", format!("  {why}")),
                Outcome::Skip(why) => ("SKIP", format!("  {why}")),
            };
            let line = format!("{mark}  {:width$}{note}", result.name);
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let failed = self.failures().len();
        let _ = writeln!(
            out,
            "{} checks: {} passed, {failed} failed, {} skipped",
            self.results.len(),
            self.results
                .iter()
                .filter(|r| r.outcome == Outcome::Pass)
                .count(),
            self.results
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Skip(_)))
                .count(),
        );
        out
    }

    fn record(&mut self, name: &'static str, result: Result<(), String>) {
        let outcome = match result {
            Ok(()) => Outcome::Pass,
            Err(why) => Outcome::Fail(why),
        };
        self.results.push(CheckResult { name, outcome });
    }

    fn skip(&mut self, name: &'static str, why: impl Into<String>) {
        self.results.push(CheckResult {
            name,
            outcome: Outcome::Skip(why.into()),
        });
    }
}

/// An engine the checker started with a shell command and may restart.
pub struct Spawned {
    command: String,
    child: tokio::process::Child,
    url: String,
}

impl Spawned {
    /// Runs `command` with `sh -c` and waits (up to 30 s) for its startup
    /// line, which must contain `listening on http://HOST:PORT`.
    pub async fn start(command: &str) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| anyhow::anyhow!("cannot run {command:?}: {err}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("the engine's stdout is not readable"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = listening_url(&line) {
                    return Ok(url);
                }
            }
            anyhow::bail!("the engine exited without printing `listening on http://…`")
        })
        .await
        .map_err(|_| anyhow::anyhow!("no `listening on http://…` line within 30 s"))??;
        // Keep draining stdout so that the engine never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Spawned {
            command: command.to_string(),
            child,
            url,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The engine's process id (for measuring it), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL, then start the same command again.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        let fresh = Spawned::start(&self.command).await?;
        *self = fresh;
        Ok(())
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The base URL in a line such as `… listening on http://127.0.0.1:7700, …`.
pub fn listening_url(line: &str) -> Option<String> {
    let start = line.find("listening on http://")? + "listening on ".len();
    let url: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',')
        .collect();
    Some(url.trim_end_matches('/').to_string())
}

/// An answer: status and JSON body (`Value::Null` when not JSON).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn expect<T: DeserializeOwned>(self, status: StatusCode, what: &str) -> Result<T, String> {
        if self.status != status {
            return Err(format!(
                "{what}: expected {status}, got {} {}",
                self.status, self.body
            ));
        }
        serde_json::from_value(self.body)
            .map_err(|err| format!("{what}: the body does not fit the protocol: {err}"))
    }

    /// A protocol error answer: the status and the JSON error body.
    fn expect_error(&self, status: StatusCode, what: &str) -> Result<protocol::ErrorBody, String> {
        if self.status != status {
            return Err(format!(
                "{what}: expected {status}, got {} {}",
                self.status, self.body
            ));
        }
        serde_json::from_value(self.body.clone()).map_err(|_| {
            format!(
                "{what}: {status} without the JSON error body {{\"error\":{{\"code\",\"message\"}}}}: {}",
                self.body
            )
        })
    }
}

struct Engine {
    client: Client,
    base: String,
}

impl Engine {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, String> {
        self.raw(method, path, body.map(|b| b.to_string())).await
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Answer, String> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| format!("{method} {path}: {err}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|err| format!("{method} {path}: reading the body: {err}"))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    async fn state(&self, game: &str) -> Result<GameState, String> {
        self.call(Method::GET, &format!("/games/{game}/state"), None)
            .await?
            .expect(StatusCode::OK, "GET state")
    }

    async fn view(&self, game: &str, player: &str, after: Option<u32>) -> Result<View, String> {
        let query = after.map(|t| format!("?turn={t}")).unwrap_or_default();
        self.call(
            Method::GET,
            &format!("/games/{game}/players/{player}/view{query}"),
            None,
        )
        .await?
        .expect(StatusCode::OK, "GET view")
    }

    async fn options(&self, game: &str, player: &str) -> Result<Options, String> {
        self.call(
            Method::GET,
            &format!("/games/{game}/players/{player}/options"),
            None,
        )
        .await?
        .expect(StatusCode::OK, "GET options")
    }

    async fn put_orders(
        &self,
        game: &str,
        player: &str,
        turn: u32,
        orders: Value,
        dry: bool,
    ) -> Result<Answer, String> {
        let query = if dry { "?dry_run=true" } else { "" };
        self.call(
            Method::PUT,
            &format!("/games/{game}/players/{player}/orders{query}"),
            Some(json!({"turn": turn, "orders": orders})),
        )
        .await
    }

    async fn resolve(&self, game: &str, turn: u32) -> Result<Answer, String> {
        self.call(
            Method::POST,
            &format!("/games/{game}/turns/{turn}/resolve"),
            None,
        )
        .await
    }
}

/// Runs every check against the engine at `base_url`; with `spawned`, also
/// the restart check.
pub async fn run(base_url: &str, spawned: Option<&mut Spawned>) -> Report {
    let mut report = Report::default();
    let client = match Client::builder().timeout(Duration::from_secs(30)).build() {
        Ok(client) => client,
        Err(err) => {
            report.record("client", Err(format!("cannot make an HTTP client: {err}")));
            return report;
        }
    };
    let mut engine = Engine {
        client,
        base: base_url.trim_end_matches('/').to_string(),
    };

    let health = engine.call(Method::GET, "/healthz", None).await;
    report.record(
        "healthz answers 200",
        health.and_then(|a| {
            (a.status == StatusCode::OK)
                .then_some(())
                .ok_or(format!("GET /healthz: {}", a.status))
        }),
    );
    let manifest = match manifest_check(&engine).await {
        Ok(manifest) => {
            report.record("manifest and settings schema valid", Ok(()));
            manifest
        }
        Err(why) => {
            report.record("manifest and settings schema valid", Err(why));
            return report;
        }
    };
    let unique = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let game = format!("check-{unique}");
    let seats = manifest.min_players.max(2).min(manifest.max_players);
    let players: Vec<Value> = (1..=seats)
        .map(|i| json!({"player_id": format!("p{i}"), "name": format!("Player {i}"), "bot": false}))
        .collect();
    let init_body = json!({"seed": 7, "settings": {}, "players": players});

    report.record(
        "errors carry the JSON error body",
        errors_check(&engine, &game).await,
    );
    report.record(
        "init refuses bad settings with details",
        bad_settings_check(&engine, &game, &players).await,
    );
    let init = init_check(&engine, &game, &init_body).await;
    let init_ok = init.is_ok();
    report.record("init is idempotent; another setup is 409", init);
    if !init_ok {
        return report;
    }
    report.record(
        "invalid orders are 422 with details",
        invalid_orders_check(&engine, &game).await,
    );
    report.record(
        "turn numbers are enforced",
        turn_check(&engine, &game).await,
    );
    report.record(
        "unknown games and players are 404",
        unknown_check(&engine, &game).await,
    );
    match dry_run_check(&engine, &game).await {
        Ok(true) => report.record("dry run validates without storing", Ok(())),
        Ok(false) => report.skip(
            "dry run validates without storing",
            "no player has orders to try",
        ),
        Err(why) => report.record("dry run validates without storing", Err(why)),
    }
    let resolved = resolve_check(&engine, &game, manifest.mode).await;
    let resolved_turn = resolved.as_ref().ok().copied();
    report.record("resolve is idempotent by turn number", resolved.map(|_| ()));
    match resolved_turn {
        Some(turn) => report.record(
            "views replay past turns",
            replay_check(&engine, &game, turn).await,
        ),
        None => report.skip("views replay past turns", "no turn was resolved"),
    }
    match private_check(&engine, &game, &manifest).await {
        Ok(Some(note)) => report.skip("views keep each player's secrets", note),
        Ok(None) => report.record("views keep each player's secrets", Ok(())),
        Err(why) => report.record("views keep each player's secrets", Err(why)),
    }
    report.record(
        "an unfinished game cannot be deleted",
        delete_check(&engine, &game).await,
    );
    match spawned {
        Some(spawned) => {
            let result = restart_check(&mut engine, &game, resolved_turn, spawned).await;
            report.record("a restart (SIGKILL) keeps every game", result);
        }
        None => report.skip(
            "a restart (SIGKILL) keeps every game",
            "only with --spawn, when the checker starts the engine",
        ),
    }
    report
}

async fn manifest_check(engine: &Engine) -> Result<Manifest, String> {
    let manifest: Manifest = engine
        .call(Method::GET, "/manifest", None)
        .await?
        .expect(StatusCode::OK, "GET /manifest")?;
    if manifest.protocol != protocol::PROTOCOL_VERSION {
        return Err(format!(
            "protocol {} (this checker speaks {})",
            manifest.protocol,
            protocol::PROTOCOL_VERSION
        ));
    }
    let kind_ok = !manifest.kind.is_empty()
        && manifest
            .kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !kind_ok {
        return Err(format!(
            "kind {:?}: use lowercase letters, digits and '-'",
            manifest.kind
        ));
    }
    if manifest.min_players == 0 || manifest.min_players > manifest.max_players {
        return Err(format!(
            "players {}..{}: need 1 ≤ min ≤ max",
            manifest.min_players, manifest.max_players
        ));
    }
    let problems = settings::check_schema(&manifest.settings_schema);
    if let Some(first) = problems.first() {
        return Err(format!(
            "settings_schema{}: {} ({} problems)",
            first.path,
            first.reason,
            problems.len()
        ));
    }
    if let Some(bad) = manifest.private_fields.iter().find(|p| !p.starts_with('/')) {
        return Err(format!("private field {bad:?} is not a JSON pointer"));
    }
    Ok(manifest)
}

async fn errors_check(engine: &Engine, game: &str) -> Result<(), String> {
    engine
        .call(Method::GET, &format!("/games/{game}-absent/state"), None)
        .await?
        .expect_error(StatusCode::NOT_FOUND, "GET state of an unknown game")?;
    engine
        .raw(
            Method::POST,
            &format!("/games/{game}/init"),
            Some("{\"seed\":".into()),
        )
        .await?
        .expect_error(StatusCode::BAD_REQUEST, "init with broken JSON")?;
    let answer = engine.call(Method::GET, "/no-such-route", None).await?;
    answer.expect_error(StatusCode::NOT_FOUND, "GET an unknown route")?;
    Ok(())
}

async fn bad_settings_check(engine: &Engine, game: &str, players: &[Value]) -> Result<(), String> {
    let body = json!({"seed": 1, "settings": {"turnbase_check_unknown": 1}, "players": players});
    let error = engine
        .call(Method::POST, &format!("/games/{game}-bad/init"), Some(body))
        .await?
        .expect_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "init with an unknown setting",
        )?;
    if !error
        .error
        .details
        .iter()
        .any(|d| d.path == "/settings/turnbase_check_unknown")
    {
        return Err(format!(
            "init with an unknown setting: no detail with path /settings/turnbase_check_unknown in {:?}",
            error.error.details
        ));
    }
    engine
        .call(Method::GET, &format!("/games/{game}-bad/state"), None)
        .await?
        .expect_error(StatusCode::NOT_FOUND, "the refused game must not exist")?;
    Ok(())
}

async fn init_check(engine: &Engine, game: &str, body: &Value) -> Result<(), String> {
    let path = format!("/games/{game}/init");
    let first: GameState = engine
        .call(Method::POST, &path, Some(body.clone()))
        .await?
        .expect(StatusCode::CREATED, "first init")?;
    let again: GameState = engine
        .call(Method::POST, &path, Some(body.clone()))
        .await?
        .expect(StatusCode::OK, "the same init again")?;
    if first != again {
        return Err(format!(
            "the same init answered differently: {first:?} then {again:?}"
        ));
    }
    if first.turn != 1 || first.finished {
        return Err(format!(
            "a new game should open turn 1, unfinished: {first:?}"
        ));
    }
    let mut other = body.clone();
    other["seed"] = json!(8);
    engine
        .call(Method::POST, &path, Some(other))
        .await?
        .expect_error(StatusCode::CONFLICT, "init with another seed")?;
    Ok(())
}

async fn invalid_orders_check(engine: &Engine, game: &str) -> Result<(), String> {
    let state = engine.state(game).await?;
    let player = state
        .to_move
        .first()
        .ok_or("a new game has nobody to move")?;
    let nonsense = json!([{"turnbase_check": "not an order"}]);
    let error = engine
        .put_orders(game, player, state.turn, nonsense, false)
        .await?
        .expect_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "an order of no known shape",
        )?;
    if error.error.code != "invalid_orders" {
        return Err(format!(
            "code {:?}, expected invalid_orders",
            error.error.code
        ));
    }
    if !error
        .error
        .details
        .iter()
        .any(|d| d.path.starts_with("/orders/0"))
    {
        return Err(format!(
            "no detail points at /orders/0: {:?}",
            error.error.details
        ));
    }
    engine
        .put_orders(game, player, state.turn, json!(5), false)
        .await?
        .expect_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "orders that are not a list",
        )?;
    let after = engine.state(game).await?;
    if after != state {
        return Err("refused orders changed the game".into());
    }
    Ok(())
}

async fn turn_check(engine: &Engine, game: &str) -> Result<(), String> {
    let state = engine.state(game).await?;
    let player = state.to_move.first().ok_or("nobody to move")?;
    engine
        .put_orders(game, player, state.turn + 5, json!([]), false)
        .await?
        .expect_error(StatusCode::CONFLICT, "orders for a future turn")?;
    engine
        .resolve(game, state.turn + 1)
        .await?
        .expect_error(StatusCode::CONFLICT, "resolving a turn that is not open")?;
    let after = engine.state(game).await?;
    if after.turn != state.turn {
        return Err("a refused resolve moved the game on".into());
    }
    Ok(())
}

async fn unknown_check(engine: &Engine, game: &str) -> Result<(), String> {
    engine
        .call(
            Method::GET,
            &format!("/games/{game}/players/nobody-here/view"),
            None,
        )
        .await?
        .expect_error(StatusCode::NOT_FOUND, "view of an unknown player")?;
    engine
        .resolve(&format!("{game}-absent"), 1)
        .await?
        .expect_error(StatusCode::NOT_FOUND, "resolve of an unknown game")?;
    Ok(())
}

/// `Ok(false)` when no player has an example to try.
async fn dry_run_check(engine: &Engine, game: &str) -> Result<bool, String> {
    let state = engine.state(game).await?;
    for player in &state.to_move {
        let options = engine.options(game, player).await?;
        let Some(example) = options.example else {
            continue;
        };
        let answer: OrdersAnswer = engine
            .put_orders(game, player, state.turn, example, true)
            .await?
            .expect(StatusCode::OK, "a dry run of the example orders")?;
        if answer.stored {
            return Err("a dry run answered stored: true".into());
        }
        let after = engine.state(game).await?;
        if after != state {
            return Err("a dry run changed the game".into());
        }
        let view = engine.view(game, player, None).await?;
        if view.turn != state.turn {
            return Err("a dry run moved the turn on".into());
        }
        return Ok(true);
    }
    Ok(false)
}

/// Sends the example orders of every player who has some (simultaneous),
/// resolves the open turn, retries, and returns the resolved turn.
async fn resolve_check(engine: &Engine, game: &str, mode: Mode) -> Result<u32, String> {
    let state = engine.state(game).await?;
    let turn = state.turn;
    if mode == Mode::Simultaneous {
        for player in &state.to_move {
            if let Some(example) = engine.options(game, player).await?.example {
                engine
                    .put_orders(game, player, turn, example, false)
                    .await?
                    .expect::<OrdersAnswer>(StatusCode::OK, "the example orders")?;
            }
        }
    }
    let first: Resolution = engine
        .resolve(game, turn)
        .await?
        .expect(StatusCode::OK, "resolve the open turn")?;
    if first.turn != turn {
        return Err(format!(
            "resolved turn {} when asked for {turn}",
            first.turn
        ));
    }
    let again: Resolution = engine
        .resolve(game, turn)
        .await?
        .expect(StatusCode::OK, "the same resolve again")?;
    if again != first {
        return Err(format!(
            "a retried resolve answered differently:\n  first: {}\n  again: {}",
            serde_json::to_string(&first).unwrap_or_default(),
            serde_json::to_string(&again).unwrap_or_default()
        ));
    }
    let after = engine.state(game).await?;
    if after.turn != turn + 1 {
        return Err(format!(
            "resolving turn {turn} twice left turn {} open; it must be {}",
            after.turn,
            turn + 1
        ));
    }
    Ok(turn)
}

async fn replay_check(engine: &Engine, game: &str, resolved: u32) -> Result<(), String> {
    let state = engine.state(game).await?;
    let player = state
        .standings
        .first()
        .map(|s| s.player_id.clone())
        .ok_or("no standings")?;
    let before = engine.view(game, &player, Some(resolved - 1)).await?;
    let after = engine.view(game, &player, Some(resolved)).await?;
    if before.view == after.view && before.turn == after.turn {
        return Err(format!(
            "the views after turns {} and {resolved} are identical",
            resolved - 1
        ));
    }
    let error = engine
        .call(
            Method::GET,
            &format!(
                "/games/{game}/players/{player}/view?turn={}",
                state.turn + 10
            ),
            None,
        )
        .await?;
    if !error.status.is_client_error() {
        return Err(format!(
            "a view of a turn not yet played answered {}",
            error.status
        ));
    }
    Ok(())
}

/// `Ok(Some(note))` when there is nothing to compare.
async fn private_check(
    engine: &Engine,
    game: &str,
    manifest: &Manifest,
) -> Result<Option<String>, String> {
    if manifest.private_fields.is_empty() {
        return Ok(Some("the manifest declares no private fields".into()));
    }
    let state = engine.state(game).await?;
    let players: Vec<String> = state
        .standings
        .iter()
        .map(|s| s.player_id.clone())
        .collect();
    // Give every player pending orders, where they have any, so that the
    // secrets have something in them.
    if manifest.mode == Mode::Simultaneous && !state.finished {
        for player in &state.to_move {
            if let Some(example) = engine.options(game, player).await?.example {
                let _ = engine
                    .put_orders(game, player, state.turn, example, false)
                    .await?;
            }
        }
    }
    let mut views = Vec::new();
    for player in &players {
        views.push(engine.view(game, player, None).await?.view);
    }
    let mut compared = 0;
    for (owner, view) in players.iter().zip(&views) {
        for pointer in &manifest.private_fields {
            let Some(secret) = view.pointer(pointer) else {
                continue;
            };
            for piece in telling_pieces(secret) {
                compared += 1;
                for (other, other_view) in players.iter().zip(&views) {
                    if other != owner && contains(other_view, piece) {
                        return Err(format!(
                            "{other}'s view shows {owner}'s private {pointer} value {piece}"
                        ));
                    }
                }
            }
        }
    }
    if compared == 0 {
        return Ok(Some(
            "every private field was empty; nothing to compare".into(),
        ));
    }
    Ok(None)
}

/// The parts of a secret specific enough that finding them elsewhere is a
/// leak: objects and non-empty lists (and their elements), and strings of
/// eight characters or more. Bare numbers and short strings collide by
/// chance.
fn telling_pieces(secret: &Value) -> Vec<&Value> {
    match secret {
        Value::Array(items) if !items.is_empty() => {
            let mut pieces = vec![secret];
            pieces.extend(items.iter().filter(|i| i.is_object() || i.is_array()));
            pieces
        }
        Value::Object(map) if !map.is_empty() => vec![secret],
        Value::String(text) if text.chars().count() >= 8 => vec![secret],
        _ => Vec::new(),
    }
}

fn contains(haystack: &Value, needle: &Value) -> bool {
    if haystack == needle {
        return true;
    }
    match haystack {
        Value::Array(items) => items.iter().any(|i| contains(i, needle)),
        Value::Object(map) => map.values().any(|v| contains(v, needle)),
        _ => false,
    }
}

async fn delete_check(engine: &Engine, game: &str) -> Result<(), String> {
    let state = engine.state(game).await?;
    if state.finished {
        return Ok(());
    }
    engine
        .call(Method::DELETE, &format!("/games/{game}"), None)
        .await?
        .expect_error(StatusCode::CONFLICT, "deleting a game still being played")?;
    Ok(())
}

async fn restart_check(
    engine: &mut Engine,
    game: &str,
    resolved: Option<u32>,
    spawned: &mut Spawned,
) -> Result<(), String> {
    let state = engine.state(game).await?;
    let players: Vec<String> = state
        .standings
        .iter()
        .map(|s| s.player_id.clone())
        .collect();
    let mut views = Vec::new();
    for player in &players {
        views.push(engine.view(game, player, None).await?);
    }
    let resolution = match resolved {
        Some(turn) => Some(
            engine
                .resolve(game, turn)
                .await?
                .expect::<Resolution>(StatusCode::OK, "resolve before the restart")?,
        ),
        None => None,
    };
    spawned
        .restart()
        .await
        .map_err(|err| format!("restarting the engine: {err:#}"))?;
    engine.base = spawned.url().to_string();
    let after = engine
        .state(game)
        .await
        .map_err(|why| format!("after the restart: {why}"))?;
    if after != state {
        return Err(format!(
            "the game's state changed across the restart: {state:?} → {after:?}"
        ));
    }
    for (player, before) in players.iter().zip(&views) {
        let now = engine.view(game, player, None).await?;
        if &now != before {
            return Err(format!("{player}'s view changed across the restart"));
        }
    }
    if let (Some(turn), Some(before)) = (resolved, resolution) {
        let again: Resolution = engine
            .resolve(game, turn)
            .await?
            .expect(StatusCode::OK, "the retried resolve after the restart")?;
        if again != before {
            return Err(format!(
                "turn {turn}'s resolution changed across the restart"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_url_in_a_startup_line() {
        assert_eq!(
            listening_url("turnbase engine x 1 listening on http://127.0.0.1:7700, data in d")
                .as_deref(),
            Some("http://127.0.0.1:7700")
        );
        assert_eq!(listening_url("starting").as_deref(), None);
    }

    #[test]
    fn secrets_are_found_anywhere_in_a_view() {
        let secret = json!([{"id": 1, "to": 4}]);
        let leaky = json!({"others": {"fleets": [{"id": 1, "to": 4}]}});
        let clean = json!({"fleets": [{"id": 1, "to": 5}], "n": 1});
        let pieces = telling_pieces(&secret);
        assert!(pieces.iter().any(|p| contains(&leaky, p)));
        assert!(!pieces.iter().any(|p| contains(&clean, p)));
        assert!(telling_pieces(&json!(3)).is_empty());
        assert!(telling_pieces(&json!([])).is_empty());
    }
}
