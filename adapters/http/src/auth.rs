//! Authentication: `POST /api/tokens` (e-mail + password → a bearer token) and the
//! bearer middleware every order route runs behind, which also applies the per-user
//! rate limit.
//!
//! A token is `ord_` followed by 64 hex digits (32 bytes from the OS random source). The
//! store only ever sees its SHA-256 [`TokenDigest`], with an expiry; a request presents
//! the token, the middleware hashes it and asks [`AccountStore::authenticate`].

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use order_core::ports::{Account, AccountError, TokenDigest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::json::{Json, json_object};
use crate::password::{verify_dummy, verify_password};
use crate::validate::Fields;
use crate::{ApiState, dto::UserDto};

/// The prefix of every token this API issues (it makes a leaked token recognisable).
const TOKEN_PREFIX: &str = "ord_";
/// The longest e-mail and password accepted by a login.
const MAX_EMAIL: usize = 255;
const MAX_PASSWORD: usize = 1024;

/// The authenticated caller of an order route, put in the request's extensions by
/// [`authenticate`].
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Account);

/// `POST /api/tokens` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = TokenRequest)]
#[allow(dead_code)] // Documentation only: the body is validated by hand.
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    /// The account's e-mail (compared case-insensitively).
    #[schema(min_length = 1, max_length = 255, example = "alice@example.com")]
    email: String,
    /// The account's password.
    #[schema(min_length = 1, max_length = 1024, example = "password")]
    password: String,
}

/// `POST /api/tokens` answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Token)]
pub(crate) struct TokenResponse {
    /// The bearer token: send it as `Authorization: Bearer <token>`. Shown once.
    #[schema(pattern = "^ord_[0-9a-f]{64}$")]
    token: String,
    /// Always `Bearer`.
    #[schema(pattern = "^Bearer$")]
    token_type: &'static str,
    /// When the token stops working (RFC 3339, UTC).
    #[schema(format = DateTime)]
    expires_at: String,
    /// Whose token it is.
    user: UserDto,
}

/// Exchanges an e-mail and password for a bearer token.
#[utoipa::path(
    post,
    path = "/api/tokens",
    tag = "auth",
    request_body(content = TokenRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Token issued", body = TokenResponse),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody),
        (status = 401, description = "Wrong e-mail or password (`INVALID_CREDENTIALS`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not application/json", body = ErrorBody),
        (status = 422, description = "Missing, mistyped or unknown fields", body = ErrorBody),
        (status = 429, description = "Too many login attempts for this e-mail (`RATE_LIMIT_EXCEEDED`, `Retry-After`)", body = ErrorBody),
        (status = 503, description = "The account store is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn issue_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let object = json_object(&headers, body, state.settings.body_limit).await?;
    let mut fields = Fields::new(object);
    let email = fields.string("email", MAX_EMAIL);
    let password = fields.string("password", MAX_PASSWORD);
    fields.reject_unknown();
    let (email, password) = match (email, password) {
        (Some(e), Some(p)) if fields.is_ok() => (e, p),
        _ => return Err(ApiError::Validation(fields.into_errors())),
    };

    // Throttled per account before any password is checked: guessing one account's
    // password costs the same budget as using the API.
    if let Err(retry_after) = state.login_limiter.check(email.to_lowercase()) {
        return Err(ApiError::RateLimited { retry_after });
    }
    let credentials = state
        .accounts
        .credentials(&email)
        .await
        .map_err(account_fault)?;
    let account = tokio::task::spawn_blocking(move || match credentials {
        Some(c) if verify_password(&password, &c.password_hash) => Some(c.account),
        Some(_) => None,
        None => {
            verify_dummy(&password);
            None
        }
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("password check panicked")))?
    .ok_or(ApiError::InvalidCredentials)?;

    let token = new_token()?;
    let now = state.service.ports().clock.now();
    let expires_at = now.saturating_add(state.settings.token_ttl);
    match state
        .accounts
        .issue_token(account.id, digest(&token), expires_at)
        .await
    {
        Ok(()) => {}
        // The account vanished between the password check and now.
        Err(AccountError::UnknownAccount(_)) => return Err(ApiError::InvalidCredentials),
        Err(e) => return Err(account_fault(e)),
    }
    tracing::info!(user = %account.id, "token issued");
    let body = TokenResponse {
        token,
        token_type: "Bearer",
        expires_at: expires_at.to_rfc3339(),
        user: UserDto::from(&account),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A fresh token: the prefix and 32 random bytes in hex.
fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        ApiError::Internal(anyhow::Error::new(e).context("cannot draw a random token"))
    })?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// What the store keeps of `token`: the SHA-256 of its text.
fn digest(token: &str) -> TokenDigest {
    TokenDigest::from_bytes(Sha256::digest(token.as_bytes()).into())
}

/// An account store failure as a 503 (unavailable) or 500.
fn account_fault(e: AccountError) -> ApiError {
    let unavailable = matches!(e, AccountError::Unavailable(_));
    crate::error::server_fault(unavailable, e)
}

/// The token in `Authorization: Bearer <token>`, if the header is well-formed: scheme
/// case-insensitive, then one token of visible ASCII (at most 512 characters).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    // A second Authorization header makes the credentials ambiguous: refused, not
    // resolved by picking one.
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim_start();
    let well_formed = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && token.len() <= 512
        && token.bytes().all(|b| b.is_ascii_graphic());
    well_formed.then_some(token)
}

/// The middleware of every authenticated route: 401 `UNAUTHENTICATED` unless the
/// request carries a live bearer token, then 429 once the caller's rate limit is spent;
/// otherwise the request goes on with its [`Caller`].
pub(crate) async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let account = match caller(&state, request.headers()).await {
        Ok(account) => account,
        Err(e) => return e.into_response(),
    };
    tracing::Span::current().record("user", account.id.get());
    if let Err(retry_after) = state.limiter.check(account.id) {
        return ApiError::RateLimited { retry_after }.into_response();
    }
    request.extensions_mut().insert(Caller(account));
    next.run(request).await
}

/// The account holding the request's bearer token.
async fn caller(state: &ApiState, headers: &HeaderMap) -> Result<Account, ApiError> {
    let token = bearer(headers).ok_or(ApiError::Unauthenticated)?;
    let now = state.service.ports().clock.now();
    state
        .accounts
        .authenticate(&digest(token), now)
        .await
        .map_err(account_fault)?
        .ok_or(ApiError::Unauthenticated)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_bearer_header_is_parsed_case_insensitively_and_anything_else_is_refused() {
        assert_eq!(bearer(&headers("Bearer ord_abc")), Some("ord_abc"));
        assert_eq!(bearer(&headers("bearer   ord_abc")), Some("ord_abc"));
        assert_eq!(bearer(&headers("Basic b3JkOmFiYw==")), None);
        assert_eq!(bearer(&headers("Bearer")), None);
        assert_eq!(bearer(&headers("Bearer a b")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn a_token_is_the_prefix_and_64_hex_digits_and_its_digest_is_its_sha256() {
        let token = new_token().unwrap();
        assert!(token.starts_with("ord_") && token.len() == 68, "{token}");
        assert_ne!(token, new_token().unwrap());
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            digest("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
