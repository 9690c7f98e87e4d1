//! The database going away under a running backend: Postgres stopped (its
//! connections closed, new ones refused) answers 503 with `Retry-After`,
//! counted once per outage, and the backend recovers on its own.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, spawn_app_via_relay};

async fn guest(t: &TestApp) -> (StatusCode, serde_json::Value, Option<String>) {
    let response = t
        .client
        .post(t.url("/api/v1/public/auth/guest"))
        .json(&json!({ "display_name": "Outage" }))
        .send()
        .await
        .expect("request");
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, response.json().await.unwrap_or_default(), retry)
}

fn outages(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("database_outages_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_answers_503_once_per_outage_and_recovers() {
    let (t, relay) = spawn_app_via_relay(&[("BACKEND_DATABASE_CONNECT_TIMEOUT", "1s")]).await;
    let (status, body, _) = guest(&t).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for round in 1..=2u64 {
        relay.go_down();
        for _ in 0..5 {
            let (status, body, retry) = guest(&t).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
            assert_eq!(retry.as_deref(), Some("5"));
        }
        assert!(t.app_outage_is_down());
        assert_eq!(outages(&t.metrics_text().await), round, "once per outage");
        relay.come_back();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body, _) = guest(&t).await;
            if status == StatusCode::CREATED && !t.app_outage_is_down() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not back: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Nothing was answered 500 meanwhile.
    let metrics = t.metrics_text().await;
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
    let _ = t.send(Method::GET, "/healthz", None, None).await;
    t.app.shutdown().await;
}

/// A database that vanishes without closing its connections (a partition:
/// the relay silences every open connection) cannot hold requests or pool
/// slots: each request is answered within the statement timeout (503 when
/// its statement met a cut connection, served when the check before reuse
/// caught it first), and once new connections reach the server
/// again the backend serves as before, its pool slots freed. Before the
/// deadline such a request waited for the request timeout, and its
/// connection's slot was never given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_database_fails_statements_in_time_and_frees_the_pool() {
    let (t, relay) = spawn_app_via_relay(&[
        ("BACKEND_DATABASE_STATEMENT_TIMEOUT", "1s"),
        ("BACKEND_DATABASE_MAX_CONNECTIONS", "3"),
        ("BACKEND_DATABASE_CONNECT_TIMEOUT", "2s"),
    ])
    .await;
    // Every pooled connection in use once, so all are open when cut.
    let warm = futures::future::join_all((0..6).map(|_| guest(&t))).await;
    assert!(
        warm.iter().all(|(s, _, _)| *s == StatusCode::CREATED),
        "{warm:?}"
    );
    relay.cut();
    let started = tokio::time::Instant::now();
    let during = futures::future::join_all((0..6).map(|_| async {
        let begun = tokio::time::Instant::now();
        let (status, body, _) = guest(&t).await;
        (status, body, begun.elapsed())
    }))
    .await;
    for (status, body, took) in &during {
        assert!(
            *status == StatusCode::CREATED || body["error"]["code"] == "database_unavailable",
            "{status} {body}"
        );
        assert!(
            *took < Duration::from_secs(8),
            "answered after {took:?}: {body}"
        );
    }
    // Some request met a silenced connection and waited out the deadline,
    // of its statement (503) or of the check before reuse (then served on
    // a new connection).
    assert!(
        during
            .iter()
            .any(|(_, _, took)| *took >= Duration::from_millis(900)),
        "some request met a cut connection: {during:?}"
    );
    // The cut connections are closed and their slots reused: new
    // connections through the relay reach the server.
    let deadline = started + Duration::from_secs(30);
    let mut served = 0;
    while served < 10 {
        let (status, body, _) = guest(&t).await;
        if status == StatusCode::CREATED {
            served += 1;
        } else {
            served = 0;
            assert!(
                tokio::time::Instant::now() < deadline,
                "not serving again: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A connection handed back in the very instant of the cut can pass the
    // deadline-bound check and then wait in sqlx's own unbounded one until
    // its socket fails (see README, Storage); ending the partition lets the
    // pool close at once.
    drop(relay);
    t.app.shutdown().await;
}
