//! The engine's files: one folder per game under `<data-dir>/games/`, one
//! state file per turn, and the orders of the open turn, every file written
//! atomically (a temporary file, synced, renamed over, then the folder
//! synced) so that once an answer leaves, a kill -9 cannot take it back.
//!
//! ```text
//! games/<game>/game.json          the init request, settings filled in; written last at init
//! games/<game>/seats.json         which seats the engine's bot plays
//! games/<game>/turn-000001.json   state while turn 1 is open (+ nothing resolved yet)
//! games/<game>/turn-000002.json   state while turn 2 is open + the resolution of turn 1
//! games/<game>/orders-000001/3.json  seat 3's orders for turn 1
//! ```

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where the games live.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    root: PathBuf,
}

impl Files {
    pub(crate) fn open(data_dir: &Path) -> io::Result<Self> {
        let root = data_dir.join("games");
        fs::create_dir_all(&root)?;
        Ok(Files { root })
    }

    pub(crate) fn game_dir(&self, game: &str) -> PathBuf {
        self.root.join(game)
    }

    pub(crate) fn game_file(&self, game: &str) -> PathBuf {
        self.game_dir(game).join("game.json")
    }

    pub(crate) fn seats_file(&self, game: &str) -> PathBuf {
        self.game_dir(game).join("seats.json")
    }

    pub(crate) fn turn_file(&self, game: &str, turn: u32) -> PathBuf {
        self.game_dir(game).join(format!("turn-{turn:06}.json"))
    }

    pub(crate) fn orders_dir(&self, game: &str, turn: u32) -> PathBuf {
        self.game_dir(game).join(format!("orders-{turn:06}"))
    }

    pub(crate) fn orders_file(&self, game: &str, turn: u32, seat: usize) -> PathBuf {
        self.orders_dir(game, turn).join(format!("{seat}.json"))
    }

    /// How many games have a folder.
    pub(crate) fn count(&self) -> usize {
        fs::read_dir(&self.root)
            .map(|entries| entries.filter_map(Result::ok).count())
            .unwrap_or(0)
    }

    /// Creates a game's folder and makes its entry durable.
    pub(crate) fn create_game_dir(&self, game: &str) -> io::Result<()> {
        fs::create_dir_all(self.game_dir(game))?;
        sync_dir(&self.root)
    }

    /// The highest turn with a state file.
    pub(crate) fn latest_turn(&self, game: &str) -> io::Result<Option<u32>> {
        let mut latest = None;
        for entry in fs::read_dir(self.game_dir(game))? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(turn) = name
                .strip_prefix("turn-")
                .and_then(|rest| rest.strip_suffix(".json"))
                .and_then(|digits| digits.parse::<u32>().ok())
            {
                latest = latest.max(Some(turn));
            }
        }
        Ok(latest)
    }

    pub(crate) fn remove_game(&self, game: &str) -> io::Result<()> {
        // Renamed first, so that a crash half-way through the removal
        // leaves no half-game under its own name.
        let doomed = self.root.join(format!(".deleting-{game}"));
        fs::rename(self.game_dir(game), &doomed)?;
        sync_dir(&self.root)?;
        fs::remove_dir_all(doomed)
    }
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {err}", path.display()),
            )
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Writes `value` as JSON to `path` atomically and durably.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("a state file needs a folder"))?;
    fs::create_dir_all(dir)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temporary, path)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_files_and_leave_no_temporary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = Files::open(dir.path()).expect("open");
        files.create_game_dir("g").expect("create");
        let path = files.turn_file("g", 1);
        write_json(&path, &vec![1, 2, 3]).expect("write");
        write_json(&path, &vec![4]).expect("rewrite");
        assert_eq!(read_json::<Vec<u32>>(&path).expect("read"), Some(vec![4]));
        write_json(&files.turn_file("g", 12), &0).expect("write");
        assert_eq!(files.latest_turn("g").expect("list"), Some(12));
        let names: Vec<String> = fs::read_dir(files.game_dir("g"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        assert_eq!(
            read_json::<u32>(&files.turn_file("g", 2)).expect("read"),
            None
        );
        files.remove_game("g").expect("remove");
        assert_eq!(files.count(), 0);
    }
}
