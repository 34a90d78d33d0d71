//! The gateway's typed settings: one app (id, key, secret) and the limits every
//! connection lives by.

use std::fmt;
use std::time::Duration;

/// The app secret: signs private-channel subscriptions and trigger API requests.
///
/// Its `Debug` is redacted so that settings can be logged whole.
#[derive(Clone, PartialEq, Eq)]
pub struct AppSecret(String);

impl AppSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        AppSecret(secret.into())
    }

    /// The secret itself, for signing; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppSecret(<redacted>)")
    }
}

impl From<String> for AppSecret {
    fn from(secret: String) -> Self {
        AppSecret(secret)
    }
}

impl From<&str> for AppSecret {
    fn from(secret: &str) -> Self {
        AppSecret(secret.to_owned())
    }
}

/// Settings of a [`Gateway`](crate::Gateway): the one app it serves and its limits.
#[derive(Debug, Clone)]
pub struct PusherSettings {
    /// The app id of the trigger API path, `POST /apps/{app_id}/events`.
    pub app_id: String,
    /// The public app key clients connect with, `GET /app/{key}`.
    pub key: String,
    /// The app secret.
    pub secret: AppSecret,
    /// Silence after which the server pings a client (`pusher:ping`). Also announced to
    /// clients in `pusher:connection_established`, in whole seconds rounded up and at
    /// least 1, since pusher-js refuses 0. Default 30 s.
    pub activity_timeout: Duration,
    /// How long a pinged client has to say anything before the socket is closed with
    /// 4201. Default 30 s.
    pub pong_timeout: Duration,
    /// Largest client message accepted; a larger one is answered with `pusher:error`
    /// 4300 and the socket is closed with 4300. Default 10 KiB.
    pub max_message_bytes: usize,
    /// Frames queued per connection; a connection whose queue is full (a slow consumer)
    /// is dropped. Default 256.
    pub send_buffer: usize,
    /// Most sockets open at once; one more is told `pusher:error` 4100 and closed with
    /// 4100 (pusher-js retries with back-off). `None` (the default): no limit.
    pub max_connections: Option<usize>,
}

impl PusherSettings {
    /// Settings for one app with the defaults above.
    pub fn new(
        app_id: impl Into<String>,
        key: impl Into<String>,
        secret: impl Into<AppSecret>,
    ) -> Self {
        PusherSettings {
            app_id: app_id.into(),
            key: key.into(),
            secret: secret.into(),
            activity_timeout: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(30),
            max_message_bytes: 10 * 1024,
            send_buffer: 256,
            max_connections: None,
        }
    }

    /// The `activity_timeout` announced to clients: whole seconds, rounded up, at least 1.
    pub fn announced_activity_timeout_secs(&self) -> u64 {
        let secs = self.activity_timeout.as_secs();
        let secs = if self.activity_timeout.subsec_nanos() > 0 {
            secs + 1
        } else {
            secs
        };
        secs.max(1)
    }

    /// Checks every field; [`Gateway::new`](crate::Gateway::new) calls it.
    ///
    /// # Errors
    /// The first [`SettingsError`] found.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.app_id.is_empty() || !self.app_id.chars().all(is_path_safe) {
            return Err(SettingsError::AppId);
        }
        if self.key.is_empty() || !self.key.chars().all(is_path_safe) {
            return Err(SettingsError::Key);
        }
        if self.secret.expose().is_empty() {
            return Err(SettingsError::EmptySecret);
        }
        if self.activity_timeout.is_zero() {
            return Err(SettingsError::Zero("activity_timeout"));
        }
        if self.pong_timeout.is_zero() {
            return Err(SettingsError::Zero("pong_timeout"));
        }
        if self.max_message_bytes == 0 {
            return Err(SettingsError::Zero("max_message_bytes"));
        }
        if self.send_buffer == 0 {
            return Err(SettingsError::Zero("send_buffer"));
        }
        if self.max_connections == Some(0) {
            return Err(SettingsError::Zero("max_connections"));
        }
        Ok(())
    }
}

/// The app id and key appear in URL paths: keep them to characters that need no
/// escaping, so the signed path is the path the client sent.
fn is_path_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Why [`PusherSettings`] were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The app id is empty or holds characters other than `A-Z a-z 0-9 - _ .`.
    #[error("the app id must be non-empty and use only A-Z a-z 0-9 - _ .")]
    AppId,
    /// The key is empty or holds characters other than `A-Z a-z 0-9 - _ .`.
    #[error("the app key must be non-empty and use only A-Z a-z 0-9 - _ .")]
    Key,
    /// The secret is empty.
    #[error("the app secret must not be empty")]
    EmptySecret,
    /// A duration or limit that must be positive is zero (the field is named).
    #[error("{0} must not be zero")]
    Zero(&'static str),
}
