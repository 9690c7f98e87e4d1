//! The engine kinds this installation offers: what each plays (from its
//! manifest) and how the runtime runs it (a binary or a Docker image).
//!
//! `turnbase up` and `turnbase backend` register the reference engines
//! built into the `turnbase` binary; `BACKEND_ENGINES_FILE` names a TOML
//! file that lists others (see README "Engine kinds"). A kind whose manifest
//! fields the file leaves out is asked for them: its binary is started once
//! on a loopback port and its `GET /manifest` read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use turnbase_engine_kit::protocol::{Manifest, Mode, PROTOCOL_VERSION, valid_id};

/// Most seats any kind may declare.
pub const MAX_PLAYERS_LIMIT: u32 = 64;

/// How the runtime starts an engine of a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineRun {
    /// A program, run with `args` then `--listen ADDR --data-dir DIR`.
    Binary { program: PathBuf, args: Vec<String> },
    /// A local Docker image whose entry point takes the same flags.
    Docker { image: String },
}

/// One kind of game the lobby can create.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineKind {
    pub name: String,
    pub version: String,
    pub title: String,
    pub mode: Mode,
    pub min_players: u32,
    pub max_players: u32,
    /// Whether the engine plays bot seats.
    pub bots: bool,
    /// JSON Schema of its settings (the kit's subset), with defaults.
    pub settings_schema: Value,
    pub run: EngineRun,
}

impl EngineKind {
    /// A kind from an engine's manifest and how to run it; the manifest
    /// is checked as the lobby will rely on it.
    pub fn from_manifest(manifest: &Manifest, run: EngineRun) -> Result<EngineKind, String> {
        if manifest.protocol != PROTOCOL_VERSION {
            return Err(format!(
                "speaks engine protocol {}, this Turnbase speaks {PROTOCOL_VERSION}",
                manifest.protocol
            ));
        }
        let kind = EngineKind {
            name: manifest.kind.clone(),
            version: manifest.version.clone(),
            title: manifest.title.clone(),
            mode: manifest.mode,
            min_players: manifest.min_players,
            max_players: manifest.max_players,
            bots: manifest.bots,
            settings_schema: manifest.settings_schema.clone(),
            run,
        };
        kind.check()?;
        Ok(kind)
    }

    /// `simultaneous` or `sequential`, as the protocol writes it.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Simultaneous => "simultaneous",
            Mode::Sequential => "sequential",
        }
    }

    fn check(&self) -> Result<(), String> {
        if !valid_id(&self.name) {
            return Err(format!(
                "kind {:?}: 1 to 64 letters, digits, '-' or '_'",
                self.name
            ));
        }
        if self.min_players < 1
            || self.min_players > self.max_players
            || self.max_players > MAX_PLAYERS_LIMIT
        {
            return Err(format!(
                "players {}..{}: expected 1 <= min_players <= max_players <= {MAX_PLAYERS_LIMIT}",
                self.min_players, self.max_players
            ));
        }
        let problems = turnbase_engine_kit::settings::check_schema(&self.settings_schema);
        if let Some(p) = problems.first() {
            return Err(format!("settings_schema at {:?}: {}", p.path, p.reason));
        }
        Ok(())
    }
}

/// Every kind, by name.
#[derive(Debug, Clone, Default)]
pub struct EngineRegistry {
    kinds: Arc<BTreeMap<String, EngineKind>>,
}

impl EngineRegistry {
    /// A registry of `kinds`; a name given twice is an error.
    pub fn new(kinds: Vec<EngineKind>) -> Result<EngineRegistry, String> {
        let mut map = BTreeMap::new();
        for kind in kinds {
            kind.check()?;
            let name = kind.name.clone();
            if map.insert(name.clone(), kind).is_some() {
                return Err(format!("engine kind {name:?} is registered twice"));
            }
        }
        Ok(EngineRegistry {
            kinds: Arc::new(map),
        })
    }

    /// A registry of engines described by `manifests`, each run as `run`
    /// says (how the reference engines are registered).
    pub fn from_manifests(
        manifests: &[Manifest],
        run: impl Fn(&Manifest) -> EngineRun,
    ) -> Result<EngineRegistry, String> {
        let kinds = manifests
            .iter()
            .map(|m| EngineKind::from_manifest(m, run(m)))
            .collect::<Result<Vec<_>, _>>()?;
        EngineRegistry::new(kinds)
    }

    pub fn get(&self, name: &str) -> Option<&EngineKind> {
        self.kinds.get(name)
    }

    /// In name order.
    pub fn kinds(&self) -> impl Iterator<Item = &EngineKind> {
        self.kinds.values()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// Reads `path` (see the module documentation). Errors name the file
    /// and the entry.
    pub async fn load(path: &Path) -> Result<EngineRegistry, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let file: EnginesFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut kinds = Vec::with_capacity(file.engine.len());
        for (i, entry) in file.engine.into_iter().enumerate() {
            let name = entry.kind.clone();
            let kind = entry
                .resolve()
                .await
                .map_err(|e| format!("{}: engine[{i}] ({name:?}): {e}", path.display()))?;
            kinds.push(kind);
        }
        EngineRegistry::new(kinds).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnginesFile {
    #[serde(default)]
    engine: Vec<EngineEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineEntry {
    kind: String,
    /// A program to run…
    binary: Option<PathBuf>,
    #[serde(default)]
    args: Vec<String>,
    /// …or a Docker image.
    image: Option<String>,
    /// The manifest's fields; read from the engine when absent.
    manifest: Option<ManifestFields>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFields {
    version: String,
    title: Option<String>,
    mode: Mode,
    min_players: u32,
    max_players: u32,
    #[serde(default)]
    bots: bool,
    settings_schema: Value,
}

impl EngineEntry {
    async fn resolve(self) -> Result<EngineKind, String> {
        let run = match (self.binary, self.image) {
            (Some(program), None) => EngineRun::Binary {
                program,
                args: self.args,
            },
            (None, Some(image)) if self.args.is_empty() => EngineRun::Docker { image },
            (None, Some(_)) => return Err("args go with binary, not image".into()),
            _ => return Err("give exactly one of binary or image".into()),
        };
        let kind = match self.manifest {
            Some(m) => EngineKind {
                name: self.kind.clone(),
                version: m.version,
                title: m.title.unwrap_or_else(|| self.kind.clone()),
                mode: m.mode,
                min_players: m.min_players,
                max_players: m.max_players,
                bots: m.bots,
                settings_schema: m.settings_schema,
                run,
            },
            None => {
                let manifest = read_manifest(&run).await?;
                if manifest.kind != self.kind {
                    return Err(format!(
                        "the engine calls its kind {:?} in its manifest",
                        manifest.kind
                    ));
                }
                EngineKind::from_manifest(&manifest, run)?
            }
        };
        kind.check()?;
        Ok(kind)
    }
}

/// Starts the engine on a loopback port with a throwaway data folder and
/// reads its manifest.
async fn read_manifest(run: &EngineRun) -> Result<Manifest, String> {
    let EngineRun::Binary { program, args } = run else {
        return Err("a Docker engine needs its [engine.manifest] fields in the file".into());
    };
    let scratch = tempfile::tempdir().map_err(|e| format!("a scratch folder: {e}"))?;
    let mut words: Vec<String> = vec![program.display().to_string()];
    words.extend(args.iter().cloned());
    words.extend([
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        scratch.path().display().to_string(),
    ]);
    let command = words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ");
    let engine = turnbase_engine_kit::check::Spawned::start(&command)
        .await
        .map_err(|e| format!("starting it to read its manifest: {e}"))?;
    let url = format!("{}/manifest", engine.url());
    let answer = async {
        let response = reqwest::get(&url).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("GET /manifest answered {}", response.status()));
        }
        response
            .json::<Manifest>()
            .await
            .map_err(|e| format!("GET /manifest: {e}"))
    };
    let manifest = tokio::time::timeout(std::time::Duration::from_secs(10), answer)
        .await
        .map_err(|_| "GET /manifest took over 10 s".to_string())
        .and_then(|r| r);
    engine.stop().await;
    manifest
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::EngineRegistry;

    #[tokio::test]
    async fn a_file_with_inline_manifests_loads_and_bad_entries_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("engines.toml");
        std::fs::write(
            &path,
            r#"
[[engine]]
kind = "duel"
image = "example/duel:1"
[engine.manifest]
version = "2.1.0"
mode = "sequential"
min_players = 2
max_players = 2
bots = true
settings_schema = { type = "object", additionalProperties = false, properties = { rounds = { type = "integer", minimum = 1, maximum = 9, default = 3 } } }
"#,
        )
        .expect("write");
        let registry = EngineRegistry::load(&path).await.expect("loads");
        let duel = registry.get("duel").expect("registered");
        assert_eq!(duel.version, "2.1.0");
        assert_eq!(duel.title, "duel");
        assert!(duel.bots);

        let cases = [
            (
                "[[engine]]\nkind = \"x\"\n",
                "give exactly one of binary or image",
            ),
            (
                "[[engine]]\nkind = \"x\"\nimage = \"i\"\n",
                "needs its [engine.manifest] fields",
            ),
            (
                "[[engine]]\nkind = \"x\"\nimage = \"i\"\n[engine.manifest]\nversion = \"1\"\nmode = \"simultaneous\"\nmin_players = 3\nmax_players = 2\nsettings_schema = { type = \"object\", properties = {} }\n",
                "min_players <= max_players",
            ),
            ("[[engine]]\nkind = \"x\"\ncolour = 1\n", "unknown field"),
        ];
        for (text, want) in cases {
            std::fs::write(&path, text).expect("write");
            let err = EngineRegistry::load(&path).await.expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains("engines.toml"), "{err}");
        }
    }
}
