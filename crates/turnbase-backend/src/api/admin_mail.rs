//! `/api/v1/admin/mail`: the outbox for operators — list deliveries by
//! status or recipient with paging, show one with its attempts (audited),
//! retry a failed one. Mail carrying a secret (a sign-in code) shows only
//! its masked subject here, so no admin can sign in as its recipient.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use turnbase_store::StoreError;
use turnbase_store::mail::{AttemptRecord, MailFilter, MailRecord, ShownStatus};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::AdminSession;
use super::{ApiError, AppState, page};

const MAX_LIMIT: i64 = 200;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_mail))
        .routes(routes!(show_mail))
        .routes(routes!(retry_mail))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `pending`, `retrying`, `sending`, `sent` or `failed`.
    status: Option<String>,
    /// Return deliveries older than this id (the previous page's `next`).
    before: Option<Uuid>,
    /// Only deliveries to this address ("did my code go out?").
    to: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Delivery {
    id: Uuid,
    to: String,
    subject: String,
    /// `pending`, `retrying`, `sending`, `sent` or `failed`.
    status: String,
    attempts: i64,
    idempotency_key: Option<String>,
    next_attempt_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// The mail carries a secret: `subject` is masked, and the body is
    /// erased a while after delivery.
    carries_secret: bool,
    /// When this secret-bearing mail's body was erased.
    body_erased_at: Option<DateTime<Utc>>,
}

impl From<MailRecord> for Delivery {
    fn from(m: MailRecord) -> Self {
        Delivery {
            status: m.shown_status().as_str().to_string(),
            id: m.id,
            to: m.to,
            subject: m.subject,
            attempts: m.attempts,
            idempotency_key: m.idempotency_key,
            next_attempt_at: m.next_attempt_at,
            created_at: m.created_at,
            sent_at: m.sent_at,
            last_error: m.last_error,
            carries_secret: m.carries_secret,
            body_erased_at: m.erased_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeliveryPage {
    items: Vec<Delivery>,
    /// Pass as `before` for the next page; absent on the last page.
    next: Option<Uuid>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Attempt {
    attempt: i64,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    /// `sent`, `transient` or `permanent`.
    outcome: String,
    smtp_code: Option<i64>,
    error: Option<String>,
}

impl From<AttemptRecord> for Attempt {
    fn from(a: AttemptRecord) -> Self {
        Attempt {
            attempt: a.attempt,
            started_at: a.started_at,
            finished_at: a.finished_at,
            outcome: a.outcome.as_str().to_string(),
            smtp_code: a.smtp_code,
            error: a.error,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeliveryDetail {
    #[serde(flatten)]
    delivery: Delivery,
    /// Every attempt, oldest first (`attempts` is the count that the retry
    /// budget spends).
    history: Vec<Attempt>,
}

fn store_error(err: StoreError, id: Uuid) -> ApiError {
    match err {
        StoreError::NotFound => ApiError::NotFound(format!("no mail {id}")),
        StoreError::Conflict(message) => ApiError::Conflict(message),
        other => ApiError::Unexpected(other.into()),
    }
}

/// List mail deliveries, newest first.
#[utoipa::path(get, path = "", tag = "admin", security(("bearer" = [])), params(ListQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryPage),
        (status = 400, description = "Bad filter or page size", body = turnbase_core::http::ErrorBody),
    ))]
async fn list_mail(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let status = match query.status.as_deref() {
        Some(text) => Some(ShownStatus::parse(text).ok_or_else(|| {
            let all: Vec<&str> = ShownStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!("status must be one of {}", all.join(", ")))
        })?),
        None => None,
    };
    let to = match query.to.as_deref() {
        Some(text) => Some(
            turnbase_mail::Email::parse(text)
                .map_err(|e| ApiError::BadRequest(format!("to: {e}")))?
                .to_string(),
        ),
        None => None,
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let records = state
        .db
        .mail()
        .list_mail(&MailFilter {
            status,
            before: query.before,
            to,
            limit: limit + 1,
        })
        .await
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    let (items, next) = page(records, limit, |d: &Delivery| d.id);
    Ok(Json(DeliveryPage { items, next }))
}

/// One delivery with every attempt. Each view is audited.
#[utoipa::path(get, path = "/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Outbox id")),
    responses(
        (status = 200, description = "The delivery", body = DeliveryDetail),
        (status = 404, description = "No such mail", body = turnbase_core::http::ErrorBody),
    ))]
async fn show_mail(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
) -> Result<Json<DeliveryDetail>, ApiError> {
    let (record, attempts) = state
        .db
        .mail()
        .mail(id)
        .await
        .map_err(|e| store_error(e, id))?;
    state
        .accounts
        .audit(
            &admin.actor(),
            "mail.view",
            id.to_string(),
            serde_json::json!({ "to": record.to }),
        )
        .await?;
    Ok(Json(DeliveryDetail {
        delivery: record.into(),
        history: attempts.into_iter().map(Attempt::from).collect(),
    }))
}

/// Make a failed delivery due again, with a fresh attempt budget.
#[utoipa::path(post, path = "/{id}/retry", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Outbox id")),
    responses(
        (status = 200, description = "Queued again", body = Delivery),
        (status = 404, description = "No such mail", body = turnbase_core::http::ErrorBody),
        (status = 409, description = "The mail has not failed", body = turnbase_core::http::ErrorBody),
    ))]
async fn retry_mail(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
) -> Result<Json<Delivery>, ApiError> {
    let record = state
        .db
        .mail()
        .retry_mail(id, Utc::now())
        .await
        .map_err(|e| store_error(e, id))?;
    state.mail.wake();
    state
        .accounts
        .audit(
            &admin.actor(),
            "mail.retry",
            id.to_string(),
            serde_json::json!({ "to": record.to }),
        )
        .await?;
    Ok(Json(record.into()))
}
