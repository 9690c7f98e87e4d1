//! The `docker` driver: one container per game through the Docker Engine
//! API, for isolation. A game's container is `turnbase-game-<id>`,
//! labelled `turnbase.backend=<installation>`, `turnbase.game_id=<id>` and
//! `turnbase.engine=<kind>`, keeps its data on the named volume
//! `turnbase-game-<id>`, has CPU and memory limits, restarts
//! `unless-stopped`, publishes no port, and is reached on a Docker network
//! the driver creates, at its address there.
//!
//! There is no registry: [`build_image`] makes a local image from an
//! engine binary and the shared libraries it links (`docker import` of a
//! tar), with the engine command as its entry point.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, NetworkCreateRequest, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt as _;
use uuid::Uuid;

use crate::driver::{DriverError, Running};

/// The port engines listen on inside their containers.
const ENGINE_PORT: u16 = 7700;

/// Container limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// CPUs (e.g. 1.0).
    pub cpus: f64,
    pub memory_bytes: i64,
}

pub struct DockerDriver {
    docker: Docker,
    installation: String,
    network: String,
    limits: Limits,
}

/// A container of ours, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub game: Uuid,
    pub engine: String,
    pub running: bool,
}

fn container(game: Uuid) -> String {
    format!("turnbase-game-{game}")
}

impl DockerDriver {
    /// Connects to the Docker engine at `host` (`unix:///path` or
    /// `http://host:port`) and makes sure the engines' network exists. The
    /// error says what was tried.
    pub async fn connect(
        host: &str,
        installation: Uuid,
        network: &str,
        limits: Limits,
    ) -> Result<DockerDriver, String> {
        let version = bollard::API_DEFAULT_VERSION;
        let docker = if host.starts_with("unix://") || host.starts_with('/') {
            Docker::connect_with_socket(host, 30, version)
        } else {
            Docker::connect_with_http(host, 30, version)
        }
        .map_err(|e| format!("cannot reach the Docker engine at {host}: {e}"))?;
        docker
            .ping()
            .await
            .map_err(|e| format!("the Docker engine at {host} does not answer: {e}"))?;
        if docker
            .inspect_network(
                network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .is_err()
        {
            docker
                .create_network(NetworkCreateRequest {
                    name: network.to_string(),
                    driver: Some("bridge".into()),
                    labels: Some(HashMap::from([(
                        "turnbase.backend".to_string(),
                        installation.to_string(),
                    )])),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create the Docker network {network}: {e}"))?;
        }
        Ok(DockerDriver {
            docker,
            installation: installation.to_string(),
            network: network.to_string(),
            limits,
        })
    }

    pub fn name(&self) -> &'static str {
        "docker"
    }

    /// The game's container, started (created first when missing), and
    /// its address on the engines' network.
    pub async fn ensure(
        &self,
        game: Uuid,
        engine: &str,
        image: &str,
    ) -> Result<Running, DriverError> {
        let name = container(game);
        let found = self
            .docker
            .inspect_container(
                &name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await;
        if found.is_err() {
            self.create(game, engine, image).await?;
        }
        let running = self
            .docker
            .inspect_container(
                &name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(docker_error)?
            .state
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running {
            self.docker
                .start_container(
                    &name,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(docker_error)?;
        }
        let inspected = self
            .docker
            .inspect_container(
                &name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(docker_error)?;
        let ip = inspected
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(&self.network))
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| DriverError::Spawn {
                program: image.to_string(),
                reason: format!(
                    "the container has no address on the {} network",
                    self.network
                ),
            })?;
        Ok(Running {
            url: format!("http://{ip}:{ENGINE_PORT}"),
            handle: inspected.id.unwrap_or(name),
        })
    }

    async fn create(&self, game: Uuid, engine: &str, image: &str) -> Result<(), DriverError> {
        let name = container(game);
        let labels = HashMap::from([
            ("turnbase.backend".to_string(), self.installation.clone()),
            ("turnbase.game_id".to_string(), game.to_string()),
            ("turnbase.engine".to_string(), engine.to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec![
                "--listen".into(),
                format!("0.0.0.0:{ENGINE_PORT}"),
                "--data-dir".into(),
                "/data".into(),
            ]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                mounts: Some(vec![Mount {
                    target: Some("/data".into()),
                    source: Some(name.clone()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }]),
                nano_cpus: Some((self.limits.cpus * 1e9) as i64),
                memory: Some(self.limits.memory_bytes),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .map_err(docker_error)?;
        Ok(())
    }

    /// Stops the game's container (it stays, with its volume).
    pub async fn stop(&self, game: Uuid) {
        let options = StopContainerOptionsBuilder::new().t(5).build();
        if let Err(err) = self
            .docker
            .stop_container(&container(game), Some(options))
            .await
        {
            tracing::debug!(%game, error = %err, "stopping the container");
        }
    }

    /// Removes the game's container and its volume.
    pub async fn remove(&self, game: Uuid) -> Result<(), DriverError> {
        let name = container(game);
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.docker.remove_container(&name, Some(options)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(err) => return Err(docker_error(err)),
        }
        match self
            .docker
            .remove_volume(
                &name,
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(err) => Err(docker_error(err)),
        }
    }

    /// Every container labelled as this installation's.
    pub async fn list(&self) -> Result<Vec<Listed>, DriverError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("turnbase.backend={}", self.installation)],
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(docker_error)?;
        Ok(summaries
            .into_iter()
            .filter_map(|s| {
                let labels = s.labels.unwrap_or_default();
                let game = labels.get("turnbase.game_id")?.parse().ok()?;
                Some(Listed {
                    game,
                    engine: labels.get("turnbase.engine").cloned().unwrap_or_default(),
                    running: s
                        .state
                        .map(|st| st.to_string() == "running")
                        .unwrap_or(false),
                })
            })
            .collect())
    }
}

fn docker_error(err: bollard::errors::Error) -> DriverError {
    DriverError::Spawn {
        program: "docker".into(),
        reason: err.to_string(),
    }
}

/// Builds the local image `tag` from `binary` (and the shared libraries
/// `ldd` lists for it), with `entrypoint` (its first word the binary's
/// path in the image, e.g. `/turnbase`) as the entry point.
pub async fn build_image(
    docker_host: &str,
    binary: &Path,
    entrypoint: &[String],
    tag: &str,
) -> anyhow::Result<()> {
    let tarball = tokio::task::spawn_blocking({
        let binary = binary.to_path_buf();
        let inside = entrypoint
            .first()
            .cloned()
            .unwrap_or_else(|| "/engine".into());
        move || root_fs(&binary, &inside)
    })
    .await??;
    let version = bollard::API_DEFAULT_VERSION;
    let docker = if docker_host.starts_with("unix://") || docker_host.starts_with('/') {
        Docker::connect_with_socket(docker_host, 300, version)?
    } else {
        Docker::connect_with_http(docker_host, 300, version)?
    };
    let (repo, version_tag) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let words = entrypoint
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(version_tag)
        .changes(vec![format!("ENTRYPOINT [{words}]")])
        .build();
    let mut progress = docker.create_image(
        Some(options),
        Some(bollard::body_full(tarball.into())),
        None,
    );
    while let Some(step) = progress.next().await {
        step?;
    }
    Ok(())
}

/// A tar holding the binary at `inside` and each library it needs at its
/// own path.
fn root_fs(binary: &Path, inside: &str) -> anyhow::Result<Vec<u8>> {
    let listed = std::process::Command::new("ldd").arg(binary).output()?;
    let text = String::from_utf8_lossy(&listed.stdout);
    let mut libraries: Vec<String> = Vec::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x…)`.
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(path.to_string());
        }
    }
    let mut tar = tar::Builder::new(Vec::new());
    add_file(&mut tar, binary, inside)?;
    for library in &libraries {
        add_file(&mut tar, &std::fs::canonicalize(library)?, library)?;
    }
    for dir in ["data", "tmp"] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o1777);
        header.set_size(0);
        tar.append_data(&mut header, dir, std::io::empty())?;
    }
    Ok(tar.into_inner()?)
}

/// One file, as a plain ustar entry (Docker's importer refuses GNU sparse
/// entries, which the tar crate may write for files read from disk).
fn add_file(tar: &mut tar::Builder<Vec<u8>>, from: &Path, at: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(from)?;
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o755);
    header.set_size(bytes.len() as u64);
    tar.append_data(&mut header, at.trim_start_matches('/'), bytes.as_slice())?;
    Ok(())
}
