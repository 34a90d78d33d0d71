//! Proptest strategies for domain values and for command sequences of the reference
//! model ([`super::model::Command`]).

use proptest::prelude::*;

use super::model::{Command, ModelConfig};
use super::scripted::PaymentStep;
use crate::domain::{IdempotencyKey, Money, Quantity};

/// Any valid amount, from 0.00 to [`Money::max`].
pub fn money() -> impl Strategy<Value = Money> {
    (0..=Money::MAX_CENTS).prop_filter_map("valid cents", |c| Money::from_cents(c).ok())
}

/// A realistic unit price: 0.01 to 9 999.99.
pub fn price() -> impl Strategy<Value = Money> {
    (1..=999_999u64).prop_filter_map("valid cents", |c| Money::from_cents(c).ok())
}

/// Any valid quantity, 1..=10 000.
pub fn quantity() -> impl Strategy<Value = Quantity> {
    (1..=10_000i64).prop_filter_map("valid quantity", |q| Quantity::new(q).ok())
}

/// Any valid idempotency key: 1..=255 visible ASCII characters.
pub fn idempotency_key() -> impl Strategy<Value = IdempotencyKey> {
    proptest::collection::vec(0x21u8..=0x7E, 1..=255).prop_filter_map("valid key", |bytes| {
        String::from_utf8(bytes)
            .ok()
            .and_then(|s| IdempotencyKey::new(s).ok())
    })
}

/// One payment step, mostly definitive.
pub fn payment_step() -> impl Strategy<Value = PaymentStep> {
    prop_oneof![
        5 => Just(PaymentStep::Approve),
        3 => Just(PaymentStep::Decline),
        2 => Just(PaymentStep::Transient),
    ]
}

/// A model configuration: 1..=3 users, 1..=4 products with small stock (so stock runs
/// out and refusals happen).
pub fn model_config() -> impl Strategy<Value = ModelConfig> {
    (
        1usize..=3,
        proptest::collection::vec((price(), 0u64..=12), 1..=4),
    )
        .prop_map(|(users, products)| ModelConfig { users, products })
}

/// A provider script for one `Process`: mostly a few random steps, sometimes an outage
/// long enough to exhaust every attempt (so voids and their races are exercised).
pub fn payment_script() -> impl Strategy<Value = Vec<PaymentStep>> {
    prop_oneof![
        4 => proptest::collection::vec(payment_step(), 0..=4),
        1 => (3usize..=5, payment_step()).prop_map(|(n, last)| {
            let mut steps = vec![PaymentStep::Transient; n];
            steps.push(last);
            steps
        }),
    ]
}

/// One command against a model with `users` users and `products` products.
pub fn command(users: usize, products: usize) -> impl Strategy<Value = Command> {
    let users = users.max(1);
    let products = products.max(1);
    let items = proptest::collection::vec((0..products, 1u32..=4), 1..=4);
    prop_oneof![
        6 => (0..users, items, 0u8..4).prop_map(|(user, items, key)| Command::Create { user, items, key }),
        5 => (any::<usize>(), payment_script())
            .prop_map(|(order, payment)| Command::Process { order, payment }),
        3 => (0..users, any::<usize>()).prop_map(|(user, order)| Command::Cancel { user, order }),
        2 => any::<usize>().prop_map(|order| Command::StallAfterStart { order }),
        2 => Just(Command::ExpireLeases),
        2 => (any::<usize>(), payment_step())
            .prop_map(|(order, payment)| Command::LateCompletion { order, payment }),
    ]
}

/// A configuration and a sequence of up to `max_len` commands for it.
pub fn scenario(max_len: usize) -> impl Strategy<Value = (ModelConfig, Vec<Command>)> {
    model_config().prop_flat_map(move |cfg| {
        let cmds = proptest::collection::vec(command(cfg.users, cfg.products.len()), 1..=max_len);
        (Just(cfg), cmds)
    })
}
