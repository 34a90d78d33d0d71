//! `RedisLock::try_acquire` + `release` (the adapter: an acquire Lua script that also
//! restarts its own holder's TTL, and a compare-and-delete Lua script, both by
//! `EVALSHA`) against the raw round trip on the same server in the same run:
//! `SET key token NX PX ttl` + `EVALSHA` of the same compare-and-delete script, sent with
//! fred directly on a pool of the same size. The ratio adapter/raw is what the
//! adapter's script-based, idempotent acquire and its error mapping cost.
//!
//! Two shapes: `sequential` (one task, one key: latency per acquire+release) and
//! `concurrent_64` (64 tokio tasks on a 2-worker runtime, a key each: the time per
//! acquire+release at that concurrency, i.e. the inverse of the throughput), both
//! measured with `iter_custom`. Every acquire must succeed (asserted).
//!
//! Keys live under a prefix unique to the run (`bench:redis_lock:{pid}-{nanos}:`), all
//! deleted at the end, panics included. The server is `REDIS_URL` (default
//! `redis://127.0.0.1:6379`); an unreachable one fails the bench.
//! Figures are from one run on a shared 2-core machine (client and Redis share the
//! cores): compare the ratios within a run, not the absolute numbers across runs.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench redis_lock --features redis
//! REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench redis_lock --features redis -- \
//!     --measurement-time 3 --warm-up-time 1
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/redis.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fred::prelude::{ClientLike, Expiration, KeysInterface, LuaInterface, Pool, SetOptions};
use order_engine::core::ports::{DistributedLock, LockToken};
use order_engine::redis::RedisLock;

/// Concurrent tasks of the `concurrent_64` shape.
const TASKS: usize = 64;
/// The lock TTL (never reached: every lock is released at once).
const TTL: Duration = Duration::from_secs(10);
/// The adapter's release script, verbatim: the raw baseline runs the same Lua.
const RELEASE_LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Who takes and releases the lock: the adapter, or fred directly.
#[derive(Debug, Clone, Copy)]
enum Path {
    Adapter,
    Raw,
}

struct Ctx {
    lock: RedisLock,
    pool: Pool,
    release_sha: String,
    /// Full key prefix of the raw path (the adapter adds its own `{prefix}lock:`).
    raw_prefix: String,
}

impl Ctx {
    /// One acquire + release of lock `name` for `token`.
    async fn round_trip(&self, path: Path, name: &str, token: &LockToken) {
        match path {
            Path::Adapter => {
                assert!(self.lock.try_acquire(name, token, TTL).await.unwrap());
                assert!(self.lock.release(name, token).await.unwrap());
            }
            Path::Raw => {
                let key = format!("{}{name}", self.raw_prefix);
                let ttl_ms = i64::try_from(TTL.as_millis()).unwrap();
                let set: Option<String> = self
                    .pool
                    .set(
                        key.as_str(),
                        token.as_str(),
                        Some(Expiration::PX(ttl_ms)),
                        Some(SetOptions::NX),
                        false,
                    )
                    .await
                    .unwrap();
                assert!(set.is_some());
                let deleted: i64 = self
                    .pool
                    .evalsha(self.release_sha.as_str(), key, token.as_str())
                    .await
                    .unwrap();
                assert_eq!(deleted, 1);
            }
        }
    }
}

/// `iters` round trips spread over `tasks` spawned tasks (lock `t{task}` each).
async fn concurrent(ctx: &Arc<Ctx>, path: Path, iters: u64, tasks: usize) -> Duration {
    let tasks_u64 = u64::try_from(tasks).unwrap();
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks_u64)
        .map(|t| {
            let n = iters / tasks_u64 + u64::from(t < iters % tasks_u64);
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let name = format!("t{t}");
                let token = LockToken::new(format!("token-{t}"));
                for _ in 0..n {
                    ctx.round_trip(path, &name, &token).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let url = support::url("redis_lock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = support::unique_prefix("redis_lock");
    let connection = rt.block_on(support::connection(&url, &prefix));
    support::measure_then_clean(&rt, &connection, || {
        let ctx = rt.block_on(async {
            let pool = support::raw_pool(&url, connection.config().pool_size).await;
            let release_sha: String = pool.script_load(RELEASE_LOCK).await.unwrap();
            Arc::new(Ctx {
                lock: RedisLock::new(&connection).await.unwrap(),
                pool,
                release_sha,
                raw_prefix: format!("{prefix}raw:"),
            })
        });

        let mut group = c.benchmark_group("redis_lock_acquire_release");
        group.throughput(Throughput::Elements(1));
        for (name, path) in [
            ("adapter", Path::Adapter),
            ("raw_set_nx_evalsha", Path::Raw),
        ] {
            group.bench_function(format!("sequential/{name}"), |b| {
                b.iter_custom(|iters| {
                    let token = LockToken::new("token-seq");
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            ctx.round_trip(path, "seq", &token).await;
                        }
                        start.elapsed()
                    })
                })
            });
        }
        for (name, path) in [
            ("adapter", Path::Adapter),
            ("raw_set_nx_evalsha", Path::Raw),
        ] {
            group.bench_function(format!("concurrent_{TASKS}/{name}"), |b| {
                b.iter_custom(|iters| rt.block_on(concurrent(&ctx, path, iters, TASKS)))
            });
        }
        group.finish();
        rt.block_on(ctx.pool.quit()).unwrap();
    });
    rt.block_on(connection.close());
}

criterion_group!(benches, bench);
criterion_main!(benches);
