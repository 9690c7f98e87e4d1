//! The small adapters that join the lobby and the runtime (DESIGN section
//! 2: mutually dependent services are joined by forwarders set after
//! construction, never by domain logic in the wiring).

use turnbase_lobby::{EngineRegistry, EngineRun, LobbyService, StartQueue};
use turnbase_runtime::{Commands, EngineCommand, EngineSpec, GameOutcomes, Runtime};
use turnbase_store::lobby::Transition;
use uuid::Uuid;

/// How the runtime runs each registered kind. With the Docker driver a
/// binary kind runs from the image `turnbase engine image` builds for it
/// (`turnbase-engine-<kind>:latest`).
pub fn commands(engines: &EngineRegistry, docker: bool) -> Commands {
    engines
        .kinds()
        .map(|k| {
            let spec = match (&k.run, docker) {
                (EngineRun::Docker { image }, _) => EngineSpec::Image(image.clone()),
                (EngineRun::Binary { .. }, true) => {
                    EngineSpec::Image(format!("turnbase-engine-{}:latest", k.name))
                }
                (EngineRun::Binary { program, args }, false) => EngineSpec::Binary(EngineCommand {
                    program: program.clone(),
                    args: args.clone(),
                }),
            };
            (k.name.clone(), spec)
        })
        .collect()
}

/// The runtime's outcomes, told to the lobby.
pub struct LobbyOutcomes(pub LobbyService);

#[async_trait::async_trait]
impl GameOutcomes for LobbyOutcomes {
    async fn began(&self, game: Uuid) -> anyhow::Result<()> {
        self.0
            .runtime_moved(game, Transition::Begin, "the engine runs")
            .await
            .map(drop)
            .map_err(|e| anyhow::anyhow!(e))
    }

    async fn start_failed(&self, game: Uuid, reason: &str) -> anyhow::Result<()> {
        self.0
            .runtime_moved(game, Transition::FailStart, reason)
            .await
            .map(drop)
            .map_err(|e| anyhow::anyhow!(e))
    }
}

/// The runtime's queue, as the lobby sees it.
pub struct RuntimeQueue(pub Runtime);

#[async_trait::async_trait]
impl StartQueue for RuntimeQueue {
    async fn has_room(&self) -> bool {
        match self.0.has_room().await {
            Ok(room) => room,
            Err(err) => {
                tracing::warn!(error = %err, "the runtime queue's depth cannot be read; letting the start through");
                true
            }
        }
    }

    fn queued(&self) {
        self.0.wake();
    }
}
