//! `Engine::builder()`: every port from one setter or a convenience, an explicit port
//! winning whatever the order of the calls, and one validation with typed errors.

use std::sync::Arc;
use std::time::Duration;

use order_core::app::{BackoffError, ConfigError, CreateOrderRequest, ServiceConfig};
use order_core::domain::Money;
use order_core::ports::QueueTimingsError;
use order_engine::{BuildError, Engine};
use order_memory::{MemoryOrderRepository, QueueConfig};
use order_payment_sim::SimConfig;

fn missing(result: Result<Engine, BuildError>) -> &'static str {
    match result {
        Err(BuildError::MissingPort { port, .. }) => port,
        other => panic!("expected a missing port, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_port_is_a_build_error_naming_it_never_a_panic() {
    assert_eq!(missing(Engine::builder().build().await), "repository");
    assert_eq!(
        missing(Engine::builder().memory().build().await),
        "payment provider"
    );
    let repository = Arc::new(MemoryOrderRepository::new());
    assert_eq!(
        missing(
            Engine::builder()
                .repository(repository)
                .simulated_payments(SimConfig::default())
                .build()
                .await
        ),
        "lock"
    );
    let err = Engine::builder().memory().build().await.unwrap_err();
    assert!(
        err.to_string().contains(".simulated_payments"),
        "the error names the setters that provide the port: {err}"
    );
}

#[tokio::test]
async fn an_explicit_port_wins_over_a_convenience_whatever_the_order() {
    let mine = Arc::new(MemoryOrderRepository::new());
    let user = mine.add_user();
    let product = mine.add_product("p", Money::parse("1.00").unwrap(), 5);
    let engine = Engine::builder()
        .repository(mine.clone())
        .memory()
        .simulated_payments(SimConfig::default())
        .build()
        .await
        .unwrap();
    engine
        .service()
        .create_order(CreateOrderRequest::new(user, [(product, 2)], "k"))
        .await
        .unwrap();
    assert_eq!(
        mine.stock(product),
        Some(3),
        "the order went to my repository"
    );
    assert!(
        engine.memory().unwrap().repository.orders().is_empty(),
        "not to the memory one"
    );
}

#[tokio::test]
async fn build_validates_the_service_with_the_queue_once() {
    let zero_poll = ServiceConfig {
        worker_poll: Duration::ZERO,
        ..ServiceConfig::default()
    };
    let err = Engine::builder()
        .memory()
        .simulated_payments(SimConfig::default())
        .config(zero_poll)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, BuildError::Config(ConfigError::Zero("worker_poll"))),
        "{err:?}"
    );
    // A queue whose retries end inside the lease is refused by the service's rule.
    let short = QueueConfig {
        max_attempts: 3,
        ..QueueConfig::default()
    };
    let err = refused_memory_queue(short).await;
    assert!(
        matches!(
            err,
            BuildError::Config(ConfigError::RetryBudgetTooShort { .. })
        ),
        "{err:?}"
    );
    let mut zero = QueueConfig::default();
    zero.retry_backoff.base = Duration::ZERO;
    let err = refused_memory_queue(zero).await;
    assert!(
        matches!(
            err,
            BuildError::MemoryQueue(QueueTimingsError::Backoff(BackoffError::ZeroBase(
                "retry_backoff"
            )))
        ),
        "{err:?}"
    );
}

/// What `build` says of an embedded engine whose memory queue is configured by `queue`.
async fn refused_memory_queue(queue: QueueConfig) -> BuildError {
    Engine::builder()
        .memory_with(queue)
        .simulated_payments(SimConfig::default())
        .build()
        .await
        .expect_err("the queue settings are refused")
}

#[tokio::test]
async fn the_accounts_beside_our_memory_repository_own_orders_there_and_an_own_repository_has_none()
{
    use order_core::ports::NewAccount;

    let engine = Engine::builder()
        .memory()
        .simulated_payments(SimConfig::default())
        .build()
        .await
        .unwrap();
    let accounts = engine
        .accounts()
        .expect("memory accounts beside the memory repository");
    let account = accounts
        .create_account(NewAccount {
            name: "Dana".into(),
            email: "dana@example.com".into(),
            password_hash: "h".into(),
        })
        .await
        .unwrap();
    let repository = &engine.memory().unwrap().repository;
    let product = repository.add_product("p", Money::parse("1.00").unwrap(), 5);
    let created = engine
        .service()
        .create_order(CreateOrderRequest::new(account.id, [(product, 1)], "k"))
        .await
        .unwrap();
    assert_eq!(
        created.order.user(),
        account.id,
        "the account is a user of the repository"
    );

    let own = Engine::builder()
        .memory()
        .repository(Arc::new(MemoryOrderRepository::new()))
        .simulated_payments(SimConfig::default())
        .build()
        .await
        .unwrap();
    assert!(
        own.accounts().is_none(),
        "no accounts are invented for an embedder's own repository"
    );
}
