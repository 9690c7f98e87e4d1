//! `/api/v1/admin`: accounts (list, search, show, block, unblock), the
//! audit log of admin actions, and sign-ins per country per day. The
//! guard in `auth` lets only admin sessions in.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use turnbase_core::http::ErrorBody;
use turnbase_store::accounts::{AccountFilter, AccountRow, AuditEntry};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::AdminSession;
use super::user::SessionView;
use super::{ApiError, AppState, page};

const MAX_LIMIT: i64 = 200;
/// The longest range of days one counts request may cover.
const MAX_DAYS: i64 = 366;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts))
        .routes(routes!(show_account))
        .routes(routes!(block_account))
        .routes(routes!(unblock_account))
        .routes(routes!(audit_log))
        .routes(routes!(login_counts))
}

fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AccountQuery {
    /// Part of an email address or display name (case-insensitive).
    q: Option<String>,
    /// `guest` or `email`.
    kind: Option<String>,
    /// `player` or `admin`.
    role: Option<String>,
    blocked: Option<bool>,
    /// Return accounts older than this id (the previous page's `next`).
    before: Option<Uuid>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct AccountView {
    id: Uuid,
    email: Option<String>,
    display_name: String,
    role: String,
    is_guest: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    blocked_at: Option<DateTime<Utc>>,
    blocked_reason: Option<String>,
}

impl From<AccountRow> for AccountView {
    fn from(a: AccountRow) -> Self {
        AccountView {
            id: a.id,
            email: a.email,
            display_name: a.display_name,
            role: a.role.as_str().to_string(),
            is_guest: a.is_guest,
            created_at: a.created_at,
            updated_at: a.updated_at,
            blocked_at: a.blocked_at,
            blocked_reason: a.blocked_reason,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct AccountPage {
    items: Vec<AccountView>,
    /// Pass as `before` for the next page; absent on the last page.
    next: Option<Uuid>,
}

/// List and search accounts, newest first.
#[utoipa::path(get, path = "/accounts", tag = "admin", security(("bearer" = [])), params(AccountQuery),
    responses(
        (status = 200, description = "A page of accounts", body = AccountPage),
        (status = 400, description = "Bad filter or page size", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
async fn list_accounts(
    State(state): State<AppState>,
    Query(query): Query<AccountQuery>,
) -> Result<Json<AccountPage>, ApiError> {
    let limit = page_limit(query.limit)?;
    let guest = match query.kind.as_deref() {
        None => None,
        Some("guest") => Some(true),
        Some("email") => Some(false),
        Some(_) => return Err(ApiError::BadRequest("kind must be guest or email".into())),
    };
    let role = match query.role.as_deref() {
        Some(text) => Some(
            turnbase_store::accounts::Role::parse(text)
                .ok_or_else(|| ApiError::BadRequest("role must be player or admin".into()))?,
        ),
        None => None,
    };
    if query.q.as_ref().is_some_and(|q| q.chars().count() > 100) {
        return Err(ApiError::BadRequest(
            "q must be at most 100 characters".into(),
        ));
    }
    let rows = state
        .accounts
        .list_accounts(&AccountFilter {
            search: query
                .q
                .filter(|q| !q.trim().is_empty())
                .map(|q| q.trim().to_string()),
            guest,
            blocked: query.blocked,
            role,
            before: query.before,
            limit: limit + 1,
        })
        .await?;
    let (items, next) = page(rows, limit, |a: &AccountView| a.id);
    Ok(Json(AccountPage { items, next }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct AccountDetailView {
    #[serde(flatten)]
    account: AccountView,
    sessions: Vec<SessionView>,
}

/// One account with its sessions.
#[utoipa::path(get, path = "/accounts/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account", body = AccountDetailView),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    ))]
async fn show_account(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<AccountDetailView>, ApiError> {
    let detail = state.accounts.account_detail(id).await?;
    Ok(Json(AccountDetailView {
        account: detail.account.into(),
        sessions: detail
            .sessions
            .into_iter()
            .map(|s| SessionView::of(s, Uuid::nil()))
            .collect(),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Block {
    /// Why, for the audit log: 1 to 500 characters.
    reason: String,
}

/// Block an account for good: every session is revoked at once and it
/// cannot sign in again until unblocked.
#[utoipa::path(post, path = "/accounts/{id}/block", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Account id")), request_body = Block,
    responses(
        (status = 200, description = "Blocked", body = AccountView),
        (status = 400, description = "Bad reason", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "An admin cannot block themselves", body = ErrorBody),
    ))]
async fn block_account(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
    Json(body): Json<Block>,
) -> Result<Json<AccountView>, ApiError> {
    let account = state
        .accounts
        .block(&admin.actor(), id, &body.reason)
        .await?;
    Ok(Json(account.into()))
}

/// Lift a block.
#[utoipa::path(post, path = "/accounts/{id}/unblock", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "Unblocked", body = AccountView),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    ))]
async fn unblock_account(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
) -> Result<Json<AccountView>, ApiError> {
    let account = state.accounts.unblock(&admin.actor(), id).await?;
    Ok(Json(account.into()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    before: Option<Uuid>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct AuditView {
    id: Uuid,
    actor_id: Uuid,
    actor_email: Option<String>,
    /// e.g. `account.block`, `mail.retry`.
    action: String,
    /// What was acted on (an account or mail id).
    target: String,
    #[schema(value_type = Object)]
    detail: serde_json::Value,
    at: DateTime<Utc>,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        AuditView {
            detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::String(e.detail)),
            id: e.id,
            actor_id: e.actor_id,
            actor_email: e.actor_email,
            action: e.action,
            target: e.target,
            at: e.at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct AuditPage {
    items: Vec<AuditView>,
    next: Option<Uuid>,
}

/// Admin actions, newest first.
#[utoipa::path(get, path = "/audit", tag = "admin", security(("bearer" = [])), params(PageQuery),
    responses(
        (status = 200, description = "A page of the audit log", body = AuditPage),
        (status = 400, description = "Bad page size", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
async fn audit_log(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = page_limit(query.limit)?;
    let rows = state.accounts.audit_log(query.before, limit + 1).await?;
    let (items, next) = page(rows, limit, |a: &AuditView| a.id);
    Ok(Json(AuditPage { items, next }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CountsQuery {
    /// First day, `YYYY-MM-DD` (default: 29 days before `to`).
    from: Option<NaiveDate>,
    /// Last day, `YYYY-MM-DD` (default: today, UTC).
    to: Option<NaiveDate>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DayCount {
    day: String,
    /// ISO code; `ZZ` when unknown.
    country: String,
    logins: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Counts {
    from: NaiveDate,
    to: NaiveDate,
    items: Vec<DayCount>,
}

/// Sign-ins per country per UTC day. Counts reach the database every
/// `BACKEND_ACCOUNTS_FLUSH_INTERVAL` and at shutdown.
#[utoipa::path(get, path = "/geo/logins", tag = "admin", security(("bearer" = [])), params(CountsQuery),
    responses(
        (status = 200, description = "The counts", body = Counts),
        (status = 400, description = "Bad range", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
async fn login_counts(
    State(state): State<AppState>,
    Query(query): Query<CountsQuery>,
) -> Result<Json<Counts>, ApiError> {
    let to = query.to.unwrap_or_else(|| Utc::now().date_naive());
    let from = query
        .from
        .unwrap_or_else(|| to - chrono::Duration::days(29));
    if from > to {
        return Err(ApiError::BadRequest("from must not be after to".into()));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::BadRequest(format!(
            "a range may cover at most {MAX_DAYS} days"
        )));
    }
    let rows = state
        .accounts
        .login_counts(&from.to_string(), &to.to_string())
        .await?;
    Ok(Json(Counts {
        from,
        to,
        items: rows
            .into_iter()
            .map(|c| DayCount {
                day: c.day,
                country: c.country,
                logins: c.logins,
            })
            .collect(),
    }))
}
