//! Read-only inspection of what the adapters leave in Redis: the queue's dead letter and
//! the lock keys. The invariant checker's Redis half (`order_engine::check`).
//!
//! Nothing here writes, and nothing is part of a port: the service never calls it. Like
//! every call of this crate it stays under [`RedisConfig::prefix`](crate::RedisConfig)
//! and keeps fred types out of its signatures.

use std::collections::HashMap;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use crate::connection::{Failure, RedisConnection};

/// Why an inspection could not run. Nothing was changed either way.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The server could not be reached within
    /// [`RedisConfig::command_timeout`](crate::RedisConfig::command_timeout), or is
    /// loading or busy; a later call may succeed. The source is the `fred::Error`.
    #[error("Redis unavailable for the inspection")]
    Unavailable(#[source] anyhow::Error),
    /// The server answered with an error or a reply that is not what the command
    /// returns (e.g. the dead-letter key holds something other than a stream).
    #[error("Redis inspection failed")]
    Unexpected(#[source] anyhow::Error),
}

impl From<Failure> for InspectError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(e) => InspectError::Unavailable(e.into()),
            Failure::Unexpected(e) => InspectError::Unexpected(e),
        }
    }
}

impl From<Error> for InspectError {
    fn from(e: Error) -> Self {
        Failure::from(e).into()
    }
}

/// One entry of the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The entry's id in the dead-letter stream (`<ms>-<seq>`).
    pub id: String,
    /// The job as it was enqueued (its `job` field), e.g. `process_order:42`, or the
    /// undecodable text of a poison job, verbatim.
    pub payload: String,
    /// Why it was dead-lettered (its `error` field): the last nack's error, "not
    /// acknowledged within the visibility timeout", or why it could not be decoded;
    /// `None` when the entry has no such field.
    pub reason: Option<String>,
}

/// Every entry of the dead-letter stream ([`QueueKeys::dead`](crate::QueueKeys)),
/// oldest first. The stream is trimmed to about
/// [`QueueConfig::max_len`](crate::QueueConfig) entries, so the result is bounded, but
/// it may be large: it is read in pages of 1 000 (`XRANGE … COUNT`, each page starting
/// after the last id seen), so no single reply holds the whole stream. An absent stream
/// (nothing was ever dead-lettered) is empty.
///
/// # Errors
/// [`InspectError::Unavailable`] when the server is out of reach;
/// [`InspectError::Unexpected`] when the key is not a stream or a reply is malformed.
pub async fn dead_letters(connection: &RedisConnection) -> Result<Vec<DeadLetter>, InspectError> {
    const PAGE: u64 = 1_000;
    let key = connection.config().queue_keys().dead;
    let mut letters = Vec::new();
    let mut start = "-".to_owned();
    loop {
        // Entries are written by the queue's Lua scripts (`scripts.rs`) with the fields
        // `job`, `attempts`, `entry` and `error`; anything else is ignored.
        let page: Vec<(String, HashMap<String, String>)> = connection
            .pool
            .xrange_values(&key, start.as_str(), "+", Some(PAGE))
            .await?;
        let full = page.len() as u64 == PAGE;
        for (id, mut fields) in page {
            // `(id` is exclusive: the next page starts after the last entry read.
            start = format!("({id}");
            letters.push(DeadLetter {
                payload: fields.remove("job").unwrap_or_default(),
                reason: fields.remove("error"),
                id,
            });
        }
        if !full {
            return Ok(letters);
        }
    }
}

/// Every lock key present under the prefix (`{prefix}{lock namespace}*`, i.e.
/// `orders:lock:*` by default; see [`RedisConfig::lock_key`](crate::RedisConfig)),
/// sorted. Found with `SCAN … MATCH` (never `KEYS`, which would block the server), so a
/// key created or deleted during the scan may or may not be listed; at rest the list is
/// exact. A held lock lives at most its TTL (10 s in the service), so a key found here
/// after the system has been idle longer than that was left behind by a holder that
/// never released it.
///
/// # Errors
/// [`InspectError::Unavailable`] when the server is out of reach;
/// [`InspectError::Unexpected`] when a reply is malformed.
pub async fn lock_keys(connection: &RedisConnection) -> Result<Vec<String>, InspectError> {
    // The prefix and namespace are literal text: escape the glob characters in them, so
    // a prefix like `shop[1]:` matches only itself.
    let pattern = format!("{}*", glob_escape(&connection.config().lock_key("")));
    let scan = CustomCommand::new_static("SCAN", ClusterHash::Random, false);
    let mut cursor = "0".to_owned();
    let mut keys = Vec::new();
    loop {
        let reply: Value = connection
            .pool
            .custom(
                scan.clone(),
                vec![cursor.as_str(), "MATCH", pattern.as_str(), "COUNT", "1000"],
            )
            .await?;
        let Value::Array(mut parts) = reply else {
            return Err(InspectError::Unexpected(anyhow::anyhow!(
                "SCAN replied {reply:?}"
            )));
        };
        let (Some(Value::Array(batch)), Some(next)) = (parts.pop(), parts.pop()) else {
            return Err(InspectError::Unexpected(anyhow::anyhow!(
                "SCAN replied with {} parts",
                parts.len()
            )));
        };
        keys.extend(batch.iter().filter_map(Value::as_string));
        cursor = next.as_string().ok_or_else(|| {
            InspectError::Unexpected(anyhow::anyhow!("SCAN cursor {next:?} is not text"))
        })?;
        if cursor == "0" {
            break;
        }
    }
    // SCAN may return a key more than once.
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// `text` with Redis glob metacharacters (`* ? [ ] \`) escaped by a backslash.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn glob_characters_in_the_prefix_are_escaped() {
        assert_eq!(glob_escape("orders:lock:"), "orders:lock:");
        assert_eq!(glob_escape(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }
}
