//! Progress: bytes the server acknowledged, a moving-average rate, and the ETA.

use std::collections::VecDeque;

/// How far back the moving average looks.
pub const RATE_WINDOW_MS: f64 = 5_000.0;
/// The shortest gap between two progress events.
pub const MIN_EMIT_INTERVAL_MS: f64 = 50.0;

/// A progress report, as handed to `onProgress`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Bytes in slices the server acknowledged.
    pub bytes_sent: u64,
    /// Total bytes, when known.
    pub bytes_total: Option<u64>,
    /// Slices the server acknowledged.
    pub slices_done: u64,
    /// Total slices, when known.
    pub slices_total: Option<u64>,
    /// Slice requests outstanding.
    pub in_flight: u32,
    /// Moving-average throughput.
    pub bytes_per_second: f64,
    /// Seconds left at that rate, when both are known.
    pub eta_seconds: Option<f64>,
}

/// Tracks acknowledged bytes and decides when to report.
#[derive(Debug)]
pub struct Tracker {
    current: Progress,
    samples: VecDeque<(f64, u64)>,
    last_emit_ms: Option<f64>,
    dirty: bool,
}

impl Tracker {
    /// Starts at `now_ms` with nothing sent.
    pub fn new(now_ms: f64, bytes_total: Option<u64>, slices_total: Option<u64>) -> Self {
        let mut samples = VecDeque::new();
        samples.push_back((now_ms, 0));
        Self {
            current: Progress {
                bytes_total,
                slices_total,
                ..Progress::default()
            },
            samples,
            last_emit_ms: None,
            dirty: true,
        }
    }

    /// Records a slice of `len` bytes acknowledged at `now_ms`.
    pub fn acknowledged(&mut self, now_ms: f64, len: u64) {
        self.current.bytes_sent += len;
        self.current.slices_done += 1;
        self.samples.push_back((now_ms, self.current.bytes_sent));
        while self.samples.len() > 2 && self.samples[1].0 <= now_ms - RATE_WINDOW_MS {
            self.samples.pop_front();
        }
        let (t0, b0) = self.samples[0];
        let elapsed_ms = now_ms - t0;
        if elapsed_ms > 0.0 {
            self.current.bytes_per_second =
                (self.current.bytes_sent - b0) as f64 * 1000.0 / elapsed_ms;
        }
        self.update_eta();
        self.dirty = true;
    }

    /// Records the number of slice requests outstanding.
    pub fn set_in_flight(&mut self, in_flight: u32) {
        if self.current.in_flight != in_flight {
            self.current.in_flight = in_flight;
            self.dirty = true;
        }
    }

    /// Records the total size once a stream of unknown length has ended.
    pub fn set_total(&mut self, bytes_total: u64, slices_total: u64) {
        self.current.bytes_total = Some(bytes_total);
        self.current.slices_total = Some(slices_total);
        self.update_eta();
        self.dirty = true;
    }

    fn update_eta(&mut self) {
        self.current.eta_seconds = match self.current.bytes_total {
            Some(total) if total <= self.current.bytes_sent => Some(0.0),
            Some(total) if self.current.bytes_per_second > 0.0 => {
                Some((total - self.current.bytes_sent) as f64 / self.current.bytes_per_second)
            }
            _ => None,
        };
    }

    /// The report to emit now, if something changed and the last one is old enough.
    pub fn poll_emit(&mut self, now_ms: f64) -> Option<Progress> {
        if !self.dirty || self.next_emit_in_ms(now_ms).is_some_and(|ms| ms > 0.0) {
            return None;
        }
        self.force_emit(now_ms)
    }

    /// The report to emit now whatever the interval, if something changed.
    pub fn force_emit(&mut self, now_ms: f64) -> Option<Progress> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        self.last_emit_ms = Some(now_ms);
        Some(self.current.clone())
    }

    /// When a pending report may go out, if one is pending.
    pub fn next_emit_in_ms(&self, now_ms: f64) -> Option<f64> {
        if !self.dirty {
            return None;
        }
        Some(
            self.last_emit_ms
                .map_or(0.0, |last| (last + MIN_EMIT_INTERVAL_MS - now_ms).max(0.0)),
        )
    }

    /// The current state.
    pub fn current(&self) -> &Progress {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_eta_follow_acknowledgements() {
        let mut t = Tracker::new(0.0, Some(4000), Some(4));
        assert_eq!(t.poll_emit(0.0).unwrap().bytes_sent, 0);
        t.acknowledged(1000.0, 1000);
        let p = t.poll_emit(1000.0).unwrap();
        assert_eq!((p.bytes_sent, p.slices_done), (1000, 1));
        assert_eq!(p.bytes_per_second, 1000.0);
        assert_eq!(p.eta_seconds, Some(3.0));
    }

    #[test]
    fn emits_at_most_every_50_ms_and_keeps_the_latest() {
        let mut t = Tracker::new(0.0, Some(3000), Some(3));
        assert!(t.poll_emit(0.0).is_some());
        t.acknowledged(10.0, 1000);
        assert!(t.poll_emit(10.0).is_none());
        assert_eq!(t.next_emit_in_ms(10.0), Some(40.0));
        t.acknowledged(20.0, 1000);
        let p = t.poll_emit(50.0).unwrap();
        assert_eq!(p.bytes_sent, 2000);
        assert!(t.poll_emit(200.0).is_none(), "nothing changed");
    }

    #[test]
    fn moving_average_forgets_old_samples() {
        let mut t = Tracker::new(0.0, None, None);
        for i in 1..=10 {
            t.acknowledged(f64::from(i) * 1000.0, 1000);
        }
        // Fast burst at the end: the window covers only the last five seconds.
        t.acknowledged(10_500.0, 10_000);
        let p = t.force_emit(10_500.0).unwrap();
        assert!(p.bytes_per_second > 2000.0, "{}", p.bytes_per_second);
        assert_eq!(p.eta_seconds, None);
    }
}
