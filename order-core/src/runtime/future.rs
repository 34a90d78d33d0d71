//! Executor-free future combinators: racing two futures, joining two, and bounding one by
//! a timeout on the injected clock. They exist so the core needs no async runtime crate.
//! They are the service's own plumbing, not part of the API: an embedder has its
//! runtime's versions.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
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

/// Polls both futures until both complete and returns both outputs: the two run side by
/// side on the caller's task (neither waits for the other to start).
pub(crate) async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let mut a_out = None;
    let mut b_out = None;
    poll_fn(|cx| {
        if a_out.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            a_out = Some(v);
        }
        if b_out.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            b_out = Some(v);
        }
        if a_out.is_some()
            && b_out.is_some()
            && let (Some(a), Some(b)) = (a_out.take(), b_out.take())
        {
            return Poll::Ready((a, b));
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

/// A future of `()` that stays complete once it has completed: it may be polled again
/// afterwards (it answers `Ready` at once), and asked whether it has completed without
/// waiting ([`Fused::completed_now`]).
pub(crate) struct Fused<F> {
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future<Output = ()>> Fused<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self {
            inner: Some(Box::pin(inner)),
        }
    }

    /// Whether it has completed: polls it once if it has not yet, without registering
    /// for a wake-up (the next real poll registers its own waker).
    pub(crate) fn completed_now(&mut self) -> bool {
        let Some(inner) = self.inner.as_mut() else {
            return true;
        };
        if inner
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready()
        {
            self.inner = None;
            return true;
        }
        false
    }
}

impl<F: Future<Output = ()>> Future for Fused<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(());
        };
        let polled = inner.as_mut().poll(cx);
        if polled.is_ready() {
            self.inner = None;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::{Fused, join};

    /// A fused future answers `Ready` again after it completed, and tells whether it
    /// has completed without waiting.
    #[tokio::test]
    async fn a_fused_future_stays_complete_and_can_be_asked_without_waiting() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut fused = Fused::new(async {
            let _ = rx.await;
        });
        assert!(!fused.completed_now());
        let _ = tx.send(());
        assert!(fused.completed_now());
        (&mut fused).await;
        (&mut fused).await;
        assert!(fused.completed_now());
    }

    /// `a` can finish only after `b` has run: awaiting them one after the other would
    /// never end, so both outputs coming back shows they ran side by side.
    #[tokio::test]
    async fn join_runs_both_side_by_side_and_returns_both_outputs() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let a = async { rx.await.unwrap_or(0) };
        let b = async {
            let _ = tx.send(7);
            "b"
        };
        assert_eq!(join(a, b).await, (7, "b"));
    }
}
