//! Unit tests of [`MemoryQueue`](super::MemoryQueue).

use order_core::OrderId;

use super::*;
use crate::ManualClock;
use order_core::app::BackoffError;

fn job(n: u64) -> Job {
    Job::ProcessOrder(OrderId::new(n).unwrap())
}

fn setup(config: QueueConfig) -> (Arc<ManualClock>, MemoryQueue) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let queue = MemoryQueue::new(clock.clone(), config).unwrap();
    (clock, queue)
}

async fn reserve_now(q: &MemoryQueue) -> Option<Delivery> {
    q.reserve(Duration::ZERO).await.unwrap()
}

async fn stats(q: &MemoryQueue) -> (u64, u64, u64) {
    let s = q.stats().await.unwrap();
    (s.waiting, s.in_flight, s.dead)
}

#[tokio::test(start_paused = true)]
async fn reserve_wakes_for_an_enqueue_and_never_moves_the_injected_clock() {
    let (clock, q) = setup(QueueConfig::default());
    let q = Arc::new(q);
    let start = clock.now();

    let real = tokio::time::Instant::now();
    assert_eq!(q.reserve(Duration::from_secs(2)).await.unwrap(), None);
    assert!(real.elapsed() >= Duration::from_secs(2));
    assert_eq!(clock.now(), start);

    let producer = {
        let q = q.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            q.enqueue(job(9)).await.unwrap();
        })
    };
    let real = tokio::time::Instant::now();
    let d = q.reserve(Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(d.job, job(9));
    assert!(real.elapsed() < Duration::from_secs(60));
    assert_eq!(clock.now(), start);
    producer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reserve_does_not_wait_past_the_next_scheduled_retry() {
    let (_clock, q) = setup(QueueConfig::default());
    q.enqueue(job(1)).await.unwrap();
    let d = reserve_now(&q).await.unwrap();
    assert_eq!(
        q.nack(&d, "x").await.unwrap(),
        NackOutcome::Retried(Duration::from_secs(1))
    );
    let real = tokio::time::Instant::now();
    // The manual clock does not move, so the retry is still not due: None, after
    // waiting at most the 1 s until it would have been.
    assert_eq!(q.reserve(Duration::from_secs(60)).await.unwrap(), None);
    assert!(real.elapsed() <= Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_workers_receive_every_job_exactly_once() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
    let q = Arc::new(MemoryQueue::new(clock, QueueConfig::default()).unwrap());
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(d) = q.reserve(Duration::from_millis(200)).await.unwrap() {
                    q.ack(&d).await.unwrap();
                    got.push(d.job);
                }
                got
            })
        })
        .collect();
    for n in 1..=2_000 {
        q.enqueue(job(n)).await.unwrap();
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let mut ids: Vec<u64> = all.iter().map(|Job::ProcessOrder(id)| id.get()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=2_000).collect::<Vec<_>>());
    assert_eq!(stats(&q).await, (0, 0, 0));
}

#[tokio::test]
async fn the_dead_letter_keeps_only_the_newest_letters_up_to_its_capacity() {
    let config = QueueConfig {
        max_attempts: 1,
        dead_letter_capacity: 3,
        ..QueueConfig::default()
    };
    let (_clock, q) = setup(config);
    for n in 1..=5 {
        q.enqueue(job(n)).await.unwrap();
        let d = reserve_now(&q).await.unwrap();
        assert_eq!(
            q.nack(&d, "poison").await.unwrap(),
            NackOutcome::DeadLettered
        );
    }
    let kept: Vec<Job> = q.dead_letters().iter().map(|l| l.job).collect();
    assert_eq!(kept, vec![job(3), job(4), job(5)]);
    assert_eq!(stats(&q).await, (0, 0, 3));
}

#[test]
fn zero_timings_are_refused_at_construction() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
    for (config, field) in [
        (
            QueueConfig {
                max_attempts: 0,
                ..QueueConfig::default()
            },
            "max_attempts",
        ),
        (
            QueueConfig {
                visibility_timeout: Duration::ZERO,
                ..QueueConfig::default()
            },
            "visibility_timeout",
        ),
    ] {
        assert_eq!(
            MemoryQueue::new(clock.clone(), config).err(),
            Some(QueueTimingsError::Zero(field))
        );
    }
    let sound = QueueConfig::default().retry_backoff;
    for (retry_backoff, error) in [
        (
            Backoff {
                base: Duration::ZERO,
                ..sound
            },
            QueueTimingsError::Backoff(BackoffError::ZeroBase("retry_backoff")),
        ),
        (
            Backoff {
                max: Duration::from_millis(1),
                ..sound
            },
            QueueTimingsError::Backoff(BackoffError::MaxBelowBase("retry_backoff")),
        ),
        (
            Backoff {
                jitter: 0.25,
                ..sound
            },
            QueueTimingsError::Jittered("retry_backoff"),
        ),
    ] {
        let config = QueueConfig {
            retry_backoff,
            ..QueueConfig::default()
        };
        assert_eq!(MemoryQueue::new(clock.clone(), config).err(), Some(error));
    }
}

#[tokio::test(start_paused = true)]
async fn a_deferred_job_comes_back_with_the_same_attempt_and_wakes_a_waiting_worker() {
    let (clock, q) = setup(QueueConfig::default());
    q.enqueue(job(1)).await.unwrap();
    let d = reserve_now(&q).await.unwrap();
    assert_eq!(
        q.defer(&d, Duration::from_secs(3)).await.unwrap(),
        NackOutcome::Retried(Duration::from_secs(3))
    );
    clock.advance(Duration::from_secs(3));
    let again = reserve_now(&q).await.unwrap();
    assert_eq!((again.job, again.attempt), (job(1), 1));
    assert_ne!(again.receipt, d.receipt, "a new delivery, a new receipt");

    // A defer with no delay wakes a worker already waiting in `reserve` (real time,
    // paused here) instead of leaving it to sleep out its whole wait.
    let q = Arc::new(q);
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let got = q.reserve(Duration::from_secs(60)).await.unwrap();
            (got, started.elapsed())
        })
    };
    tokio::task::yield_now().await;
    assert_eq!(
        q.defer(&again, Duration::ZERO).await.unwrap(),
        NackOutcome::Retried(Duration::ZERO)
    );
    let (got, waited) = waiter.await.unwrap();
    let got = got.expect("the waiting worker receives the deferred job");
    assert_eq!((got.job, got.attempt), (job(1), 1));
    // Paused time: a woken worker sees no time pass; one left to its timer sees 30 s
    // (its wait is capped at the in-flight delivery's visibility deadline).
    assert!(
        waited < Duration::from_secs(1),
        "woken, not timed out: {waited:?}"
    );
}

#[test]
fn backoff_doubles_per_attempt_is_capped_and_saturates() {
    let c = QueueConfig::default();
    assert_eq!(c.backoff(1), Duration::from_secs(1));
    assert_eq!(c.backoff(2), Duration::from_secs(2));
    assert_eq!(c.backoff(5), Duration::from_secs(16));
    assert_eq!(c.backoff(1000), Duration::from_secs(600), "capped at max");
    let huge = QueueConfig {
        retry_backoff: Backoff::fixed_schedule(Duration::MAX, Duration::MAX),
        ..c
    };
    assert_eq!(huge.backoff(3), Duration::MAX);
}
