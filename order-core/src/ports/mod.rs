//! Every driven port of the hexagon, in one module (a file per port, re-exported here).
//!
//! Each port is a whole external capability named for its role, held as `Arc<dyn Port>`.
//! Signatures use domain types and the port's own error enum only: no driver, serde or
//! HTTP types ever cross this boundary. Every method lists the promises an adapter MUST
//! keep; the contract suites run the same checks against the memory and real adapters.
//!
//! # Errors keep their cause
//!
//! Every port error enum follows one convention, and so do the use-case errors in
//! [`crate::app`]:
//!
//! - A variant that stands for a failure below this layer (`Unavailable`,
//!   `PaymentError::Transient`) holds its cause as `#[source] anyhow::Error`, and its
//!   `Display` is this layer's own sentence *without* the cause (`order store
//!   unavailable`). The cause — the driver error itself, e.g. a `sqlx::Error` or a
//!   `fred::Error` behind `anyhow` — is reached through
//!   [`std::error::Error::source`], so a reporter that walks the chain prints each
//!   part once. Render the whole chain with [`ErrorChain`](crate::app::ErrorChain)
//!   (`order store unavailable: pool timed out while waiting for an open connection`).
//! - `Unexpected(anyhow::Error)` is `#[error(transparent)]`: it adds no sentence of its
//!   own, so `Display` and `source()` are those of the `anyhow::Error` inside.
//! - Adapters build these variants with the constructors (`RepositoryError::unavailable(e)`
//!   for any error value, `RepositoryError::unavailable_msg("…")` for text), never by
//!   rendering a driver error to a string. Port *signatures* still name only these
//!   enums: a driver error appears only as a `dyn Error` in the source chain.

/// The two constructors of a variant that keeps its cause: `$name(e)` for an error value
/// (kept as the [`source`](std::error::Error::source)) and `$name_msg(text)` when all
/// there is to say is text.
macro_rules! cause_constructors {
    ($error:ident :: $variant:ident, $name:ident, $name_msg:ident) => {
        impl $error {
            #[doc = concat!("[`", stringify!($error), "::", stringify!($variant),
                                "`] caused by `cause`, which stays reachable through `source()`.")]
            pub fn $name<E>(cause: E) -> Self
            where
                E: std::error::Error + Send + Sync + 'static,
            {
                $error::$variant(anyhow::Error::new(cause))
            }

            #[doc = concat!("[`", stringify!($error), "::", stringify!($variant),
                                "`] with only a description of the cause.")]
            pub fn $name_msg<M>(message: M) -> Self
            where
                M: std::fmt::Display + std::fmt::Debug + Send + Sync + 'static,
            {
                $error::$variant(anyhow::Error::msg(message))
            }
        }
    };
}

mod accounts;
mod events;
mod lock;
mod payments;
mod queue;
mod repository;
mod time;

pub use accounts::*;
pub use events::*;
pub use lock::*;
pub use payments::*;
pub use queue::*;
pub use repository::*;
pub use time::*;

cause_constructors!(AccountError::Unavailable, unavailable, unavailable_msg);
cause_constructors!(RepositoryError::Unavailable, unavailable, unavailable_msg);
cause_constructors!(LockError::Unavailable, unavailable, unavailable_msg);
cause_constructors!(PaymentError::Transient, transient, transient_msg);
cause_constructors!(PublishError::Unavailable, unavailable, unavailable_msg);
cause_constructors!(QueueError::Unavailable, unavailable, unavailable_msg);
