//! Contract suite for [`AccountStore`]: accounts unique by e-mail (case-insensitively),
//! credentials returned exactly as stored, and bearer-token digests that authenticate
//! their own account until their expiry (exclusive) and never after.
//!
//! Each check takes a fresh [`AccountsFixture`] over a deployment with **no accounts**,
//! and panics with a message naming the broken promise. Run every check in [`CHECKS`]
//! against your adapter, one test per check, with
//! [`accounts_contract!`](crate::accounts_contract).
//!
//! The fixture also hands out the [`OrderRepository`] of the same deployment, because
//! an account's id is a promise to that repository: it must accept the account as the
//! owner of an order.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{IdempotencyKey, Money, OrderDraft, ProductId, Quantity, Timestamp, UserId};
use crate::ports::{
    Account, AccountError, AccountStore, Credentials, NewAccount, OrderRepository, PlaceOutcome,
    TokenDigest,
};

/// What an accounts check needs from the adapter under test.
#[async_trait]
pub trait AccountsFixture: Send + Sync {
    /// The store under test, over a deployment that had no accounts when the fixture
    /// was made.
    fn accounts(&self) -> &dyn AccountStore;

    /// The order repository of the same deployment (sharing the store the accounts live
    /// in), which must accept every account the store creates as an order's owner.
    fn repository(&self) -> Arc<dyn OrderRepository>;

    /// Creates a product in that repository with this unit price and stock and returns
    /// its id (the checks use small prices and stocks).
    async fn add_product(&self, price: Money, stock: u64) -> ProductId;

    /// Releases what the fixture holds (connections, server-side state) once a check
    /// passed: [`accounts_contract!`](crate::accounts_contract) awaits it after every
    /// check. A no-op unless overridden. A failing check panics before it, so clean-up
    /// that must happen then too belongs in a `Drop` of the fixture.
    async fn teardown(&self) {}
}

/// The names of every check, in the order they are meant to run (from the suite's one
/// list, like the tests [`accounts_contract!`](crate::accounts_contract) writes).
pub const CHECKS: &[&str] = crate::__accounts_checks! { [crate::__contract_check_names] };

/// THE list of this suite's checks, in the order they are meant to run: every check
/// function must be here (order-core's tests fail otherwise), and nowhere else.
/// `__accounts_checks! { [callback] args.. }` expands to `callback! { [checks..] args.. }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __accounts_checks {
    ([$($callback:tt)*] $($args:tt)*) => {
        $($callback)*! {
            [
            create_returns_the_account_with_a_fresh_id,
            emails_are_unique_case_insensitively_and_a_refusal_writes_nothing,
            credentials_are_found_case_insensitively_with_the_stored_hash,
            credentials_of_an_unknown_email_are_none,
            issue_token_for_an_unknown_account_is_refused_and_writes_nothing,
            a_token_authenticates_its_account_until_it_expires_exclusively,
            an_unknown_digest_authenticates_nobody,
            every_token_of_one_account_authenticates_it,
            tokens_of_two_accounts_authenticate_their_own_account,
            count_accounts_counts_the_created_accounts,
            a_new_account_may_place_orders,
            ]
            $($args)*
        }
    };
}

/// One test per check of the [`AccountStore`](crate::ports::AccountStore) contract
/// ([`testing::contract::accounts`](crate::testing::contract::accounts)), each on a
/// fresh [`AccountsFixture`](crate::testing::contract::accounts::AccountsFixture), torn
/// down after its check passed.
///
/// The input is an optional test attribute and a fixture: `path::to::async_fn`,
/// `|| expression` or `|arg: Type, ..| expression` (see the [module
/// docs](crate::testing::contract#in-one-line)). Without an attribute the tests are
/// `#[tokio::test]`: the calling crate needs `tokio` as a dev-dependency with the
/// `macros` and `rt` features. The tests are named after the checks and written where
/// the macro is invoked.
///
/// ```ignore
/// order_core::accounts_contract!(
///     #[sqlx::test(migrator = "my_adapter::MIGRATOR")]
///     |pool: MySqlPool| MyAccountsFixture::new(pool)
/// );
/// ```
#[macro_export]
macro_rules! accounts_contract {
    ($($fixture:tt)+) => {
        $crate::__contract_parse! { __accounts_checks, accounts, AccountsFixture; $($fixture)+ }
    };
}

// ---------------------------------------------------------------------------------------
// Helpers: every failure names what was being done.
// ---------------------------------------------------------------------------------------

/// An instant `offset` ms after a fixed base that has a millisecond part, so that a store
/// rounding expiries (or `now`) to seconds is caught.
fn at(offset: u64) -> Timestamp {
    Timestamp::from_millis(1_750_000_000_123 + offset)
}

/// A password hash shaped like the argon2id PHC strings `order-http` stores, with the
/// characters (`$`, `=`, `,`, `+`, `/`) a store must keep as they are.
fn hash(tag: &str) -> String {
    format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdC+/{tag}$aGFzaA=={tag}")
}

fn new_account(name: &str, email: &str) -> NewAccount {
    NewAccount {
        name: name.to_owned(),
        email: email.to_owned(),
        password_hash: hash(email),
    }
}

/// A digest whose bytes span the whole range (high bits and zero nibbles included), so
/// a store that encodes it wrongly (signed bytes, dropped leading zeros) mixes two up.
fn digest(n: u8) -> TokenDigest {
    let mut bytes = [0_u8; 32];
    for (i, b) in (0_u8..).zip(bytes.iter_mut()) {
        let high = if i % 2 == 0 { 0x80 } else { 0 };
        *b = n.wrapping_mul(37).wrapping_add(i.wrapping_mul(73)) ^ high;
    }
    bytes[0] = n;
    TokenDigest::from_bytes(bytes)
}

fn missing_user(existing: UserId) -> UserId {
    match UserId::new(existing.get() + 1_000_000) {
        Ok(u) => u,
        Err(e) => panic!("contract bug: {e}"),
    }
}

async fn create<F: AccountsFixture + ?Sized>(f: &F, new: NewAccount) -> Account {
    let email = new.email.clone();
    match f.accounts().create_account(new).await {
        Ok(a) => a,
        Err(e) => panic!(
            "create_account({email:?}) failed: {}",
            crate::app::ErrorChain(&e)
        ),
    }
}

async fn credentials<F: AccountsFixture + ?Sized>(f: &F, email: &str) -> Option<Credentials> {
    match f.accounts().credentials(email).await {
        Ok(c) => c,
        Err(e) => panic!(
            "credentials({email:?}) failed: {}",
            crate::app::ErrorChain(&e)
        ),
    }
}

async fn issue<F: AccountsFixture + ?Sized>(
    f: &F,
    user: UserId,
    digest: TokenDigest,
    expires_at: Timestamp,
) {
    if let Err(e) = f.accounts().issue_token(user, digest, expires_at).await {
        panic!(
            "issue_token({user}, {digest:?}, {expires_at:?}) failed: {}",
            crate::app::ErrorChain(&e)
        );
    }
}

async fn authenticate<F: AccountsFixture + ?Sized>(
    f: &F,
    digest: &TokenDigest,
    now: Timestamp,
) -> Option<Account> {
    match f.accounts().authenticate(digest, now).await {
        Ok(a) => a,
        Err(e) => panic!(
            "authenticate({digest:?}, {now:?}) failed: {}",
            crate::app::ErrorChain(&e)
        ),
    }
}

async fn count<F: AccountsFixture + ?Sized>(f: &F) -> u64 {
    match f.accounts().count_accounts().await {
        Ok(n) => n,
        Err(e) => panic!("count_accounts failed: {}", crate::app::ErrorChain(&e)),
    }
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

/// `create_account` returns the account as given (name and e-mail unchanged, non-ASCII
/// included) with an id no other account has.
pub async fn create_returns_the_account_with_a_fresh_id<F: AccountsFixture + ?Sized>(f: &F) {
    let given = [
        ("Alice", "alice@example.com"),
        ("Zoë Ünal-Łukasz", "Zoe.Unal@Example.Org"),
        ("Bob", "bob@example.com"),
    ];
    let mut ids = Vec::new();
    for (name, email) in given {
        let account = create(f, new_account(name, email)).await;
        assert_eq!(
            account.name, name,
            "create_account must return the name as given"
        );
        assert_eq!(
            account.email, email,
            "create_account must return the e-mail as given"
        );
        assert!(
            !ids.contains(&account.id),
            "create_account returned id {} twice",
            account.id
        );
        ids.push(account.id);
    }
}

/// A second account whose e-mail differs from an existing one only in letter case is
/// refused with `EmailTaken`, and nothing is written: the count is unchanged and the
/// first account's credentials are untouched. An e-mail that really differs is accepted.
pub async fn emails_are_unique_case_insensitively_and_a_refusal_writes_nothing<
    F: AccountsFixture + ?Sized,
>(
    f: &F,
) {
    let first = create(f, new_account("Carol", "carol@example.com")).await;
    let before = count(f).await;
    for email in [
        "carol@example.com",
        "CAROL@EXAMPLE.COM",
        "Carol@Example.com",
    ] {
        let clash = NewAccount {
            name: String::from("Impostor"),
            email: email.to_owned(),
            password_hash: hash("impostor"),
        };
        match f.accounts().create_account(clash).await {
            Err(AccountError::EmailTaken) => {}
            Ok(a) => panic!(
                "create_account({email:?}) must be EmailTaken (carol@example.com exists), \
                 but created account {}",
                a.id
            ),
            Err(e) => panic!(
                "create_account({email:?}) must be EmailTaken, got: {}",
                crate::app::ErrorChain(&e)
            ),
        }
        assert_eq!(
            count(f).await,
            before,
            "a refused create_account({email:?}) must write nothing"
        );
    }
    let stored = credentials(f, "carol@example.com").await;
    assert_eq!(
        stored,
        Some(Credentials {
            account: first,
            password_hash: hash("carol@example.com"),
        }),
        "a refused create_account must leave the existing account as it was"
    );
    create(f, new_account("Carol 2", "carol2@example.com")).await;
    assert_eq!(
        count(f).await,
        before + 1,
        "an e-mail differing in more than case is another account"
    );
}

/// `credentials` finds the account whatever the case of the e-mail asked for, returns
/// the e-mail as it was stored, and the password hash exactly as given.
pub async fn credentials_are_found_case_insensitively_with_the_stored_hash<
    F: AccountsFixture + ?Sized,
>(
    f: &F,
) {
    let dave = create(f, new_account("Dave", "Dave.Jones@Example.com")).await;
    let erin = create(f, new_account("Erin", "erin@example.com")).await;
    for asked in [
        "Dave.Jones@Example.com",
        "dave.jones@example.com",
        "DAVE.JONES@EXAMPLE.COM",
    ] {
        let found = credentials(f, asked).await;
        assert_eq!(
            found,
            Some(Credentials {
                account: dave.clone(),
                password_hash: hash("Dave.Jones@Example.com"),
            }),
            "credentials({asked:?}) must return Dave's account, with the e-mail as stored \
             and the exact hash it was created with"
        );
    }
    let found = credentials(f, "ERIN@example.com").await;
    assert_eq!(
        found,
        Some(Credentials {
            account: erin,
            password_hash: hash("erin@example.com"),
        }),
        "each account's credentials are its own"
    );
}

/// `credentials` of an e-mail no account has is `None`, not an error — including one
/// that only starts or ends like an existing e-mail.
pub async fn credentials_of_an_unknown_email_are_none<F: AccountsFixture + ?Sized>(f: &F) {
    assert_eq!(
        credentials(f, "nobody@example.com").await,
        None,
        "an empty store has no credentials"
    );
    create(f, new_account("Frank", "frank@example.com")).await;
    for email in [
        "nobody@example.com",
        "frank@example.co",
        "rank@example.com",
        "frank@example.com.evil",
        "",
    ] {
        assert_eq!(
            credentials(f, email).await,
            None,
            "credentials({email:?}) must be None: no account has this e-mail"
        );
    }
}

/// `issue_token` for an id no account has is `UnknownAccount(id)` and writes nothing:
/// the digest authenticates nobody, and can then be issued to a real account.
pub async fn issue_token_for_an_unknown_account_is_refused_and_writes_nothing<
    F: AccountsFixture + ?Sized,
>(
    f: &F,
) {
    let grace = create(f, new_account("Grace", "grace@example.com")).await;
    let ghost = missing_user(grace.id);
    let token = digest(1);
    match f.accounts().issue_token(ghost, token, at(1_000)).await {
        Err(AccountError::UnknownAccount(id)) => assert_eq!(
            id, ghost,
            "UnknownAccount must carry the id that was asked for"
        ),
        Ok(()) => panic!("issue_token for the missing user {ghost} must be UnknownAccount"),
        Err(e) => panic!(
            "issue_token for the missing user {ghost} must be UnknownAccount, got: {}",
            crate::app::ErrorChain(&e)
        ),
    }
    assert_eq!(
        authenticate(f, &token, at(0)).await,
        None,
        "a refused issue_token must write nothing"
    );
    issue(f, grace.id, token, at(1_000)).await;
    assert_eq!(
        authenticate(f, &token, at(0)).await,
        Some(grace),
        "after the refusal the digest is free to issue to a real account"
    );
}

/// A token authenticates its account while `now < expires_at`, to the millisecond, and
/// from `expires_at` on (the bound is exclusive) authenticates nobody.
pub async fn a_token_authenticates_its_account_until_it_expires_exclusively<
    F: AccountsFixture + ?Sized,
>(
    f: &F,
) {
    let heidi = create(f, new_account("Heidi", "heidi@example.com")).await;
    let token = digest(2);
    let expires_at = at(60_000);
    issue(f, heidi.id, token, expires_at).await;
    for (now, why) in [
        (at(0), "long before its expiry"),
        (at(59_000), "a second before its expiry"),
        (at(59_999), "1 ms before its expiry"),
    ] {
        assert_eq!(
            authenticate(f, &token, now).await.as_ref(),
            Some(&heidi),
            "a token must authenticate its account {why}"
        );
    }
    for (now, why) in [
        (expires_at, "at its expiry (the bound is exclusive)"),
        (at(60_001), "1 ms after its expiry"),
        (at(86_400_000), "a day after its expiry"),
    ] {
        assert_eq!(
            authenticate(f, &token, now).await,
            None,
            "a token must authenticate nobody {why}"
        );
    }
}

/// A digest that was never issued authenticates nobody (not an error), even one that
/// differs from an issued digest in a single byte.
pub async fn an_unknown_digest_authenticates_nobody<F: AccountsFixture + ?Sized>(f: &F) {
    assert_eq!(
        authenticate(f, &digest(3), at(0)).await,
        None,
        "an empty store authenticates nobody"
    );
    let ivan = create(f, new_account("Ivan", "ivan@example.com")).await;
    let issued = digest(3);
    issue(f, ivan.id, issued, at(1_000)).await;
    let mut near = *issued.as_bytes();
    near[31] ^= 1;
    for (other, why) in [
        (
            TokenDigest::from_bytes(near),
            "one bit off an issued digest",
        ),
        (digest(4), "never issued"),
        (TokenDigest::from_bytes([0; 32]), "all zeros"),
    ] {
        assert_eq!(
            authenticate(f, &other, at(0)).await,
            None,
            "a digest {why} must authenticate nobody"
        );
    }
    assert_eq!(
        authenticate(f, &issued, at(0)).await,
        Some(ivan),
        "the issued digest still authenticates its account"
    );
}

/// An account may hold several tokens at once, each valid until its own expiry: a new
/// token does not revoke an older one.
pub async fn every_token_of_one_account_authenticates_it<F: AccountsFixture + ?Sized>(f: &F) {
    let judy = create(f, new_account("Judy", "judy@example.com")).await;
    let (short, long) = (digest(5), digest(6));
    issue(f, judy.id, short, at(1_000)).await;
    issue(f, judy.id, long, at(5_000)).await;
    assert_eq!(
        authenticate(f, &short, at(0)).await.as_ref(),
        Some(&judy),
        "the first token must still work after a second was issued"
    );
    assert_eq!(
        authenticate(f, &long, at(0)).await.as_ref(),
        Some(&judy),
        "the second token must work"
    );
    assert_eq!(
        authenticate(f, &short, at(2_000)).await,
        None,
        "each token expires at its own expires_at"
    );
    assert_eq!(
        authenticate(f, &long, at(2_000)).await,
        Some(judy),
        "the other token is unaffected by the first one's expiry"
    );
}

/// Tokens of two accounts each authenticate their own account, never the other.
pub async fn tokens_of_two_accounts_authenticate_their_own_account<F: AccountsFixture + ?Sized>(
    f: &F,
) {
    let ken = create(f, new_account("Ken", "ken@example.com")).await;
    let lea = create(f, new_account("Lea", "lea@example.com")).await;
    let (kens, leas) = (digest(7), digest(8));
    // Lea's first, so that an adapter returning "the first/last token's owner" fails.
    issue(f, lea.id, leas, at(1_000)).await;
    issue(f, ken.id, kens, at(1_000)).await;
    assert_eq!(
        authenticate(f, &kens, at(0)).await,
        Some(ken),
        "Ken's token must authenticate Ken"
    );
    assert_eq!(
        authenticate(f, &leas, at(0)).await,
        Some(lea),
        "Lea's token must authenticate Lea"
    );
}

/// `count_accounts` is 0 on an empty store and grows by one per created account.
pub async fn count_accounts_counts_the_created_accounts<F: AccountsFixture + ?Sized>(f: &F) {
    assert_eq!(count(f).await, 0, "a fresh store has no accounts");
    for n in 1..=3_u64 {
        create(
            f,
            new_account(&format!("User {n}"), &format!("user{n}@example.com")),
        )
        .await;
        assert_eq!(count(f).await, n, "after {n} create_account call(s)");
    }
    let user = match credentials(f, "user1@example.com").await {
        Some(c) => c.account.id,
        None => panic!("credentials of a created account must be found"),
    };
    issue(f, user, digest(9), at(1_000)).await;
    assert_eq!(count(f).await, 3, "issuing a token creates no account");
}

/// The id of a fresh account is a user the same deployment's repository accepts: an
/// order placed for it is `Placed`, owned by it.
pub async fn a_new_account_may_place_orders<F: AccountsFixture + ?Sized>(f: &F) {
    let mallory = create(f, new_account("Mallory", "mallory@example.com")).await;
    let product = f
        .add_product(
            match Money::parse("4.20") {
                Ok(m) => m,
                Err(e) => panic!("contract bug: {e}"),
            },
            5,
        )
        .await;
    let (Ok(quantity), Ok(key)) = (Quantity::new(2), IdempotencyKey::new("accounts-contract"))
    else {
        panic!("contract bug: bad quantity or key");
    };
    let draft = match OrderDraft::new(mallory.id, [(product, quantity)], key) {
        Ok(d) => d,
        Err(e) => panic!("contract bug: bad draft: {e}"),
    };
    let outcomes = match f.repository().place(&[draft], at(0)).await {
        Ok(o) => o,
        Err(e) => panic!(
            "place for the new account {} failed: {}",
            mallory.id,
            crate::app::ErrorChain(&e)
        ),
    };
    match outcomes.as_slice() {
        [PlaceOutcome::Placed(order, _)] => assert_eq!(
            order.user(),
            mallory.id,
            "the order must be owned by the new account"
        ),
        other => panic!(
            "an order for the new account {} must be Placed (the repository of the same \
             deployment must know the account as a user), got {other:?}",
            mallory.id
        ),
    }
}
