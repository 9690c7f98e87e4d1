//! Notifications over HTTP: the inbox and preferences under
//! `/api/v1/user`, the unsubscribe link under `/api/v1/public` (it works
//! without signing in: the link itself is signed), and dead letters and
//! admin notices under `/api/v1/admin/notifications` (audited). JSON types
//! are converted by hand from the notify service's.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use turnbase_core::http::{ErrorBody, FieldProblem};
use turnbase_notify::{NoticeTarget, NotifyError, PreferencesChange, PreferencesView};
use turnbase_store::accounts::AuditEntry;
use turnbase_store::notify::{
    Channel, Kind, NotificationRow, RouteAttemptRecord, RouteFilter, RouteRecord, RouteStatus,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{AdminSession, Authenticated};
use super::{ApiError, AppState};

const MAX_PAGE: i64 = 200;

pub fn user_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(inbox))
        .routes(routes!(unread_count))
        .routes(routes!(read_one))
        .routes(routes!(read_all))
        .routes(routes!(get_preferences, put_preferences))
}

pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(unsubscribe, unsubscribe_post))
}

pub fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dead_letters))
        .routes(routes!(dead_letter))
        .routes(routes!(requeue_one))
        .routes(routes!(requeue_matching))
        .routes(routes!(send_notice))
        .routes(routes!(operator_webhook))
}

impl From<NotifyError> for ApiError {
    fn from(err: NotifyError) -> Self {
        match err {
            NotifyError::NotFound(message) => ApiError::NotFound(message),
            NotifyError::Invalid(problems) => {
                let message = problems
                    .iter()
                    .map(|(f, r)| format!("{f}: {r}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                ApiError::Detailed(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_input",
                    message,
                    problems
                        .into_iter()
                        .map(|(field, reason)| FieldProblem {
                            path: format!("/{}", field.replace('.', "/")),
                            reason,
                        })
                        .collect(),
                )
            }
            NotifyError::BadLink(e) => ApiError::Coded(
                StatusCode::BAD_REQUEST,
                "invalid_link",
                format!("the unsubscribe link is not valid: {e}"),
            ),
            NotifyError::LinkUsed => ApiError::Coded(
                StatusCode::CONFLICT,
                "link_used",
                "this unsubscribe link was already used".into(),
            ),
            NotifyError::Store(e) => ApiError::Unexpected(e.into()),
            NotifyError::Unexpected(e) => ApiError::Unexpected(e),
        }
    }
}

// ---- the inbox -----------------------------------------------------------

#[derive(Serialize, utoipa::ToSchema)]
struct NotificationJson {
    id: Uuid,
    /// `turn_resolved`, `your_move`, `orders_due`, …
    kind: String,
    /// The live event's kind (`game.turn_resolved`, …).
    event: String,
    game_id: Option<Uuid>,
    /// The game's title, when it is about a game.
    title: Option<String>,
    #[schema(value_type = Object)]
    payload: Value,
    created_at: DateTime<Utc>,
    read_at: Option<DateTime<Utc>>,
}

impl From<NotificationRow> for NotificationJson {
    fn from(n: NotificationRow) -> Self {
        NotificationJson {
            event: Kind::parse(&n.kind)
                .map(|k| k.event().to_string())
                .unwrap_or_default(),
            id: n.id,
            kind: n.kind,
            game_id: n.game_id,
            title: n.game_title,
            payload: serde_json::from_str(&n.payload).unwrap_or(Value::Null),
            created_at: n.created_at,
            read_at: n.read_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct InboxJson {
    notifications: Vec<NotificationJson>,
    /// All unread notifications (not only this page's).
    unread: i64,
    /// Pass as `before` for the next (older) page; stable while new
    /// notifications arrive (ids grow with time).
    next_before: Option<Uuid>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct InboxQuery {
    /// Notifications older than this id (the cursor).
    before: Option<Uuid>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
    /// Only unread ones.
    unread: Option<bool>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct UnreadJson {
    unread: i64,
}

/// My notifications, newest first.
#[utoipa::path(get, path = "/notifications", tag = "user", security(("bearer" = [])),
    params(InboxQuery),
    responses(
        (status = 200, description = "A page of the inbox", body = InboxJson),
        (status = 400, description = "Bad page size", body = ErrorBody),
    ))]
async fn inbox(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Query(q): Query<InboxQuery>,
) -> Result<Json<InboxJson>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit: 1 to {MAX_PAGE}")));
    }
    let (items, unread) = state
        .notify
        .inbox(s.account.id, q.before, q.unread.unwrap_or(false), limit)
        .await?;
    let next_before = if items.len() as i64 == limit {
        items.last().map(|n| n.id)
    } else {
        None
    };
    Ok(Json(InboxJson {
        notifications: items.into_iter().map(NotificationJson::from).collect(),
        unread,
        next_before,
    }))
}

/// How many of my notifications are unread (also pushed live as
/// `notifications.unread` when it changes).
#[utoipa::path(get, path = "/notifications/unread-count", tag = "user", security(("bearer" = [])),
    responses((status = 200, description = "The count", body = UnreadJson)))]
async fn unread_count(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
) -> Result<Json<UnreadJson>, ApiError> {
    Ok(Json(UnreadJson {
        unread: state.notify.unread(s.account.id).await?,
    }))
}

/// Mark one of my notifications read.
#[utoipa::path(post, path = "/notifications/{id}/read", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Notification id")),
    responses(
        (status = 200, description = "The unread count now", body = UnreadJson),
        (status = 404, description = "No such notification of yours", body = ErrorBody),
    ))]
async fn read_one(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<UnreadJson>, ApiError> {
    Ok(Json(UnreadJson {
        unread: state.notify.mark_read(s.account.id, id).await?,
    }))
}

/// Mark all my notifications read.
#[utoipa::path(post, path = "/notifications/read-all", tag = "user", security(("bearer" = [])),
    responses((status = 200, description = "The unread count now (0)", body = UnreadJson)))]
async fn read_all(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
) -> Result<Json<UnreadJson>, ApiError> {
    Ok(Json(UnreadJson {
        unread: state.notify.mark_all_read(s.account.id).await?,
    }))
}

// ---- preferences ---------------------------------------------------------

#[derive(Serialize, utoipa::ToSchema)]
struct QuietJson {
    /// `HH:MM` in `time_zone`.
    start: String,
    end: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct WebhookJson {
    url: String,
    /// The HMAC-SHA256 key of the `Turnbase-Signature` header.
    secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct PreferencesJson {
    /// Every kind with the channels it goes to besides the inbox
    /// (`push`, `email`, `webhook`).
    #[schema(value_type = Object)]
    channels: std::collections::BTreeMap<&'static str, Vec<&'static str>>,
    /// IANA time zone of quiet hours and digest days.
    time_zone: String,
    /// Email and webhooks wait until they end; inbox and push do not.
    quiet_hours: Option<QuietJson>,
    /// Turn results by email as one mail per game and day.
    digest: bool,
    webhook: Option<WebhookJson>,
}

impl From<PreferencesView> for PreferencesJson {
    fn from(p: PreferencesView) -> Self {
        PreferencesJson {
            channels: p.channels,
            time_zone: p.time_zone,
            quiet_hours: p.quiet_hours.map(|q| QuietJson {
                start: q.start,
                end: q.end,
            }),
            digest: p.digest,
            webhook: p.webhook.map(|w| WebhookJson {
                url: w.url,
                secret: w.secret,
            }),
        }
    }
}

/// A change of preferences; fields left out stay as they are.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
struct PreferencesBody {
    /// Kind → channels, e.g. `{"your_move": ["push", "email"]}`; kinds
    /// left out keep their defaults.
    #[schema(value_type = Object)]
    channels: Option<Value>,
    time_zone: Option<String>,
    /// `{"start": "22:00", "end": "07:00"}`, or `null` for none.
    #[schema(value_type = Object)]
    quiet_hours: Option<Value>,
    digest: Option<bool>,
    /// http(s) URL, or `null` to remove it; a new URL gets a new secret.
    webhook_url: Option<String>,
}

/// My notification preferences, defaults filled in.
#[utoipa::path(get, path = "/notification-preferences", tag = "user", security(("bearer" = [])),
    responses((status = 200, description = "The preferences", body = PreferencesJson)))]
async fn get_preferences(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
) -> Result<Json<PreferencesJson>, ApiError> {
    Ok(Json(state.notify.preferences(s.account.id).await?.into()))
}

/// Change my notification preferences.
#[utoipa::path(put, path = "/notification-preferences", tag = "user", security(("bearer" = [])),
    request_body = PreferencesBody,
    responses(
        (status = 200, description = "The preferences now", body = PreferencesJson),
        (status = 400, description = "Not JSON of this shape (unknown fields included)", body = ErrorBody),
        (status = 422, description = "invalid_input: unknown kinds or channels, a bad time zone, quiet hours that make no sense, a forbidden webhook URL, email for a guest; `details` per field", body = ErrorBody),
    ))]
async fn put_preferences(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    body: axum::body::Bytes,
) -> Result<Json<PreferencesJson>, ApiError> {
    let change: PreferencesChange = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("preferences: {e}")))?;
    let has_email = s.account.email.is_some();
    Ok(Json(
        state
            .notify
            .put_preferences(s.account.id, has_email, change)
            .await?
            .into(),
    ))
}

// ---- unsubscribe ---------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LinkQuery {
    /// The token from the mail's link.
    token: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct UnsubscribedJson {
    /// The kind that no longer comes by email.
    kind: String,
    channel: &'static str,
}

/// Follow an unsubscribe link from a mail: that kind of notification no
/// longer comes by email. No session needed; each link works once.
#[utoipa::path(get, path = "/notifications/unsubscribe", tag = "public",
    params(LinkQuery),
    responses(
        (status = 200, description = "Unsubscribed", body = UnsubscribedJson),
        (status = 400, description = "invalid_link: malformed, altered or not ours", body = ErrorBody),
        (status = 404, description = "The account no longer exists", body = ErrorBody),
        (status = 409, description = "link_used", body = ErrorBody),
    ))]
async fn unsubscribe(
    State(state): State<AppState>,
    Query(q): Query<LinkQuery>,
) -> Result<Json<UnsubscribedJson>, ApiError> {
    let kind = state.notify.unsubscribe(&q.token).await?;
    Ok(Json(UnsubscribedJson {
        kind: kind.as_str().to_string(),
        channel: "email",
    }))
}

/// The same as a one-click POST (RFC 8058), as mail programs send it.
#[utoipa::path(post, path = "/notifications/unsubscribe", tag = "public",
    params(LinkQuery),
    responses(
        (status = 200, description = "Unsubscribed", body = UnsubscribedJson),
        (status = 400, description = "invalid_link", body = ErrorBody),
        (status = 409, description = "link_used", body = ErrorBody),
    ))]
async fn unsubscribe_post(
    state: State<AppState>,
    q: Query<LinkQuery>,
) -> Result<Json<UnsubscribedJson>, ApiError> {
    unsubscribe(state, q).await
}

// ---- admins --------------------------------------------------------------

#[derive(Serialize, utoipa::ToSchema)]
struct RouteJson {
    id: Uuid,
    notification_id: Uuid,
    account_id: Uuid,
    kind: String,
    channel: String,
    /// The address or URL it went to.
    target: Option<String>,
    status: String,
    /// Attempts of its current budget.
    attempts: i64,
    /// Every attempt, requeues included.
    attempts_total: i64,
    next_attempt_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

impl From<RouteRecord> for RouteJson {
    fn from(r: RouteRecord) -> Self {
        RouteJson {
            id: r.id,
            notification_id: r.notification_id,
            account_id: r.account_id,
            kind: r.kind,
            channel: r.channel,
            target: r.target,
            status: r.status,
            attempts: r.attempts,
            attempts_total: r.attempts_total,
            next_attempt_at: r.next_attempt_at,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
            last_error: r.last_error,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct AttemptJson {
    attempt: i64,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    /// delivered, retry or failed.
    outcome: String,
    /// A webhook receiver's HTTP status.
    status_code: Option<i64>,
    error: Option<String>,
}

impl From<RouteAttemptRecord> for AttemptJson {
    fn from(a: RouteAttemptRecord) -> Self {
        AttemptJson {
            attempt: a.attempt,
            started_at: a.started_at,
            finished_at: a.finished_at,
            outcome: a.outcome,
            status_code: a.status_code,
            error: a.error,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeadLettersJson {
    routes: Vec<RouteJson>,
    next_before: Option<Uuid>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeadLetterJson {
    route: RouteJson,
    attempts: Vec<AttemptJson>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeadQuery {
    /// push, email or webhook.
    channel: Option<String>,
    /// A notification kind.
    kind: Option<String>,
    account_id: Option<Uuid>,
    /// Routes older than this id.
    before: Option<Uuid>,
    /// 1 to 200 (default 50).
    limit: Option<i64>,
}

fn dead_filter(
    channel: Option<&str>,
    kind: Option<&str>,
    account_id: Option<Uuid>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<RouteFilter, ApiError> {
    let channel = channel
        .map(|c| {
            Channel::parse(c).ok_or_else(|| {
                ApiError::BadRequest(format!("channel: {c:?} is not push, email or webhook"))
            })
        })
        .transpose()?;
    let kind = kind
        .map(|k| {
            Kind::parse(k).ok_or_else(|| {
                ApiError::BadRequest(format!("kind: {k:?} is not a notification kind"))
            })
        })
        .transpose()?;
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit: 1 to {MAX_PAGE}")));
    }
    Ok(RouteFilter {
        id: None,
        status: Some(RouteStatus::Failed),
        channel,
        kind,
        account_id,
        before,
        limit,
    })
}

/// Dead letters: routes that failed for good, newest first.
#[utoipa::path(get, path = "/notifications/dead-letters", tag = "admin", security(("bearer" = [])),
    params(DeadQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLettersJson),
        (status = 400, description = "Bad filter", body = ErrorBody),
    ))]
async fn dead_letters(
    State(state): State<AppState>,
    Query(q): Query<DeadQuery>,
) -> Result<Json<DeadLettersJson>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    let filter = dead_filter(
        q.channel.as_deref(),
        q.kind.as_deref(),
        q.account_id,
        q.before,
        limit,
    )?;
    let routes = state.notify.routes(&filter).await?;
    let next_before = if routes.len() as i64 == limit {
        routes.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(DeadLettersJson {
        routes: routes.into_iter().map(RouteJson::from).collect(),
        next_before,
    }))
}

/// One route with its attempt history (any status).
#[utoipa::path(get, path = "/notifications/dead-letters/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Route id")),
    responses(
        (status = 200, description = "The route and its attempts", body = DeadLetterJson),
        (status = 404, description = "No such route", body = ErrorBody),
    ))]
async fn dead_letter(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<DeadLetterJson>, ApiError> {
    let (route, attempts) = state.notify.route(id).await?;
    Ok(Json(DeadLetterJson {
        route: route.into(),
        attempts: attempts.into_iter().map(AttemptJson::from).collect(),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct RequeuedJson {
    /// The routes pending again, with a fresh attempt budget.
    requeued: Vec<Uuid>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RequeueBody {
    channel: Option<String>,
    kind: Option<String>,
    account_id: Option<Uuid>,
    /// At most this many (default and maximum 200).
    limit: Option<i64>,
}

fn audit(admin: &AdminSession, action: &str, target: String, detail: Value) -> AuditEntry {
    let a = admin.actor();
    AuditEntry {
        id: Uuid::now_v7(),
        actor_id: a.id,
        actor_email: a.email,
        action: action.to_string(),
        target,
        detail: detail.to_string(),
        at: Utc::now(),
    }
}

/// Requeue one dead letter (audited).
#[utoipa::path(post, path = "/notifications/dead-letters/{id}/requeue", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Route id")),
    responses(
        (status = 200, description = "Requeued", body = RequeuedJson),
        (status = 404, description = "No such route", body = ErrorBody),
        (status = 409, description = "The route is not a dead letter", body = ErrorBody),
    ))]
async fn requeue_one(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
) -> Result<Json<RequeuedJson>, ApiError> {
    let (route, _) = state.notify.route(id).await?;
    if route.status != RouteStatus::Failed.as_str() {
        return Err(ApiError::Conflict(format!(
            "the route is {}, not a dead letter",
            route.status
        )));
    }
    let filter = RouteFilter {
        id: Some(id),
        status: Some(RouteStatus::Failed),
        limit: 1,
        ..RouteFilter::default()
    };
    let requeued = state
        .notify
        .requeue(
            &filter,
            audit(&admin, "notification.requeue", id.to_string(), json!({})),
        )
        .await?;
    Ok(Json(RequeuedJson { requeued }))
}

/// Requeue every dead letter matching a filter, up to `limit` (audited).
#[utoipa::path(post, path = "/notifications/dead-letters/requeue", tag = "admin", security(("bearer" = [])),
    request_body = RequeueBody,
    responses(
        (status = 200, description = "Requeued", body = RequeuedJson),
        (status = 400, description = "Bad filter", body = ErrorBody),
    ))]
async fn requeue_matching(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Json(body): Json<RequeueBody>,
) -> Result<Json<RequeuedJson>, ApiError> {
    let mut filter = dead_filter(
        body.channel.as_deref(),
        body.kind.as_deref(),
        body.account_id,
        None,
        body.limit.unwrap_or(MAX_PAGE),
    )?;
    filter.before = None;
    let detail = json!({
        "channel": body.channel,
        "kind": body.kind,
        "account_id": body.account_id,
    });
    let requeued = state
        .notify
        .requeue(
            &filter,
            audit(
                &admin,
                "notification.requeue",
                "dead-letters".into(),
                detail,
            ),
        )
        .await?;
    Ok(Json(RequeuedJson { requeued }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NoticeBody {
    /// One account; leave out and set `everyone` to tell every account.
    account_id: Option<Uuid>,
    #[serde(default)]
    everyone: bool,
    /// 1 to 200 characters.
    subject: String,
    /// 1 to 5,000 characters.
    message: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct NoticeSentJson {
    /// Notifications written.
    recipients: u64,
}

/// Send an admin notice to one account or to everyone (audited; to
/// everyone it is written in batches of 1,000).
#[utoipa::path(post, path = "/notifications/notices", tag = "admin", security(("bearer" = [])),
    request_body = NoticeBody,
    responses(
        (status = 200, description = "Written", body = NoticeSentJson),
        (status = 400, description = "Neither or both of account_id and everyone", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 422, description = "invalid_input: empty or long subject or message", body = ErrorBody),
    ))]
async fn send_notice(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Json(body): Json<NoticeBody>,
) -> Result<Json<NoticeSentJson>, ApiError> {
    let target = match (body.account_id, body.everyone) {
        (Some(id), false) => NoticeTarget::One(id),
        (None, true) => NoticeTarget::Everyone,
        _ => {
            return Err(ApiError::BadRequest(
                "give either account_id or \"everyone\": true".into(),
            ));
        }
    };
    let detail = json!({ "subject": body.subject, "everyone": body.everyone });
    let target_text = body
        .account_id
        .map_or_else(|| "everyone".to_string(), |id| id.to_string());
    let recipients = state
        .notify
        .send_notice(
            target,
            &body.subject,
            &body.message,
            audit(&admin, "notification.notice", target_text, detail),
        )
        .await?;
    Ok(Json(NoticeSentJson { recipients }))
}

/// The operators' webhook (`BACKEND_NOTIFICATION_OPERATOR_WEBHOOK`), where
/// every admin notice is also posted, and the secret its signature header
/// is made with.
#[utoipa::path(get, path = "/notifications/operator-webhook", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The URL and secret", body = WebhookJson),
        (status = 404, description = "No operator webhook is configured", body = ErrorBody),
    ))]
async fn operator_webhook(State(state): State<AppState>) -> Result<Json<WebhookJson>, ApiError> {
    let hook = state.notify.operator_webhook().ok_or_else(|| {
        ApiError::NotFound(
            "no operator webhook (BACKEND_NOTIFICATION_OPERATOR_WEBHOOK) is configured".into(),
        )
    })?;
    Ok(Json(WebhookJson {
        url: hook.url,
        secret: hook.secret,
    }))
}
