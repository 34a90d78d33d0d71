//! [`ApiSettings`]: the typed knobs of the REST API. The library never reads the
//! environment; a binary builds these once (from `ORDERS_*` variables or flags) and
//! passes them to [`Api::new`](crate::Api::new).

use std::time::Duration;

/// How the REST API behaves. Every field has a production default ([`Default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// The largest request body accepted, in bytes (default 64 KiB). A larger body is
    /// refused with 413 `PAYLOAD_TOO_LARGE`, whatever its `Content-Length` claims: the
    /// limit is enforced on the bytes actually streamed.
    pub body_limit: usize,
    /// Requests per minute and user on the authenticated routes (default 600); `0`
    /// disables the limit. Past it: 429 `RATE_LIMIT_EXCEEDED` with `Retry-After`.
    pub rate_limit_per_minute: u32,
    /// How long an issued bearer token stays valid (default 24 h).
    pub token_ttl: Duration,
}

impl ApiSettings {
    /// The default body limit: 64 KiB.
    pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
    /// The default rate limit: 600 requests per minute and user.
    pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 600;
    /// The default token lifetime: 24 hours.
    pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
}

impl Default for ApiSettings {
    /// 64 KiB bodies, 600 requests per minute and user, tokens valid for 24 h.
    fn default() -> Self {
        Self {
            body_limit: Self::DEFAULT_BODY_LIMIT,
            rate_limit_per_minute: Self::DEFAULT_RATE_LIMIT_PER_MINUTE,
            token_ttl: Self::DEFAULT_TOKEN_TTL,
        }
    }
}
