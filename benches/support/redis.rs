//! Shared set-up of the Redis benches: the server from `REDIS_URL`, a key prefix unique
//! to the run, a raw fred pool for the baselines, and the teardown that deletes every key
//! under the prefix, even when a measurement panics.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::{Builder, ClientLike, Config, Pool};
use order_engine::redis::{RedisConfig, RedisConnection};
use tokio::runtime::Runtime;

/// The server under test: `REDIS_URL`, or the local default `redis://127.0.0.1:6379`
/// as the test suite uses. An unreachable server fails the bench loudly (see
/// [`connect`]): a bench never passes by skipping.
#[allow(clippy::disallowed_methods)] // a bench binary: it may read its own environment
pub(crate) fn url(bench: &str) -> String {
    let url = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    eprintln!("{bench}: Redis at {url}");
    url
}

/// `bench:{bench}:{pid}-{nanos}:`, unique to this run.
pub(crate) fn unique_prefix(bench: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("bench:{bench}:{}-{nanos:x}:", std::process::id())
}

/// The adapters' connection under `prefix`, waited for.
pub(crate) async fn connection(url: &str, prefix: &str) -> RedisConnection {
    let connection = RedisConnection::connect(RedisConfig::new(url).with_prefix(prefix))
        .await
        .expect("valid Redis settings");
    connection
        .wait_connected(Duration::from_secs(5))
        .await
        .expect("Redis reachable at REDIS_URL");
    connection
}

/// A plain fred pool of `size` connections to `url`, for the raw baselines.
pub(crate) async fn raw_pool(url: &str, size: usize) -> Pool {
    let pool = Builder::from_config(Config::from_url(url).expect("valid REDIS_URL"))
        .build_pool(size)
        .expect("fred pool");
    pool.init().await.expect("Redis reachable at REDIS_URL");
    pool
}

/// Runs `measure`, then deletes every key under the connection's prefix (panicking
/// after the teardown if `measure` panicked, or if a key is left).
pub(crate) fn measure_then_clean(
    rt: &Runtime,
    connection: &RedisConnection,
    measure: impl FnOnce(),
) {
    let outcome = catch_unwind(AssertUnwindSafe(measure));
    let prefix = connection.config().prefix.clone();
    let deleted = rt.block_on(connection.delete_prefix());
    let left = rt.block_on(connection.delete_prefix());
    match (&deleted, &left) {
        (Ok(n), Ok(0)) => eprintln!("cleanup: {n} keys under {prefix:?} deleted, none left"),
        _ => eprintln!("cleanup of {prefix:?} FAILED: {deleted:?} then {left:?}"),
    }
    if let Err(panic) = outcome {
        resume_unwind(panic);
    }
    assert!(matches!(left, Ok(0)), "keys left under {prefix:?}");
}
