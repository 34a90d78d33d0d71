//! Signatures: private-channel subscriptions (`key:hex(HMAC-SHA256(secret,
//! "socket_id:channel"))`) and trigger API requests (Pusher's `auth_signature`), and the
//! name rules both rely on.

use std::fmt::Write as _;

use hmac::{KeyInit, Mac};
use md5::Digest as _;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Longest channel name accepted (Pusher's limit is 164 characters; Reverb's is 200).
pub const MAX_CHANNEL_NAME_LEN: usize = 200;

/// Why a subscription or a signature request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The socket id is not `digits.digits`.
    #[error("invalid socket id (expected digits.digits)")]
    InvalidSocketId,
    /// The channel name is empty, too long, or uses characters outside
    /// `A-Z a-z 0-9 _ - = @ , . ;`.
    #[error("invalid channel name")]
    InvalidChannel,
    /// The `auth` field is missing, names another app key, or its signature is wrong.
    #[error("invalid signature")]
    InvalidSignature,
}

/// `hex(HMAC-SHA256(secret, "{socket_id}:{channel}"))`: the signature part of a
/// private-channel `auth` token (the token is `key:` followed by it).
pub fn channel_signature(secret: &str, socket_id: &str, channel: &str) -> String {
    let mut mac = keyed(secret);
    mac.update(socket_id.as_bytes());
    mac.update(b":");
    mac.update(channel.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Checks a subscription `auth` token `key:hexsig` in constant time (the comparison of
/// the signature; the key is public).
pub(crate) fn verify_channel_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    auth: &str,
) -> Result<(), AuthError> {
    let (auth_key, signature) = auth.split_once(':').ok_or(AuthError::InvalidSignature)?;
    if auth_key != key {
        return Err(AuthError::InvalidSignature);
    }
    let mut mac = keyed(secret);
    mac.update(socket_id.as_bytes());
    mac.update(b":");
    mac.update(channel.as_bytes());
    verify_hex(mac, signature)
}

/// `^\d+\.\d+$`.
pub(crate) fn is_valid_socket_id(socket_id: &str) -> bool {
    let Some((a, b)) = socket_id.split_once('.') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    digits(a) && digits(b)
}

/// Pusher's channel-name rule: 1..=200 characters of `A-Z a-z 0-9 _ - = @ , . ;`.
pub(crate) fn is_valid_channel_name(channel: &str) -> bool {
    !channel.is_empty()
        && channel.len() <= MAX_CHANNEL_NAME_LEN
        && channel
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-=@,.;".contains(&c))
}

/// Lowercase hex MD5 of a request body (the trigger API's `body_md5`).
pub(crate) fn body_md5(body: &[u8]) -> String {
    hex(&md5::Md5::digest(body))
}

/// The string a trigger API request signs: `"POST\n{path}\n"` and the query
/// parameters other than `auth_signature`, sorted by key, as `k=v` joined by `&`.
pub(crate) fn trigger_string_to_sign(path: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = format!("POST\n{path}\n");
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Checks a trigger request's `auth_signature` (hex) over `to_sign` in constant time.
pub(crate) fn verify_trigger_signature(
    secret: &str,
    to_sign: &str,
    signature: &str,
) -> Result<(), AuthError> {
    let mut mac = keyed(secret);
    mac.update(to_sign.as_bytes());
    verify_hex(mac, signature)
}

/// The query string of a signed trigger request `POST /apps/{app_id}/events` carrying
/// `body`, signed at `auth_timestamp` (Unix seconds): `auth_key`, `auth_timestamp`,
/// `auth_version=1.0`, `body_md5` and `auth_signature`, as Pusher's server libraries
/// send it. For callers that publish through the trigger API (load tools, tests).
pub fn trigger_query(
    app_id: &str,
    key: &str,
    secret: &str,
    body: &[u8],
    auth_timestamp: u64,
) -> String {
    let params = vec![
        ("auth_key".to_owned(), key.to_owned()),
        ("auth_timestamp".to_owned(), auth_timestamp.to_string()),
        ("auth_version".to_owned(), "1.0".to_owned()),
        ("body_md5".to_owned(), body_md5(body)),
    ];
    let to_sign = trigger_string_to_sign(&format!("/apps/{app_id}/events"), &params);
    let mut mac = keyed(secret);
    mac.update(to_sign.as_bytes());
    let signature = hex(&mac.finalize().into_bytes());
    let mut query = String::new();
    for (k, v) in &params {
        let _ = write!(query, "{k}={v}&");
    }
    query.push_str("auth_signature=");
    query.push_str(&signature);
    query
}

fn keyed(secret: &str) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first): this cannot fail.
    match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac_key(),
    }
}

#[cold]
fn unreachable_hmac_key() -> ! {
    unreachable!("HMAC accepts keys of every length")
}

fn verify_hex(mac: HmacSha256, signature: &str) -> Result<(), AuthError> {
    let bytes = unhex(signature).ok_or(AuthError::InvalidSignature)?;
    mac.verify_slice(&bytes)
        .map_err(|_| AuthError::InvalidSignature)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pusher_docs_test_vector() {
        assert_eq!(
            channel_signature("7ad3773142a6692b25b8", "1234.1234", "private-foobar"),
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert_eq!(
            verify_channel_auth(
                "278d425bdf160c739803",
                "7ad3773142a6692b25b8",
                "1234.1234",
                "private-foobar",
                "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",
            ),
            Ok(())
        );
    }

    #[test]
    fn names() {
        assert!(is_valid_socket_id("123.456"));
        assert!(!is_valid_socket_id("123."));
        assert!(!is_valid_socket_id("12a.4"));
        assert!(is_valid_channel_name("private-orders.7"));
        assert!(!is_valid_channel_name("a b"));
        assert!(!is_valid_channel_name(""));
    }

    #[test]
    fn md5_of_empty_body() {
        assert_eq!(body_md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
