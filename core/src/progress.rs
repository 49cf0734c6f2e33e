//! Progress: bytes that have left the browser, bytes the server acknowledged, a
//! moving-average rate and the ETA.
//!
//! A slice request reports its bytes as they leave (XHR upload progress). Those bytes count
//! as sent at once, so a bar moves smoothly on a slow link; if the request fails, its bytes
//! come off again ([`Tracker::restart`]), so the bar never shows more than is true. The
//! rate follows every byte put on the wire, resent ones included, and slices a resumed
//! upload skipped never count towards it.

use std::collections::VecDeque;

/// How far back the moving average looks.
pub const RATE_WINDOW_MS: f64 = 5_000.0;
/// The shortest gap between two progress events.
pub const MIN_EMIT_INTERVAL_MS: f64 = 50.0;

/// A progress report, as handed to `onProgress`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Bytes that have left the browser in requests still alive or acknowledged: the bar.
    pub bytes_sent: u64,
    /// Bytes in slices the server acknowledged (or already held when resuming).
    pub bytes_acknowledged: u64,
    /// Total bytes, when known.
    pub bytes_total: Option<u64>,
    /// Slices the server acknowledged.
    pub slices_done: u64,
    /// Total slices, when known.
    pub slices_total: Option<u64>,
    /// Slice requests outstanding.
    pub in_flight: u32,
    /// Moving-average throughput of bytes put on the wire.
    pub bytes_per_second: f64,
    /// Seconds left at that rate, when both are known.
    pub eta_seconds: Option<f64>,
}

/// Tracks sent and acknowledged bytes and decides when to report.
#[derive(Debug)]
pub struct Tracker {
    current: Progress,
    /// (slice, bytes sent so far by its live attempt) for each slice in flight: at most
    /// `maxInFlight` entries, so a list (and less wasm than a map).
    sending: Vec<(u64, u64)>,
    /// Every byte put on the wire, resent ones included: what the rate follows.
    moved_bytes: u64,
    samples: VecDeque<(f64, u64)>,
    last_emit_ms: Option<f64>,
    dirty: bool,
}

impl Tracker {
    /// Starts at `now_ms` with nothing sent.
    pub fn new(now_ms: f64, bytes_total: Option<u64>, slices_total: Option<u64>) -> Self {
        Self {
            current: Progress {
                bytes_total,
                slices_total,
                ..Progress::default()
            },
            sending: Vec::new(),
            moved_bytes: 0,
            samples: VecDeque::from([(now_ms, 0)]),
            last_emit_ms: None,
            dirty: true,
        }
    }

    /// The live attempt of slice `index` has sent `bytes` of its body so far.
    pub fn sent(&mut self, now_ms: f64, index: u64, bytes: u64) {
        let at = match self.sending.iter().position(|&(i, _)| i == index) {
            Some(at) => at,
            None => {
                self.sending.push((index, 0));
                self.sending.len() - 1
            }
        };
        let before = &mut self.sending[at].1;
        if bytes <= *before {
            return;
        }
        let delta = bytes - *before;
        *before = bytes;
        self.current.bytes_sent += delta;
        self.moved(now_ms, delta);
    }

    /// The attempt of slice `index` failed: what it sent no longer counts.
    pub fn restart(&mut self, index: u64) {
        if let Some(bytes) = self.take_sending(index) {
            self.current.bytes_sent -= bytes;
            self.update_eta();
            self.dirty = true;
        }
    }

    /// Slice `index`, `len` bytes long, was acknowledged at `now_ms`.
    pub fn acknowledged(&mut self, now_ms: f64, index: u64, len: u64) {
        let sent = self.take_sending(index).unwrap_or(0).min(len);
        self.current.bytes_sent += len - sent;
        self.current.bytes_acknowledged += len;
        self.current.slices_done += 1;
        // A transport that shows no upload progress reports the whole slice here.
        self.moved(now_ms, len - sent);
    }

    fn take_sending(&mut self, index: u64) -> Option<u64> {
        let at = self.sending.iter().position(|&(i, _)| i == index)?;
        Some(self.sending.swap_remove(at).1)
    }

    /// Slice of `len` bytes the server already held when this run resumed: done, but not
    /// part of the rate.
    pub fn already_held(&mut self, len: u64) {
        self.current.bytes_sent += len;
        self.current.bytes_acknowledged += len;
        self.current.slices_done += 1;
        self.update_eta();
        self.dirty = true;
    }

    fn moved(&mut self, now_ms: f64, delta: u64) {
        self.moved_bytes += delta;
        self.samples.push_back((now_ms, self.moved_bytes));
        while self.samples.len() > 2 && self.samples[1].0 <= now_ms - RATE_WINDOW_MS {
            self.samples.pop_front();
        }
        let (t0, b0) = self.samples[0];
        let elapsed_ms = now_ms - t0;
        if elapsed_ms > 0.0 {
            self.current.bytes_per_second = (self.moved_bytes - b0) as f64 * 1000.0 / elapsed_ms;
        }
        self.update_eta();
        self.dirty = true;
    }

    /// Whether any byte has been put on the wire in this run.
    pub fn has_moved(&self) -> bool {
        self.moved_bytes > 0
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
            Some(total) if total <= self.current.bytes_acknowledged => Some(0.0),
            Some(total) if self.current.bytes_per_second > 0.0 => Some(
                total.saturating_sub(self.current.bytes_sent) as f64
                    / self.current.bytes_per_second,
            ),
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

    /// (sent, acknowledged, slices done) of a report.
    fn counts(p: &Progress) -> (u64, u64, u64) {
        (p.bytes_sent, p.bytes_acknowledged, p.slices_done)
    }

    #[test]
    fn rate_and_eta_follow_acknowledgements() {
        let mut t = Tracker::new(0.0, Some(4000), Some(4));
        assert_eq!(t.poll_emit(0.0).unwrap().bytes_sent, 0);
        t.acknowledged(1000.0, 0, 1000);
        let p = t.poll_emit(1000.0).unwrap();
        assert_eq!(counts(&p), (1000, 1000, 1));
        assert_eq!(p.bytes_per_second, 1000.0);
        assert_eq!(p.eta_seconds, Some(3.0));
    }

    #[test]
    fn bytes_count_as_they_leave_and_come_off_when_resent() {
        let mut t = Tracker::new(0.0, Some(3000), Some(3));
        t.sent(100.0, 0, 400);
        t.sent(200.0, 1, 300);
        t.sent(300.0, 0, 1000);
        let p = t.force_emit(300.0).unwrap();
        assert_eq!(counts(&p), (1300, 0, 0));
        assert!((p.bytes_per_second - 1300.0 / 0.3).abs() < 1e-6);
        // Slice 1's request failed: its 300 bytes no longer count, but they did move.
        t.restart(1);
        assert_eq!(t.force_emit(300.0).unwrap().bytes_sent, 1000);
        t.acknowledged(400.0, 0, 1000);
        t.sent(500.0, 1, 200);
        let p = t.force_emit(500.0).unwrap();
        assert_eq!(counts(&p), (1200, 1000, 1));
        // Rate over every byte on the wire: 1000 + 300 + 200 in 0.5 s.
        assert!(
            (p.bytes_per_second - 3000.0).abs() < 1e-6,
            "{}",
            p.bytes_per_second
        );
        assert_eq!(p.eta_seconds, Some(1800.0 / 3000.0));
    }

    #[test]
    fn a_late_or_repeated_report_never_moves_the_bar_back() {
        let mut t = Tracker::new(0.0, Some(1000), Some(1));
        t.sent(10.0, 0, 600);
        t.sent(20.0, 0, 500);
        assert_eq!(t.current().bytes_sent, 600);
        t.acknowledged(30.0, 0, 1000);
        assert_eq!(t.current().bytes_sent, 1000);
        assert_eq!(t.current().eta_seconds, Some(0.0));
    }

    #[test]
    fn slices_already_held_are_done_but_not_part_of_the_rate() {
        let mut t = Tracker::new(0.0, Some(3000), Some(3));
        t.already_held(1000);
        t.already_held(1000);
        assert_eq!(t.current().bytes_per_second, 0.0);
        assert_eq!(t.current().eta_seconds, None);
        t.sent(1000.0, 2, 500);
        let p = t.force_emit(1000.0).unwrap();
        assert_eq!((p.bytes_sent, p.slices_done), (2500, 2));
        assert_eq!(p.bytes_per_second, 500.0);
        assert_eq!(p.eta_seconds, Some(1.0));
    }

    #[test]
    fn emits_at_most_every_50_ms_and_keeps_the_latest() {
        let mut t = Tracker::new(0.0, Some(3000), Some(3));
        assert!(t.poll_emit(0.0).is_some());
        t.acknowledged(10.0, 0, 1000);
        assert!(t.poll_emit(10.0).is_none());
        assert_eq!(t.next_emit_in_ms(10.0), Some(40.0));
        t.acknowledged(20.0, 1, 1000);
        let p = t.poll_emit(50.0).unwrap();
        assert_eq!(p.bytes_sent, 2000);
        assert!(t.poll_emit(200.0).is_none(), "nothing changed");
    }

    #[test]
    fn moving_average_forgets_old_samples() {
        let mut t = Tracker::new(0.0, None, None);
        for i in 1..=10 {
            t.acknowledged(f64::from(i) * 1000.0, i as u64, 1000);
        }
        // Fast burst at the end: the window covers only the last five seconds.
        t.acknowledged(10_500.0, 11, 10_000);
        let p = t.force_emit(10_500.0).unwrap();
        assert!(p.bytes_per_second > 2000.0, "{}", p.bytes_per_second);
        assert_eq!(p.eta_seconds, None);
    }
}
