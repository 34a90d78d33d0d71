//! Test support for embedders (feature `testing`): contract suites for adapters, proptest
//! strategies and the reference model of the order state machine.

pub mod contract;
