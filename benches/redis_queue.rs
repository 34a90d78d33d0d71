//! `RedisQueue` enqueue + reserve + ack (the adapter: a bounded-enqueue script, then
//! per `reserve` an `XREADGROUP` shared by the concurrent reservers — one here, so
//! `COUNT 1` — with the reclaim and promote scripts only when due, at most once per
//! `poll_interval`; then the ack script of `XACK` + `XDEL`, batched with concurrent
//! acks — none here) against a raw Streams loop on the same server in the same run:
//! `XADD` per job, then `XREADGROUP COUNT 64` reading the batch back, one `XACK` and one
//! `XDEL` for the whole batch, with fred directly on a pool of the same size. The raw
//! loop is the floor for this work (the entries are deleted like the adapter's, so
//! neither stream grows); the ratio adapter/raw is what the queue's guarantees and
//! per-job round trips cost.
//!
//! Both run the same shape, sequentially on one task: batches of up to 64 jobs, all
//! enqueued, then all reserved and acked; `iter_custom` times whole batches and
//! criterion reports the time per job. Every job must come back (asserted).
//!
//! Keys live under a prefix unique to the run (`bench:redis_queue:{pid}-{nanos}:`), all
//! deleted at the end (the consumer groups go with their streams), panics included.
//! The server is `REDIS_URL` (default `redis://127.0.0.1:6379`); an unreachable one fails
//! the bench. Figures are from one run on a shared 2-core
//! machine (client and Redis share the cores): compare the ratios within a run.
//!
//! Measured (`-- --measurement-time 3 --warm-up-time 1`, time per job), before and after
//! the adapter shared its reads and batched its acks:
//!
//! | | adapter | raw | adapter/raw |
//! |---|---|---|---|
//! | before (reclaim + promote + `XREADGROUP COUNT 1` per `reserve`) | 877 µs | 130 µs | 6.8× |
//! | after (reclaim and promote when due) | 571 µs | 145 µs | 3.9× |
//!
//! This loop is sequential, so it shows only the reclaim and promote no longer sent per
//! `reserve`; the shared reads and batched acks pay off with concurrent worker loops:
//! 64 loops draining 5 000 jobs went from about 4 300–4 800 jobs/s to 20 000–35 000
//! jobs/s on the same machine, with 0.06 `XREADGROUP` and 0.05 ack script calls per job
//! (the ignored test `throughput_of_64_concurrent_worker_loops` of order-redis).
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench redis_queue --features redis
//! REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench redis_queue --features redis -- \
//!     --measurement-time 3 --warm-up-time 1
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/redis.rs"]
mod support;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fred::prelude::{ClientLike, Pool, StreamsInterface};
use fred::types::streams::XReadResponse;
use order_engine::core::domain::OrderId;
use order_engine::core::ports::{Job, JobQueue};
use order_engine::redis::RedisQueue;

/// Jobs per batch, and the raw loop's `XREADGROUP COUNT`.
const BATCH: u64 = 64;
/// The raw loop's consumer group and consumer.
const RAW_GROUP: &str = "raw";
const RAW_CONSUMER: &str = "raw-consumer";

/// Enqueues, reserves and acks `iters` jobs through the adapter, in batches of `BATCH`.
async fn adapter(queue: &RedisQueue, iters: u64) -> Duration {
    let start = Instant::now();
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(BATCH);
        for i in 0..n {
            let job = Job::ProcessOrder(OrderId::new(done + i + 1).unwrap());
            queue.enqueue(job).await.unwrap();
        }
        for _ in 0..n {
            let delivery = queue
                .reserve(Duration::from_secs(1))
                .await
                .unwrap()
                .expect("an enqueued job is reserved");
            queue.ack(&delivery).await.unwrap();
        }
        done += n;
    }
    start.elapsed()
}

/// The same through `XADD` / `XREADGROUP COUNT 64` / `XACK` / `XDEL`.
async fn raw(pool: &Pool, stream: &str, iters: u64) -> Duration {
    let start = Instant::now();
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(BATCH);
        for i in 0..n {
            let _: String = pool
                .xadd(
                    stream,
                    false,
                    None,
                    "*",
                    ("job", (done + i + 1).to_string()),
                )
                .await
                .unwrap();
        }
        let read: XReadResponse<String, String, String, String> = pool
            .xreadgroup_map(
                RAW_GROUP,
                RAW_CONSUMER,
                Some(BATCH),
                None,
                false,
                stream,
                ">",
            )
            .await
            .unwrap();
        let ids: Vec<String> = read
            .into_values()
            .flatten()
            .map(|(id, _fields)| id)
            .collect();
        assert_eq!(ids.len() as u64, n, "every job read back");
        let acked: u64 = pool.xack(stream, RAW_GROUP, ids.clone()).await.unwrap();
        let deleted: u64 = pool.xdel(stream, ids).await.unwrap();
        assert_eq!((acked, deleted), (n, n));
        done += n;
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let url = support::url("redis_queue");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = support::unique_prefix("redis_queue");
    let connection = rt.block_on(support::connection(&url, &prefix));
    support::measure_then_clean(&rt, &connection, || {
        let raw_stream = format!("{prefix}raw:{{jobs}}");
        let (queue, pool) = rt.block_on(async {
            let queue = RedisQueue::new(&connection).await.unwrap();
            let pool = support::raw_pool(&url, connection.config().pool_size).await;
            let _: String = pool
                .xgroup_create(raw_stream.as_str(), RAW_GROUP, "0", true)
                .await
                .unwrap();
            (queue, pool)
        });

        let mut group = c.benchmark_group("redis_queue_enqueue_reserve_ack");
        group.throughput(Throughput::Elements(1));
        group.bench_function("adapter", |b| {
            b.iter_custom(|iters| rt.block_on(adapter(&queue, iters)))
        });
        group.bench_function("raw_xadd_xreadgroup64_xack", |b| {
            b.iter_custom(|iters| rt.block_on(raw(&pool, &raw_stream, iters)))
        });
        group.finish();
        rt.block_on(async {
            queue.close().await;
            pool.quit().await.unwrap();
        });
    });
    rt.block_on(connection.close());
}

criterion_group!(benches, bench);
criterion_main!(benches);
