//! Contract suite for [`DistributedLock`]: `SET key token NX PX ttl` semantics and
//! compare-and-delete release.
//!
//! Each check takes a fresh [`LockFixture`] and panics with a message naming the broken
//! promise. Run every check in [`CHECKS`] against your adapter, one test per check, with
//! [`lock_contract!`](crate::lock_contract).

use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{DistributedLock, LockToken};

/// What a lock check needs from the adapter under test.
#[async_trait]
pub trait LockFixture: Send + Sync {
    /// The adapter, holding no lock yet (keys used by the checks start with `contract:`).
    fn lock(&self) -> &dyn DistributedLock;

    /// The TTL the checks take locks for: long enough for a few round trips, short
    /// enough to wait out (e.g. 200 ms against a real server, any value on a manual
    /// clock).
    fn ttl(&self) -> Duration;

    /// Added to a deadline before a check expects it to have passed: clock granularity
    /// and round trips (e.g. 1 ms on a manual clock, ~100 ms against a real server).
    fn slack(&self) -> Duration;

    /// Lets `d` pass on the adapter's clock: advance a manual clock, or really sleep.
    async fn advance(&self, d: Duration);

    /// Releases what the fixture holds (connections, server-side state) once a check
    /// passed: [`lock_contract!`](crate::lock_contract) awaits it after every check. A
    /// no-op unless overridden. A failing check panics before it, so clean-up that must
    /// happen then too belongs in a `Drop` of the fixture.
    async fn teardown(&self) {}
}

/// The names of every check, in the order they are meant to run (from the suite's one
/// list, like the tests [`lock_contract!`](crate::lock_contract) writes).
pub const CHECKS: &[&str] = crate::__lock_checks! { [crate::__contract_check_names] };

/// THE list of this suite's checks, in the order they are meant to run: every check
/// function must be here (order-core's tests fail otherwise), and nowhere else.
/// `__lock_checks! { [callback] args.. }` expands to `callback! { [checks..] args.. }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __lock_checks {
    ([$($callback:tt)*] $($args:tt)*) => {
        $($callback)*! {
            [
            acquire_contend_release,
            release_refuses_a_foreign_token,
            lock_is_held_until_its_ttl,
            expired_lock_can_be_taken_and_the_old_release_is_refused,
            a_resent_acquire_with_the_same_token_succeeds,
            ]
            $($args)*
        }
    };
}

/// One test per check of the [`DistributedLock`](crate::ports::DistributedLock) contract
/// ([`testing::contract::lock`](crate::testing::contract::lock)), each on a fresh
/// [`LockFixture`](crate::testing::contract::lock::LockFixture), torn down after its check
/// passed.
///
/// The input is an optional test attribute and a fixture: `path::to::async_fn`,
/// `|| expression` or `|arg: Type, ..| expression` (see the [module
/// docs](crate::testing::contract#in-one-line)). Without an attribute the tests are
/// `#[tokio::test]`: the calling crate needs `tokio` as a dev-dependency with the
/// `macros` and `rt` features. The tests are named after the checks and written where
/// the macro is invoked.
///
/// ```ignore
/// async fn my_lock() -> MyLockFixture {
///     MyLockFixture::new().await
/// }
///
/// order_core::lock_contract!(my_lock);
/// ```
#[macro_export]
macro_rules! lock_contract {
    ($($fixture:tt)+) => {
        $crate::__contract_parse! { __lock_checks, lock, LockFixture; $($fixture)+ }
    };
}

fn token(name: &str) -> LockToken {
    LockToken::new(format!("contract-token-{name}"))
}

async fn acquire<F: LockFixture + ?Sized>(f: &F, key: &str, who: &LockToken) -> bool {
    match f.lock().try_acquire(key, who, f.ttl()).await {
        Ok(taken) => taken,
        Err(e) => panic!(
            "try_acquire({key:?}, {}) failed: {}",
            who.as_str(),
            crate::app::ErrorChain(&e)
        ),
    }
}

async fn release<F: LockFixture + ?Sized>(f: &F, key: &str, who: &LockToken) -> bool {
    match f.lock().release(key, who).await {
        Ok(deleted) => deleted,
        Err(e) => panic!(
            "release({key:?}, {}) failed: {}",
            who.as_str(),
            crate::app::ErrorChain(&e)
        ),
    }
}

/// A free key is taken; a held key is refused to every other token; release by the
/// holder frees it exactly once; keys are independent.
pub async fn acquire_contend_release<F: LockFixture + ?Sized>(f: &F) {
    let key = "contract:acquire";
    let (a, b) = (token("a"), token("b"));
    assert!(
        acquire(f, key, &a).await,
        "try_acquire on a free key must take it"
    );
    assert!(
        !acquire(f, key, &b).await,
        "try_acquire on a held key must be refused to another token"
    );
    assert!(
        acquire(f, "contract:acquire-other", &b).await,
        "holding one key must not block another key"
    );
    assert!(
        release(f, key, &a).await,
        "release by the holder must delete the lock and report true"
    );
    assert!(
        !release(f, key, &a).await,
        "a second release by the same token must report false (nothing left to delete)"
    );
    assert!(
        acquire(f, key, &b).await,
        "a released key must be free for the next token"
    );
    assert!(
        release(f, key, &b).await,
        "release by the new holder must succeed"
    );
    assert!(
        release(f, "contract:acquire-other", &b).await,
        "release of the other key by its holder must succeed"
    );
}

/// Compare-and-delete: a release with a token that does not hold the lock deletes
/// nothing and reports false, and the lock stays held.
pub async fn release_refuses_a_foreign_token<F: LockFixture + ?Sized>(f: &F) {
    let key = "contract:foreign";
    let (owner, intruder, third) = (token("owner"), token("intruder"), token("third"));
    assert!(
        !release(f, "contract:never-held", &owner).await,
        "release of a key nobody holds must report false"
    );
    assert!(
        acquire(f, key, &owner).await,
        "try_acquire on a free key must take it"
    );
    assert!(
        !release(f, key, &intruder).await,
        "release with a foreign token must report false (compare-and-delete)"
    );
    assert!(
        !acquire(f, key, &third).await,
        "a release with a foreign token must not have deleted the lock"
    );
    assert!(
        release(f, key, &owner).await,
        "the owner's release must still work after a foreign release was refused"
    );
}

/// Before its TTL runs out the lock stays held.
pub async fn lock_is_held_until_its_ttl<F: LockFixture + ?Sized>(f: &F) {
    let key = "contract:ttl-held";
    let (a, b) = (token("a"), token("b"));
    assert!(
        acquire(f, key, &a).await,
        "try_acquire on a free key must take it"
    );
    f.advance(f.ttl() / 2).await;
    assert!(
        !acquire(f, key, &b).await,
        "a lock must stay held for its whole TTL (refused at TTL/2)"
    );
    assert!(
        release(f, key, &a).await,
        "the holder must still be able to release before the TTL"
    );
}

/// After the TTL the lock is free for another token, and the first holder's late
/// release must not delete the new holder's lock.
pub async fn expired_lock_can_be_taken_and_the_old_release_is_refused<F: LockFixture + ?Sized>(
    f: &F,
) {
    let key = "contract:ttl-expired";
    let (first, second, third) = (token("first"), token("second"), token("third"));
    assert!(
        acquire(f, key, &first).await,
        "try_acquire on a free key must take it"
    );
    f.advance(f.ttl() + f.slack()).await;
    assert!(
        acquire(f, key, &second).await,
        "a lock must expire after its TTL and be free for another token"
    );
    assert!(
        !release(f, key, &first).await,
        "the first holder's release after expiry must report false"
    );
    assert!(
        !acquire(f, key, &third).await,
        "the first holder's late release must not delete the second holder's lock"
    );
    assert!(
        release(f, key, &second).await,
        "the second holder's release must succeed"
    );
}

/// A client whose reply was lost re-sends its acquire with the same token: it must find
/// its own lock and succeed (and the TTL starts again), never see it as busy; another
/// token is still refused, and one release frees the key.
pub async fn a_resent_acquire_with_the_same_token_succeeds<F: LockFixture + ?Sized>(f: &F) {
    let key = "contract:resent";
    let (a, b) = (token("a"), token("b"));
    assert!(acquire(f, key, &a).await, "a free key must be taken");
    f.advance(f.ttl() / 2).await;
    assert!(
        acquire(f, key, &a).await,
        "a re-sent acquire by the holder's own token must succeed (idempotent per token)"
    );
    f.advance(f.ttl() / 2 + f.ttl() / 4).await;
    assert!(
        !acquire(f, key, &b).await,
        "the re-sent acquire must have restarted the TTL: the key is still held"
    );
    assert!(release(f, key, &a).await, "the holder releases once");
    assert!(
        acquire(f, key, &b).await,
        "after the release the key is free for another token"
    );
    assert!(release(f, key, &b).await, "the new holder releases");
}
