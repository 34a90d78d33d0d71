//! The embedder example's program (`examples/embedder/program.rs`: their own
//! repository and payment provider, our Redis adapters) run by the test suite against
//! the machine's Redis.

#[path = "../../../examples/embedder/program.rs"]
pub(crate) mod program;

use super::{redis_url, unique_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedders_own_repository_and_provider_run_on_our_redis_adapters() {
    let prefix = unique_prefix("embedder");
    let _cleanup = super::Cleanup::new(&prefix);
    let report = program::run(&redis_url(), &prefix).await.unwrap();
    assert_eq!(report.placed, 20);
    assert_eq!((report.paid, report.failed), (15, 5), "{report:?}");
    assert_eq!(report.approved, 15, "one approved charge per paid order");
}
