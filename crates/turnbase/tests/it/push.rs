//! The gateway push client against the real backend process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use turnbase_gateway::{Notice, PushClient, PushClientConfig, PushHandler};
use turnbase_push::Cursor;
use turnbase_push::proto::stale::Reason;
use turnbase_push::received::Event;

use crate::harness::{PATIENCE, Running};

#[derive(Default)]
struct Notices(Mutex<Vec<Notice>>);

impl PushHandler for Notices {
    async fn on_event(&self, _event: Event) {}

    async fn on_notice(&self, notice: Notice) {
        self.0.lock().expect("lock").push(notice);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_backend(dir: &tempfile::TempDir, push_port: u16) -> Running {
    let mut env = crate::process::data_env(dir);
    env.push(("BACKEND_GRPC_PUSH_ADDR", format!("127.0.0.1:{push_port}")));
    let mut up = Running::start(&["up"], &env);
    up.base_url();
    up
}

/// Polls `check` until it holds or the patience runs out.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn kill_9_of_the_backend_then_restart_ends_in_stale_unknown_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut backend = start_backend(&dir, port);

    let notices = Arc::new(Notices::default());
    let client = PushClient::new(
        PushClientConfig {
            url: format!("http://127.0.0.1:{port}"),
            secret: turnbase_core::config::Secret::new(crate::process::SECRET.to_string()),
            client_id: "gw-kill-test".into(),
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            keepalive: Duration::from_secs(10),
        },
        notices.clone(),
    );
    let runner = tokio::spawn({
        let client = client.clone();
        async move { client.run().await }
    });
    let seen = |pred: fn(&Notice) -> bool| notices.0.lock().expect("lock").iter().any(pred);
    eventually("resumed", || seen(|n| matches!(n, Notice::Resumed { .. }))).await;
    let before = Cursor::parse(&client.cursor()).expect("the client holds a cursor");

    // Mid-stream: SIGKILL, no chance to say goodbye.
    backend.signal("KILL");
    backend.wait();
    eventually("disconnected", || {
        seen(|n| matches!(n, Notice::Disconnected { .. }))
    })
    .await;

    let mut restarted = start_backend(&dir, port);
    eventually("stale", || seen(|n| matches!(n, Notice::Stale { .. }))).await;
    let stale = notices
        .0
        .lock()
        .expect("lock")
        .iter()
        .find_map(|n| match n {
            Notice::Stale { reason, .. } => Some(*reason),
            _ => None,
        });
    assert_eq!(stale, Some(Reason::UnknownEpoch));
    // The client carries on in the new history.
    let after = Cursor::parse(&client.cursor()).expect("cursor");
    assert_ne!(after.epoch, before.epoch);
    assert!(!runner.is_finished());
    client.close();
    tokio::time::timeout(PATIENCE, runner)
        .await
        .expect("run ends after close")
        .expect("join");
    restarted.signal("TERM");
    assert_eq!(restarted.wait(), 0);
}
