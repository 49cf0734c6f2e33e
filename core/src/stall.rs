//! When a request counts as stalled.
//!
//! A slice request whose transport shows upload progress is stalled only when none of its
//! bytes has moved for `stallTimeoutMs`, counted from its first byte on the wire: a slow
//! but moving upload is never aborted, however long a slice takes (a fixed deadline per
//! request cannot tell a 1 Mbit/s uplink from a dead server; Uppy learned the same in
//! uppy#1190 and #2929). Before its first byte a request may be waiting for one of the
//! browser's six connections per host, so it gets [`FIRST_BYTE_FACTOR`] times as long;
//! the browser transport also reports a heartbeat for such a request while other requests
//! in the page move bytes, since waiting behind moving uploads is not a stall.
//!
//! Requests without progress events (small JSON requests, or a transport that cannot see
//! upload progress) fall back to a deadline per request that doubles with each attempt.

/// How many stall limits a request may wait for its first byte to leave.
pub const FIRST_BYTE_FACTOR: f64 = 4.0;

/// The stall rule of one attempt of one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StallWatch {
    started_ms: f64,
    last_progress_ms: Option<f64>,
    limit: Limit,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Limit {
    /// The whole request must be answered within this many ms.
    Deadline(f64),
    /// No progress may stop for this many ms.
    Idle(f64),
}

impl StallWatch {
    /// An attempt started at `now_ms` whose progress is visible: stalled after
    /// `stall_timeout_ms` without progress.
    pub fn idle(now_ms: f64, stall_timeout_ms: f64) -> Self {
        Self {
            started_ms: now_ms,
            last_progress_ms: None,
            limit: Limit::Idle(stall_timeout_ms),
        }
    }

    /// An attempt started at `now_ms` with no progress events: stalled after a deadline of
    /// `stall_timeout_ms`, doubled per earlier attempt up to 8x, plus `extra_ms`.
    pub fn deadline(now_ms: f64, stall_timeout_ms: f64, attempt: u32, extra_ms: f64) -> Self {
        let doubled = stall_timeout_ms * f64::from(1u32 << attempt.saturating_sub(1).min(3));
        Self {
            started_ms: now_ms,
            last_progress_ms: None,
            limit: Limit::Deadline(doubled + extra_ms),
        }
    }

    /// Some bytes of the request moved at `now_ms`.
    pub fn progressed(&mut self, now_ms: f64) {
        self.last_progress_ms = Some(now_ms);
    }

    /// Milliseconds left before the request counts as stalled; zero or less means it is.
    pub fn remaining_ms(&self, now_ms: f64) -> f64 {
        let until = match (self.limit, self.last_progress_ms) {
            (Limit::Deadline(ms), _) => self.started_ms + ms,
            (Limit::Idle(ms), Some(last)) => last + ms,
            (Limit::Idle(ms), None) => self.started_ms + ms * FIRST_BYTE_FACTOR,
        };
        until - now_ms
    }

    /// Why the request counts as stalled, for the error message. (Whole milliseconds:
    /// formatting an f64 would compile Rust's float printer into the wasm.)
    pub fn describe(&self) -> String {
        match (self.limit, self.last_progress_ms) {
            (Limit::Deadline(ms), _) => format!("no answer within {} ms", ms.round() as u64),
            (Limit::Idle(ms), Some(_)) => format!("no byte moved for {} ms", ms.round() as u64),
            (Limit::Idle(ms), None) => format!(
                "the request sent nothing within {} ms",
                (ms * FIRST_BYTE_FACTOR).round() as u64
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_but_moving_request_never_stalls() {
        let mut watch = StallWatch::idle(0.0, 30_000.0);
        // A 8 MiB slice at 1 Mbit/s takes about 67 s; progress every 200 ms.
        let mut now = 0.0;
        while now < 600_000.0 {
            now += 200.0;
            watch.progressed(now);
            assert!(watch.remaining_ms(now + 199.0) > 0.0);
        }
    }

    #[test]
    fn idle_time_counts_from_the_last_progress() {
        let mut watch = StallWatch::idle(0.0, 30_000.0);
        watch.progressed(5_000.0);
        assert_eq!(watch.remaining_ms(20_000.0), 15_000.0);
        assert!(watch.remaining_ms(35_000.0) <= 0.0);
        assert_eq!(watch.describe(), "no byte moved for 30000 ms");
    }

    #[test]
    fn waiting_for_the_first_byte_gets_longer() {
        let watch = StallWatch::idle(1_000.0, 30_000.0);
        assert!(watch.remaining_ms(100_000.0) > 0.0);
        assert!(watch.remaining_ms(121_000.0) <= 0.0);
        assert_eq!(
            watch.describe(),
            "the request sent nothing within 120000 ms"
        );
    }

    #[test]
    fn a_deadline_ignores_progress_and_doubles_per_attempt_up_to_8x() {
        let mut watch = StallWatch::deadline(0.0, 1_000.0, 1, 0.0);
        watch.progressed(900.0);
        assert_eq!(watch.remaining_ms(1_000.0), 0.0);
        for (attempt, limit) in [(2, 2_000.0), (3, 4_000.0), (4, 8_000.0), (9, 8_000.0)] {
            let watch = StallWatch::deadline(0.0, 1_000.0, attempt, 500.0);
            assert_eq!(watch.remaining_ms(0.0), limit + 500.0, "attempt {attempt}");
        }
    }
}
