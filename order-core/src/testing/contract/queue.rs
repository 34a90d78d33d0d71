//! Contract suite for [`JobQueue`]: at-least-once delivery, visibility timeout,
//! retries with exponential backoff, dead letter after the last attempt, harmless stale
//! receipts, honest counts and a bound.
//!
//! Each check takes a fresh, empty [`QueueFixture`] and panics with a message naming the
//! broken promise. Run every check in [`CHECKS`] against your adapter, one test per
//! check, with [`queue_contract!`](crate::queue_contract).

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::OrderId;
use crate::ports::{Delivery, Job, JobQueue, NackOutcome, QueueError, QueueStats, QueueTimings};
use crate::runtime::Backoff;

/// The queue settings the fixture built its adapter with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueContractConfig {
    /// Visibility timeout (keep it short against a real server, e.g. 300 ms).
    pub visibility_timeout: Duration,
    /// Deliveries before the dead letter; the checks need at least 3.
    pub max_attempts: u32,
    /// The queue's retry schedule: its base is the first retry delay, doubling with each
    /// attempt up to its max (e.g. 100 ms on a real server); its jitter is 0, as every
    /// queue's is. The checks expect `retry_backoff.nominal(n)` after a nack of attempt n.
    pub retry_backoff: Backoff,
    /// Most jobs the queue holds; the checks need 8..=256.
    pub capacity: u64,
}

/// What a queue check needs from the adapter under test.
#[async_trait]
pub trait QueueFixture: Send + Sync {
    /// The adapter, empty.
    fn queue(&self) -> &dyn JobQueue;

    /// The settings the adapter was built with.
    fn config(&self) -> QueueContractConfig;

    /// Added to a deadline before a check expects it to have passed: clock granularity,
    /// round trips, polling (e.g. 1 ms on a manual clock, ~150 ms on a real server).
    fn slack(&self) -> Duration;

    /// How long `reserve` may wait when a check expects a job to be ready (zero on a
    /// manual clock; about a second against a real server).
    fn reserve_wait(&self) -> Duration;

    /// Lets `d` pass on the adapter's clock: advance a manual clock, or really sleep.
    async fn advance(&self, d: Duration);

    /// Releases what the fixture holds (connections, server-side state) once a check
    /// passed: [`queue_contract!`](crate::queue_contract) awaits it after every check. A
    /// no-op unless overridden. A failing check panics before it, so clean-up that must
    /// happen then too belongs in a `Drop` of the fixture.
    async fn teardown(&self) {}
}

/// The names of every check, in the order they are meant to run (from the suite's one
/// list, like the tests [`queue_contract!`](crate::queue_contract) writes).
pub const CHECKS: &[&str] = crate::__queue_checks! { [crate::__contract_check_names] };

/// THE list of this suite's checks, in the order they are meant to run: every check
/// function must be here (order-core's tests fail otherwise), and nowhere else.
/// `__queue_checks! { [callback] args.. }` expands to `callback! { [checks..] args.. }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __queue_checks {
    ([$($callback:tt)*] $($args:tt)*) => {
        $($callback)*! {
            [
            delivers_enqueued_jobs_in_order,
            ack_removes_the_job,
            unacked_job_is_redelivered_after_the_visibility_timeout,
            nack_retries_after_the_backoff,
            dead_letters_after_max_attempts_via_nack,
            dead_letters_after_max_attempts_via_visibility_timeout,
            stale_receipts_are_harmless,
            stats_count_waiting_in_flight_and_dead,
            enqueue_beyond_capacity_is_refused,
            a_stale_ack_leaves_the_live_delivery_in_flight,
            dead_letter_buries_the_live_delivery_at_once_and_never_a_stale_one,
            defer_redelivers_after_the_delay_without_using_an_attempt,
            timings_report_the_configured_settings,
            ]
            $($args)*
        }
    };
}

/// One test per check of the [`JobQueue`](crate::ports::JobQueue) contract
/// ([`testing::contract::queue`](crate::testing::contract::queue)), each on a fresh
/// [`QueueFixture`](crate::testing::contract::queue::QueueFixture), torn down after its check
/// passed.
///
/// The input is an optional test attribute and a fixture: `path::to::async_fn`,
/// `|| expression` or `|arg: Type, ..| expression` (see the [module
/// docs](crate::testing::contract#in-one-line)). Without an attribute the tests are
/// `#[tokio::test]`: the calling crate needs `tokio` as a dev-dependency with the
/// `macros` and `rt` features. The tests are named after the checks and written where
/// the macro is invoked.
///
/// ```ignore
/// async fn my_queue() -> MyQueueFixture {
///     MyQueueFixture::empty().await
/// }
///
/// // Real sleeps against a server: a multi-threaded runtime (tokio `rt-multi-thread`).
/// order_core::queue_contract!(
///     #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
///     my_queue
/// );
/// ```
#[macro_export]
macro_rules! queue_contract {
    ($($fixture:tt)+) => {
        $crate::__contract_parse! { __queue_checks, queue, QueueFixture; $($fixture)+ }
    };
}

/// The job for order `n`.
fn job(n: u64) -> Job {
    match OrderId::new(n) {
        Ok(id) => Job::ProcessOrder(id),
        Err(e) => panic!("contract suite bug: order id {n}: {e}"),
    }
}

/// `min(retry_backoff.base · 2^(attempt-1), retry_backoff.max)`: the delay the port
/// promises after a nack.
fn backoff(config: &QueueContractConfig, attempt: u32) -> Duration {
    config.retry_backoff.nominal(attempt)
}

async fn enqueue<F: QueueFixture + ?Sized>(f: &F, j: Job) {
    if let Err(e) = f.queue().enqueue(j).await {
        panic!("enqueue({j:?}) failed: {}", crate::app::ErrorChain(&e));
    }
}

/// A reserve that must deliver something.
async fn expect_delivery<F: QueueFixture + ?Sized>(f: &F, why: &str) -> Delivery {
    match f.queue().reserve(f.reserve_wait()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("reserve returned nothing, but {why}"),
        Err(e) => panic!("reserve failed ({why}): {e}"),
    }
}

/// A non-waiting reserve that must deliver nothing.
async fn expect_nothing<F: QueueFixture + ?Sized>(f: &F, why: &str) {
    match f.queue().reserve(Duration::ZERO).await {
        Ok(None) => {}
        Ok(Some(d)) => panic!(
            "reserve delivered {:?} (attempt {}), but {why}",
            d.job, d.attempt
        ),
        Err(e) => panic!("reserve failed ({why}): {e}"),
    }
}

async fn ack<F: QueueFixture + ?Sized>(f: &F, d: &Delivery) {
    if let Err(e) = f.queue().ack(d).await {
        panic!(
            "ack of {:?} (attempt {}) failed: {}",
            d.job,
            d.attempt,
            crate::app::ErrorChain(&e)
        );
    }
}

async fn nack<F: QueueFixture + ?Sized>(f: &F, d: &Delivery, error: &str) -> NackOutcome {
    match f.queue().nack(d, error).await {
        Ok(outcome) => outcome,
        Err(e) => panic!(
            "nack of {:?} (attempt {}) failed: {}",
            d.job,
            d.attempt,
            crate::app::ErrorChain(&e)
        ),
    }
}

async fn stats<F: QueueFixture + ?Sized>(f: &F) -> QueueStats {
    match f.queue().stats().await {
        Ok(s) => s,
        Err(e) => panic!("stats failed: {}", crate::app::ErrorChain(&e)),
    }
}

fn counts(waiting: u64, in_flight: u64, dead: u64) -> QueueStats {
    QueueStats {
        waiting,
        in_flight,
        dead,
    }
}

fn check_config(config: &QueueContractConfig) {
    assert!(
        config.max_attempts >= 3,
        "fixture bug: the queue checks need max_attempts >= 3, got {}",
        config.max_attempts
    );
    assert!(
        (8..=256).contains(&config.capacity),
        "fixture bug: the queue checks need a capacity in 8..=256, got {}",
        config.capacity
    );
    assert!(
        config.retry_backoff.jitter == 0.0,
        "fixture bug: a queue's retry backoff has no jitter, got {}",
        config.retry_backoff.jitter
    );
}

/// Jobs enqueued by one producer reach a single consumer in enqueue order, each on
/// attempt 1, each exactly once.
pub async fn delivers_enqueued_jobs_in_order<F: QueueFixture + ?Sized>(f: &F) {
    check_config(&f.config());
    for n in 1..=5 {
        enqueue(f, job(n)).await;
    }
    for n in 1..=5 {
        let d = expect_delivery(f, "five jobs were enqueued").await;
        assert_eq!(
            d.job,
            job(n),
            "jobs must be delivered in enqueue order to a single consumer (delivery #{n})"
        );
        assert_eq!(d.attempt, 1, "a first delivery must carry attempt 1");
        ack(f, &d).await;
    }
    expect_nothing(f, "all five jobs were delivered and acked").await;
}

/// An acked job is gone for good: not redelivered after the visibility timeout, not
/// counted anywhere.
pub async fn ack_removes_the_job<F: QueueFixture + ?Sized>(f: &F) {
    let config = f.config();
    check_config(&config);
    enqueue(f, job(1)).await;
    let d = expect_delivery(f, "a job was enqueued").await;
    ack(f, &d).await;
    assert_eq!(
        stats(f).await,
        counts(0, 0, 0),
        "an acked job must not be counted as waiting, in flight or dead"
    );
    f.advance(config.visibility_timeout + f.slack()).await;
    expect_nothing(f, "an acked job must never be delivered again").await;
    assert_eq!(stats(f).await, counts(0, 0, 0), "the queue must stay empty");
}

/// A reserved job is invisible until the visibility timeout, then delivered again with
/// attempt + 1.
pub async fn unacked_job_is_redelivered_after_the_visibility_timeout<F: QueueFixture + ?Sized>(
    f: &F,
) {
    let config = f.config();
    check_config(&config);
    enqueue(f, job(7)).await;
    let first = expect_delivery(f, "a job was enqueued").await;
    assert_eq!(first.attempt, 1, "a first delivery must carry attempt 1");
    expect_nothing(
        f,
        "a reserved job must stay invisible until its visibility timeout",
    )
    .await;
    f.advance(config.visibility_timeout + f.slack()).await;
    let second = expect_delivery(
        f,
        "an un-acked job must be delivered again after the visibility timeout",
    )
    .await;
    assert_eq!(second.job, job(7), "the redelivery must carry the same job");
    assert_eq!(
        second.attempt, 2,
        "a redelivery after the visibility timeout must carry attempt + 1"
    );
    ack(f, &second).await;
    expect_nothing(f, "the redelivered job was acked").await;
    assert_eq!(stats(f).await, counts(0, 0, 0), "the queue must be empty");
}

/// A nack retries after `retry_backoff.nominal(attempt)` (reported exactly), not before,
/// with attempt + 1; the next nack doubles the delay.
pub async fn nack_retries_after_the_backoff<F: QueueFixture + ?Sized>(f: &F) {
    let config = f.config();
    check_config(&config);
    enqueue(f, job(3)).await;
    let first = expect_delivery(f, "a job was enqueued").await;
    assert_eq!(
        nack(f, &first, "first failure").await,
        NackOutcome::Retried(backoff(&config, 1)),
        "a nack before the last attempt must retry after retry_backoff"
    );
    expect_nothing(f, "a nacked job must wait for its backoff").await;
    f.advance(backoff(&config, 1) + f.slack()).await;
    let second = expect_delivery(f, "a nacked job must come back after its backoff").await;
    assert_eq!(second.job, job(3), "the retry must carry the same job");
    assert_eq!(
        second.attempt, 2,
        "a retry after a nack must carry attempt + 1"
    );
    assert_eq!(
        nack(f, &second, "second failure").await,
        NackOutcome::Retried(backoff(&config, 2)),
        "the backoff must double with each attempt"
    );
    f.advance(backoff(&config, 2) + f.slack()).await;
    let third = expect_delivery(f, "the job must come back after the doubled backoff").await;
    assert_eq!(
        third.attempt, 3,
        "attempts must keep counting across retries"
    );
    ack(f, &third).await;
    assert_eq!(stats(f).await, counts(0, 0, 0), "the queue must be empty");
}

/// A job that fails every attempt is retried until `max_attempts`, then the last nack
/// moves it to the dead letter and it is never delivered again.
pub async fn dead_letters_after_max_attempts_via_nack<F: QueueFixture + ?Sized>(f: &F) {
    let config = f.config();
    check_config(&config);
    enqueue(f, job(9)).await;
    for attempt in 1..=config.max_attempts {
        let d = expect_delivery(f, "the job has attempts left").await;
        assert_eq!(d.job, job(9), "only the failing job is in the queue");
        assert_eq!(
            d.attempt, attempt,
            "attempts must count 1, 2, … across nacks"
        );
        let outcome = nack(f, &d, &format!("failure {attempt}")).await;
        if attempt < config.max_attempts {
            assert_eq!(
                outcome,
                NackOutcome::Retried(backoff(&config, attempt)),
                "a nack before the last attempt must retry with the backoff"
            );
            f.advance(backoff(&config, attempt) + f.slack()).await;
        } else {
            assert_eq!(
                outcome,
                NackOutcome::DeadLettered,
                "the nack of the last attempt must dead-letter the job"
            );
        }
    }
    f.advance(config.visibility_timeout + f.slack()).await;
    expect_nothing(f, "a dead-lettered job must never be delivered again").await;
    assert_eq!(
        stats(f).await,
        counts(0, 0, 1),
        "the dead-lettered job must be counted as dead, and only there"
    );
}

/// A job whose every delivery times out is delivered `max_attempts` times, then goes to
/// the dead letter instead of being delivered again.
pub async fn dead_letters_after_max_attempts_via_visibility_timeout<F: QueueFixture + ?Sized>(
    f: &F,
) {
    let config = f.config();
    check_config(&config);
    enqueue(f, job(11)).await;
    for attempt in 1..=config.max_attempts {
        let d = expect_delivery(f, "the job has attempts left").await;
        assert_eq!(d.job, job(11), "only the abandoned job is in the queue");
        assert_eq!(
            d.attempt, attempt,
            "attempts must count 1, 2, … across visibility timeouts"
        );
        f.advance(config.visibility_timeout + f.slack()).await;
    }
    expect_nothing(
        f,
        "after max_attempts timed-out deliveries the job must go to the dead letter",
    )
    .await;
    assert_eq!(
        stats(f).await,
        counts(0, 0, 1),
        "the abandoned job must be counted as dead, and only there"
    );
}

/// Acking or nacking a receipt whose delivery timed out and went to someone else never
/// fails, never duplicates the job, and the current holder can still finish it.
pub async fn stale_receipts_are_harmless<F: QueueFixture + ?Sized>(f: &F) {
    let config = f.config();
    check_config(&config);
    enqueue(f, job(5)).await;
    let stale = expect_delivery(f, "a job was enqueued").await;
    f.advance(config.visibility_timeout + f.slack()).await;
    let current = expect_delivery(f, "the un-acked job must be redelivered").await;
    assert_eq!(current.attempt, 2, "the redelivery must carry attempt 2");
    assert_eq!(
        nack(f, &stale, "late failure").await,
        NackOutcome::Stale,
        "a nack of a receipt whose job went to someone else must report Stale"
    );
    expect_nothing(f, "a stale nack must not release a job someone else holds").await;
    ack(f, &stale).await;
    assert_eq!(
        stats(f).await,
        counts(0, 1, 0),
        "a stale ack must not finish the current holder's delivery"
    );
    ack(f, &current).await;
    f.advance(backoff(&config, 2).max(config.visibility_timeout) + f.slack())
        .await;
    expect_nothing(
        f,
        "after the current holder acked, a stale ack or nack must not bring the job back",
    )
    .await;
    assert_eq!(
        stats(f).await,
        counts(0, 0, 0),
        "stale receipts must leave nothing behind"
    );
}

/// `stats` counts ready and delayed jobs as waiting, reserved ones as in flight, and
/// dead letters separately.
pub async fn stats_count_waiting_in_flight_and_dead<F: QueueFixture + ?Sized>(f: &F) {
    let config = f.config();
    check_config(&config);
    assert_eq!(stats(f).await, counts(0, 0, 0), "a new queue must be empty");
    for n in 1..=3 {
        enqueue(f, job(n)).await;
    }
    assert_eq!(
        stats(f).await,
        counts(3, 0, 0),
        "enqueued jobs must count as waiting"
    );
    let first = expect_delivery(f, "three jobs were enqueued").await;
    assert_eq!(
        stats(f).await,
        counts(2, 1, 0),
        "a reserved job must count as in flight, not waiting"
    );
    nack(f, &first, "boom").await;
    assert_eq!(
        stats(f).await,
        counts(3, 0, 0),
        "a job delayed for retry must count as waiting"
    );
    let second = expect_delivery(f, "two jobs are ready").await;
    let third = expect_delivery(f, "one more job is ready").await;
    assert_ne!(
        second.job, first.job,
        "a job delayed for retry must not be delivered before its backoff"
    );
    assert_ne!(
        third.job, first.job,
        "a job delayed for retry must not be delivered before its backoff"
    );
    assert_eq!(
        stats(f).await,
        counts(1, 2, 0),
        "two reserved jobs in flight, one delayed job waiting"
    );
    ack(f, &second).await;
    ack(f, &third).await;
    assert_eq!(
        stats(f).await,
        counts(1, 0, 0),
        "acked jobs must leave the counts"
    );
}

/// At the bound, enqueue fails with `Full` and writes nothing; finishing a job makes
/// room again.
pub async fn enqueue_beyond_capacity_is_refused<F: QueueFixture + ?Sized>(f: &F) {
    let config = f.config();
    check_config(&config);
    for n in 1..=config.capacity {
        enqueue(f, job(n)).await;
    }
    match f.queue().enqueue(job(config.capacity + 1)).await {
        Err(QueueError::Full(_)) => {}
        Ok(()) => panic!(
            "enqueue beyond the capacity of {} must fail with Full",
            config.capacity
        ),
        Err(e) => panic!(
            "enqueue beyond the capacity must fail with Full, got: {}",
            crate::app::ErrorChain(&e)
        ),
    }
    assert_eq!(
        stats(f).await,
        counts(config.capacity, 0, 0),
        "a refused enqueue must write nothing"
    );
    let d = expect_delivery(f, "the queue is full of jobs").await;
    match f.queue().enqueue(job(config.capacity + 2)).await {
        Err(QueueError::Full(_)) => {}
        Ok(()) => panic!("a reserved, un-acked job must still count against the capacity"),
        Err(e) => panic!(
            "enqueue at the capacity must fail with Full, got: {}",
            crate::app::ErrorChain(&e)
        ),
    }
    ack(f, &d).await;
    enqueue(f, job(config.capacity + 3)).await;
    assert_eq!(
        stats(f).await,
        counts(config.capacity, 0, 0),
        "an acked job must free its place"
    );
}

/// Worker A stalls past the visibility timeout, B receives the redelivery; A's late ack
/// must not finish B's delivery: it stays in flight, and if B dies too the job is
/// delivered a third time.
pub async fn a_stale_ack_leaves_the_live_delivery_in_flight<F: QueueFixture + ?Sized>(f: &F) {
    let config = f.config();
    check_config(&config);
    enqueue(f, job(21)).await;
    let stale = expect_delivery(f, "a job was enqueued").await;
    f.advance(config.visibility_timeout + f.slack()).await;
    let live = expect_delivery(f, "the un-acked job must be redelivered").await;
    assert_eq!(live.attempt, 2, "the redelivery must carry attempt 2");
    ack(f, &stale).await;
    assert_eq!(
        stats(f).await,
        counts(0, 1, 0),
        "a stale ack must leave the live delivery in flight"
    );
    f.advance(config.visibility_timeout + f.slack()).await;
    let third = expect_delivery(
        f,
        "the live holder died after a stale ack: its delivery must time out and come back",
    )
    .await;
    assert_eq!(
        (third.job, third.attempt),
        (job(21), 3),
        "the job comes back as attempt 3"
    );
    ack(f, &third).await;
    assert_eq!(stats(f).await, counts(0, 0, 0), "the queue must be empty");
}

/// `dead_letter` moves the live delivery to the dead letter at once, on its first
/// attempt; a stale receipt's `dead_letter` changes nothing (the redelivery stays in
/// flight and can still be acked), and nothing dead-lettered is ever delivered again.
pub async fn dead_letter_buries_the_live_delivery_at_once_and_never_a_stale_one<
    F: QueueFixture + ?Sized,
>(
    f: &F,
) {
    let config = f.config();
    check_config(&config);
    enqueue(f, job(31)).await;
    let first = expect_delivery(f, "a job was enqueued").await;
    assert_eq!(first.attempt, 1);
    match f
        .queue()
        .dead_letter(&first, "the order does not exist")
        .await
    {
        Ok(NackOutcome::DeadLettered) => {}
        other => panic!("dead_letter of the live delivery must bury it at once: {other:?}"),
    }
    assert_eq!(
        stats(f).await,
        counts(0, 0, 1),
        "a dead-lettered job is neither waiting nor in flight"
    );
    f.advance(config.visibility_timeout + f.slack()).await;
    expect_nothing(f, "a dead-lettered job must never be delivered again").await;

    enqueue(f, job(32)).await;
    let stale = expect_delivery(f, "a second job was enqueued").await;
    f.advance(config.visibility_timeout + f.slack()).await;
    let live = expect_delivery(f, "the un-acked job must be redelivered").await;
    match f.queue().dead_letter(&stale, "late").await {
        Ok(NackOutcome::Stale) => {}
        other => panic!("dead_letter with a stale receipt must change nothing: {other:?}"),
    }
    assert_eq!(
        stats(f).await,
        counts(0, 1, 1),
        "a stale dead_letter must leave the live delivery in flight"
    );
    ack(f, &live).await;
    assert_eq!(
        stats(f).await,
        counts(0, 0, 1),
        "the live delivery acks as usual"
    );
}

/// `defer` hands a delivery back for exactly `delay`, reports it, and the next delivery
/// carries the same attempt number; a stale receipt's defer changes nothing.
pub async fn defer_redelivers_after_the_delay_without_using_an_attempt<F: QueueFixture + ?Sized>(
    f: &F,
) {
    let config = f.config();
    check_config(&config);
    enqueue(f, job(22)).await;
    let first = expect_delivery(f, "a job was enqueued").await;
    let delay = config.retry_backoff.base * 2;
    for round in 0..config.max_attempts + 1 {
        let d = if round == 0 {
            first.clone()
        } else {
            let d = expect_delivery(f, "a deferred job must come back after its delay").await;
            assert_eq!(
                d.attempt, 1,
                "a deferred job must keep its attempt number (round {round})"
            );
            d
        };
        match f.queue().defer(&d, delay).await {
            Ok(NackOutcome::Retried(reported)) => {
                assert_eq!(reported, delay, "defer must report the delay it was given")
            }
            Ok(other) => panic!("defer of a live delivery must be Retried, got {other:?}"),
            Err(e) => panic!("defer failed: {}", crate::app::ErrorChain(&e)),
        }
        expect_nothing(f, "a deferred job must wait for its delay").await;
        assert_eq!(
            stats(f).await,
            counts(1, 0, 0),
            "a deferred job counts as waiting"
        );
        f.advance(delay + f.slack()).await;
    }
    let last = expect_delivery(
        f,
        "deferring more often than max_attempts must never dead-letter the job",
    )
    .await;
    assert_eq!(last.attempt, 1, "defers never use attempts");
    match f.queue().defer(&first, delay).await {
        Ok(NackOutcome::Stale) => {}
        other => panic!("defer of a stale receipt must be Stale, got {other:?}"),
    }
    assert_eq!(
        stats(f).await,
        counts(0, 1, 0),
        "a stale defer must leave the live delivery in flight"
    );
    ack(f, &last).await;
    assert_eq!(stats(f).await, counts(0, 0, 0), "the queue must be empty");
}

/// `timings` reports the settings the adapter was built with.
pub async fn timings_report_the_configured_settings<F: QueueFixture + ?Sized>(f: &F) {
    let config = f.config();
    check_config(&config);
    assert_eq!(
        f.queue().timings(),
        QueueTimings {
            visibility_timeout: config.visibility_timeout,
            max_attempts: config.max_attempts,
            retry_backoff: config.retry_backoff,
        },
        "timings must be the configured visibility timeout, attempts and backoff"
    );
}
