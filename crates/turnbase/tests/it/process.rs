//! Start, stop and refuse to start.

use crate::harness::{Running, command, get};

/// The internal secret the processes under test share.
pub const SECRET: &str = "process-test-secret-0123456789abcdef";

pub fn data_env(dir: &tempfile::TempDir) -> Vec<(&'static str, String)> {
    vec![
        ("BACKEND_DATA_DIR", dir.path().display().to_string()),
        ("BACKEND_HTTP_ADDR", "127.0.0.1:0".into()),
        ("BACKEND_GRPC_PUSH_ADDR", "127.0.0.1:0".into()),
        ("BACKEND_FRESHNESS_WINDOW", "1m".into()),
        ("BACKEND_MAIL_DELIVERY", "file".into()),
        ("BACKEND_INTERNAL_TOKEN", SECRET.into()),
    ]
}

#[test]
fn invalid_configuration_names_every_variable_and_exits_2() {
    let output = command(
        &["backend"],
        &[
            ("BACKEND_SHUTDOWN_TIMEOUT", "nonsense".into()),
            ("BACKEND_OTEL_TRACES_EXPORTER", "carrier-pigeon".into()),
        ],
    )
    .output()
    .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("BACKEND_SHUTDOWN_TIMEOUT: \"nonsense\" is not a duration"),
        "{stderr}"
    );
    assert!(
        stderr.contains("BACKEND_OTEL_TRACES_EXPORTER: \"carrier-pigeon\" is not one of"),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
    // The required freshness window, mail relay and internal secret are
    // missing too: five problems, one message.
    assert!(
        stderr.starts_with("turnbase: invalid configuration (5 problems):"),
        "{stderr}"
    );
    assert!(
        stderr.contains("BACKEND_INTERNAL_TOKEN: is required"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 6, "one message: {stderr}");
}

#[test]
fn backend_requires_a_freshness_window_that_up_provides() {
    let output = command(&["backend"], &[]).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("BACKEND_FRESHNESS_WINDOW: is required but not set"),
        "{stderr}"
    );
}

#[test]
fn config_file_is_read_and_the_environment_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("turnbase.toml");
    std::fs::write(
        &file,
        "shutdown_timeout = \"soon\"\nhttp_addr = \"127.0.0.1:0\"\n",
    )
    .expect("write");
    let file = file.display().to_string();
    let output = command(&["--config", &file, "backend"], &[])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("BACKEND_SHUTDOWN_TIMEOUT: \"soon\""),
        "{stderr}"
    );

    let output = command(
        &["--config", &file, "migrate"],
        &[
            ("BACKEND_SHUTDOWN_TIMEOUT", "5s".into()),
            ("BACKEND_DATA_DIR", dir.path().display().to_string()),
        ],
    )
    .output()
    .expect("runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn serve_and_stop(mut env: Vec<(&'static str, String)>, signal: &str) {
    env.push(("BACKEND_METRICS_ADDR", "127.0.0.1:0".into()));
    let mut up = Running::start(&["up"], &env);
    let base = up.base_url();
    assert!(
        up.stdout_lines.iter().any(|l| l.contains("Metrics:")),
        "{:?}",
        up.stdout_lines
    );
    assert_eq!(get(&format!("{base}/healthz"), &[]).0, 200);
    let (status, body) = get(&format!("{base}/readyz"), &[]);
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    // The gateway beside it: ready once subscribed to the push stream,
    // forwarding the API and publishing its signing key.
    let edge = up.gateway_url();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(&format!("{edge}/readyz"), &[]).0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (status, body) = get(&format!("{edge}/api/v1/public/info"), &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"name\":\"turnbase\""), "{body}");
    let (status, body) = get(&format!("{edge}/.well-known/turnbase-signing-keys"), &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Ed25519"), "{body}");
    up.signal(signal);
    assert_eq!(up.wait(), 0, "{}", up.stderr_lines.join("\n"));
    let stopped: Vec<String> = up
        .logs()
        .iter()
        .filter(|l| l["message"] == "stopped")
        .map(|l| l["component"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        stopped,
        [
            "gateway-http",
            "gateway-hub-sweeper",
            "gateway-push-client",
            "metrics",
            "runtime-reconciler",
            "turn-reminders",
            "turn-scheduler",
            "runtime-workers",
            "lobby-sweeper",
            "guest-reaper",
            "notification-worker",
            "mail-worker",
            "http",
            "grpc-push",
            "runtime-engines",
            "accounts-flusher",
            "push",
            "database",
            "telemetry"
        ]
    );
    assert!(
        up.logs()
            .iter()
            .all(|l| l["took_ms"].is_null() || l["took_ms"].is_f64()),
        "each stop is logged with its duration"
    );
}

#[test]
fn up_on_sqlite_serves_probes_and_stops_in_reverse_order_on_sigint() {
    let dir = tempfile::tempdir().expect("tempdir");
    serve_and_stop(data_env(&dir), "INT");
    assert!(dir.path().join("turnbase.db").exists());
}

#[test]
fn backend_on_postgres_serves_probes_and_stops_on_sigterm() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(turnbase_testkit::TestDb::postgres());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = data_env(&dir);
    env.push((
        "BACKEND_DATABASE_URL",
        db.url.clone().expect("postgres url"),
    ));
    serve_and_stop(env, "TERM");
    assert!(
        !dir.path().join("turnbase.db").exists(),
        "Postgres was used, not SQLite"
    );
}

#[test]
fn port_in_use_is_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = data_env(&dir);
    env.push(("BACKEND_HTTP_ADDR", addr.clone()));
    let output = command(&["backend"], &env).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "turnbase: BACKEND_HTTP_ADDR: cannot listen on {addr}"
        )),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
}

#[test]
fn unreachable_database_is_one_clear_error_without_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = data_env(&dir);
    env.push((
        "BACKEND_DATABASE_URL",
        "postgres://tb:hunter2@127.0.0.1:1/tb".into(),
    ));
    env.push(("BACKEND_DATABASE_CONNECT_TIMEOUT", "2s".into()));
    let output = command(&["backend"], &env).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("turnbase: cannot open the database at postgres://tb:***@127.0.0.1:1/tb"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn migrate_applies_and_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = data_env(&dir);
    for _ in 0..2 {
        let output = command(&["migrate"], &env).output().expect("runs");
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("schema is current"));
    }
}

#[test]
fn version_and_help() {
    let output = command(&["--version"], &[]).output().expect("runs");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("turnbase "));
    let output = command(&["--help"], &[]).output().expect("runs");
    let help = String::from_utf8_lossy(&output.stdout);
    for sub in ["up", "backend", "migrate"] {
        assert!(help.contains(sub), "{help}");
    }
    let output = command(&["launch"], &[]).output().expect("runs");
    assert_eq!(
        output.status.code(),
        Some(2),
        "unknown subcommand is a usage error"
    );
}

#[test]
fn push_tail_prints_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = data_env(&dir);
    env.push(("BACKEND_PUSH_HEARTBEAT_INTERVAL", "200ms".into()));
    let mut up = Running::start(&["up"], &env);
    up.base_url();
    let push_line = up
        .stdout_lines
        .iter()
        .find(|l| l.contains("Push:"))
        .expect("banner names the push listener")
        .clone();
    let url = push_line
        .split_whitespace()
        .nth(1)
        .expect("URL")
        .to_string();

    // Only holders of the internal secret may read the stream.
    let output = command(&["push", "tail", "--url", &url], &[])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("BACKEND_INTERNAL_TOKEN"));
    let output = command(
        &["push", "tail", "--url", &url],
        &[(
            "BACKEND_INTERNAL_TOKEN",
            "not-the-secret-0123456789abcdef0123".into(),
        )],
    )
    .output()
    .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");

    let secret = [("BACKEND_INTERNAL_TOKEN", SECRET.to_string())];
    let mut tail = Running::start(&["push", "tail", "--url", &url], &secret);
    let first = tail.stdout_line();
    let resumed: serde_json::Value = serde_json::from_str(&first).expect("JSON line");
    let head = resumed["resumed"]["head"]
        .as_str()
        .expect("head")
        .to_string();
    let heartbeat: serde_json::Value =
        serde_json::from_str(&tail.stdout_line()).expect("JSON line");
    assert_eq!(heartbeat["heartbeat"]["head"], head.as_str());

    let mut stale = Running::start(
        &["push", "tail", "--url", &url, "--cursor", "not-a-cursor"],
        &secret,
    );
    let line: serde_json::Value = serde_json::from_str(&stale.stdout_line()).expect("JSON");
    assert_eq!(line["stale"]["reason"], "malformed");
    assert_eq!(line["stale"]["requested"], "not-a-cursor");

    stale.signal("INT");
    assert_eq!(stale.wait(), 0, "Ctrl-C ends a tail cleanly");

    // Stopping the backend ends the tail with an error exit.
    up.signal("TERM");
    assert_eq!(up.wait(), 0);
    assert_eq!(tail.wait(), 1);
    assert!(
        tail.stderr_lines
            .iter()
            .any(|l| l.contains("push stream ended")),
        "{:?}",
        tail.stderr_lines
    );
}

#[test]
fn push_tail_rejects_a_bad_url() {
    let output = command(&["push", "tail", "--url", "127.0.0.1:8081"], &[])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--url"));
}

#[test]
fn gateway_names_what_it_is_missing_and_exits_2() {
    let output = command(&["gateway"], &[("GATEWAY_RATE_PER_IP", "lots".into())])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "GATEWAY_INTERNAL_TOKEN: is required but not set",
        "GATEWAY_SIGNING_KEY_FILE: is required but not set",
        "GATEWAY_RATE_PER_IP: \"lots\" is not a rate",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in {stderr}"
        );
    }
    assert!(
        stderr.starts_with("turnbase: invalid configuration (3 problems)"),
        "{stderr}"
    );
}

/// The modes of a folder and everything under it, as `stat` would print
/// them, for the entries whose mode is not `dirs`/`files`.
fn loose_modes(root: &std::path::Path, dirs: u32, files: u32) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut loose = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let mode = meta.permissions().mode() & 0o7777;
        let want = if meta.is_dir() { dirs } else { files };
        if mode != want {
            loose.push(format!("{} {mode:04o}", path.display()));
        }
        if meta.is_dir() {
            stack.extend(
                std::fs::read_dir(&path)
                    .expect("list")
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    loose
}

/// On a shared machine nobody else can read `up`'s data: a folder left
/// 0755 is narrowed at start, everything `up` writes is 0600 in 0700
/// folders (the database, its WAL, mail, keys, the internal secret), and
/// `push tail` finds the secret `up` made in the data folder.
#[test]
fn up_keeps_its_data_private_and_push_tail_finds_its_secret() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let env: Vec<(&'static str, String)> = data_env(&dir)
        .into_iter()
        .filter(|(k, _)| *k != "BACKEND_INTERNAL_TOKEN")
        .collect();
    let mut up = Running::start(&["up"], &env);
    let base = up.base_url();
    let secret_file = dir.path().join("internal-token");
    assert!(
        up.stdout_lines
            .iter()
            .any(|l| l.contains("Secret:") && l.contains(&secret_file.display().to_string())),
        "the banner says where the secret is: {:?}",
        up.stdout_lines
    );
    assert!(
        !up.stdout_lines
            .iter()
            .chain(up.stderr_lines.iter())
            .any(|l| l.contains(
                std::fs::read_to_string(&secret_file)
                    .expect("the secret file")
                    .trim()
            )),
        "the secret itself is never printed"
    );
    // A mail, written by the worker after start.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{base}/api/v1/public/auth/email/start"))
            .json(&serde_json::json!({ "email": "ann@example.org" }))
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    });
    assert_eq!(status, 202);
    let mail_dir = dir.path().join("mail");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_dir(&mail_dir).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "eml"))
    }) {
        assert!(std::time::Instant::now() < deadline, "no mail was written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let wal = dir.path().join("turnbase.db-wal");
    assert!(wal.exists(), "SQLite runs in WAL mode");
    assert_eq!(
        loose_modes(dir.path(), 0o700, 0o600),
        Vec::<String>::new(),
        "folders 0700 and files 0600"
    );

    // `push tail` with no secret in its environment reads the file.
    let url = up
        .stdout_lines
        .iter()
        .find(|l| l.contains("Push:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("banner names the push listener")
        .to_string();
    let data = dir.path().display().to_string();
    let mut tail = Running::start(&["push", "tail", "--url", &url, "--data-dir", &data], &[]);
    let first: serde_json::Value = serde_json::from_str(&tail.stdout_line()).expect("JSON line");
    assert!(first["resumed"]["head"].is_string(), "{first}");
    tail.signal("INT");
    assert_eq!(tail.wait(), 0);
    up.signal("TERM");
    assert_eq!(up.wait(), 0);
    // After a stop (a checkpoint folds the WAL in), still private.
    assert_eq!(loose_modes(dir.path(), 0o700, 0o600), Vec::<String>::new());
}

/// A backend killed with SIGKILL while its start jobs are queued or under
/// way: the next one (on the same data folder) takes them over when their
/// leases run out, and each game is started exactly once (its history
/// moves `starting → running` once), on the reference engine the killed
/// backend left running and the new one adopts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_start_resumes_its_jobs() {
    use serde_json::{Value, json};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = data_env(&dir);
    env.extend([
        ("BACKEND_RUNTIME_JOB_LEASE", "2s".to_string()),
        ("BACKEND_RUNTIME_PLACEMENT", "shared".to_string()),
    ]);
    let client = reqwest::Client::new();
    let call = |base: String, token: Option<String>, path: &str, body: Option<Value>| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let mut r = match &body {
                Some(b) => client.post(&url).json(b),
                None => client.get(&url),
            };
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let response = r.send().await.expect("request");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    let mut first = Running::start(&["up"], &env);
    let base = first.base_url();
    let (_, guest) = call(
        base.clone(),
        None,
        "/api/v1/public/auth/guest",
        Some(json!({"display_name": "Ann"})),
    )
    .await;
    let token = guest["token"].as_str().expect("a token").to_string();
    let deadline = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let mut games = Vec::new();
    for i in 0..5 {
        let body = json!({
            "title": format!("G{i}"), "engine": "reversi", "enrol_deadline": deadline,
            "schedule": { "kind": "per_move", "limit": "1h" },
        });
        let (status, game) = call(
            base.clone(),
            Some(token.clone()),
            "/api/v1/user/games",
            Some(body),
        )
        .await;
        assert_eq!(status, 201, "{game}");
        let id = game["id"].as_str().expect("id").to_string();
        let (_, a) = call(
            base.clone(),
            Some(token.clone()),
            &format!("/api/v1/user/games/{id}/applications"),
            Some(json!({ "race_name": format!("Ann {i}") })),
        )
        .await;
        let approve = format!(
            "/api/v1/user/games/{id}/applications/{}/approve",
            a["id"].as_str().expect("id")
        );
        assert_eq!(
            call(base.clone(), Some(token.clone()), &approve, Some(json!({})))
                .await
                .0,
            200
        );
        let bot = json!({ "name": format!("Bot {i}") });
        assert_eq!(
            call(
                base.clone(),
                Some(token.clone()),
                &format!("/api/v1/user/games/{id}/bots"),
                Some(bot)
            )
            .await
            .0,
            201
        );
        games.push(id);
    }
    for id in &games {
        let (status, _) = call(
            base.clone(),
            Some(token.clone()),
            &format!("/api/v1/user/games/{id}/start"),
            Some(json!({})),
        )
        .await;
        assert_eq!(status, 200);
    }
    first.signal("KILL");
    first.wait();

    let mut second = Running::start(&["up"], &env);
    let base = second.base_url();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, mine) = call(
            base.clone(),
            Some(token.clone()),
            "/api/v1/user/me/games",
            None,
        )
        .await;
        let running = mine["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|g| g["game"]["state"] == "running")
                    .count()
            })
            .unwrap_or(0);
        if running == games.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "not all games started again: {mine}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for id in &games {
        let (_, detail) = call(
            base.clone(),
            Some(token.clone()),
            &format!("/api/v1/user/games/{id}"),
            None,
        )
        .await;
        let steps: Vec<&str> = detail["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|h| h["to"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(steps, ["enrolling", "starting", "running"], "{detail}");
    }
    second.signal("TERM");
    assert_eq!(second.wait(), 0);
}

/// A backend killed with SIGKILL between claiming a turn and recording its
/// result (its engine is frozen with SIGSTOP while the resolve call is
/// out, so the kill lands in that window): the next backend takes the
/// claim over when its lease runs out and the turn is recorded once, with
/// the resolution the engine stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_turn_resolves_it_once_after_restart() {
    use serde_json::{Value, json};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = data_env(&dir);
    env.extend([
        ("BACKEND_TURNS_CLAIM_LEASE", "2s".to_string()),
        ("BACKEND_RUNTIME_PLACEMENT", "shared".to_string()),
    ]);
    let client = reqwest::Client::new();
    let call =
        |base: String, token: String, method: reqwest::Method, path: &str, body: Option<Value>| {
            let client = client.clone();
            let url = format!("{base}{path}");
            async move {
                let mut r = client.request(method, &url).bearer_auth(token);
                if let Some(b) = &body {
                    r = r.json(b);
                }
                let response = r.send().await.expect("request");
                let status = response.status().as_u16();
                (
                    status,
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            }
        };
    use reqwest::Method as M;

    let mut first = Running::start(&["up"], &env);
    let base = first.base_url();
    let guest: Value = client
        .post(format!("{base}/api/v1/public/auth/guest"))
        .json(&json!({"display_name": "Kim"}))
        .send()
        .await
        .expect("guest")
        .json()
        .await
        .expect("JSON");
    let token = guest["token"].as_str().expect("a token").to_string();
    let body = json!({
        "title": "Killed", "engine": "conquest", "max_players": 4,
        "settings": { "planets": 12 },
        "enrol_deadline": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
        "schedule": { "kind": "interval", "every": "1h" },
    });
    let (status, game) = call(
        base.clone(),
        token.clone(),
        M::POST,
        "/api/v1/user/games",
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{game}");
    let id = game["id"].as_str().expect("id").to_string();
    let g = |p: &str| format!("/api/v1/user/games/{id}{p}");
    let (_, a) = call(
        base.clone(),
        token.clone(),
        M::POST,
        &g("/applications"),
        Some(json!({"race_name": "Kim"})),
    )
    .await;
    let approve = g(&format!(
        "/applications/{}/approve",
        a["id"].as_str().expect("id")
    ));
    assert_eq!(
        call(base.clone(), token.clone(), M::POST, &approve, None)
            .await
            .0,
        200
    );
    for b in ["Bot A", "Bot B"] {
        assert_eq!(
            call(
                base.clone(),
                token.clone(),
                M::POST,
                &g("/bots"),
                Some(json!({"name": b}))
            )
            .await
            .0,
            201
        );
    }
    assert_eq!(
        call(base.clone(), token.clone(), M::POST, &g("/start"), None)
            .await
            .0,
        200
    );
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, clock) = call(base.clone(), token.clone(), M::GET, &g("/clock"), None).await;
        if status == 200 && clock["trigger"] == "schedule" {
            break;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "the first turn never opened: {clock}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Freeze the engine, force the turn, and wait until it is claimed.
    let engine = dir.path().join("engines").join("conquest");
    let pid = std::fs::read_to_string(engine.join("engine.pid")).expect("engine.pid");
    let address = std::fs::read_to_string(engine.join("engine.url")).expect("engine.url");
    let pid = pid.trim().to_string();
    let signal = |name: &str| {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name} {pid}");
    };
    signal("STOP");
    assert_eq!(
        call(
            base.clone(),
            token.clone(),
            M::POST,
            &g("/force-turn"),
            None
        )
        .await
        .0,
        200
    );
    loop {
        let (status, body) = call(
            base.clone(),
            token.clone(),
            M::POST,
            &g("/force-turn"),
            None,
        )
        .await;
        if status == 409 && body["error"]["code"] == "turn_being_resolved" {
            break;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "the turn was never claimed: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    first.signal("KILL");
    first.wait();
    signal("CONT");

    let mut second = Running::start(&["up"], &env);
    let base = second.base_url();
    let turns = loop {
        let (status, turns) = call(base.clone(), token.clone(), M::GET, &g("/turns"), None).await;
        if status == 200 && turns["turns"].as_array().is_some_and(|t| !t.is_empty()) {
            break turns;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "the turn was never recorded: {turns}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let recorded = turns["turns"].as_array().expect("turns");
    assert_eq!(recorded.len(), 1, "turn 1 once: {turns}");
    assert_eq!(recorded[0]["turn"], 1);
    let (_, clock) = call(base.clone(), token.clone(), M::GET, &g("/clock"), None).await;
    assert_eq!(clock["turn"], 2, "{clock}");
    // The engine resolved turn 1 once: its state is at turn 2, and its
    // stored resolution is the one recorded.
    let address = address.trim();
    let state: Value = client
        .get(format!("{address}/games/{id}/state"))
        .send()
        .await
        .expect("engine")
        .json()
        .await
        .expect("JSON");
    assert_eq!(state["turn"], 2, "{state}");
    let stored: Value = client
        .post(format!("{address}/games/{id}/turns/1/resolve"))
        .send()
        .await
        .expect("engine")
        .json()
        .await
        .expect("JSON");
    assert_eq!(recorded[0]["standings"], stored["standings"]);
    second.signal("TERM");
    assert_eq!(second.wait(), 0);
    // The engine the first backend started, and the second only used,
    // stops with the second: nothing outlives the stack.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let alive = state
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .is_some_and(|s| s != 'Z' && s != 'X');
    assert!(!alive, "engine {pid} outlived the backends: {state}");
}

/// A backend killed with SIGKILL while a webhook is in flight loses no
/// notification: after a restart the route's lease runs out, it is sent
/// again with the same delivery id, and it is delivered once recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_backend_killed_mid_dispatch_sends_the_notification_again() {
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().expect("tempdir");
    // The receiver holds the first request without answering, records
    // every request's delivery id and answers the others at once.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorder = seen.clone();
    let hook = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let recorder = recorder.clone();
            async move {
                let id = headers
                    .get("turnbase-delivery")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let first = {
                    let mut seen = recorder.lock().expect("not poisoned");
                    seen.push(id);
                    seen.len() == 1
                };
                if first {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, hook).await });

    let mut env = data_env(&dir);
    env.extend([
        ("BACKEND_NOTIFICATION_LEASE", "2s".to_string()),
        ("BACKEND_NOTIFICATION_WEBHOOK_TIMEOUT", "10m".to_string()),
        ("BACKEND_WEBHOOK_ALLOW_PRIVATE", "true".to_string()),
    ]);
    let client = reqwest::Client::new();
    let mut first = Running::start(&["up"], &env);
    let base = first.base_url();
    let guest = |name: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let body: Value = client
                .post(format!("{base}/api/v1/public/auth/guest"))
                .json(&json!({ "display_name": name }))
                .send()
                .await
                .expect("guest")
                .json()
                .await
                .expect("JSON");
            body["token"].as_str().expect("token").to_string()
        }
    };
    let (owner, player) = (guest("Owner").await, guest("Player").await);
    let status = client
        .put(format!("{base}/api/v1/user/notification-preferences"))
        .bearer_auth(&owner)
        .json(&json!({
            "channels": { "application_received": ["push", "webhook"] },
            "webhook_url": hook_url,
        }))
        .send()
        .await
        .expect("preferences")
        .status();
    assert_eq!(status, 200);
    let game: Value = client
        .post(format!("{base}/api/v1/user/games"))
        .bearer_auth(&owner)
        .json(&json!({
            "title": "Hooked", "engine": "conquest", "max_players": 4,
            "settings": { "planets": 12 },
            "enrol_deadline": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
            "schedule": { "kind": "interval", "every": "1h" },
        }))
        .send()
        .await
        .expect("game")
        .json()
        .await
        .expect("JSON");
    let id = game["id"].as_str().expect("id");
    let status = client
        .post(format!("{base}/api/v1/user/games/{id}/applications"))
        .bearer_auth(&player)
        .json(&json!({ "race_name": "Hookers" }))
        .send()
        .await
        .expect("apply")
        .status();
    assert_eq!(status, 201);
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.lock().expect("not poisoned").is_empty() {
        assert!(
            std::time::Instant::now() < give_up,
            "the webhook was never called"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Mid-dispatch: the route is leased and its request unanswered.
    first.signal("KILL");
    first.wait();

    let mut second = Running::start(&["up"], &env);
    let base = second.base_url();
    while seen.lock().expect("not poisoned").len() < 2 {
        assert!(
            std::time::Instant::now() < give_up,
            "the route was never sent again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Delivered now: sent twice in all, with one delivery id.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let ids = seen.lock().expect("not poisoned").clone();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], ids[1]);
    assert!(!ids[0].is_empty());
    let inbox: Value = client
        .get(format!("{base}/api/v1/user/notifications"))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("inbox")
        .json()
        .await
        .expect("JSON");
    let received: Vec<&Value> = inbox["notifications"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|n| n["kind"] == "application_received")
        .collect();
    assert_eq!(received.len(), 1, "{inbox}");
    second.signal("TERM");
    assert_eq!(second.wait(), 0);
}
