//! The state machine against the reference model: random interleavings of create,
//! process (with scripted payment outcomes, including transient errors), cancel,
//! redelivery, stalled workers, lease expiry and late (fenced) completions, across
//! several orders, users and products. After every step `run_commands` checks outcomes,
//! statuses, legal transitions, exact totals, stock against the model, stock
//! conservation and at most one charge per order.

use order_core::testing::model::Command;
use order_core::testing::strategies::scenario;
use proptest::prelude::*;

use crate::support::ManualWorld;

/// Cases per run; each case is a sequence of up to `MAX_STEPS` commands.
const CASES: u32 = 512;
const MAX_STEPS: usize = 60;

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn the_service_on_memory_adapters_follows_the_reference_model(
        (config, commands) in scenario(MAX_STEPS),
        seed in any::<u64>(),
    ) {
        let result = ManualWorld::new(seed).run(&config, &commands);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// The hole a void closes: a worker stalls, its lease is taken over, the new holder
/// never gets an answer from the provider and fails the order; when the stalled worker
/// wakes and charges, the provider must answer with the void's decline, not charge.
#[test]
fn a_stalled_worker_cannot_charge_an_order_failed_for_an_unreachable_provider() {
    use order_core::domain::Money;
    use order_core::testing::model::ModelConfig;
    use order_core::testing::scripted::PaymentStep::{Approve, Transient};

    let config = ModelConfig {
        users: 1,
        products: vec![(Money::parse("5.00").unwrap(), 2)],
    };
    let commands = vec![
        Command::Create {
            user: 0,
            items: vec![(0, 1)],
            key: 0,
        },
        Command::StallAfterStart { order: 0 },
        Command::ExpireLeases,
        Command::Process {
            order: 0,
            payment: vec![Transient, Transient, Transient],
        },
        Command::LateCompletion {
            order: 0,
            payment: Approve,
        },
    ];
    let world = ManualWorld::new(2);
    let report = world.run(&config, &commands).unwrap();
    assert_eq!((report.failed, report.fenced), (1, 1));
    let order = world.adapters.repository.orders()[0].id();
    assert_eq!(
        world.gateway.new_charges(order),
        0,
        "nothing was ever charged"
    );
    assert_eq!(world.gateway.voids(order), 1);
}

/// A hand-written scenario that exercises every fence at least once, so a regression in
/// the model driver itself cannot hide behind lucky generation.
#[test]
fn a_stalled_worker_is_fenced_after_its_lease_is_taken_over() {
    use order_core::domain::Money;
    use order_core::testing::model::ModelConfig;
    use order_core::testing::scripted::PaymentStep;

    let config = ModelConfig {
        users: 2,
        products: vec![(Money::parse("29.99").unwrap(), 3)],
    };
    let commands = vec![
        Command::Create {
            user: 0,
            items: vec![(0, 2)],
            key: 0,
        },
        Command::Create {
            user: 0,
            items: vec![(0, 2)],
            key: 0,
        }, // replay
        Command::Create {
            user: 0,
            items: vec![(0, 1)],
            key: 0,
        }, // key reused
        Command::Create {
            user: 1,
            items: vec![(0, 2)],
            key: 0,
        }, // short: 1 left
        Command::StallAfterStart { order: 0 },
        Command::Process {
            order: 0,
            payment: vec![],
        }, // lease still live
        Command::Cancel { user: 0, order: 0 }, // too late
        Command::ExpireLeases,
        Command::Process {
            order: 0,
            payment: vec![PaymentStep::Transient, PaymentStep::Decline],
        },
        Command::LateCompletion {
            order: 0,
            payment: PaymentStep::Approve,
        }, // fenced
        Command::Create {
            user: 1,
            items: vec![(0, 3)],
            key: 1,
        }, // stock back: 3
        Command::Cancel { user: 1, order: 1 },
        Command::Cancel { user: 1, order: 1 }, // idempotent
        Command::Process {
            order: 1,
            payment: vec![],
        }, // terminal skip
    ];
    let world = ManualWorld::new(1);
    let report = world.run(&config, &commands).unwrap();
    assert_eq!(
        (
            report.placed,
            report.failed,
            report.cancelled,
            report.fenced
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(
        world
            .adapters
            .repository
            .stock(order_core::domain::ProductId::new(1).unwrap()),
        Some(3)
    );
}
