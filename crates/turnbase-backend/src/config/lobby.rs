//! The lobby: pending race-name reservations, the sweeper, and where the
//! engine kinds come from.

use std::path::PathBuf;

use turnbase_core::config::{Reader, VarSpec, parse_positive_duration};
use turnbase_core::var;
use turnbase_lobby::EngineRegistry;

pub(super) const VARIABLES: &[VarSpec] = &[
    var!(
        "BACKEND_LOBBY_PENDING_REGISTRATION_TTL",
        Some("72h"),
        "How long an application reserves its race name while the owner has not decided; then it expires."
    ),
    var!(
        "BACKEND_LOBBY_SWEEP_INTERVAL",
        Some("1m"),
        "How often the lobby sweeper releases expired reservations and closes games past their enrolment deadline."
    ),
    var!(
        "BACKEND_LOBBY_MIN_TURN_STEP",
        Some("10s"),
        "Shortest turn interval or move limit a new game may have (at least 1s; benchmarks lower it)."
    ),
    var!(
        "BACKEND_ENGINES_FILE",
        None,
        "TOML file listing the engine kinds to offer (see README, Engine kinds); unset means the reference engines built into `turnbase`."
    ),
];

/// Where the engine kinds come from.
#[derive(Debug, Clone)]
pub enum EngineSource {
    /// `BACKEND_ENGINES_FILE`, read at start.
    File(PathBuf),
    /// The kinds built into the running program: the `turnbase` command
    /// puts its reference engines here; a library user may put others.
    Builtin(EngineRegistry),
}

#[derive(Debug, Clone)]
pub struct LobbySettings {
    pub service: turnbase_lobby::LobbyConfig,
    pub engines: EngineSource,
}

pub(super) fn read(r: &mut Reader<'_>) -> LobbySettings {
    let service = turnbase_lobby::LobbyConfig {
        pending_ttl: r.get(
            "BACKEND_LOBBY_PENDING_REGISTRATION_TTL",
            parse_positive_duration,
        ),
        sweep_interval: r.get("BACKEND_LOBBY_SWEEP_INTERVAL", parse_positive_duration),
        min_turn_step: r.get("BACKEND_LOBBY_MIN_TURN_STEP", parse_turn_step),
    };
    let engines = match r.optional("BACKEND_ENGINES_FILE", parse_engines_file) {
        Some(path) => EngineSource::File(path),
        None => EngineSource::Builtin(EngineRegistry::default()),
    };
    LobbySettings { service, engines }
}

fn parse_engines_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if !path.is_file() {
        return Err(format!("{text:?} is not a readable file"));
    }
    Ok(path)
}

fn parse_turn_step(text: &str) -> Result<std::time::Duration, String> {
    let d = parse_positive_duration(text)?;
    if d < turnbase_lobby::schedule::FLOOR_STEP {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}
