//! Turnbase's lobby: the engine kinds on offer, games from creation to
//! their start, enrolment with the owner's approval, bot seats, the
//! race-name directory and the sweeper that closes enrolment on time.
//!
//! No HTTP here: the backend's `api` module calls [`LobbyService`]; the
//! store keeps the invariants concurrency could break.

pub mod engines;
pub mod listing;
pub mod race_name;
pub mod rules;
pub mod schedule;
mod service;
pub mod sweeper;

pub use engines::{EngineKind, EngineRegistry, EngineRun};
pub use listing::ListedPage;
pub use race_name::{RaceName, RaceNameError};
pub use rules::{PlayRules, Rules};
pub use schedule::{PreviewTime, Schedule, ScheduleError, ScheduleSpec};
pub use service::{
    AdminActor, Availability, Caller, Clock, GameChanges, GameDetail, GameDraft, GameView,
    LobbyConfig, LobbyError, LobbyResult, LobbyService, MAX_ENROLMENT, MAX_TITLE_CHARS,
    PREVIEW_COUNT, StartQueue, SweepReport, system_clock,
};
