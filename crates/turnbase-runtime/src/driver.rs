//! Drivers run engines. The `process` driver runs each engine as a child
//! process on a free loopback port, with its own data folder under the
//! backend's data dir: one process per game (`per_game`) or one per engine
//! kind hosting all of that kind's games (`shared`).
//!
//! A started engine leaves `engine.pid` and `engine.url` in its folder, so
//! a backend that restarts finds it again (a live pid that answers
//! `/healthz` at that URL) instead of starting a second one. Children are
//! stopped when the backend stops; the reconciler then starts them again
//! on the next start, and the engines load their games from their folders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;
use tokio::sync::Mutex;

use crate::client::EngineClient;

/// How an engine is run (from the engine kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Where a game's engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A process (or container) per game.
    PerGame,
    /// One process per engine kind, hosting all its games.
    Shared,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::PerGame => "per_game",
            Placement::Shared => "shared",
        }
    }

    pub fn parse(text: &str) -> Option<Placement> {
        [Placement::PerGame, Placement::Shared]
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}

/// A running engine: its base URL and what the driver knows it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub url: String,
    pub handle: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot start {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("the engine did not announce its address within {0:?}")]
    NoAddress(Duration),
    #[error("the engine exited before it announced its address")]
    Exited,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

struct Child {
    process: Option<tokio::process::Child>,
    running: Running,
}

/// Engines as local child processes.
pub struct ProcessDriver {
    root: PathBuf,
    client: EngineClient,
    start_timeout: Duration,
    children: Mutex<HashMap<String, Child>>,
}

impl ProcessDriver {
    /// Engines keep their folders under `root` (`<root>/<key>`).
    pub fn new(root: PathBuf, client: EngineClient, start_timeout: Duration) -> Arc<ProcessDriver> {
        Arc::new(ProcessDriver {
            root,
            client,
            start_timeout,
            children: Mutex::new(HashMap::new()),
        })
    }

    pub fn name(&self) -> &'static str {
        "process"
    }

    fn folder(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The engine under `key` (a kind for `shared`, a game id for
    /// `per_game`): the running one if it answers, one found through its
    /// pid file if that answers, or a new one.
    pub async fn ensure(&self, key: &str, command: &EngineCommand) -> Result<Running, DriverError> {
        let mut children = self.children.lock().await;
        if let Some(child) = children.get(key)
            && self.client.healthy(&child.running.url).await
        {
            return Ok(child.running.clone());
        }
        let folder = self.folder(key);
        if let Some(found) = self.found(&folder).await {
            tracing::info!(key, url = %found.url, pid = %found.handle, "adopted a running engine");
            children.insert(
                key.to_string(),
                Child {
                    process: None,
                    running: found.clone(),
                },
            );
            return Ok(found);
        }
        if let Some(old) = children.remove(key) {
            stop_child(old).await;
        }
        stop_stray(&folder).await;
        let child = self.spawn(&folder, command).await?;
        let running = child.running.clone();
        tracing::info!(key, url = %running.url, pid = %running.handle, "engine started");
        children.insert(key.to_string(), child);
        Ok(running)
    }

    /// Whether the engine under `key` is known here and answers.
    pub async fn alive(&self, key: &str) -> bool {
        let url = {
            let children = self.children.lock().await;
            children.get(key).map(|c| c.running.url.clone())
        };
        match url {
            Some(url) => self.client.healthy(&url).await,
            None => false,
        }
    }

    /// Stops the engine under `key` (SIGTERM, then SIGKILL after a grace).
    pub async fn stop(&self, key: &str) {
        let child = self.children.lock().await.remove(key);
        if let Some(child) = child {
            stop_child(child).await;
        } else if let Some(found) = self.found(&self.folder(key)).await {
            stop_pid(&found.handle).await;
        }
        let _ = std::fs::remove_file(self.folder(key).join("engine.pid"));
    }

    /// Removes the engine's folder (its games' files); it must be stopped.
    pub async fn remove(&self, key: &str) -> std::io::Result<()> {
        self.stop(key).await;
        match std::fs::remove_dir_all(self.folder(key)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Every engine this driver has running, by key.
    pub async fn list(&self) -> Vec<(String, Running)> {
        let children = self.children.lock().await;
        children
            .iter()
            .map(|(k, c)| (k.clone(), c.running.clone()))
            .collect()
    }

    /// Stops every engine under this driver's folder (the backend is
    /// stopping): its children, and engines an earlier backend left that
    /// this one used through their recorded address without adopting them
    /// here (otherwise they would outlive every backend).
    pub async fn shutdown(&self) {
        let children: Vec<Child> = self.children.lock().await.drain().map(|(_, c)| c).collect();
        for child in children {
            stop_child(child).await;
        }
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            stop_stray(&entry.path()).await;
        }
    }

    /// An engine left by an earlier backend: a live pid whose URL answers.
    async fn found(&self, folder: &Path) -> Option<Running> {
        let pid = std::fs::read_to_string(folder.join("engine.pid")).ok()?;
        let url = std::fs::read_to_string(folder.join("engine.url")).ok()?;
        let (pid, url) = (pid.trim().to_string(), url.trim().to_string());
        let alive = pid
            .parse::<i32>()
            .is_ok_and(|p| p > 0 && Path::new(&format!("/proc/{p}")).exists());
        if alive && self.client.healthy(&url).await {
            Some(Running { url, handle: pid })
        } else {
            None
        }
    }

    async fn spawn(&self, folder: &Path, command: &EngineCommand) -> Result<Child, DriverError> {
        turnbase_core::private_fs::create_private_dir(folder)?;
        let mut process = tokio::process::Command::new(&command.program)
            .args(&command.args)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(folder.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // A backend that dies leaves its engines running; the next one
            // adopts them through the pid file.
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| DriverError::Spawn {
                program: command.program.display().to_string(),
                reason: e.to_string(),
            })?;
        // The pid goes on disk at once: a backend killed before the engine
        // says where it listens leaves a process the next one must find
        // (and stop) rather than orphan.
        let pid = process.id().map(|p| p.to_string()).unwrap_or_default();
        let _ = std::fs::remove_file(folder.join("engine.url"));
        turnbase_core::private_fs::write_private(&folder.join("engine.pid"), pid.as_bytes())?;
        let stdout = process.stdout.take().ok_or(DriverError::Exited)?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let url = tokio::time::timeout(self.start_timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = turnbase_engine_kit::check::listening_url(&line) {
                    return Some(url);
                }
            }
            None
        })
        .await;
        let url = match url {
            Ok(Some(url)) => url,
            Ok(None) => {
                let _ = process.kill().await;
                return Err(DriverError::Exited);
            }
            Err(_) => {
                let _ = process.kill().await;
                return Err(DriverError::NoAddress(self.start_timeout));
            }
        };
        // Keep reading stdout so that the engine never blocks writing it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        turnbase_core::private_fs::write_private(&folder.join("engine.url"), url.as_bytes())?;
        Ok(Child {
            process: Some(process),
            running: Running { url, handle: pid },
        })
    }
}

async fn stop_child(child: Child) {
    match child.process {
        Some(mut process) => {
            if let Some(pid) = process.id() {
                signal(pid as i32, "TERM");
            }
            if tokio::time::timeout(Duration::from_secs(5), process.wait())
                .await
                .is_err()
            {
                let _ = process.kill().await;
            }
        }
        None => stop_pid(&child.running.handle).await,
    }
}

/// Stops an engine left in `folder` by an earlier backend and not held
/// here: one that does not serve (killed before it wrote where it listens,
/// or hung), before its replacement starts, and any at shutdown; otherwise
/// it would run, orphaned, for ever. Only a process whose command line names this folder's data directory
/// is touched, so a pid reused by an unrelated process is left alone.
async fn stop_stray(folder: &Path) {
    let Ok(pid) = std::fs::read_to_string(folder.join("engine.pid")) else {
        return;
    };
    let pid = pid.trim();
    if is_engine_of(pid, folder) {
        tracing::info!(pid, folder = %folder.display(), "stopping an engine an earlier backend started");
        stop_pid(pid).await;
    }
}

/// Whether process `pid` runs with `folder`'s data directory.
fn is_engine_of(pid: &str, folder: &Path) -> bool {
    if pid.parse::<i32>().map_or(true, |p| p <= 0) {
        return false;
    }
    let data = folder.join("data");
    let Some(data) = data.to_str() else {
        return false;
    };
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == data.as_bytes()))
}

/// Stops a process this backend did not start (adopted through its pid).
async fn stop_pid(pid: &str) {
    let Ok(pid) = pid.parse::<i32>() else {
        return;
    };
    if pid <= 0 {
        return;
    }
    signal(pid, "TERM");
    for _ in 0..50 {
        if !running(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(pid, "KILL");
}

/// Whether `pid` is a live process: not gone, and not a zombie waiting for
/// a parent to reap it (in a container whose first process reaps nothing,
/// an exited engine stays one).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// Sends a signal with `kill(1)`: the standard library has no portable
/// signal call and one is not worth a dependency here.
fn signal(pid: i32, name: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process standing in for an engine: its command line carries
    /// `arg`, as an engine's carries its data directory.
    /// (A shell loop of short sleeps, so that a signalled shell leaves no
    /// sleeping child behind.)
    fn stand_in(arg: &str) -> std::process::Child {
        let child = std::process::Command::new("sh")
            .args([
                "-c",
                "trap 'exit 143' TERM; while :; do sleep 0.1; done",
                "sh",
                arg,
            ])
            .spawn()
            .expect("sh");
        // Until the shell has replaced the forked test process, its
        // command line is this test's.
        let cmdline = format!("/proc/{}/cmdline", child.id());
        for _ in 0..500 {
            if std::fs::read(&cmdline).is_ok_and(|c| c.starts_with(b"sh\0")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    #[tokio::test]
    async fn a_stray_engine_of_this_folder_is_stopped_and_nothing_else() {
        let root = tempfile::tempdir().expect("tempdir");
        let folder = root.path().join("conquest");
        std::fs::create_dir_all(&folder).expect("folder");
        let data = folder.join("data");
        let mut stray = stand_in(data.to_str().expect("utf-8 path"));
        std::fs::write(folder.join("engine.pid"), stray.id().to_string()).expect("pid file");
        let mut other = stand_in("/somewhere/else/data");
        assert!(is_engine_of(&stray.id().to_string(), &folder));
        assert!(!is_engine_of(&other.id().to_string(), &folder));
        assert!(!is_engine_of("0", &folder) && !is_engine_of("x", &folder));
        stop_stray(&folder).await;
        // Reaped here, since this test is its parent.
        let status = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(status) = stray.try_wait().expect("wait") {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the stray was stopped");
        assert_eq!(status.code(), Some(143), "ended by SIGTERM");
        // A pid file naming a process of another folder changes nothing.
        std::fs::write(folder.join("engine.pid"), other.id().to_string()).expect("pid file");
        stop_stray(&folder).await;
        assert!(other.try_wait().expect("wait").is_none(), "left running");
        let _ = other.kill();
        let _ = other.wait();
    }
}
