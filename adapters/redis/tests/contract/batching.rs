//! The batching of [`RedisQueue`]: concurrent `reserve` calls share their reads,
//! reclaim and promote run when due (not per `reserve`), and concurrent acks go in one
//! script call — each without giving up a promise of the port. The command counts come
//! from [`RedisQueue::round_trips`], which counts this queue's own calls (the server's
//! `INFO commandstats` would count every test running beside it).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fred::prelude::*;
use order_core::ports::{Delivery, JobQueue, NackOutcome};
use order_redis::{RedisConfig, RedisConnection, RedisQueue};
use tokio::task::JoinSet;

use crate::{Cleanup, as_consumer, connect, job, raw_client, redis_url, stats, test_config};

/// A queue under `config`, with its connection (to close at the end).
async fn queue(config: &RedisConfig) -> (RedisConnection, RedisQueue) {
    let connection = connect(config.clone()).await;
    let queue = RedisQueue::new(&connection).await.expect("queue setup");
    (connection, queue)
}

async fn close(parts: &[&(RedisConnection, RedisQueue)]) {
    for (connection, queue) in parts {
        queue.close().await;
        connection.close().await;
    }
}

/// `n` concurrent `reserve(wait)` calls on clones of `queue`; their deliveries.
async fn reserve_concurrently(queue: &RedisQueue, n: usize, wait: Duration) -> Vec<Delivery> {
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let queue = queue.clone();
        tasks.spawn(async move { queue.reserve(wait).await });
    }
    let mut deliveries = Vec::new();
    while let Some(reserved) = tasks.join_next().await {
        if let Some(delivery) = reserved.expect("a reserve panicked").expect("reserve") {
            deliveries.push(delivery);
        }
    }
    deliveries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservers_get_distinct_jobs_through_fewer_reads_than_reservers() {
    const N: u64 = 32;
    let mut config = test_config(redis_url(), "shared-reads");
    config.queue.max_len = 64;
    let _cleanup = Cleanup::new(&config);
    let parts = queue(&config).await;
    let q = &parts.1;
    for n in 1..=N {
        q.enqueue(job(n)).await.expect("enqueue");
    }

    let before = q.round_trips();
    let deliveries = reserve_concurrently(q, N as usize, Duration::from_secs(2)).await;
    let after = q.round_trips();

    let jobs: HashSet<_> = deliveries.iter().map(|d| d.job).collect();
    assert_eq!(deliveries.len() as u64, N, "every reserver gets a job");
    assert_eq!(jobs.len() as u64, N, "and no job goes to two of them");
    assert!(deliveries.iter().all(|d| d.attempt == 1));
    let reads = after.reads - before.reads;
    assert!(
        reads < N / 4,
        "{N} concurrent reservers must share their reads, but {reads} XREADGROUP calls were sent"
    );
    // No reclaim or promote per reserve either: the first round does each once.
    assert!(
        after.reclaims - before.reclaims < N / 4 && after.promotes - before.promotes < N / 4,
        "{before:?} → {after:?}"
    );
    for d in &deliveries {
        q.ack(d).await.expect("ack");
    }
    assert_eq!(q.stats().await.expect("stats"), stats(0, 0, 0));
    close(&[&parts]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_read_for_reservers_that_left_are_given_back_at_once_without_using_an_attempt() {
    const K: usize = 8;
    let mut config = test_config(redis_url(), "left-reservers");
    // A job kept reserved by mistake would stay invisible for the whole test, and the
    // fetcher's read blocks for seconds: it is still there when the jobs arrive.
    config.queue.visibility_timeout = Duration::from_secs(30);
    config.queue.poll_interval = Duration::from_secs(5);
    config.queue.idle_consumer_timeout = Duration::from_secs(10);
    let _cleanup = Cleanup::new(&config);
    let stopping = queue(&as_consumer(&config, "stopping-worker")).await;
    let other = queue(&as_consumer(&config, "other-worker")).await;
    let (a, b) = (&stopping.1, &other.1);
    // Both consumers exist before the jobs do (the group is created on first use).
    assert_eq!(b.reserve(Duration::ZERO).await.expect("reserve"), None);

    // K worker loops wait on A's shared read, then stop: their reserves are dropped.
    let mut waiting = JoinSet::new();
    for _ in 0..K {
        let a = a.clone();
        waiting.spawn(async move { a.reserve(Duration::from_secs(5)).await });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reads_before = a.round_trips().reads;
    waiting.abort_all();
    while let Some(joined) = waiting.join_next().await {
        assert!(
            joined.is_err_and(|e| e.is_cancelled()),
            "a reserve returned before any job existed"
        );
    }
    // K jobs arrive at once (one script), so A's blocked read takes all of them.
    let raw = raw_client(&config.url).await;
    let script = "for i = 1, #ARGV do redis.call('XADD', KEYS[1], '*', 'job', ARGV[i], 'base', '0') end return #ARGV";
    let jobs: Vec<String> = (1..=K).map(|n| format!("process_order:{n}")).collect();
    let added: i64 = raw
        .eval(script, vec![a.keys().stream.clone()], jobs)
        .await
        .expect("EVAL of the XADDs");
    assert_eq!(added, K as i64);

    let started = Instant::now();
    let mut got = Vec::new();
    while got.len() < K {
        let d = b
            .reserve(Duration::from_secs(2))
            .await
            .expect("reserve")
            .unwrap_or_else(|| {
                panic!(
                    "only {} of {K} jobs came back to the other consumer",
                    got.len()
                )
            });
        assert_eq!(d.attempt, 1, "a job given back must not use an attempt");
        got.push(d);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the jobs must come back at once, not after the visibility timeout ({:?})",
        started.elapsed()
    );
    assert_eq!(
        got.iter().map(|d| d.job).collect::<HashSet<_>>(),
        (1..=K as u64).map(job).collect::<HashSet<_>>()
    );
    assert_eq!(
        a.round_trips().reads - reads_before,
        0,
        "the read in flight when the reservers left served them; nothing more was read for them"
    );
    for d in &got {
        b.ack(d).await.expect("ack");
    }
    assert_eq!(
        b.stats().await.expect("stats"),
        stats(0, 0, 0),
        "nothing stays reserved for the reservers that left"
    );
    let _ = raw.quit().await;
    close(&[&stopping, &other]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_concurrent_acks_acks_the_live_receipts_and_leaves_a_stale_ones_delivery_in_flight()
 {
    const LIVE: u64 = 15;
    let mut config = test_config(redis_url(), "batched-acks");
    config.queue.max_len = 64;
    let visibility = config.queue.visibility_timeout;
    let _cleanup = Cleanup::new(&config);
    let parts = queue(&config).await;
    let q = &parts.1;

    // Job 100's first delivery times out: its receipt is stale, the redelivery live.
    q.enqueue(job(100)).await.expect("enqueue");
    let stale = q
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("job 100");
    tokio::time::sleep(visibility + Duration::from_millis(150)).await;
    let redelivered = q
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("job 100 again");
    assert_eq!((redelivered.job, redelivered.attempt), (job(100), 2));
    for n in 1..=LIVE {
        q.enqueue(job(n)).await.expect("enqueue");
    }
    let live = reserve_concurrently(q, LIVE as usize, Duration::from_secs(2)).await;
    assert_eq!(live.len() as u64, LIVE);

    // All acks at once, the stale one among them.
    let before = q.round_trips().ack_batches;
    let mut acks = JoinSet::new();
    let mut receipts = live.clone();
    receipts.insert(LIVE as usize / 2, stale);
    for d in receipts {
        let q = q.clone();
        acks.spawn(async move { q.ack(&d).await });
    }
    while let Some(acked) = acks.join_next().await {
        acked
            .expect("an ack panicked")
            .expect("every ack succeeds, the stale one too");
    }
    let batches = q.round_trips().ack_batches - before;
    assert!(
        batches < LIVE,
        "{} concurrent acks must share script calls, but {batches} were made",
        LIVE + 1
    );
    assert_eq!(
        q.stats().await.expect("stats"),
        stats(0, 1, 0),
        "the live acks are applied, the stale one leaves the redelivery in flight"
    );
    // The redelivery is still live: its holder dies, and it comes back as attempt 3.
    tokio::time::sleep(visibility + Duration::from_millis(150)).await;
    let third = q
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("the redelivery must time out and come back");
    assert_eq!((third.job, third.attempt), (job(100), 3));
    q.ack(&third).await.expect("ack");
    assert_eq!(q.stats().await.expect("stats"), stats(0, 0, 0));
    close(&[&parts]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_nacked_in_process_reaches_a_waiting_reserver_at_its_due_time_not_at_the_next_poll()
{
    let mut config = test_config(redis_url(), "due-retry");
    config.queue.poll_interval = Duration::from_secs(3);
    config.queue.idle_consumer_timeout = Duration::from_secs(10);
    let backoff = config.queue.retry_backoff.base;
    let _cleanup = Cleanup::new(&config);
    let parts = queue(&config).await;
    let q = &parts.1;
    q.enqueue(job(5)).await.expect("enqueue");
    let first = q
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("job 5");

    // Another worker loop is blocked in the shared read (for up to 3 s) when the nack
    // schedules the retry.
    let waiting = {
        let q = q.clone();
        tokio::spawn(async move { q.reserve(Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let nacked_at = Instant::now();
    assert_eq!(
        q.nack(&first, "boom").await.expect("nack"),
        NackOutcome::Retried(backoff)
    );
    let retried = waiting
        .await
        .expect("the reserve panicked")
        .expect("reserve")
        .expect("the retry must reach the waiting reserver");
    let after = nacked_at.elapsed();
    assert_eq!((retried.job, retried.attempt), (job(5), 2));
    assert!(
        after >= backoff - Duration::from_millis(20),
        "the retry came before its backoff ({after:?})"
    );
    assert!(
        after < backoff + Duration::from_millis(600),
        "the retry must come at its due time, not at the next poll ({after:?})"
    );
    q.ack(&retried).await.expect("ack");
    assert_eq!(q.stats().await.expect("stats"), stats(0, 0, 0));
    close(&[&parts]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_every_expired_reservation_is_handed_out_within_one_poll() {
    const JOBS: u64 = 100;
    const WORKERS: usize = 16;
    let mut config = test_config(redis_url(), "crash-recovery");
    config.queue.max_len = 128;
    config.queue.visibility_timeout = Duration::from_secs(1);
    config.queue.poll_interval = Duration::from_secs(1);
    config.queue.idle_consumer_timeout = Duration::from_secs(10);
    let _cleanup = Cleanup::new(&config);

    // A worker reserves every job, then dies without acking any.
    let crashed = queue(&as_consumer(&config, "worker-that-dies")).await;
    for n in 1..=JOBS {
        crashed.1.enqueue(job(n)).await.expect("enqueue");
    }
    let lost = reserve_concurrently(&crashed.1, JOBS as usize, Duration::from_secs(2)).await;
    assert_eq!(lost.len() as u64, JOBS);
    close(&[&crashed]).await;
    let survivor = queue(&as_consumer(&config, "worker-that-lives")).await;
    let s = &survivor.1;
    tokio::time::sleep(config.queue.visibility_timeout + Duration::from_millis(200)).await;

    // The survivor's worker loops drain them: reclaim runs back to back while it finds
    // more, not once per poll_interval.
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..WORKERS {
        let s = s.clone();
        workers.spawn(async move {
            let mut done = Vec::new();
            while let Some(d) = s
                .reserve(Duration::from_millis(300))
                .await
                .expect("reserve")
            {
                let at = Instant::now();
                s.ack(&d).await.expect("ack");
                done.push((d, at));
            }
            done
        });
    }
    let mut done = Vec::new();
    while let Some(worker) = workers.join_next().await {
        done.extend(worker.expect("a worker panicked"));
    }
    let jobs: HashSet<_> = done.iter().map(|(d, _)| d.job).collect();
    assert_eq!(
        jobs.len() as u64,
        JOBS,
        "every lost job is redelivered once"
    );
    assert_eq!(done.len() as u64, JOBS);
    assert!(done.iter().all(|(d, _)| d.attempt == 2));
    let took = done
        .iter()
        .map(|(_, at)| at.duration_since(started))
        .max()
        .unwrap_or_default();
    let reclaims = s.round_trips().reclaims;
    assert!(
        reclaims < JOBS / 4,
        "reclaim must take over many reservations per call, but made {reclaims} calls"
    );
    assert!(
        took < Duration::from_millis(700),
        "every lost job must be handed out well within one poll_interval (1 s), took {took:?}"
    );
    assert_eq!(s.stats().await.expect("stats"), stats(0, 0, 0));
    close(&[&survivor]).await;
}

/// Not a check but a measurement, run by hand: 64 concurrent worker loops (reserve +
/// ack) drain 5 000 jobs enqueued beforehand; prints jobs per second and the commands
/// per job of the read and ack paths.
///
/// ```text
/// cargo test -p order-redis --release --test contract -- --ignored --nocapture throughput
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn throughput_of_64_concurrent_worker_loops() {
    const JOBS: u64 = 5_000;
    const LOOPS: u64 = 64;
    let mut config = test_config(redis_url(), "throughput");
    config.pool_size = RedisConfig::default().pool_size;
    config.queue.max_len = JOBS;
    config.queue.visibility_timeout = Duration::from_secs(30);
    config.queue.poll_interval = Duration::from_millis(500);
    config.queue.idle_consumer_timeout = Duration::from_secs(10);
    let _cleanup = Cleanup::new(&config);
    let parts = queue(&config).await;
    let q = &parts.1;
    let mut producers = JoinSet::new();
    for p in 0..LOOPS {
        let q = q.clone();
        producers.spawn(async move {
            let mut n = p + 1;
            while n <= JOBS {
                q.enqueue(job(n)).await.expect("enqueue");
                n += LOOPS;
            }
        });
    }
    while let Some(p) = producers.join_next().await {
        p.expect("a producer panicked");
    }

    let before = q.round_trips();
    let started = Instant::now();
    let mut loops = JoinSet::new();
    for _ in 0..LOOPS {
        let q = q.clone();
        loops.spawn(async move {
            let mut done = 0u64;
            while let Some(d) = q
                .reserve(Duration::from_millis(200))
                .await
                .expect("reserve")
            {
                q.ack(&d).await.expect("ack");
                done += 1;
            }
            done
        });
    }
    let mut done = 0;
    while let Some(l) = loops.join_next().await {
        done += l.expect("a loop panicked");
    }
    // The loops stop after 200 ms on an empty queue.
    let took = started.elapsed().saturating_sub(Duration::from_millis(200));
    let after = q.round_trips();
    assert_eq!(done, JOBS);
    let per_job = |n: u64| n as f64 / JOBS as f64;
    println!(
        "{LOOPS} loops, {JOBS} jobs in {took:?}: {:.0} jobs/s; per job: {:.3} reads, {:.3} reclaims, {:.3} promotes, {:.3} ack calls",
        JOBS as f64 / took.as_secs_f64(),
        per_job(after.reads - before.reads),
        per_job(after.reclaims - before.reclaims),
        per_job(after.promotes - before.promotes),
        per_job(after.ack_batches - before.ack_batches),
    );
    assert_eq!(q.stats().await.expect("stats"), stats(0, 0, 0));
    close(&[&parts]).await;
}
