//! Contract suites: one per driven port, generic over the adapter, so the memory adapters
//! and the real ones are held to the same promises. Run them from your own adapter's
//! tests to prove it faithful.

pub mod events;
pub mod lock;
pub mod queue;
pub mod repository;
