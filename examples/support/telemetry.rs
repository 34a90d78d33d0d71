//! Logging for the example binaries: `tracing` events to stderr, filtered by `RUST_LOG`
//! (default `warn`, so the library's warnings — a failed enqueue, a lock service that
//! fails open — are seen), as JSON lines when `ORDERS_LOG_FORMAT=json`. Binaries read
//! the environment; the libraries never do.

// A binary's module: it reads the environment, as only binaries may.
#![allow(clippy::disallowed_methods)]

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once, at the start of `main`.
pub(crate) fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let json = std::env::var("ORDERS_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // A second install (there is none here) would fail; nothing to do about it then.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
