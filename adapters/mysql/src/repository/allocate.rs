//! The in-memory decision of a multi-row batch: given what the batch's transaction read
//! under its row locks, which draft gets what, in arrival order.
//!
//! Pure: no I/O, no clock, no randomness, so it can be checked against a sequential model
//! with proptest (below). The batch path (`batch.rs`) feeds it the locked product rows,
//! the locked users with their event counters and the orders that already held the
//! drafts' keys, and then writes exactly what it decided. The general path's per-draft
//! check ([`decide`]) is the same function, so the two paths cannot disagree on
//! which product decides a refusal.

use std::collections::{BTreeMap, HashMap};

use order_core::domain::OrderDraft;
use order_core::ports::PlaceOutcome;
use order_core::{IdempotencyKey, Money, Order, ProductId, UserId};

/// A product row locked by `place`: its price and the stock still free in the
/// transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LockedProduct {
    pub(super) price: Money,
    pub(super) stock: u64,
}

/// What the batch does with one draft.
// `Done` holds a whole PlaceOutcome, usually one of its small variants; a verdict lives
// for one batch, one per draft, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Place it at these unit prices (one per line, in the draft's order), logging its
    /// `order.created` event under this seq of its user.
    Place {
        /// Unit prices, one per line.
        prices: Vec<Money>,
        /// The user's event seq for this order.
        seq: u64,
    },
    /// Its (user, key) was claimed by draft `first`, placed earlier in this batch: a
    /// replay of that order when `same_lines`, else `KeyReused`. Only the id is missing,
    /// and the batch learns it once the orders are inserted.
    Repeat {
        /// The index of the draft that claimed the key.
        first: usize,
        /// Whether the lines are the same as `first`'s.
        same_lines: bool,
    },
    /// Decided without writing anything: this is its outcome.
    Done(PlaceOutcome),
}

/// Everything a batch decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Allocation {
    /// One verdict per draft, in the drafts' order.
    pub(super) verdicts: Vec<Verdict>,
    /// Units taken per product (ascending id; only products something was taken from).
    pub(super) taken: BTreeMap<ProductId, u64>,
    /// Each user's event counter after the batch (ascending id; only users who got an
    /// order).
    pub(super) seqs: BTreeMap<UserId, u64>,
}

/// The outcome for a draft whose (user, key) already names `existing`: `Replayed` only
/// when the lines are the same, compared line by line — equal fingerprints alone prove
/// nothing.
pub(super) fn replay(existing: Order, draft: &OrderDraft) -> PlaceOutcome {
    if draft.same_lines_as(&existing) {
        PlaceOutcome::Replayed(existing)
    } else {
        PlaceOutcome::KeyReused {
            existing: existing.id(),
        }
    }
}

/// What to do with one draft, given the locked products.
// A refusal is one of PlaceOutcome's small variants, but the type is the whole enum; a
// Decision lives on the stack for one draft, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// Place it at these unit prices (one per line, in the draft's order).
    Place(Vec<Money>),
    /// Do not: this is its outcome.
    Refuse(PlaceOutcome),
}

/// Checks the draft's products in ascending id order (the draft keeps them so) against
/// `products`; the first one that is missing or short decides, like the memory adapter,
/// then the total.
pub(super) fn decide(
    draft: &OrderDraft,
    products: &BTreeMap<ProductId, LockedProduct>,
) -> Decision {
    let mut prices = Vec::with_capacity(draft.items().len());
    for (product, quantity) in draft.items() {
        let Some(p) = products.get(product) else {
            return Decision::Refuse(PlaceOutcome::UnknownProduct(*product));
        };
        if u64::from(quantity.get()) > p.stock {
            return Decision::Refuse(PlaceOutcome::InsufficientStock {
                product: *product,
                requested: quantity.get(),
                available: p.stock,
            });
        }
        prices.push(p.price);
    }
    if draft.total_at(&prices).is_err() {
        return Decision::Refuse(PlaceOutcome::TotalTooLarge);
    }
    Decision::Place(prices)
}

/// Decides every draft in arrival order, as placing them one after the other would:
///
/// 1. a (user, key) in `existing` (orders that held the key before the batch) → replay
///    or `KeyReused`;
/// 2. a user not in `users` (the locked user rows, with their event counters) →
///    `UnknownUser` (an order in `existing` proves its user exists, so the order of 1
///    and 2 does not change an outcome: `users` need only hold the open drafts' users);
/// 3. a (user, key) claimed by a draft placed earlier in the batch → [`Verdict::Repeat`];
/// 4. the products, ascending: missing → `UnknownProduct`, short of what is left after
///    the earlier drafts → `InsufficientStock` with that count; then the total →
///    `TotalTooLarge`;
/// 5. else placed: its stock is taken, its key claimed, and it gets its user's next seq.
///
/// A refused draft takes nothing and claims no key, so a later draft with the same key
/// may still be placed.
pub(super) fn allocate(
    drafts: &[&OrderDraft],
    existing: &HashMap<(UserId, IdempotencyKey), Order>,
    products: &BTreeMap<ProductId, LockedProduct>,
    users: &BTreeMap<UserId, u64>,
) -> Allocation {
    let mut free = products.clone();
    let mut seqs: BTreeMap<UserId, u64> = BTreeMap::new();
    let mut taken: BTreeMap<ProductId, u64> = BTreeMap::new();
    let mut claimed: HashMap<(UserId, &IdempotencyKey), usize> = HashMap::new();
    let mut verdicts = Vec::with_capacity(drafts.len());
    for (i, draft) in drafts.iter().enumerate() {
        let user = draft.user();
        // An order holding the key proves the user exists (users are never deleted), so
        // this comes first: the batch locks only the users of drafts still open.
        if let Some(order) = existing.get(&(user, draft.idempotency_key().clone())) {
            verdicts.push(Verdict::Done(replay(order.clone(), draft)));
            continue;
        }
        let Some(&counter) = users.get(&user) else {
            verdicts.push(Verdict::Done(PlaceOutcome::UnknownUser(user)));
            continue;
        };
        if let Some(&first) = claimed.get(&(user, draft.idempotency_key())) {
            // Orders are built from their draft's lines, so comparing the drafts is
            // comparing the lines `same_lines_as` would compare.
            verdicts.push(Verdict::Repeat {
                first,
                same_lines: drafts[first].items() == draft.items(),
            });
            continue;
        }
        match decide(draft, &free) {
            Decision::Refuse(refused) => verdicts.push(Verdict::Done(refused)),
            Decision::Place(prices) => {
                for (product, quantity) in draft.items() {
                    let units = u64::from(quantity.get());
                    if let Some(p) = free.get_mut(product) {
                        p.stock -= units;
                    }
                    *taken.entry(*product).or_default() += units;
                }
                let seq = seqs.entry(user).or_insert(counter);
                *seq += 1;
                claimed.insert((user, draft.idempotency_key()), i);
                verdicts.push(Verdict::Place { prices, seq: *seq });
            }
        }
    }
    Allocation {
        verdicts,
        taken,
        seqs,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use order_core::domain::{OrderDraft, OrderId};
    use order_core::ports::PlaceOutcome;
    use order_core::{IdempotencyKey, Money, Order, ProductId, Quantity, Timestamp, UserId};
    use proptest::prelude::*;

    use super::{LockedProduct, Verdict, allocate};

    fn user(n: u64) -> UserId {
        UserId::new(n).expect("user id")
    }

    fn product(n: u64) -> ProductId {
        ProductId::new(n).expect("product id")
    }

    fn draft(u: u64, key: &str, items: &[(u64, u32)]) -> OrderDraft {
        OrderDraft::new(
            user(u),
            items
                .iter()
                .map(|(p, q)| (product(*p), Quantity::new(i64::from(*q)).expect("qty"))),
            IdempotencyKey::new(key).expect("key"),
        )
        .expect("draft")
    }

    fn cents(c: u64) -> Money {
        Money::from_cents(c).expect("money")
    }

    /// What one draft got, with orders named by where they came from (an order placed
    /// earlier in the batch has no id yet): the shape both the allocation and the model
    /// are reduced to before they are compared.
    #[allow(clippy::large_enum_variant)] // test values, a few hundred per case
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Got {
        Placed { prices: Vec<Money>, seq: u64 },
        ReplayOfBatch(usize),
        ReusedOfBatch(usize),
        Other(PlaceOutcome),
    }

    fn reduce(verdict: &Verdict) -> Got {
        match verdict {
            Verdict::Place { prices, seq } => Got::Placed {
                prices: prices.clone(),
                seq: *seq,
            },
            Verdict::Repeat {
                first,
                same_lines: true,
            } => Got::ReplayOfBatch(*first),
            Verdict::Repeat {
                first,
                same_lines: false,
            } => Got::ReusedOfBatch(*first),
            Verdict::Done(outcome) => Got::Other(outcome.clone()),
        }
    }

    /// Where a key's order lives in the model's store.
    #[derive(Debug, Clone)]
    enum Holder {
        Before(Order),
        Batch(usize, OrderDraft),
    }

    /// The sequential model: each draft is its own transaction against a mutable store
    /// (stock, keys, counters), written as plainly as possible: no batching at all.
    fn model(
        drafts: &[OrderDraft],
        existing: &HashMap<(UserId, IdempotencyKey), Order>,
        products: &BTreeMap<ProductId, LockedProduct>,
        users: &BTreeMap<UserId, u64>,
    ) -> (Vec<Got>, BTreeMap<ProductId, u64>, BTreeMap<UserId, u64>) {
        let mut stock: BTreeMap<ProductId, u64> =
            products.iter().map(|(id, p)| (*id, p.stock)).collect();
        let mut counters = users.clone();
        let mut keys: HashMap<(UserId, IdempotencyKey), Holder> = existing
            .iter()
            .map(|(k, o)| (k.clone(), Holder::Before(o.clone())))
            .collect();
        let mut got = Vec::new();
        for (i, d) in drafts.iter().enumerate() {
            let key = (d.user(), d.idempotency_key().clone());
            if !counters.contains_key(&d.user()) {
                got.push(Got::Other(PlaceOutcome::UnknownUser(d.user())));
                continue;
            }
            match keys.get(&key) {
                Some(Holder::Before(order)) => {
                    got.push(Got::Other(if d.same_lines_as(order) {
                        PlaceOutcome::Replayed(order.clone())
                    } else {
                        PlaceOutcome::KeyReused {
                            existing: order.id(),
                        }
                    }));
                    continue;
                }
                Some(Holder::Batch(first, first_draft)) => {
                    got.push(if first_draft.items() == d.items() {
                        Got::ReplayOfBatch(*first)
                    } else {
                        Got::ReusedOfBatch(*first)
                    });
                    continue;
                }
                None => {}
            }
            let mut refusal = None;
            for (p, q) in d.items() {
                match stock.get(p) {
                    None => {
                        refusal = Some(PlaceOutcome::UnknownProduct(*p));
                        break;
                    }
                    Some(&left) if left < u64::from(q.get()) => {
                        refusal = Some(PlaceOutcome::InsufficientStock {
                            product: *p,
                            requested: q.get(),
                            available: left,
                        });
                        break;
                    }
                    Some(_) => {}
                }
            }
            if let Some(refusal) = refusal {
                got.push(Got::Other(refusal));
                continue;
            }
            let prices: Vec<Money> = d.items().iter().map(|(p, _)| products[p].price).collect();
            let mut total = Some(Money::ZERO);
            for ((_, q), price) in d.items().iter().zip(&prices) {
                total = total.and_then(|t| {
                    price
                        .checked_mul(q.get())
                        .ok()
                        .and_then(|line| t.checked_add(line).ok())
                });
            }
            if total.is_none() {
                got.push(Got::Other(PlaceOutcome::TotalTooLarge));
                continue;
            }
            for (p, q) in d.items() {
                *stock.get_mut(p).expect("checked above") -= u64::from(q.get());
            }
            let counter = counters.get_mut(&d.user()).expect("checked above");
            *counter += 1;
            got.push(Got::Placed {
                prices,
                seq: *counter,
            });
            keys.insert(key, Holder::Batch(i, d.clone()));
        }
        (got, stock, counters)
    }

    /// A world of a few products (some at the highest price, so that large drafts
    /// overflow the total), a few users (the last one unknown), keys from a small set
    /// (so that they repeat), and orders already holding some keys.
    #[derive(Debug, Clone)]
    struct World {
        products: BTreeMap<ProductId, LockedProduct>,
        users: BTreeMap<UserId, u64>,
        existing: HashMap<(UserId, IdempotencyKey), Order>,
        drafts: Vec<OrderDraft>,
    }

    const PRODUCTS: u64 = 12;
    const USERS: u64 = 4;
    const KEYS: [&str; 3] = ["a", "b", "c"];

    fn world() -> impl Strategy<Value = World> {
        let stock = prop_oneof![0_u64..6, 6_u64..30, Just(10_000_u64), Just(200_000_u64)];
        let price = prop_oneof![
            (0_u64..1_000).prop_map(cents),
            Just(cents(9_999_999_999)), // 99 999 999.99, the column's largest
        ];
        // Product ids 1..=PRODUCTS exist unless dropped; PRODUCTS + 1 never does.
        let products = proptest::collection::vec((stock, price, proptest::bool::weighted(0.9)), 12)
            .prop_map(|rows| {
                rows.into_iter()
                    .enumerate()
                    .filter(|(_, (_, _, exists))| *exists)
                    .map(|(i, (stock, price, _))| {
                        (product(i as u64 + 1), LockedProduct { price, stock })
                    })
                    .collect::<BTreeMap<_, _>>()
            });
        let users = proptest::collection::vec(0_u64..5, USERS as usize - 1).prop_map(|seqs| {
            seqs.into_iter()
                .enumerate()
                .map(|(i, s)| (user(i as u64 + 1), s))
                .collect::<BTreeMap<_, _>>()
        });
        let quantity = prop_oneof![4 => 1_u32..4, 1 => 4_u32..40, 1 => Just(10_000_u32)];
        let items = proptest::collection::vec((1..=PRODUCTS + 1, quantity), 1..14);
        let one = (1..=USERS, 0..KEYS.len(), items).prop_map(|(u, k, items)| {
            // Merging may push one product past 10 000: keep the first line per product.
            let mut seen = std::collections::BTreeSet::new();
            let items: Vec<(u64, u32)> =
                items.into_iter().filter(|(p, _)| seen.insert(*p)).collect();
            draft(u, KEYS[k], &items)
        });
        let drafts = proptest::collection::vec(one.clone(), 1..40);
        let existing = proptest::collection::vec(one, 0..4);
        (products, users, existing, drafts).prop_map(|(products, users, before, drafts)| {
            let mut existing = HashMap::new();
            for (n, d) in before.into_iter().enumerate() {
                if !users.contains_key(&d.user()) {
                    continue;
                }
                let prices: Vec<Money> = d.items().iter().map(|_| cents(100)).collect();
                let order = Order::place(
                    OrderId::new(10_000 + n as u64).expect("id"),
                    &d,
                    &prices,
                    Timestamp::from_millis(1),
                )
                .expect("order");
                existing
                    .entry((d.user(), d.idempotency_key().clone()))
                    .or_insert(order);
            }
            World {
                products,
                users,
                existing,
                drafts,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The batch's one-pass allocation gives every draft what placing the drafts one
        /// after the other would, takes exactly the units the placed drafts hold, and
        /// hands each user consecutive seqs.
        #[test]
        fn allocation_matches_placing_the_drafts_one_after_the_other(w in world()) {
            let refs: Vec<&OrderDraft> = w.drafts.iter().collect();
            let allocation = allocate(&refs, &w.existing, &w.products, &w.users);
            let (expected, stock_after, counters_after) =
                model(&w.drafts, &w.existing, &w.products, &w.users);
            let got: Vec<Got> = allocation.verdicts.iter().map(reduce).collect();
            prop_assert_eq!(&got, &expected);
            for (id, p) in &w.products {
                let taken = allocation.taken.get(id).copied().unwrap_or(0);
                prop_assert_eq!(p.stock - taken, stock_after[id], "stock of {}", id);
            }
            prop_assert!(allocation.taken.values().all(|t| *t > 0));
            for (u, before) in &w.users {
                let after = allocation.seqs.get(u).copied().unwrap_or(*before);
                prop_assert_eq!(after, counters_after[u], "counter of {}", u);
            }
        }
    }

    #[test]
    fn a_draft_that_no_longer_fits_sees_what_the_earlier_ones_left() {
        let products = BTreeMap::from([(
            product(1),
            LockedProduct {
                price: cents(500),
                stock: 5,
            },
        )]);
        let users = BTreeMap::from([(user(1), 0), (user(2), 7)]);
        let drafts = [
            draft(1, "a", &[(1, 3)]),
            draft(2, "b", &[(1, 3)]),
            draft(2, "c", &[(1, 2)]),
        ];
        let refs: Vec<&OrderDraft> = drafts.iter().collect();
        let a = allocate(&refs, &HashMap::new(), &products, &users);
        assert_eq!(
            a.verdicts[1],
            Verdict::Done(PlaceOutcome::InsufficientStock {
                product: product(1),
                requested: 3,
                available: 2
            })
        );
        assert_eq!(
            a.verdicts[2],
            Verdict::Place {
                prices: vec![cents(500)],
                seq: 8
            },
            "user 2's first order this batch gets the seq after its counter"
        );
        assert_eq!(a.taken, BTreeMap::from([(product(1), 5)]));
        assert_eq!(a.seqs, BTreeMap::from([(user(1), 1), (user(2), 8)]));
    }
}
