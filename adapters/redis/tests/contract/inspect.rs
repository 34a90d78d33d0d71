//! `order_redis::inspect`: the dead letter's entries exactly as the queue wrote them
//! (a job nacked past its last attempt, an undecodable poison job, and more entries than
//! one page), and the lock keys under the prefix — only those, even when the prefix holds
//! glob characters. Each test works under its own prefix, deleted when it ends.

use std::time::Duration;

use fred::prelude::*;
use order_core::ports::{DistributedLock, JobQueue, LockToken, NackOutcome};
use order_redis::inspect::{self, DeadLetter};
use order_redis::{RedisLock, RedisQueue};

use crate::{Cleanup, connect, job, raw_client, redis_url, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_lists_each_entry_with_its_payload_and_reason() {
    let mut config = test_config(redis_url(), "inspect-dead");
    config.queue.max_attempts = 1;
    let _cleanup = Cleanup::new(&config);
    let connection = connect(config).await;
    assert_eq!(
        inspect::dead_letters(&connection).await.expect("empty"),
        [],
        "no dead-letter stream yet: nothing to report"
    );
    let queue = RedisQueue::new(&connection).await.expect("setup");

    // A job whose one attempt fails.
    queue.enqueue(job(13)).await.expect("enqueue");
    let delivery = queue
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("the job is delivered");
    assert_eq!(
        queue
            .nack(&delivery, "card processor on fire")
            .await
            .expect("nack"),
        NackOutcome::DeadLettered
    );
    // A poison job nobody can decode, written straight into the stream.
    let keys = queue.keys().clone();
    let raw = raw_client(&connection.config().url).await;
    let _: String = raw
        .xadd(&keys.stream, false, None, "*", vec![("job", "not-a-job")])
        .await
        .expect("XADD poison");
    assert_eq!(
        queue
            .reserve(Duration::from_millis(300))
            .await
            .expect("reserve"),
        None,
        "the poison job is buried, not delivered"
    );

    let letters = inspect::dead_letters(&connection)
        .await
        .expect("dead letters");
    let found: Vec<(&str, Option<&str>)> = letters
        .iter()
        .map(|l| (l.payload.as_str(), l.reason.as_deref()))
        .collect();
    assert_eq!(found.len(), 2, "{letters:?}");
    assert_eq!(
        found[0],
        ("process_order:13", Some("card processor on fire"))
    );
    assert_eq!(found[1].0, "not-a-job", "oldest first");
    assert!(found[1].1.is_some(), "a buried job says why: {letters:?}");
    let _ = raw.quit().await;
    queue.close().await;
    connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_reads_past_one_page_without_repeating_an_entry() {
    const ENTRIES: usize = 1_001;
    let config = test_config(redis_url(), "inspect-pages");
    let _cleanup = Cleanup::new(&config);
    let connection = connect(config).await;
    let dead = connection.config().queue_keys().dead;
    let raw = raw_client(&connection.config().url).await;
    let pipeline = raw.pipeline();
    for n in 0..ENTRIES {
        let _: () = pipeline
            .xadd(
                &dead,
                false,
                None,
                "*",
                vec![("job", format!("p{n}")), ("error", "e".to_owned())],
            )
            .await
            .expect("queue an XADD");
    }
    let _: Vec<Value> = pipeline.all().await.expect("XADD pipeline");
    let letters = inspect::dead_letters(&connection)
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), ENTRIES);
    for (n, letter) in letters.iter().enumerate() {
        assert_eq!(
            letter.payload,
            format!("p{n}"),
            "in stream order, once each"
        );
        assert_eq!(letter.reason.as_deref(), Some("e"));
    }
    assert!(matches!(letters.last(), Some(DeadLetter { payload, .. }) if payload == "p1000"));
    let _ = raw.quit().await;
    connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_keys_lists_only_the_lock_keys_under_the_prefix() {
    // A `*` in the prefix must match only itself: the neighbour's prefix replaces it
    // with a letter, which the unescaped pattern `…a**` would match.
    let mut config = test_config(redis_url(), "inspect-locks");
    config.prefix.push_str("a*");
    let mut neighbour = config.clone();
    neighbour.prefix = neighbour.prefix.replace("a*", "ab");
    // `Cleanup` deletes `{prefix}*` unescaped: this one removes both prefixes' keys.
    let _cleanup = Cleanup::new(&config);
    let connection = connect(config).await;
    let neighbour = connect(neighbour).await;
    assert_eq!(
        inspect::lock_keys(&connection).await.expect("none"),
        Vec::<String>::new()
    );

    let lock = RedisLock::new(&connection).await.expect("lock");
    let theirs = RedisLock::new(&neighbour).await.expect("lock");
    let token = LockToken::new("t");
    let ttl = Duration::from_secs(30);
    for name in ["product:2", "product:1"] {
        assert!(lock.try_acquire(name, &token, ttl).await.expect("acquire"));
    }
    assert!(
        theirs
            .try_acquire("product:9", &token, ttl)
            .await
            .expect("acquire")
    );
    // A key under the prefix that is not a lock.
    let queue = RedisQueue::new(&connection).await.expect("queue");
    queue.enqueue(job(1)).await.expect("enqueue");

    let prefix = connection.config().prefix.clone();
    assert_eq!(
        inspect::lock_keys(&connection).await.expect("locks"),
        [
            format!("{prefix}lock:product:1"),
            format!("{prefix}lock:product:2")
        ]
    );
    assert!(lock.release("product:1", &token).await.expect("release"));
    assert_eq!(
        inspect::lock_keys(&connection).await.expect("locks"),
        [format!("{prefix}lock:product:2")]
    );
    queue.close().await;
    neighbour.close().await;
    connection.close().await;
}
