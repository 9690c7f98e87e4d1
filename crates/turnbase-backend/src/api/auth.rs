//! Who is calling: bearer sessions for `/api/v1/user`, admin sessions for
//! `/api/v1/admin`, the gateways' shared secret for `/api/v1/internal`, and
//! the client's address behind trusted proxies.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use subtle::ConstantTimeEq as _;
use turnbase_accounts::{Actor, CachedSession, Client};
use turnbase_store::accounts::Role;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{ApiError, AppState};

pub const ADMIN_ROUTE_PREFIX: &str = "/api/v1/admin/";
pub const INTERNAL_ROUTE_PREFIX: &str = "/api/v1/internal/";

/// The bearer credential of a request, if it has one.
fn bearer(parts: &http::HeaderMap) -> Result<&str, ApiError> {
    let value = parts
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer header".into()))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
    let (scheme, credential) = text
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("expected Authorization: Bearer <token>".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized(
            "expected Authorization: Bearer <token>".into(),
        ));
    }
    Ok(credential.trim())
}

/// A signed-in caller of `/api/v1/user`.
pub struct Authenticated(pub Arc<CachedSession>);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(admin) = parts.extensions.get::<AdminSession>() {
            return Ok(Authenticated(admin.0.clone()));
        }
        let token = bearer(&parts.headers)?;
        Ok(Authenticated(state.accounts.resolve(token).await?))
    }
}

/// The admin session of an `/api/v1/admin` request, put there by the guard.
#[derive(Clone)]
pub struct AdminSession(pub Arc<CachedSession>);

impl AdminSession {
    pub fn actor(&self) -> Actor {
        Actor::of(&self.0)
    }
}

/// The guard in front of every route: admin routes need an admin session,
/// internal routes the gateways' secret; the rest pass.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.starts_with(ADMIN_ROUTE_PREFIX) {
        let session = match admin(&state, request.headers()).await {
            Ok(session) => session,
            Err(err) => return err.into_response(),
        };
        request.extensions_mut().insert(AdminSession(session));
    } else if path.starts_with(INTERNAL_ROUTE_PREFIX)
        && let Err(err) = internal(&state, request.headers())
    {
        return err.into_response();
    }
    next.run(request).await
}

async fn admin(
    state: &AppState,
    headers: &http::HeaderMap,
) -> Result<Arc<CachedSession>, ApiError> {
    let session = state.accounts.resolve(bearer(headers)?).await?;
    if session.account.role != Role::Admin {
        return Err(ApiError::Forbidden(
            "the admin API needs an account with the admin role".into(),
        ));
    }
    Ok(session)
}

fn internal(state: &AppState, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let given = bearer(headers)?;
    let expected = state.internal_token.expose();
    // Constant time in the content; the length of the secret is not secret.
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "the internal API needs the gateways' shared secret".into(),
        ))
    }
}

/// The client's address: the peer, or behind a trusted proxy the address
/// it forwarded.
pub struct ClientAddr(pub Client);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| anyhow::anyhow!("the server was started without connection info"))?;
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Ok(ClientAddr(Client {
            ip: state.trusted_proxies.client_ip(peer, &forwarded),
        }))
    }
}

/// Declares the bearer scheme in the OpenAPI document.
pub struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A session token (user and admin routes) or the internal secret (internal routes)",
                    ))
                    .build(),
            ),
        );
    }
}
