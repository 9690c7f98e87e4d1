//! The game runtime with the process driver and the real reference
//! engines: a started game gets its engine and runs; an engine killed with
//! SIGKILL is restarted by the reconciler with its games intact; engines
//! that never answer, or answer as another kind, give the game back as
//! `start_failed`; a full queue refuses a start with 503; engines stop
//! with the backend.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use turnbase_testkit::DbKind;

use crate::helpers::{TestApp, engines_binary, spawn_app_with};

const PATIENCE: Duration = Duration::from_secs(30);

fn game_body(engine: &str) -> Value {
    let deadline = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    match engine {
        "conquest" => json!({
            "title": "Runtime", "engine": "conquest", "max_players": 4,
            "enrol_deadline": deadline, "schedule": { "kind": "interval", "every": "1h" },
        }),
        other => json!({
            "title": "Runtime", "engine": other, "enrol_deadline": deadline,
            "schedule": { "kind": "per_move", "limit": "1h" },
        }),
    }
}

/// A game of `engine` with the owner and a bot seated, started early.
async fn started_game(t: &TestApp, owner: &str, engine: &str) -> (StatusCode, String, Value) {
    let (status, game) = t
        .send(
            Method::POST,
            "/api/v1/user/games",
            Some(owner),
            Some(game_body(engine)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{game}");
    let id = game["id"].as_str().expect("id").to_string();
    let (status, a) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{id}/applications"),
            Some(owner),
            Some(json!({ "race_name": format!("Owner {}", &id[id.len() - 8..]) })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    let approve = format!(
        "/api/v1/user/games/{id}/applications/{}/approve",
        a["id"].as_str().expect("id")
    );
    let (status, _) = t
        .send(Method::POST, &approve, Some(owner), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, bot) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{id}/bots"),
            Some(owner),
            Some(json!({ "name": format!("Bot {}", &id[id.len() - 8..]) })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bot}");
    let (status, started) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{id}/start"),
            Some(owner),
            Some(json!({})),
        )
        .await;
    (status, id, started)
}

/// Waits until the game is in `state`; returns the game.
async fn until_state(t: &TestApp, owner: &str, id: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, detail) = t
            .send(
                Method::GET,
                &format!("/api/v1/user/games/{id}"),
                Some(owner),
                None,
            )
            .await;
        if detail["game"]["state"] == state {
            return detail["game"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the game never became {state}: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn record(t: &TestApp, admin: &str, id: &str) -> Value {
    let (status, body) = t
        .send(
            Method::GET,
            &format!("/api/v1/admin/runtime/{id}"),
            Some(admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until the game's runtime record satisfies `done`; returns it.
async fn until_record(
    t: &TestApp,
    admin: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = record(t, admin, id).await;
        if done(&r) {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The engine's public state of the game, from the address in a record.
async fn engine_state(r: &Value, id: &str) -> Value {
    let address = r["record"]["address"].as_str().expect("an address");
    reqwest::get(format!("{address}/games/{id}/state"))
        .await
        .expect("the engine answers")
        .json()
        .await
        .expect("JSON")
}

fn alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{pid}/status")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| !s.contains("State:\tZ"))
}

async fn a_started_game_runs_and_survives_a_killed_engine(backend: DbKind) {
    let t = spawn_app_with(
        backend,
        &[
            ("BACKEND_RUNTIME_RECONCILE_INTERVAL", "200ms"),
            ("BACKEND_RUNTIME_KEEP_FINISHED", "0s"),
        ],
    )
    .await;
    let admin = t.become_admin().await;
    let (owner, _) = t.guest("Owner").await;
    let (status, id, started) = started_game(&t, &owner, "conquest").await;
    assert_eq!(status, StatusCode::OK, "{started}");
    until_state(&t, &owner, &id, "running").await;
    let r = record(&t, &admin, &id).await;
    assert_eq!(r["record"]["state"], "ready", "{r}");
    assert_eq!(r["record"]["placement"], "per_game");
    assert_eq!(r["jobs"][0]["kind"], "start");
    assert_eq!(r["jobs"][0]["status"], "done");
    let pid = r["record"]["handle"].as_str().expect("a pid").to_string();
    let state = engine_state(&r, &id).await;
    assert_eq!(state["kind"], "conquest");
    assert_eq!(state["turn"], 1, "{state}");
    assert_eq!(state["bots"].as_array().map(Vec::len), Some(1), "{state}");

    // SIGKILL: the reconciler starts it again on the same folder.
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    let restarted = until_record(&t, &admin, &id, "restarted", |r| {
        r["record"]["restarts"].as_i64() >= Some(1)
    })
    .await;
    let again = engine_state(&restarted, &id).await;
    assert_eq!(again, state, "the game is intact");
    let new_pid = restarted["record"]["handle"]
        .as_str()
        .expect("a pid")
        .to_string();
    assert_ne!(new_pid, pid);

    // An admin restart is audited.
    let (status, body) = t
        .send(
            Method::POST,
            &format!("/api/v1/admin/runtime/{id}/restart"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, audit) = t
        .send(Method::GET, "/api/v1/admin/audit", Some(&admin), None)
        .await;
    assert_eq!(audit["items"][0]["action"], "runtime.restart", "{audit}");
    let last_pid = body["handle"].as_str().expect("a pid").to_string();
    let metrics = t.metrics_text().await;
    assert!(
        metrics.contains("runtime_engine_restarts_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("engine_request_duration_seconds"),
        "{metrics}"
    );

    // A game that ends: its engine is stopped, then (the keep period
    // being zero here) its folder removed.
    let (status, body) = t
        .send(
            Method::POST,
            &format!("/api/v1/admin/games/{id}/cancel"),
            Some(&admin),
            Some(json!({ "reason": "test over" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = until_record(&t, &admin, &id, "removed", |r| {
        r["record"]["state"] == "removed"
    })
    .await;
    let kinds: Vec<_> = r["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(kinds, ["start", "stop", "remove"], "{r}");
    let folder = Path::new(&t.app_data_dir()).join("engines").join(&id);
    assert!(!folder.exists(), "{} is still there", folder.display());
    assert!(!alive(&last_pid), "the ended game's engine still runs");
    t.app.shutdown().await;
}

/// A backend whose engines file registers `kinds` (TOML).
async fn app_with_engines(backend: DbKind, toml: &str, extra: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("engines.toml");
    std::fs::write(&path, toml).expect("write");
    let path_text = path.display().to_string();
    let mut env: Vec<(&str, &str)> = vec![("BACKEND_ENGINES_FILE", path_text.as_str())];
    env.extend_from_slice(extra);
    let t = spawn_app_with(backend, &env).await;
    // The file is read at start; the folder may go.
    drop(dir);
    t
}

const SILENT_MANIFEST: &str = r#"
[engine.manifest]
version = "1"
mode = "sequential"
min_players = 2
max_players = 2
bots = true
settings_schema = { type = "object", additionalProperties = false, properties = {} }
"#;

async fn starts_that_cannot_succeed_give_the_game_back(backend: DbKind) {
    let engines = engines_binary();
    // An engine that announces itself but never answers /healthz.
    let sick = r#"
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503)
        self.end_headers()
    def log_message(self, *a):
        pass
s = socketserver.TCPServer(('127.0.0.1', 0), H)
print('listening on http://127.0.0.1:%d' % s.server_address[1], flush=True)
s.serve_forever()
"#;
    // An engine that serves its manifest, keeps the trace context the
    // platform's calls carry, and refuses init.
    let tracer = r#"
import http.server, json, socketserver, sys
data = sys.argv[sys.argv.index('--data-dir') + 1]
manifest = {'protocol': 1, 'kind': 'tracer', 'version': '1', 'title': 'Tracer',
            'mode': 'sequential', 'min_players': 2, 'max_players': 2, 'bots': True,
            'settings_schema': {'type': 'object', 'additionalProperties': False, 'properties': {}},
            'limits': {'max_body_bytes': 65536, 'max_orders_per_turn': 10}}
class H(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
    def do_GET(self):
        if self.path == '/manifest':
            import os
            os.makedirs(data, exist_ok=True)
            with open(os.path.join(data, 'traceparent'), 'w') as f:
                f.write(self.headers.get('traceparent', ''))
            self.answer(200, manifest)
        else:
            self.answer(200, {'status': 'ok'})
    def do_POST(self):
        self.answer(400, {'error': {'code': 'no', 'message': 'refused'}})
    def log_message(self, *a):
        pass
s = socketserver.TCPServer(('127.0.0.1', 0), H)
print('listening on http://127.0.0.1:%d' % s.server_address[1], flush=True)
s.serve_forever()
"#;
    let toml = format!(
        "[[engine]]\nkind = \"mute\"\nbinary = \"/bin/sh\"\nargs = [\"-c\", \"sleep 30\", \"mute\"]\n{SILENT_MANIFEST}\n\
         [[engine]]\nkind = \"impostor\"\nbinary = {engines:?}\nargs = [\"reversi\"]\n{SILENT_MANIFEST}\n\
         [[engine]]\nkind = \"sick\"\nbinary = \"python3\"\nargs = [\"-c\", {sick:?}]\n{SILENT_MANIFEST}\n\
         [[engine]]\nkind = \"tracer\"\nbinary = \"python3\"\nargs = [\"-c\", {tracer:?}]\n{SILENT_MANIFEST}"
    );
    let t = app_with_engines(
        backend,
        &toml,
        &[
            ("BACKEND_RUNTIME_START_TIMEOUT", "1s"),
            ("BACKEND_RUNTIME_START_ATTEMPTS", "1"),
            // Spans (at info, which the tests' warn level would filter out)
            // give the engine calls a trace context to carry.
            ("BACKEND_LOG_LEVEL", "info"),
        ],
    )
    .await;
    let (owner, _) = t.guest("Owner").await;
    // An engine that never announces its address.
    let (status, mute, _) = started_game(&t, &owner, "mute").await;
    assert_eq!(status, StatusCode::OK);
    let failed = until_state(&t, &owner, &mute, "start_failed").await;
    let reason = failed["start_error"].as_str().unwrap_or("");
    assert!(reason.contains("did not announce its address"), "{failed}");
    // An engine whose /healthz never says yes: the start waits for it,
    // then gives up with the reason.
    let (status, sick_game, _) = started_game(&t, &owner, "sick").await;
    assert_eq!(status, StatusCode::OK);
    let failed = until_state(&t, &owner, &sick_game, "start_failed").await;
    let reason = failed["start_error"].as_str().unwrap_or("");
    assert!(
        reason.contains("did not answer /healthz within 1s"),
        "{failed}"
    );
    // An admin may retry it too, audited.
    let admin = t.become_admin().await;
    let (status, again) = t
        .send(
            Method::POST,
            &format!("/api/v1/admin/games/{sick_game}/retry-start"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        (status, again["state"].as_str()),
        (StatusCode::OK, Some("starting")),
        "{again}"
    );
    let (_, audit) = t
        .send(Method::GET, "/api/v1/admin/audit", Some(&admin), None)
        .await;
    assert_eq!(audit["items"][0]["action"], "game.retry_start", "{audit}");
    until_state(&t, &owner, &sick_game, "start_failed").await;
    // Init refused (400): a permanent failure with the engine's answer;
    // the calls before it carried a W3C traceparent.
    let (status, traced, _) = started_game(&t, &owner, "tracer").await;
    assert_eq!(status, StatusCode::OK);
    let failed = until_state(&t, &owner, &traced, "start_failed").await;
    let reason = failed["start_error"].as_str().unwrap_or("");
    assert!(reason.contains("init: the engine answered 400"), "{failed}");
    let header_file = Path::new(&t.app_data_dir())
        .join("engines")
        .join(&traced)
        .join("data")
        .join("traceparent");
    let traceparent = std::fs::read_to_string(&header_file).expect("the engine kept the header");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent:?}");
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len()),
        ("00", 32, 16),
        "{traceparent:?}"
    );
    assert_ne!(parts[1], "0".repeat(32), "a real trace id");
    // An engine that is another kind than registered.
    let (status, impostor, _) = started_game(&t, &owner, "impostor").await;
    assert_eq!(status, StatusCode::OK);
    let failed = until_state(&t, &owner, &impostor, "start_failed").await;
    let reason = failed["start_error"].as_str().unwrap_or("");
    assert!(reason.contains("serves reversi"), "{failed}");

    // The owner retries (and it fails again), then cancels.
    let (status, again) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{impostor}/retry-start"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(
        (status, again["state"].as_str()),
        (StatusCode::OK, Some("starting")),
        "{again}"
    );
    until_state(&t, &owner, &impostor, "start_failed").await;
    let (status, cancelled) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{impostor}/cancel"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (status, err) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{mute}/retry-start"),
            Some(&owner),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{err}");
    t.app.shutdown().await;
}

async fn a_full_queue_refuses_a_start(backend: DbKind) {
    let toml = format!(
        "[[engine]]\nkind = \"mute\"\nbinary = \"/bin/sh\"\nargs = [\"-c\", \"sleep 30\", \"mute\"]\n{SILENT_MANIFEST}"
    );
    let t = app_with_engines(
        backend,
        &toml,
        &[
            ("BACKEND_RUNTIME_JOB_QUEUE_SIZE", "1"),
            ("BACKEND_RUNTIME_START_TIMEOUT", "10s"),
        ],
    )
    .await;
    let (owner, _) = t.guest("Owner").await;
    let (status, _, _) = started_game(&t, &owner, "mute").await;
    assert_eq!(status, StatusCode::OK);
    let (status, second, body) = started_game(&t, &owner, "mute").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "runtime_busy");
    let (_, detail) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{second}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(detail["game"]["state"], "enrolling", "nothing changed");
    t.app.shutdown().await;
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The Docker driver against this machine's Docker engine, with an image
/// built here from the engines binary.
async fn the_docker_driver_runs_a_game_in_its_own_container(backend: DbKind) {
    let host = "unix:///var/run/docker.sock";
    if !Path::new("/var/run/docker.sock").exists() {
        eprintln!("SKIPPED: no Docker engine on this machine (/var/run/docker.sock)");
        return;
    }
    let entrypoint = vec!["/turnbase-engines".to_string(), "conquest".to_string()];
    turnbase_runtime::docker::build_image(
        host,
        &engines_binary(),
        &entrypoint,
        "turnbase-engine-conquest:latest",
    )
    .await
    .expect("the image builds");
    let network = format!("turnbase-test-{}", uuid::Uuid::now_v7().simple());
    let t = spawn_app_with(
        backend,
        &[
            ("BACKEND_RUNTIME_DRIVER", "docker"),
            ("BACKEND_RUNTIME_DOCKER_NETWORK", network.as_str()),
            ("BACKEND_RUNTIME_RECONCILE_INTERVAL", "200ms"),
            ("BACKEND_RUNTIME_MEMORY", "256MiB"),
        ],
    )
    .await;
    let installation = t.app.instance.id.to_string();
    let admin = t.become_admin().await;
    let (owner, _) = t.guest("Owner").await;
    let (status, id, _) = started_game(&t, &owner, "conquest").await;
    assert_eq!(status, StatusCode::OK);
    until_state(&t, &owner, &id, "running").await;
    let r = record(&t, &admin, &id).await;
    assert_eq!(r["record"]["driver"], "docker", "{r}");
    let name = format!("turnbase-game-{id}");
    let labels = docker(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"turnbase.backend\"}} {{index .Config.Labels \"turnbase.engine\"}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.Memory}}",
        &name,
    ]);
    assert_eq!(
        labels,
        format!(
            "{installation} conquest unless-stopped {}",
            256 * 1024 * 1024
        )
    );
    let state = engine_state(&r, &id).await;
    assert_eq!(state["turn"], 1, "{state}");

    // Killed by hand: the reconciler starts it again, its volume intact.
    docker(&["kill", &name]);
    let restarted = until_record(&t, &admin, &id, "restarted", |r| {
        r["record"]["restarts"].as_i64() >= Some(1)
    })
    .await;
    let again = engine_state(&restarted, &id).await;
    assert_eq!(again, state, "the game is intact");

    // Removed by hand: a new container on the game's volume.
    let old_id = restarted["record"]["handle"]
        .as_str()
        .expect("a handle")
        .to_string();
    docker(&["rm", "-f", &name]);
    let remade = until_record(&t, &admin, &id, "remade", |r| {
        r["record"]["handle"].as_str().is_some_and(|h| h != old_id)
    })
    .await;
    let again = engine_state(&remade, &id).await;
    assert_eq!(again, state, "the volume kept the game");

    // A container without a record (its record lost) is adopted.
    let game_id: uuid::Uuid = id.parse().expect("uuid");
    let sql = "DELETE FROM runtime_records WHERE game_id = $1";
    turnbase_testkit::on_pool!(&t.app.database, |pool| sqlx::query(sql)
        .bind(game_id)
        .execute(pool)
        .await
        .map(drop))
    .expect("delete the record");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = t
            .send(
                Method::GET,
                &format!("/api/v1/admin/runtime/{id}"),
                Some(&admin),
                None,
            )
            .await;
        if status == StatusCode::OK {
            assert_eq!(
                body["record"]["last_error"], "adopted by the reconciler",
                "{body}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never adopted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.app.shutdown().await;
    let ours = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=turnbase.backend={installation}"),
    ]);
    for container in ours.lines() {
        docker(&["rm", "-f", container]);
    }
    docker(&["volume", "rm", "-f", &name]);
    docker(&["network", "rm", &network]);
}

struct NoOutcomes;

#[async_trait::async_trait]
impl turnbase_runtime::GameOutcomes for NoOutcomes {
    async fn began(&self, _game: uuid::Uuid) -> anyhow::Result<()> {
        Ok(())
    }

    async fn start_failed(&self, _game: uuid::Uuid, _reason: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Two backends' reconcilers on one database, passing at the same moment
/// over an engine that died: one repairs it, the other stands aside (the
/// worker lease), so the engine is restarted once, not twice.
async fn two_reconcilers_do_not_fight(backend: DbKind) {
    let t = spawn_app_with(backend, &[("BACKEND_RUNTIME_RECONCILE_INTERVAL", "1h")]).await;
    let admin = t.become_admin().await;
    let (owner, _) = t.guest("Owner").await;
    let (status, id, _) = started_game(&t, &owner, "conquest").await;
    assert_eq!(status, StatusCode::OK);
    until_state(&t, &owner, &id, "running").await;
    let pid = record(&t, &admin, &id).await["record"]["handle"]
        .as_str()
        .expect("a pid")
        .to_string();
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    let dir = tempfile::tempdir().expect("tempdir");
    let other = turnbase_runtime::Runtime::new(
        t.app.database.clone(),
        turnbase_runtime::RuntimeConfig {
            engines_dir: dir.path().join("engines"),
            ..t.app.runtime.config().clone()
        },
        t.app.runtime.commands().clone(),
        turnbase_runtime::DriverChoice::Process,
        std::sync::Arc::new(NoOutcomes),
        turnbase_core::worker::system_clock(),
        &turnbase_core::telemetry::noop_meter(),
    );
    let (a, b) = tokio::join!(
        turnbase_runtime::reconciler::pass(&t.app.runtime),
        turnbase_runtime::reconciler::pass(&other),
    );
    a.expect("first pass");
    b.expect("second pass");
    let r = record(&t, &admin, &id).await;
    assert_eq!(r["record"]["restarts"], 1, "{r}");
    assert!(
        !dir.path().join("engines").exists(),
        "the second backend started no engine"
    );
    other.shutdown().await;
    t.app.shutdown().await;
}

/// A TCP front to the Docker socket that the test can cut (Docker going
/// away is a fault the real engine cannot be asked for).
struct DockerRelay {
    addr: std::net::SocketAddr,
    tasks: tokio::task::JoinSet<()>,
}

impl DockerRelay {
    async fn start() -> DockerRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut tasks = tokio::task::JoinSet::new();
        let conns = std::sync::Arc::new(tokio::sync::Mutex::new(tokio::task::JoinSet::new()));
        let held = conns.clone();
        tasks.spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                held.lock().await.spawn(async move {
                    if let Ok(mut unix) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                    }
                });
            }
        });
        tasks.spawn(async move {
            // Keeps the connections' set alive until cut.
            std::future::pending::<()>().await;
            drop(conns);
        });
        DockerRelay { addr, tasks }
    }

    fn cut(&mut self) {
        self.tasks.abort_all();
    }
}

/// No Docker engine where BACKEND_DOCKER_HOST points: the backend does not
/// start, and says what it tried.
#[tokio::test]
async fn an_unreachable_docker_engine_stops_the_start_with_what_was_tried() {
    let db = turnbase_testkit::TestDb::new(DbKind::Sqlite).await;
    let env: Vec<(String, String)> = vec![
        ("BACKEND_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("BACKEND_GRPC_PUSH_ADDR".into(), "127.0.0.1:0".into()),
        ("BACKEND_FRESHNESS_WINDOW".into(), "1m".into()),
        ("BACKEND_MAIL_DELIVERY".into(), "file".into()),
        ("BACKEND_DATA_DIR".into(), db.dir().display().to_string()),
        (
            "BACKEND_INTERNAL_TOKEN".into(),
            crate::helpers::INTERNAL_TOKEN.into(),
        ),
        ("BACKEND_RUNTIME_DRIVER".into(), "docker".into()),
        ("BACKEND_DOCKER_HOST".into(), "http://127.0.0.1:9".into()),
    ];
    let config =
        turnbase_backend::Config::load(turnbase_backend::config::Profile::Backend, env, None)
            .expect("valid configuration");
    let telemetry =
        turnbase_core::telemetry::Telemetry::init(&config.telemetry).expect("telemetry");
    let err = match turnbase_backend::App::start(config, telemetry, "test").await {
        Ok(app) => {
            app.shutdown().await;
            panic!("started without Docker");
        }
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("BACKEND_DOCKER_HOST"), "{err}");
    assert!(err.contains("http://127.0.0.1:9"), "{err}");
}

/// A Docker engine that goes away after the start: `/readyz` says so.
async fn readiness_reports_a_docker_engine_that_went_away(backend: DbKind) {
    if !Path::new("/var/run/docker.sock").exists() {
        eprintln!("SKIPPED: no Docker engine on this machine (/var/run/docker.sock)");
        return;
    }
    let mut relay = DockerRelay::start().await;
    let host = format!("http://{}", relay.addr);
    let network = format!("turnbase-test-{}", uuid::Uuid::now_v7().simple());
    let t = spawn_app_with(
        backend,
        &[
            ("BACKEND_RUNTIME_DRIVER", "docker"),
            ("BACKEND_DOCKER_HOST", host.as_str()),
            ("BACKEND_RUNTIME_DOCKER_NETWORK", network.as_str()),
            ("BACKEND_RUNTIME_RECONCILE_INTERVAL", "200ms"),
        ],
    )
    .await;
    let (status, _) = t.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    relay.cut();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = t.send(Method::GET, "/readyz", None, None).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(body["not_ready"], json!(["docker"]), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.app.shutdown().await;
    docker(&["network", "rm", &network]);
}

turnbase_testkit::both_backends!(
    flavor = "multi_thread";
    two_reconcilers_do_not_fight,
    readiness_reports_a_docker_engine_that_went_away,
    the_docker_driver_runs_a_game_in_its_own_container,
    a_started_game_runs_and_survives_a_killed_engine,
    starts_that_cannot_succeed_give_the_game_back,
    a_full_queue_refuses_a_start,
);
