//! The small adapters that join the lobby and the runtime (DESIGN section
//! 2: mutually dependent services are joined by forwarders set after
//! construction, never by domain logic in the wiring).

use turnbase_lobby::{EngineRegistry, EngineRun, LobbyService, StartQueue};
use turnbase_runtime::{Commands, EngineCommand, GameOutcomes, Runtime};
use turnbase_store::lobby::Transition;
use uuid::Uuid;

/// The registered kinds the process driver can run (binaries).
pub fn commands(engines: &EngineRegistry) -> Commands {
    engines
        .kinds()
        .filter_map(|k| match &k.run {
            EngineRun::Binary { program, args } => Some((
                k.name.clone(),
                EngineCommand {
                    program: program.clone(),
                    args: args.clone(),
                },
            )),
            EngineRun::Docker { image } => {
                tracing::warn!(kind = %k.name, image, "the process driver cannot run a Docker image; games of this kind will fail to start");
                None
            }
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
