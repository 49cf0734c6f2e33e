//! chunkwise-server: receives slices in any order and streams each to disk at its offset.
#![deny(missing_docs)]

pub mod app;
pub mod direct;
pub mod error;
pub mod faults;
pub mod hooks;
pub mod objects;
pub mod store;

pub use app::{app, serve, AppState, Site};
pub use store::{Limits, Store};
