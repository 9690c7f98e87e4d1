//! The mail admin API: guarded, then list, show and retry.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use turnbase_mail::template::Template;
use turnbase_mail::{Email, OutgoingMail};
use turnbase_store::mail::{AfterAttempt, NewAttempt};
use turnbase_testkit::DbKind;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const NOTE: Template = Template {
    subject: "Note for {{name}}",
    text: "Hello {{name}}",
    html: None,
    secrets: &[],
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

async fn list_show_and_retry(backend: DbKind) {
    let t = spawn_app(backend).await;
    let admin = t.become_admin().await;
    let sent = enqueue(&t, "Ann").await;
    let detail = wait_status(&t, sent, "sent").await;
    assert_eq!(detail["history"][0]["outcome"], "sent");
    assert_eq!(detail["attempts"], 1, "the count keeps its name: {detail}");
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
                masked_subject: None,
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
        outcome: turnbase_store::mail::AttemptOutcome::Permanent,
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
    let (_, audit) = t.get_json("/api/v1/admin/audit?limit=200").await;
    let entries = audit["items"].as_array().expect("items");
    let of = |action: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| e["target"].as_str().expect("target").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(entries[0]["action"], "mail.retry", "{audit}");
    assert_eq!(
        of("mail.retry"),
        [id.to_string()],
        "only the retry that happened"
    );
    assert!(
        of("mail.view").contains(&sent.to_string()),
        "viewing a mail is audited: {audit}"
    );
    t.app.shutdown().await;
}

/// A sign-in code never shows through the admin API, and the mail that
/// carried it loses its body once the secret retention has passed while
/// its delivery record stays.
async fn sign_in_codes_are_masked_and_their_bodies_erased(backend: DbKind) {
    let t = spawn_app_with(backend, &[("BACKEND_MAIL_SECRET_RETENTION", "1s")]).await;
    t.become_admin().await;
    let (status, _) = t
        .send(
            reqwest::Method::POST,
            "/api/v1/public/auth/email/start",
            None,
            Some(serde_json::json!({ "email": "bo@example.org" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, page) = t.get_json("/api/v1/admin/mail?to=bo@example.org").await;
    let id: uuid::Uuid = page["items"][0]["id"]
        .as_str()
        .expect("the code mail is listed")
        .parse()
        .expect("uuid");
    let detail = wait_status(&t, id, "sent").await;
    let shown = page.to_string() + &detail.to_string();
    assert_eq!(
        detail["subject"], "Your Turnbase sign-in code: ******",
        "{detail}"
    );
    assert_eq!(
        page["items"][0]["subject"], "Your Turnbase sign-in code: ******",
        "{page}"
    );
    assert_eq!(detail["carries_secret"], true);
    // The code itself, read from the body as the worker took it, appears
    // nowhere in what the admin API answered.
    let (_, body) = stored_body(&t, id).await;
    let code: String = body
        .split("sign-in code is ")
        .nth(1)
        .map(|rest| rest.chars().take(6).collect())
        .expect("the stored body holds the code until it is erased");
    assert!(!shown.contains(&code), "the code {code} leaked: {shown}");
    // Erased within the retention (1 s) and half of it again, plus slack.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (subject, body) = stored_body(&t, id).await;
        if body.is_empty() {
            assert_eq!(subject, "Your Turnbase sign-in code: ******");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {body:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, detail) = t.get_json(&format!("/api/v1/admin/mail/{id}")).await;
    assert_eq!(status, StatusCode::OK, "the record stays: {detail}");
    assert_eq!(detail["status"], "sent");
    assert!(detail["body_erased_at"].is_string(), "{detail}");
    assert_eq!(detail["history"][0]["outcome"], "sent");
    t.app.shutdown().await;
}

turnbase_testkit::both_backends!(
    list_show_and_retry,
    sign_in_codes_are_masked_and_their_bodies_erased
);

/// The subject and text body of a mail as stored, read with SQL.
async fn stored_body(t: &TestApp, id: uuid::Uuid) -> (String, String) {
    let sql = "SELECT subject, text_body FROM mail_outbox WHERE id = $1";
    turnbase_testkit::on_pool!(&t.app.database, |pool| sqlx::query_as(sql)
        .bind(id)
        .fetch_one(pool)
        .await)
    .expect("the mail row")
}

#[tokio::test]
async fn bad_admin_input_gets_4xx_json() {
    let t = spawn_app(DbKind::Sqlite).await;
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
    let t = spawn_app(DbKind::Sqlite).await;
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
