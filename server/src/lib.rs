//! chunkwise-server: receives slices in any order and streams each to where uploads are
//! kept (a local disk, or an S3-compatible bucket), behind one [`Backend`] seam.
#![deny(missing_docs)]

pub mod app;
pub mod error;
pub mod faults;
pub mod hooks;
mod linger;
pub mod metrics;
pub mod pace;
pub mod serve;
pub mod store;

pub use app::{app, AppState, Site};
pub use store::{Backend, Limits, Store};
