//! Executor-free future combinators: racing two futures and bounding one by a timeout on
//! the injected clock. They exist so the core needs no async runtime crate. They are the
//! service's own plumbing, not part of the API: an embedder has its runtime's versions.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use crate::ports::Clock;

/// Which of two raced futures finished first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Either<A, B> {
    /// The first future finished first (or both were ready and the first is preferred).
    Left(A),
    /// The second future finished first.
    Right(B),
}

/// Polls both futures until one completes; the other is dropped. `a` is polled first, so
/// it wins ties.
pub(crate) async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
}

/// Runs `f` for at most `limit` on `clock`; `None` when the time ran out first.
pub(crate) async fn with_timeout<F: Future>(
    clock: &dyn Clock,
    limit: Duration,
    f: F,
) -> Option<F::Output> {
    match race(f, clock.sleep(limit)).await {
        Either::Left(v) => Some(v),
        Either::Right(()) => None,
    }
}
