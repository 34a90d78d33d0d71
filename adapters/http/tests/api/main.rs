//! The REST API end to end through `Router::oneshot`, on the memory adapters.

#[test]
fn the_suite_is_wired() {}
