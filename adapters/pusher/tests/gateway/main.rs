//! The gateway against real WebSocket clients (tokio-tungstenite) and raw HTTP, the
//! router served on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod backpressure;
mod handshake;
mod idle;
mod messages;
mod publish;
mod shutdown;
mod subscribe;
mod trigger;
