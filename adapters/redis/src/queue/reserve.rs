//! The read path of `reserve`: the waiting reservers, the read rounds that serve them
//! (reclaiming expired reservations and promoting due retries when they are due, then
//! one `XREADGROUP … COUNT n` for all of them), and the cancel-safe hand-off of a
//! delivery to its caller (see the module docs of [`queue`](super)).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Duration;

use fred::prelude::*;
use fred::types::streams::XReadResponse;
use order_core::ports::{Delivery, QueueError};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::codec::{decode_job, parse_receipt};
use super::{Entry, Inner, PROMOTE_BATCH, RECLAIM_SCAN_LIMIT, int};
use crate::connection::{Failure, is_nogroup, millis_u64};

/// Most deliveries one read round hands out: the `COUNT` of its `XREADGROUP`, and the
/// most reservations its reclaim script takes over.
pub(super) const READ_BATCH_MAX: usize = 64;

/// A deadline "never" stands for when `now + wait` overflows.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What a waiting `reserve` is answered with.
type Answer = Result<Option<Handoff>, QueueError>;

/// One `reserve` waiting for a read round.
struct Waiter {
    answer: oneshot::Sender<Answer>,
    deadline: Instant,
    /// The first round that starts after this waiter arrived: only a round numbered
    /// from here on counts as the look its `reserve` promises, even with a zero wait.
    first_round: u64,
}

/// When a periodic step (reclaim, promote) is due, and whether one is running.
struct Schedule {
    due: Instant,
    running: bool,
}

/// The shared state of the read path: who waits, whether the fetcher runs and blocks,
/// and when reclaim and promote are due. Behind a std mutex, never held across an
/// `.await`.
pub(super) struct ReadState {
    /// The reservers waiting for a round, oldest first (served in this order).
    waiters: VecDeque<Waiter>,
    /// The fetcher task runs (it stops when nobody waits).
    fetcher_running: bool,
    /// When the fetcher's blocking read in flight ends at the latest, if one is.
    blocking_until: Option<Instant>,
    /// The number the next round gets.
    next_round: u64,
    reclaim: Schedule,
    promote: Schedule,
}

impl ReadState {
    /// Nobody waits; reclaim and promote are due at the first round.
    pub(super) fn new() -> Self {
        let now = Instant::now();
        Self {
            waiters: VecDeque::new(),
            fetcher_running: false,
            blocking_until: None,
            next_round: 0,
            reclaim: Schedule {
                due: now,
                running: false,
            },
            promote: Schedule {
                due: now,
                running: false,
            },
        }
    }
}

/// Which periodic step.
#[derive(Clone, Copy)]
enum Step {
    Reclaim,
    Promote,
}

/// One cancel-safe `reserve` (see the module docs): the caller waits for its answer on
/// a oneshot channel that a spawned task fills, and the delivery travels in a
/// [`Handoff`], which gives it back if the caller has gone.
///
/// Normally the caller joins the waiters served by the fetcher task (started here when
/// it is not running). A caller whose wait ends before the fetcher's blocking read in
/// flight does instead gets a look of its own: one non-blocking round in a task of its
/// own, so a short `reserve` never waits for a long poll.
pub(super) async fn reserve(
    queue: Arc<Inner>,
    wait: Duration,
) -> Result<Option<Delivery>, QueueError> {
    let now = Instant::now();
    let deadline = now
        .checked_add(wait)
        .unwrap_or_else(|| now + FAR_FUTURE.min(wait));
    let (answer, answered) = oneshot::channel();
    let (solo, start_fetcher) = {
        let mut state = queue.read_state();
        if state.blocking_until.is_some_and(|until| deadline < until) {
            (Some(answer), false)
        } else {
            let first_round = state.next_round;
            state.waiters.push_back(Waiter {
                answer,
                deadline,
                first_round,
            });
            (None, !std::mem::replace(&mut state.fetcher_running, true))
        }
    };
    if let Some(answer) = solo {
        tokio::spawn(queue.clone().solo_look(answer));
    }
    if start_fetcher {
        tokio::spawn(queue.clone().fetch_loop());
    }
    match answered.await {
        Ok(Ok(Some(mut handoff))) => Ok(handoff.take()),
        Ok(Ok(None)) => Ok(None),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(QueueError::Unexpected(anyhow::anyhow!(
            "the reserve task ended without an answer (it panicked)"
        ))),
    }
}

impl Inner {
    pub(super) fn read_state(&self) -> MutexGuard<'_, ReadState> {
        self.read.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fetcher: read rounds for the waiting reservers until none waits.
    async fn fetch_loop(self: Arc<Self>) {
        while let Some((round, count)) = self.plan_round() {
            let (handoffs, failure) = self.fetch(count, true, &|| self.has_live_waiters()).await;
            self.finish_round(round, handoffs, failure);
        }
    }

    /// The next round's number and how many deliveries it may hand out (one per live
    /// waiter, at most [`READ_BATCH_MAX`]: never more than is asked for); `None` (and
    /// the fetcher stops) when nobody waits.
    fn plan_round(&self) -> Option<(u64, usize)> {
        let mut state = self.read_state();
        state.waiters.retain(|w| !w.answer.is_closed());
        if state.waiters.is_empty() {
            state.fetcher_running = false;
            state.blocking_until = None;
            return None;
        }
        let round = state.next_round;
        state.next_round += 1;
        Some((round, state.waiters.len().min(READ_BATCH_MAX)))
    }

    /// Whether a reserver still waits for the fetcher.
    fn has_live_waiters(&self) -> bool {
        self.read_state()
            .waiters
            .iter()
            .any(|w| !w.answer.is_closed())
    }

    /// Hands out the round's deliveries to the waiters, oldest first (one each; a
    /// delivery whose waiter has gone goes to the next one, and with nobody left it is
    /// given back at once), then answers the waiters this round was a look for: with
    /// the round's failure, or with nothing once their wait has run out.
    fn finish_round(&self, round: u64, handoffs: Vec<Handoff>, failure: Option<Failure>) {
        let mut unwanted = Vec::new();
        {
            let mut state = self.read_state();
            state.blocking_until = None;
            for handoff in handoffs {
                let mut handoff = Some(handoff);
                while let Some(h) = handoff.take() {
                    let Some(waiter) = state.waiters.pop_front() else {
                        unwanted.push(h);
                        break;
                    };
                    // A failed send returns the handoff: that caller has gone.
                    if let Err(Ok(Some(h))) = waiter.answer.send(Ok(Some(h))) {
                        handoff = Some(h);
                    }
                }
            }
            let now = Instant::now();
            let waiters = std::mem::take(&mut state.waiters);
            for waiter in waiters {
                if waiter.answer.is_closed() {
                    continue;
                }
                if waiter.first_round > round {
                    state.waiters.push_back(waiter);
                    continue;
                }
                match &failure {
                    Some(failure) => {
                        let _ = waiter.answer.send(Err(failure.share().into()));
                    }
                    None if waiter.deadline <= now => {
                        let _ = waiter.answer.send(Ok(None));
                    }
                    None => state.waiters.push_back(waiter),
                }
            }
        }
        if !unwanted.is_empty() {
            tracing::debug!(
                count = unwanted.len(),
                "giving back jobs read for reservers that have gone"
            );
        }
        // Dropping them gives them back (outside the lock: each spawns its script).
        drop(unwanted);
    }

    /// A look of its own for a `reserve` whose wait ends before the fetcher's blocking
    /// read does: one non-blocking round for one delivery.
    async fn solo_look(self: Arc<Self>, answer: oneshot::Sender<Answer>) {
        let (mut handoffs, failure) = self.fetch(1, false, &|| !answer.is_closed()).await;
        let result = match (handoffs.pop(), failure) {
            (Some(handoff), _) => Ok(Some(handoff)),
            (None, Some(failure)) => Err(failure.into()),
            (None, None) => Ok(None),
        };
        // A failed send drops the handoff, which gives the delivery back.
        let _ = answer.send(result);
    }

    /// One read round for up to `count` deliveries (for the fetcher, `count` is taken
    /// again before the read: the reservers waiting then): expired reservations first
    /// (when reclaim is due), then due retries moved into the stream (when promote is
    /// due), then new entries — blocking on a dedicated connection for the fetcher
    /// (`blocking`) when nothing was reclaimed, until the earliest waiter's deadline, the next reclaim or promote,
    /// or `poll_interval`. Returns the deliveries obtained (as handoffs, so none is
    /// lost whatever happens next) and the failure that ended the round early, if any.
    async fn fetch(
        self: &Arc<Self>,
        count: usize,
        blocking: bool,
        still_wanted: &(dyn Fn() -> bool + Sync),
    ) -> (Vec<Handoff>, Option<Failure>) {
        let mut handoffs = Vec::new();
        match self.reclaim_if_due(count).await {
            Ok(claimed) => {
                if let Some(failure) = self.deliver(claimed, &mut handoffs).await {
                    return (handoffs, Some(failure));
                }
            }
            Err(failure) => return (handoffs, Some(failure)),
        }
        if handoffs.len() >= count {
            return (handoffs, None);
        }
        if let Err(failure) = self.promote_if_due().await {
            return (handoffs, Some(failure));
        }
        // After the first commands answered: while Redis is down, a round fails after
        // one command timeout, not two.
        self.housekeeping_if_due().await;
        // The fetcher counts its waiters again: those that arrived during the steps
        // above join this read, those that left are not read for.
        let (count, block) = if blocking {
            let (waiting, block) = self.block_for_read();
            let block = if handoffs.is_empty() {
                block
            } else {
                Duration::ZERO
            };
            (waiting.min(READ_BATCH_MAX), block)
        } else {
            (count, Duration::ZERO)
        };
        if handoffs.len() >= count {
            return (handoffs, None);
        }
        let entries = match self.read(count - handoffs.len(), block, still_wanted).await {
            Ok(entries) => entries,
            Err(failure) => return (handoffs, Some(failure)),
        };
        let read = entries
            .into_iter()
            .map(|(id, fields)| {
                let job = fields.get("job").cloned().unwrap_or_default();
                let base = fields
                    .get("base")
                    .and_then(|b| b.parse::<u32>().ok())
                    .unwrap_or(0);
                // A new entry is on its first delivery in the group: attempt = base + 1.
                (id, job, base.saturating_add(1))
            })
            .collect();
        let failure = self.deliver(read, &mut handoffs).await;
        (handoffs, failure)
    }

    /// How many reservers wait for the fetcher's read now, and how long it may block:
    /// until the earliest waiter's deadline, the next reclaim or promote, and at most
    /// `poll_interval`. Recorded as
    /// `blocking_until`, which sends shorter `reserve`s to a look of their own and
    /// tells a local retry whether it must wake the read.
    fn block_for_read(&self) -> (usize, Duration) {
        let mut state = self.read_state();
        let now = Instant::now();
        let mut until = now + self.settings.poll_interval;
        let mut waiting = 0;
        for waiter in state.waiters.iter().filter(|w| !w.answer.is_closed()) {
            until = until.min(waiter.deadline);
            waiting += 1;
        }
        for step in [&state.reclaim, &state.promote] {
            if !step.running {
                until = until.min(step.due);
            }
        }
        let block = until.saturating_duration_since(now);
        state.blocking_until = (!block.is_zero()).then_some(until);
        (waiting, block)
    }

    /// Takes the turn of `step` if it is due and nobody runs it; its next due time is
    /// `poll_interval` from now unless [`end_turn`](Self::end_turn) or a local retry
    /// brings it forward.
    fn take_turn(&self, step: Step) -> bool {
        let mut state = self.read_state();
        let now = Instant::now();
        let schedule = match step {
            Step::Reclaim => &mut state.reclaim,
            Step::Promote => &mut state.promote,
        };
        if schedule.running || now < schedule.due {
            return false;
        }
        schedule.running = true;
        schedule.due = now + self.settings.poll_interval;
        true
    }

    /// Ends the turn of `step`; it is due again at `due` at the latest.
    fn end_turn(&self, step: Step, due: Instant) {
        let mut state = self.read_state();
        let schedule = match step {
            Step::Reclaim => &mut state.reclaim,
            Step::Promote => &mut state.promote,
        };
        schedule.running = false;
        schedule.due = schedule.due.min(due);
    }

    /// Reclaims up to `count` expired reservations if reclaim is due. It stays due
    /// while the script reports more expired entries (and after a failure); otherwise
    /// it runs again `poll_interval` later.
    async fn reclaim_if_due(&self, count: usize) -> Result<Vec<(String, String, u32)>, Failure> {
        if !self.take_turn(Step::Reclaim) {
            return Ok(Vec::new());
        }
        let reclaimed = self.reclaim(count).await;
        let again = match &reclaimed {
            Ok((_, more)) => *more,
            Err(_) => true,
        };
        let now = Instant::now();
        self.end_turn(
            Step::Reclaim,
            if again {
                now
            } else {
                now + self.settings.poll_interval
            },
        );
        reclaimed.map(|(claimed, _)| claimed)
    }

    /// Moves due retries into the stream if promote is due. It is due again when the
    /// script says the next retry is (whoever wrote it), when a local nack or defer
    /// says so ([`retry_scheduled`](Self::retry_scheduled)), at the latest
    /// `poll_interval` later, and at once after a failure.
    pub(super) async fn promote_if_due(&self) -> Result<(), Failure> {
        if !self.take_turn(Step::Promote) {
            return Ok(());
        }
        let promoted = self.promote().await;
        let now = Instant::now();
        let due = match &promoted {
            Ok(Some(next)) => now + (*next).min(self.settings.poll_interval),
            Ok(None) => now + self.settings.poll_interval,
            Err(_) => now,
        };
        self.end_turn(Step::Promote, due);
        promoted.map(|_| ())
    }

    /// A nack or defer of this process scheduled a retry `delay` from now: promote is
    /// due then. If the fetcher's blocking read in flight lasts past that time, a timer
    /// runs the promote when it is due, and the entry it writes wakes the read: the
    /// retry is delivered on time, not at the end of the read.
    pub(super) fn retry_scheduled(self: &Arc<Self>, delay: Duration) {
        let due = Instant::now() + delay;
        let wake = {
            let mut state = self.read_state();
            state.promote.due = state.promote.due.min(due);
            state.blocking_until.is_some_and(|until| until > due)
        };
        if !wake {
            return;
        }
        // Weak: a timer never keeps a dropped queue alive.
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let Some(queue) = queue.upgrade() else {
                return;
            };
            if let Err(e) = queue.promote_if_due().await {
                tracing::debug!(error = ?e, "promoting a due retry failed; the next round tries again");
            }
        });
    }

    /// Takes over up to `count` expired reservations (dead-lettering exhausted ones on
    /// the way): `(id, job, attempt)` each, and whether more may be waiting.
    async fn reclaim(&self, count: usize) -> Result<(Vec<(String, String, u32)>, bool), Failure> {
        self.counters.reclaims.fetch_add(1, Ordering::Relaxed);
        let reply = self
            .run_grouped(
                &self.scripts.reclaim,
                vec![self.keys.stream.clone(), self.keys.dead.clone()],
                vec![
                    self.settings.group.as_str().into(),
                    self.settings.consumer.as_str().into(),
                    int(millis_u64(self.settings.visibility_timeout)),
                    int(u64::from(self.settings.max_attempts)),
                    int(u64::from(RECLAIM_SCAN_LIMIT)),
                    int(self.settings.max_len),
                    int(u64::try_from(count).unwrap_or(u64::MAX)),
                ],
            )
            .await?;
        let unexpected = || Failure::unexpected(format!("reclaim script returned {reply:?}"));
        let Value::Array(items) = &reply else {
            return Err(unexpected());
        };
        let Some((more, claimed)) = items.split_first() else {
            return Err(unexpected());
        };
        let more = more.as_i64().ok_or_else(unexpected)? != 0;
        if claimed.len() % 3 != 0 {
            return Err(unexpected());
        }
        let mut out = Vec::with_capacity(claimed.len() / 3);
        for triple in claimed.chunks_exact(3) {
            let (Some(id), Some(job), Some(attempt)) = (
                triple[0].as_string(),
                triple[1].as_string(),
                triple[2].as_u64(),
            ) else {
                return Err(unexpected());
            };
            let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
            tracing::debug!(entry = %id, attempt, "redelivering a job whose visibility timeout expired");
            out.push((id, job, attempt));
        }
        Ok((out, more))
    }

    /// Moves due retries into the stream; returns the time until the next one is due.
    async fn promote(&self) -> Result<Option<Duration>, Failure> {
        self.counters.promotes.fetch_add(1, Ordering::Relaxed);
        let wait: i64 = self
            .scripts
            .promote
            .run(
                self.pool(),
                vec![self.keys.stream.clone(), self.keys.retry.clone()],
                vec![int(u64::from(PROMOTE_BATCH))],
            )
            .await?;
        Ok(u64::try_from(wait).ok().map(Duration::from_millis))
    }

    /// Reads up to `count` new entries, blocking up to `block` on a dedicated
    /// connection (non-blocking on the shared pool when `block` is zero).
    async fn read(
        &self,
        count: usize,
        block: Duration,
        still_wanted: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<Entry>, Failure> {
        match self.xreadgroup(count, block).await {
            // Every caller left while we blocked (a worker that stopped): write nothing
            // more for them — re-creating a deleted stream now would resurrect keys a
            // teardown (`delete_prefix`) has just removed.
            Err(e) if !still_wanted() => {
                tracing::debug!(error = %e, "blocking read failed after its callers left");
                Ok(Vec::new())
            }
            // NOGROUP: the group does not exist (first use, or Redis lost our data).
            // UNBLOCKED: the stream was deleted while we waited on it (Redis ≥ 7.0
            // unblocks readers with this error). Create the group and look again.
            Err(e) if is_nogroup(&e) || e.details().starts_with("UNBLOCKED") => {
                tracing::info!(stream = %self.keys.stream,
                    "the job queue's stream or consumer group does not exist; creating it");
                self.ensure_group().await?;
                Ok(self.xreadgroup(count, Duration::ZERO).await?)
            }
            other => Ok(other?),
        }
    }

    /// `XREADGROUP GROUP g c COUNT n [BLOCK ms] STREAMS stream >`: at most `count` new
    /// entries.
    async fn xreadgroup(&self, count: usize, block: Duration) -> Result<Vec<Entry>, Error> {
        let group = self.settings.group.as_str();
        let consumer = self.settings.consumer.as_str();
        let stream = self.keys.stream.as_str();
        let count = Some(u64::try_from(count.max(1)).unwrap_or(1));
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let reply: Value = if block.is_zero() {
            self.pool()
                .xreadgroup(group, consumer, count, None, false, stream, ">")
                .await?
        } else if let Ok(client) = tokio::time::timeout(block, self.blocking.acquire()).await {
            let block_ms = millis_u64(block).max(1);
            let options = Options {
                timeout: Some(block + self.connection.config.command_timeout),
                ..Options::default()
            };
            client
                .with_options(&options)
                .xreadgroup(group, consumer, count, Some(block_ms), false, stream, ">")
                .await?
        } else {
            // Every dedicated connection is busy and we have waited our slice already:
            // look once without blocking instead.
            self.pool()
                .xreadgroup(group, consumer, count, None, false, stream, ">")
                .await?
        };
        // Nothing new (or the BLOCK timed out): a nil reply.
        if reply.is_null() {
            return Ok(Vec::new());
        }
        let response: XReadResponse<String, String, String, String> =
            reply.into_xread_response()?;
        Ok(response.into_values().flatten().collect())
    }

    /// Turns claimed or read entries into deliveries wrapped in handoffs (burying
    /// unreadable jobs); returns the first failure to bury one, after the rest.
    async fn deliver(
        self: &Arc<Self>,
        entries: Vec<(String, String, u32)>,
        handoffs: &mut Vec<Handoff>,
    ) -> Option<Failure> {
        let mut failure = None;
        for (id, job, attempt) in entries {
            match self.delivery(id, &job, attempt).await {
                Ok(Some(delivery)) => handoffs.push(Handoff {
                    queue: self.clone(),
                    delivery: Some(delivery),
                }),
                Ok(None) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        failure
    }

    /// Turns a stream entry into a delivery, or buries it when its job is unreadable.
    async fn delivery(
        &self,
        id: String,
        job: &str,
        attempt: u32,
    ) -> Result<Option<Delivery>, Failure> {
        match decode_job(job) {
            Some(job) => Ok(Some(Delivery {
                job,
                receipt: format!("{id}/{attempt}"),
                attempt,
            })),
            None => {
                tracing::error!(entry = %id, job, "undecodable job moved to the dead letter");
                self.bury(&id, job, attempt).await?;
                Ok(None)
            }
        }
    }
}

/// A delivery on its way from a read round to the caller. If it is dropped before the
/// caller took it (the caller dropped its `reserve` future or its wait ran out: the
/// send failed, or the value was left in the channel; or nobody waited any more), it
/// gives the delivery back without using an attempt, so others can have the job at
/// once.
struct Handoff {
    queue: Arc<Inner>,
    delivery: Option<Delivery>,
}

impl Handoff {
    fn take(&mut self) -> Option<Delivery> {
        self.delivery.take()
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        let Some(delivery) = self.delivery.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to run the script on (it is shutting down): the entry stays
            // reserved and is redelivered after the visibility timeout.
            tracing::warn!(receipt = %delivery.receipt,
                "a reserved job was abandoned without a runtime; it comes back after the visibility timeout");
            return;
        };
        let queue = self.queue.clone();
        runtime.spawn(async move {
            let given_back = match parse_receipt(&delivery.receipt) {
                Some(receipt) => queue.defer(&receipt, Duration::ZERO).await,
                None => Ok(None),
            };
            match given_back {
                Ok(_) => tracing::debug!(receipt = %delivery.receipt,
                    "gave back a job reserved after its caller had gone"),
                Err(e) => tracing::warn!(receipt = %delivery.receipt, error = ?e,
                    "could not give back a job reserved after its caller had gone; \
                     it comes back after the visibility timeout"),
            }
        });
    }
}
