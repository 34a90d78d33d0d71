//! Unit tests of [`MemoryOrderRepository`](super::MemoryOrderRepository).

use std::sync::Arc;

use order_core::OrderStatus;
use order_core::Quantity;
use order_core::domain::{FailureReason, Lease, LeaseToken};

use super::*;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}
fn money(s: &str) -> Money {
    Money::parse(s).unwrap()
}
fn draft(user: UserId, key: &str, items: &[(ProductId, i64)]) -> OrderDraft {
    OrderDraft::new(
        user,
        items.iter().map(|(p, q)| (*p, Quantity::new(*q).unwrap())),
        IdempotencyKey::new(key).unwrap(),
    )
    .unwrap()
}
fn lease(token: u64, until: u64) -> Lease {
    Lease {
        token: LeaseToken::from_raw(token),
        until: at(until),
    }
}

struct Fixture {
    repo: MemoryOrderRepository,
    alice: UserId,
    bob: UserId,
    mouse: ProductId,
    keyboard: ProductId,
    headphones: ProductId,
}

fn fixture() -> Fixture {
    let repo = MemoryOrderRepository::new();
    let alice = repo.add_user();
    let bob = repo.add_user();
    let mouse = repo.add_product("Wireless Mouse", money("29.99"), 200);
    let keyboard = repo.add_product("Mechanical Keyboard", money("149.99"), 75);
    let headphones = repo.add_product("Limited Edition Headphones", money("299.99"), 1);
    Fixture {
        repo,
        alice,
        bob,
        mouse,
        keyboard,
        headphones,
    }
}

async fn place_one(repo: &MemoryOrderRepository, d: OrderDraft, now: u64) -> PlaceOutcome {
    let mut out = repo.place(&[d], at(now)).await.unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0)
}

async fn placed(repo: &MemoryOrderRepository, d: OrderDraft, now: u64) -> Order {
    match place_one(repo, d, now).await {
        PlaceOutcome::Placed(o, _) => o,
        other => panic!("expected Placed, got {other:?}"),
    }
}

#[test]
fn ids_are_handed_out_from_one_in_call_order() {
    let f = fixture();
    assert_eq!((f.alice.get(), f.bob.get()), (1, 2));
    assert_eq!(
        (f.mouse.get(), f.keyboard.get(), f.headphones.get()),
        (1, 2, 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_orders_for_the_last_unit_never_oversell() {
    let f = fixture();
    let repo = Arc::new(f.repo);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let repo = repo.clone();
            let d = draft(f.alice, &format!("k{i}"), &[(f.headphones, 1)]);
            tokio::spawn(async move { repo.place(&[d], at(1)).await.unwrap() })
        })
        .collect();
    let mut placed = 0;
    for t in tasks {
        if matches!(t.await.unwrap()[0], PlaceOutcome::Placed(..)) {
            placed += 1;
        }
    }
    assert_eq!(placed, 1);
    assert_eq!(repo.stock(f.headphones), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_cancels_return_the_stock_exactly_once() {
    let f = fixture();
    let order = placed(&f.repo, draft(f.alice, "k", &[(f.mouse, 5)]), 1).await;
    assert_eq!(f.repo.stock(f.mouse), Some(195));
    let repo = Arc::new(f.repo);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let repo = repo.clone();
            let id = order.id();
            tokio::spawn(async move { repo.transition(id, StatusChange::Cancel, at(2)).await })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            TransitionOutcome::Applied(o, _) => {
                applied += 1;
                assert_eq!(o.cancelled_at(), Some(at(2)));
            }
            TransitionOutcome::LostRace(o) => assert_eq!(o.status(), OrderStatus::Cancelled),
            TransitionOutcome::NotFound => panic!("order vanished"),
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(repo.stock(f.mouse), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_racing_a_worker_start_has_exactly_one_winner() {
    for round in 0..20 {
        let f = fixture();
        let order = placed(&f.repo, draft(f.alice, "k", &[(f.mouse, 5)]), 1).await;
        let repo = Arc::new(f.repo);
        let id = order.id();
        let (r1, r2) = (repo.clone(), repo.clone());
        let cancel =
            tokio::spawn(async move { r1.transition(id, StatusChange::Cancel, at(2)).await });
        let start = tokio::spawn(async move {
            r2.transition(
                id,
                StatusChange::Start {
                    lease: lease(1, 100),
                },
                at(2),
            )
            .await
        });
        let c = cancel.await.unwrap().unwrap();
        let s = start.await.unwrap().unwrap();
        let final_status = repo.get(id).await.unwrap().unwrap().status();
        match (c, s) {
            (TransitionOutcome::Applied(..), TransitionOutcome::LostRace(o)) => {
                assert_eq!(o.status(), OrderStatus::Cancelled, "round {round}");
                assert_eq!(final_status, OrderStatus::Cancelled);
                assert_eq!(repo.stock(f.mouse), Some(200));
            }
            (TransitionOutcome::LostRace(o), TransitionOutcome::Applied(..)) => {
                assert_eq!(o.status(), OrderStatus::Processing, "round {round}");
                assert_eq!(final_status, OrderStatus::Processing);
                assert_eq!(repo.stock(f.mouse), Some(195));
            }
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        }
    }
}

#[tokio::test]
async fn stock_is_conserved_across_every_kind_of_transition() {
    // initial + restocks = current + Σ quantities of orders holding stock.
    let f = fixture();
    let mut orders = Vec::new();
    for i in 0..6 {
        orders.push(
            placed(
                &f.repo,
                draft(f.alice, &format!("{i}"), &[(f.mouse, i + 1)]),
                1,
            )
            .await,
        );
    }
    f.repo.restock(f.mouse, 10).unwrap();
    let ids: Vec<_> = orders.iter().map(Order::id).collect();
    f.repo
        .transition(ids[0], StatusChange::Cancel, at(2))
        .await
        .unwrap();
    for (n, id) in ids[1..4].iter().enumerate() {
        let token = n as u64 + 1;
        f.repo
            .transition(
                *id,
                StatusChange::Start {
                    lease: lease(token, 9),
                },
                at(2),
            )
            .await
            .unwrap();
    }
    let t = |n: u64| LeaseToken::from_raw(n);
    f.repo
        .transition(ids[1], StatusChange::Pay { lease: t(1) }, at(3))
        .await
        .unwrap();
    let fail = StatusChange::Fail {
        lease: t(2),
        reason: FailureReason::new("declined"),
    };
    f.repo.transition(ids[2], fail, at(3)).await.unwrap();
    let held: u64 = f
        .repo
        .orders()
        .iter()
        .filter(|o| o.status().holds_stock())
        .flat_map(|o| o.lines().iter().map(|l| u64::from(l.quantity.get())))
        .sum();
    assert_eq!(200 + 10, f.repo.stock(f.mouse).unwrap() + held);
}
