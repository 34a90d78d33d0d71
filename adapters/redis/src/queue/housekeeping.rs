//! Housekeeping of the consumer group: deleting idle consumer names (see the module
//! docs of [`queue`](super)).

use std::time::Duration;

use fred::prelude::*;
use tokio::time::Instant;

use super::{Inner, int};
use crate::connection::{is_nogroup, millis_u64};

/// Longest pause between two housekeeping runs of one queue.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

impl Inner {
    /// Deletes idle consumers without pending entries, at most once per
    /// `min(idle_consumer_timeout, 1 min)` for all clones of this queue. Failures are
    /// logged and ignored: housekeeping never fails a `reserve`.
    pub(super) async fn housekeeping_if_due(&self) {
        let every = self.settings.idle_consumer_timeout.min(HOUSEKEEPING_EVERY);
        {
            let mut next = self
                .next_housekeeping
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            if next.is_some_and(|due| now < due) {
                return;
            }
            // Claim this run before it starts, so concurrent reserves skip it.
            *next = Some(now + every);
        }
        let pruned: Result<i64, Error> = self
            .scripts
            .prune
            .run(
                self.pool(),
                vec![self.keys.stream.clone()],
                vec![
                    self.settings.group.as_str().into(),
                    self.settings.consumer.as_str().into(),
                    int(millis_u64(self.settings.idle_consumer_timeout)),
                ],
            )
            .await;
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::info!(stream = %self.keys.stream, deleted = n,
                "deleted idle consumers without pending entries from the job queue's group"),
            // No group yet (or the stream is gone): no consumers to delete.
            Err(e) if is_nogroup(&e) || e.details().contains("no such key") => {}
            Err(e) => tracing::debug!(stream = %self.keys.stream, error = %e,
                "job queue housekeeping failed; trying again later"),
        }
    }
}
