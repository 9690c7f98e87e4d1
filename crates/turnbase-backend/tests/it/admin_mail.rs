//! The mail admin API: guarded, then list, show and retry.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use turnbase_mail::template::Template;
use turnbase_mail::{Email, OutgoingMail};
use turnbase_store::mail::{AfterAttempt, NewAttempt};
use turnbase_testkit::Backend;

use crate::helpers::{TestApp, spawn_app};

const NOTE: Template = Template {
    subject: "Note for {{name}}",
    text: "Hello {{name}}",
    html: None,
};

async fn enqueue(t: &TestApp, name: &str) -> uuid::Uuid {
    let mut tx = t.app.database.begin().await.expect("begin");
    let id = t
        .app
        .mail
        .enqueue(
            &mut tx,
            OutgoingMail {
                to: Email::parse("ann@example.org").expect("valid"),
                content: NOTE
                    .render(&BTreeMap::from([("name", name.to_string())]))
                    .expect("renders"),
                idempotency_key: None,
            },
        )
        .await
        .expect("enqueue")
        .id();
    tx.commit().await.expect("commit");
    t.app.mail.wake();
    id
}

async fn wait_status(t: &TestApp, id: uuid::Uuid, status: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = t.get_json(&format!("/api/v1/admin/mail/{id}")).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        if body["status"] == status {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn list_show_and_retry(backend: Backend) {
    let t = spawn_app(backend).await;
    let admin = t.become_admin().await;
    let sent = enqueue(&t, "Ann").await;
    let detail = wait_status(&t, sent, "sent").await;
    assert_eq!(detail["attempts"][0]["outcome"], "sent");
    assert_eq!(detail["to"], "ann@example.org");
    // A mail that failed for good, made so through the store.
    let id = uuid::Uuid::now_v7();
    let mut tx = t.app.database.begin().await.expect("begin");
    t.app
        .database
        .mail()
        .enqueue(
            &mut tx,
            &turnbase_store::mail::NewMail {
                id,
                idempotency_key: None,
                to: "cy@example.org".into(),
                subject: "s".into(),
                text_body: "t".into(),
                html_body: None,
                // Far in the future, so the worker leaves it to us.
                created_at: chrono::Utc::now() + chrono::Duration::days(365),
            },
        )
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    let claimed = t
        .app
        .database
        .mail()
        .claim_due_mail(
            chrono::Utc::now() + chrono::Duration::days(366),
            Duration::from_secs(60),
            "test",
            1,
        )
        .await
        .expect("claim");
    assert_eq!(claimed[0].id, id);
    let now = chrono::Utc::now();
    let attempt = NewAttempt {
        id: uuid::Uuid::now_v7(),
        started_at: now,
        finished_at: now,
        outcome: "permanent",
        smtp_code: Some(550),
        error: Some("no such user".into()),
    };
    assert!(
        t.app
            .database
            .mail()
            .finish_attempt(id, "test", &attempt, AfterAttempt::Failed)
            .await
            .expect("finish")
    );

    let (status, page) = t.get_json("/api/v1/admin/mail?status=failed").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["items"][0]["id"], id.to_string());
    assert_eq!(page["items"][0]["last_error"], "no such user");

    // By recipient, as parsed (the domain's case does not matter).
    let (status, page) = t.get_json("/api/v1/admin/mail?to=cy@Example.ORG").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["items"][0]["id"], id.to_string());

    let (_, page) = t.get_json("/api/v1/admin/mail?limit=1").await;
    let next = page["next"].as_str().expect("more pages").to_string();
    let (_, page2) = t
        .get_json(&format!("/api/v1/admin/mail?limit=1&before={next}"))
        .await;
    assert_ne!(page["items"][0]["id"], page2["items"][0]["id"]);

    // Retrying a sent mail is a conflict; retrying the failed one requeues it.
    let retry = |id: uuid::Uuid| {
        t.client
            .post(t.url(&format!("/api/v1/admin/mail/{id}/retry")))
            .bearer_auth(&admin)
            .send()
    };
    let conflict = retry(sent).await.expect("request");
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let ok = retry(id).await.expect("request");
    assert_eq!(ok.status(), StatusCode::OK);
    let body: serde_json::Value = ok.json().await.expect("json");
    assert_eq!(
        (body["status"].as_str(), body["attempts"].as_i64()),
        (Some("pending"), Some(0))
    );
    let missing = retry(uuid::Uuid::now_v7()).await.expect("request");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let (_, audit) = t.get_json("/api/v1/admin/audit").await;
    assert_eq!(audit["items"][0]["action"], "mail.retry", "{audit}");
    assert_eq!(audit["items"][0]["target"], id.to_string());
    assert_eq!(
        audit["items"].as_array().map(Vec::len),
        Some(1),
        "only the retry that happened: {audit}"
    );
    t.app.shutdown().await;
}

turnbase_testkit::both_backends!(list_show_and_retry);

#[tokio::test]
async fn bad_admin_input_gets_4xx_json() {
    let t = spawn_app(Backend::Sqlite).await;
    t.become_admin().await;
    for (path, status) in [
        ("/api/v1/admin/mail?status=lost", StatusCode::BAD_REQUEST),
        ("/api/v1/admin/mail?limit=0", StatusCode::BAD_REQUEST),
        ("/api/v1/admin/mail?limit=9999", StatusCode::BAD_REQUEST),
        ("/api/v1/admin/mail?limit=ten", StatusCode::BAD_REQUEST),
        ("/api/v1/admin/mail?to=nobody", StatusCode::BAD_REQUEST),
        (
            "/api/v1/admin/mail?before=not-a-uuid",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/admin/mail/not-a-uuid", StatusCode::BAD_REQUEST),
    ] {
        let (got, body) = t.get_json(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    t.app.shutdown().await;
}

#[tokio::test]
async fn mail_metrics_are_exported() {
    let t = spawn_app(Backend::Sqlite).await;
    t.become_admin().await;
    let id = enqueue(&t, "Ann").await;
    wait_status(&t, id, "sent").await;
    let text = t.metrics_text().await;
    for line in [
        "mail_enqueued_total 2",
        "mail_sent_total 2",
        r#"mail_attempt_duration_seconds_count{outcome="sent"} 2"#,
        "mail_queue_depth ",
        "mail_oldest_pending_age_seconds ",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    t.app.shutdown().await;
}
