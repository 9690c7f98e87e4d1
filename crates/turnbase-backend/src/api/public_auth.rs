//! `/api/v1/public/auth`: sign-in by mailed code, and guest accounts.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use turnbase_core::http::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::ClientAddr;
use super::user::{Me, SessionView};
use super::{ApiError, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_email))
        .routes(routes!(verify_email))
        .routes(routes!(guest))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StartEmail {
    email: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Accepted {
    status: &'static str,
}

/// Mail a six-digit sign-in code. Answers 202 whether or not the address
/// has an account; 400 for a malformed address, 429 at the per-address or
/// per-client limit.
#[utoipa::path(post, path = "/auth/email/start", tag = "public", request_body = StartEmail,
    responses(
        (status = 202, description = "A code is on its way (if the address can receive it)", body = Accepted),
        (status = 400, description = "Not an email address", body = ErrorBody),
        (status = 429, description = "Too many requests for this address or client; see Retry-After", body = ErrorBody),
    ))]
async fn start_email(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Json(body): Json<StartEmail>,
) -> Result<Response, ApiError> {
    state
        .accounts
        .start_email_sign_in(&body.email, client)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { status: "sent" })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyEmail {
    email: String,
    /// The six digits from the mail.
    code: String,
    /// Shown in the session list, e.g. `Firefox on Linux`; at most 64
    /// characters.
    #[schema(max_length = 64)]
    device_name: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct SignedInView {
    /// The bearer token of the new session. Shown once; keep it secret.
    token: String,
    session: SessionView,
    account: Me,
    /// Whether this sign-in created the account.
    created: bool,
}

impl From<turnbase_accounts::SignedIn> for SignedInView {
    fn from(s: turnbase_accounts::SignedIn) -> Self {
        SignedInView {
            token: s.token.as_str().to_string(),
            session: SessionView::current(&s.session),
            account: Me::from(&s.session.account),
            created: s.created,
        }
    }
}

/// Sign in with the mailed code; the account is created on first use.
#[utoipa::path(post, path = "/auth/email/verify", tag = "public", request_body = VerifyEmail,
    responses(
        (status = 200, description = "Signed in", body = SignedInView),
        (status = 400, description = "Malformed input, or the code is wrong, used up or expired (`invalid_code`)", body = ErrorBody),
        (status = 403, description = "The account is blocked (`account_blocked`)", body = ErrorBody),
        (status = 429, description = "Too many requests from this client; see Retry-After", body = ErrorBody),
    ))]
async fn verify_email(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Json(body): Json<VerifyEmail>,
) -> Result<Json<SignedInView>, ApiError> {
    let signed_in = state
        .accounts
        .verify_email_sign_in(&body.email, &body.code, body.device_name.as_deref(), client)
        .await?;
    Ok(Json(signed_in.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Guest {
    /// 1 to 32 characters, no control characters.
    #[schema(min_length = 1, max_length = 32)]
    display_name: String,
    /// Shown in the session list; at most 64 characters.
    #[schema(max_length = 64)]
    device_name: Option<String>,
}

/// Create a guest account (no email; upgradable later) and its session.
#[utoipa::path(post, path = "/auth/guest", tag = "public", request_body = Guest,
    responses(
        (status = 201, description = "Signed in as a new guest", body = SignedInView),
        (status = 400, description = "Bad display or device name", body = ErrorBody),
        (status = 429, description = "Too many requests from this client; see Retry-After", body = ErrorBody),
    ))]
async fn guest(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Json(body): Json<Guest>,
) -> Result<Response, ApiError> {
    let signed_in = state
        .accounts
        .guest_sign_in(&body.display_name, body.device_name.as_deref(), client)
        .await?;
    Ok((StatusCode::CREATED, Json(SignedInView::from(signed_in))).into_response())
}
