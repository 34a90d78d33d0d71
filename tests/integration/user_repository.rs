//! The contract suite as a user of `order-core` meets it: the embedder example's own
//! repository (`examples/embedder/vec_repository.rs`, written from scratch against the
//! public API, sharing no code with `order-memory`) held to every repository check by
//! one line.

use std::sync::Arc;

use async_trait::async_trait;
use order_core::domain::RestockError;
use order_core::ports::OrderRepository;
use order_core::testing::contract::repository::RepositoryFixture;
use order_core::{Money, ProductId, UserId};

// The example's own file (compiled into this binary through `real::embedder_program`):
// the test suite proves what the example runs.
use crate::real::embedder_program::program::VecRepository;

order_core::repository_contract!(fixture);

async fn fixture() -> VecFixture {
    VecFixture {
        repo: Arc::new(VecRepository::default()),
    }
}

// ---------------------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------------------

struct VecFixture {
    repo: Arc<VecRepository>,
}

#[async_trait]
impl RepositoryFixture for VecFixture {
    fn repository(&self) -> Arc<dyn OrderRepository> {
        self.repo.clone()
    }

    async fn add_user(&self) -> UserId {
        self.repo.add_user()
    }

    async fn add_product(&self, price: Money, stock: u64) -> ProductId {
        self.repo.add_product(price, stock)
    }

    async fn stock(&self, product: ProductId) -> u64 {
        self.repo
            .stock(product)
            .unwrap_or_else(|| panic!("product {product} does not exist"))
    }

    async fn restock(&self, product: ProductId, units: u64) -> Result<(), RestockError> {
        self.repo.restock(product, units)
    }
}
