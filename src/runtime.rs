//! Time, sleep and randomness for the engine, from the JS global scope (window or worker).

use chunkwise_core::engine::Runtime;

/// The browser's clock and timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct BrowserRuntime;

impl Runtime for BrowserRuntime {
    fn now_ms(&self) -> f64 {
        js_sys::Date::now()
    }

    async fn sleep(&self, ms: f64) {
        // setTimeout takes a 32-bit delay; the engine never asks for more than minutes.
        gloo_timers::future::TimeoutFuture::new(ms.max(0.0).min(f64::from(i32::MAX)) as u32).await;
    }

    fn random(&self) -> f64 {
        js_sys::Math::random()
    }
}
