//! `turnbase-engines`: runs one of the reference game engines.
//!
//! ```text
//! turnbase-engines conquest --listen 127.0.0.1:7701 --data-dir ./conquest-data
//! turnbase-engines reversi  --listen 127.0.0.1:7702 --data-dir ./reversi-data
//! ```

use clap::{Parser, Subcommand};
use turnbase_engine_kit::server::{EngineArgs, run};
use turnbase_engines::{conquest::Conquest, reversi::Reversi};

#[derive(Parser)]
#[command(
    name = "turnbase-engines",
    version,
    about = "Turnbase's reference game engines (engine protocol 1)"
)]
struct Cli {
    #[command(subcommand)]
    game: GameCommand,
}

#[derive(Subcommand)]
enum GameCommand {
    /// Conquest: planets and fleets, 2 to 16 players, simultaneous turns.
    Conquest(EngineArgs),
    /// Reversi: two players, one move at a time.
    Reversi(EngineArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("turnbase-engines: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.game {
            GameCommand::Conquest(args) => run(Conquest, args).await,
            GameCommand::Reversi(args) => run(Reversi, args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("turnbase-engines: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
