//! The pure-Rust heart of chunkwise, shared by the browser library and the server.
//!
//! Nothing here knows about the browser, the network or the clock: time, sleeping,
//! randomness, reading slices and sending them are injected through the traits in
//! [`engine`], so that every rule (slice geometry, the in-flight window, retry and
//! progress) is tested natively with `cargo test`.
#![deny(missing_docs)]

pub mod config;
pub mod engine;
pub mod geometry;
pub mod progress;
pub mod protocol;
pub mod ranges;
pub mod retry;
pub mod slots;
pub mod stall;
