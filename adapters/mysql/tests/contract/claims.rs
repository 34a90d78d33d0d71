//! The reconciler's claims (`claim_stranded`) and the holder's lease release, against
//! MySQL: disjoint claims under concurrency, one hand-out per `stale_after`, live
//! leases and terminal orders never claimed, and `Release` exactly as `Order::apply`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use order_core::domain::{FailureReason, Lease, LeaseToken, StatusChange};
use order_core::ports::{OrderRepository, PlaceOutcome, StrandedQuery, TransitionOutcome};
use order_core::{Order, OrderId, ProductId, UserId};
use order_mysql::MySqlOrderRepository;
use sqlx::MySqlPool;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use tokio::task::JoinSet;

use crate::support::{at, draft, money};

const STALE: Duration = Duration::from_millis(1_000);

fn query(limit: u32) -> StrandedQuery {
    StrandedQuery {
        stale_after: STALE,
        limit,
    }
}

async fn setup(repo: &MySqlOrderRepository) -> (UserId, ProductId) {
    let user = repo
        .add_user("u", "u@example.test", "h")
        .await
        .expect("user");
    let p = repo
        .add_product("P", money("1.00"), 100_000)
        .await
        .expect("p");
    (user, p)
}

async fn place(
    repo: &MySqlOrderRepository,
    user: UserId,
    p: ProductId,
    key: &str,
    ms: u64,
) -> Order {
    let out = repo
        .place(&[draft(user, key, &[(p, 1)])], at(ms))
        .await
        .expect("place");
    match out.into_iter().next() {
        Some(PlaceOutcome::Placed(o, _)) => o,
        other => panic!("{other:?}"),
    }
}

async fn apply(repo: &MySqlOrderRepository, id: OrderId, change: StatusChange, ms: u64) -> Order {
    match repo
        .transition(id, change, at(ms))
        .await
        .expect("transition")
    {
        TransitionOutcome::Applied(o, _) => o,
        other => panic!("{other:?}"),
    }
}

fn lease(token: u64, until: u64) -> Lease {
    Lease {
        token: LeaseToken::from_raw(token),
        until: at(until),
    }
}

/// The orders of every kind the claim must tell apart. Returns (stranded, not stranded).
async fn seed_mix(repo: &MySqlOrderRepository) -> (BTreeSet<OrderId>, BTreeSet<OrderId>) {
    let (user, p) = setup(repo).await;
    let mut stranded = BTreeSet::new();
    let mut not = BTreeSet::new();
    for i in 0..80 {
        // Pending, placed at 0..80: stranded at 2 000.
        stranded.insert(place(repo, user, p, &format!("pending-{i}"), i).await.id());
    }
    for i in 0..20 {
        // Processing with a lease that expired at 500: stranded.
        let o = place(repo, user, p, &format!("expired-{i}"), 100 + i).await;
        apply(
            repo,
            o.id(),
            StatusChange::Start {
                lease: lease(1_000 + i, 500),
            },
            200,
        )
        .await;
        stranded.insert(o.id());
    }
    for i in 0..10 {
        // Processing with a live lease: never.
        let o = place(repo, user, p, &format!("live-{i}"), 100 + i).await;
        apply(
            repo,
            o.id(),
            StatusChange::Start {
                lease: lease(2_000 + i, 1_000_000),
            },
            200,
        )
        .await;
        not.insert(o.id());
    }
    for i in 0..5 {
        // Terminal: never.
        let paid = place(repo, user, p, &format!("paid-{i}"), i).await;
        let l = lease(3_000 + i, 500);
        apply(repo, paid.id(), StatusChange::Start { lease: l }, 10).await;
        apply(repo, paid.id(), StatusChange::Pay { lease: l.token }, 20).await;
        let failed = place(repo, user, p, &format!("failed-{i}"), i).await;
        let l = lease(4_000 + i, 500);
        apply(repo, failed.id(), StatusChange::Start { lease: l }, 10).await;
        let fail = StatusChange::Fail {
            lease: l.token,
            reason: FailureReason::new("declined"),
        };
        apply(repo, failed.id(), fail, 20).await;
        let cancelled = place(repo, user, p, &format!("cancelled-{i}"), i).await;
        apply(repo, cancelled.id(), StatusChange::Cancel, 20).await;
        not.extend([paid.id(), failed.id(), cancelled.id()]);
    }
    for i in 0..10 {
        // Pending but placed recently (1 500 > 2 000 - 1 000): not yet.
        not.insert(
            place(repo, user, p, &format!("recent-{i}"), 1_500 + i)
                .await
                .id(),
        );
    }
    (stranded, not)
}

/// Four reconcilers claim at once, 5 at a time, until each comes back empty: every
/// order went to exactly one of them, and together they claimed exactly the stranded
/// ones.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn concurrent_claims_get_disjoint_sets_covering_every_stranded_order(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = MySqlPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .expect("pool");
    let repo = Arc::new(MySqlOrderRepository::new(pool.clone()));
    let (stranded, _) = seed_mix(&repo).await;
    let mut tasks = JoinSet::new();
    for _ in 0..4 {
        let repo = repo.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = repo
                    .claim_stranded(query(5), at(2_000))
                    .await
                    .expect("claim");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got);
            }
        });
    }
    let claims = tasks.join_all().await;
    let all: Vec<OrderId> = claims.iter().flatten().copied().collect();
    let union: BTreeSet<OrderId> = all.iter().copied().collect();
    assert_eq!(all.len(), union.len(), "an order went to two reconcilers");
    assert_eq!(union, stranded);
    assert!(
        claims.iter().filter(|c| !c.is_empty()).count() >= 2,
        "the claims were meant to overlap: {:?}",
        claims.iter().map(Vec::len).collect::<Vec<_>>()
    );
    pool.close().await;
}

/// A claimed order is handed out again only once `stale_after` has passed since the
/// claim; claims come oldest hand-out first and change neither status, lease nor
/// `updated_at`.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_claimed_order_is_not_claimed_again_before_stale_after(pool: MySqlPool) {
    let repo = MySqlOrderRepository::new(pool);
    let (user, p) = setup(&repo).await;
    let a = place(&repo, user, p, "a", 0).await;
    let b = place(&repo, user, p, "b", 10).await;
    let c = place(&repo, user, p, "c", 20).await;
    let started = apply(
        &repo,
        c.id(),
        StatusChange::Start {
            lease: lease(9, 30),
        },
        25,
    )
    .await;

    // Oldest hand-out first, bounded by the limit.
    assert_eq!(
        repo.claim_stranded(query(2), at(1_010))
            .await
            .expect("claim"),
        [a.id(), b.id()]
    );
    // c's hand-out (20) is not stale at 1 010.
    assert_eq!(
        repo.claim_stranded(query(10), at(1_010))
            .await
            .expect("claim"),
        []
    );
    assert_eq!(
        repo.claim_stranded(query(10), at(1_020))
            .await
            .expect("claim"),
        [c.id()]
    );
    // a and b were handed out at 1 010, c at 1 020.
    assert_eq!(
        repo.claim_stranded(query(10), at(2_009))
            .await
            .expect("claim"),
        []
    );
    assert_eq!(
        repo.claim_stranded(query(10), at(2_010))
            .await
            .expect("claim"),
        [a.id(), b.id()]
    );
    assert_eq!(
        repo.claim_stranded(query(10), at(2_020))
            .await
            .expect("claim"),
        [c.id()]
    );
    assert_eq!(
        repo.claim_stranded(query(0), at(9_000))
            .await
            .expect("claim"),
        []
    );

    assert_eq!(repo.get(a.id()).await.expect("get"), Some(a));
    assert_eq!(repo.get(c.id()).await.expect("get"), Some(started));
}

/// A PROCESSING order is claimed only once its lease has expired (at or before `now`),
/// however old its hand-out; terminal orders never are.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn live_leases_and_terminal_orders_are_never_claimed(pool: MySqlPool) {
    let repo = MySqlOrderRepository::new(pool);
    let (stranded, not) = seed_mix(&repo).await;
    let far = StrandedQuery {
        stale_after: Duration::ZERO,
        limit: 10_000,
    };
    let got: BTreeSet<OrderId> = repo
        .claim_stranded(far, at(999_999))
        .await
        .expect("claim")
        .into_iter()
        .collect();
    // Everything open except the live leases (until 1 000 000).
    assert!(got.is_superset(&stranded));
    assert_eq!(
        got.len(),
        stranded.len() + 10,
        "the recent pending ones, no more"
    );
    for id in &not {
        let order = repo.get(*id).await.expect("get").expect("order");
        let live = order.lease().is_some_and(|l| l.until > at(999_999));
        assert_eq!(
            got.contains(id),
            !order.status().is_terminal() && !live,
            "{order:?}"
        );
    }
    // At the lease's expiry the live ones go too; terminal orders never.
    let at_expiry: BTreeSet<OrderId> = repo
        .claim_stranded(far, at(1_000_000))
        .await
        .expect("claim")
        .into_iter()
        .collect();
    assert_eq!(
        at_expiry.len(),
        10 + 100 + 10,
        "live leases now expired, plus the rest"
    );
    for id in &at_expiry {
        let order = repo.get(*id).await.expect("get").expect("order");
        assert!(!order.status().is_terminal(), "{order:?}");
    }
}

/// `Release` by the holder expires the lease at once (never lengthens it), keeps the
/// token and the status, exactly as `Order::apply`; a foreign token loses the race and
/// writes nothing; afterwards a take-over with the released token succeeds right away.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn release_expires_the_holders_lease_at_once_and_is_fenced(pool: MySqlPool) {
    let repo = MySqlOrderRepository::new(pool);
    let (user, p) = setup(&repo).await;
    let o = place(&repo, user, p, "k", 0).await;
    let held = apply(
        &repo,
        o.id(),
        StatusChange::Start {
            lease: lease(5, 10_000),
        },
        10,
    )
    .await;

    let foreign = StatusChange::Release {
        lease: LeaseToken::from_raw(6),
    };
    match repo
        .transition(o.id(), foreign, at(20))
        .await
        .expect("release")
    {
        TransitionOutcome::LostRace(current) => assert_eq!(current, held),
        other => panic!("{other:?}"),
    }

    let release = StatusChange::Release {
        lease: LeaseToken::from_raw(5),
    };
    let mut expected = held.clone();
    expected.apply(&release, at(30)).expect("apply");
    let released = apply(&repo, o.id(), release.clone(), 30).await;
    assert_eq!(released, expected);
    assert_eq!(released.lease(), Some(lease(5, 30)));
    assert_eq!(repo.get(o.id()).await.expect("get"), Some(expected.clone()));

    // Releasing an expired lease later keeps its expiry (LEAST), and still applies.
    let mut again = expected.clone();
    again.apply(&release, at(50)).expect("apply");
    assert_eq!(apply(&repo, o.id(), release, 50).await, again);
    assert_eq!(again.lease(), Some(lease(5, 30)));

    let take_over = StatusChange::TakeOver {
        expired: LeaseToken::from_raw(5),
        lease: lease(7, 20_000),
    };
    let taken = apply(&repo, o.id(), take_over, 60).await;
    assert_eq!(taken.lease(), Some(lease(7, 20_000)));
    assert_eq!(taken.attempts(), 2);
}
