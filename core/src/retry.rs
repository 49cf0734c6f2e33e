//! When to retry a failed request, and how long to wait first.
//!
//! One pure function of (attempt, failure, a random number): network errors, stalls,
//! 408, 429 and every 5xx are retried with exponential backoff and full jitter
//! (<https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>); a
//! `Retry-After` the server sent is a floor. Every other 4xx fails at once.

/// Why a request failed, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Failure {
    /// The request never got an HTTP answer (connection refused or reset, DNS, CORS).
    Network,
    /// The request made no progress for too long and was aborted.
    Stalled,
    /// The server is up, but the browser hid its answer: its CORS rules refuse this page.
    /// Trying again cannot help.
    Blocked,
    /// The receiver refused the slice's bytes: they do not match the SHA-256 sent with
    /// them, so they were corrupted on the way. Sending the slice again, read again from
    /// the source, may succeed; a source that changed fails again until the retries run out.
    Corrupted {
        /// The HTTP status of the refusal.
        status: u16,
    },
    /// The receiver's view of the upload is not ours: a tus server's `409` (the offset
    /// sent is not the one it holds) or `423` (the upload is locked, by the request before
    /// this one that it has not yet let go of). Trying again after asking where the upload
    /// stands may succeed.
    Resync {
        /// The HTTP status of the refusal.
        status: u16,
    },
    /// The server answered with this status.
    Status {
        /// The HTTP status.
        status: u16,
        /// `Retry-After`, in milliseconds, when sent.
        retry_after_ms: Option<f64>,
    },
}

impl Failure {
    /// Whether this kind of failure may succeed when tried again.
    pub fn is_retryable(&self) -> bool {
        match *self {
            Failure::Network
            | Failure::Stalled
            | Failure::Corrupted { .. }
            | Failure::Resync { .. } => true,
            Failure::Blocked => false,
            Failure::Status { status, .. } => {
                status == 408 || status == 429 || (500..600).contains(&status)
            }
        }
    }
}

/// What to do after a failure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Wait this many milliseconds, then try again.
    RetryAfterMs(f64),
    /// Stop and report the failure.
    GiveUp,
}

/// Backoff parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries allowed after the first attempt.
    pub retries: u32,
    /// The first backoff ceiling.
    pub base_delay_ms: f64,
    /// The largest backoff ceiling.
    pub max_delay_ms: f64,
}

impl RetryPolicy {
    /// The default backoff (500 ms doubling up to 20 s) with `retries` retries.
    pub fn with_retries(retries: u32) -> Self {
        Self {
            retries,
            base_delay_ms: 500.0,
            max_delay_ms: 20_000.0,
        }
    }

    /// Decides after failure number `failures` (1 for the first failure).
    ///
    /// `random` is uniform in `[0, 1)`.
    pub fn decide(&self, failures: u32, failure: &Failure, random: f64) -> Decision {
        if !failure.is_retryable() || failures > self.retries {
            return Decision::GiveUp;
        }
        let exponent = failures.saturating_sub(1).min(30);
        let ceiling = (self.base_delay_ms * f64::from(1u32 << exponent)).min(self.max_delay_ms);
        // max/min, not clamp: f64::clamp can panic, and its message would compile Rust's
        // float printer (~20 KB) into the wasm.
        #[allow(clippy::manual_clamp)]
        let jittered = ceiling * random.max(0.0).min(1.0);
        let floor = match failure {
            Failure::Status {
                retry_after_ms: Some(ms),
                ..
            } => ms.max(0.0).min(10.0 * self.max_delay_ms),
            _ => 0.0,
        };
        Decision::RetryAfterMs(jittered.max(floor))
    }
}

/// The retry state of one request (a slice, or creating or completing the upload).
///
/// Network errors mean the client is offline or the server is down: they are waited out
/// with capped backoff for up to `offline_timeout_ms` without spending the retry budget,
/// so an upload survives a laptop's sleep or a server restart. Every other retryable
/// failure spends one retry.
#[derive(Clone, Debug)]
pub struct RetryState {
    policy: RetryPolicy,
    offline_timeout_ms: Option<f64>,
    counted_failures: u32,
    network_failures: u32,
    offline_since_ms: Option<f64>,
}

impl RetryState {
    /// `offline_timeout_ms: None` spends the budget on network errors too.
    pub fn new(policy: RetryPolicy, offline_timeout_ms: Option<f64>) -> Self {
        Self {
            policy,
            offline_timeout_ms,
            counted_failures: 0,
            network_failures: 0,
            offline_since_ms: None,
        }
    }

    /// Attempts made so far, counting the one about to be made as 1-based.
    pub fn attempt(&self) -> u32 {
        self.counted_failures + self.network_failures + 1
    }

    /// Decides after a failure at `now_ms`.
    pub fn on_failure(&mut self, now_ms: f64, failure: &Failure, random: f64) -> Decision {
        match (failure, self.offline_timeout_ms) {
            (Failure::Network, Some(offline_timeout_ms)) => {
                let since = *self.offline_since_ms.get_or_insert(now_ms);
                if now_ms - since >= offline_timeout_ms {
                    return Decision::GiveUp;
                }
                self.network_failures += 1;
                let unlimited = RetryPolicy {
                    retries: u32::MAX,
                    ..self.policy
                };
                unlimited.decide(self.network_failures, failure, random)
            }
            _ => {
                self.offline_since_ms = None;
                self.network_failures = 0;
                self.counted_failures += 1;
                self.policy.decide(self.counted_failures, failure, random)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> Failure {
        Failure::Status {
            status,
            retry_after_ms: None,
        }
    }

    #[test]
    fn retryable_kinds() {
        for f in [
            Failure::Network,
            Failure::Stalled,
            Failure::Resync { status: 409 },
            Failure::Resync { status: 423 },
            status(408),
            status(429),
            status(500),
            status(503),
            status(599),
        ] {
            assert!(f.is_retryable(), "{f:?}");
        }
        for f in [
            status(400),
            status(401),
            status(404),
            status(409),
            status(413),
            status(600),
        ] {
            assert!(!f.is_retryable(), "{f:?}");
        }
    }

    #[test]
    fn backoff_doubles_under_full_jitter_and_caps() {
        let p = RetryPolicy::with_retries(10);
        assert_eq!(
            p.decide(1, &Failure::Network, 0.999_999),
            Decision::RetryAfterMs(500.0 * 0.999_999)
        );
        assert_eq!(
            p.decide(3, &Failure::Network, 0.5),
            Decision::RetryAfterMs(1000.0)
        );
        assert_eq!(
            p.decide(10, &Failure::Network, 1.0),
            Decision::RetryAfterMs(20_000.0)
        );
        assert_eq!(
            p.decide(1, &Failure::Network, 0.0),
            Decision::RetryAfterMs(0.0)
        );
    }

    #[test]
    fn gives_up_after_budget_and_on_client_errors() {
        let p = RetryPolicy::with_retries(2);
        assert!(matches!(
            p.decide(2, &status(503), 0.5),
            Decision::RetryAfterMs(_)
        ));
        assert_eq!(p.decide(3, &status(503), 0.5), Decision::GiveUp);
        assert_eq!(p.decide(1, &status(400), 0.5), Decision::GiveUp);
        assert_eq!(
            RetryPolicy::with_retries(0).decide(1, &Failure::Network, 0.5),
            Decision::GiveUp
        );
    }

    #[test]
    fn network_errors_are_waited_out_until_the_offline_timeout() {
        let mut state = RetryState::new(RetryPolicy::with_retries(1), Some(60_000.0));
        let mut now = 0.0;
        for _ in 0..20 {
            match state.on_failure(now, &Failure::Network, 1.0) {
                Decision::RetryAfterMs(ms) => {
                    assert!(ms <= 20_000.0);
                    now += ms;
                }
                Decision::GiveUp => break,
            }
        }
        assert!(now >= 60_000.0, "waited {now} ms");
        assert_eq!(
            state.on_failure(now, &Failure::Network, 1.0),
            Decision::GiveUp
        );
        // Other failures still spend the budget of 1 retry.
        let mut state = RetryState::new(RetryPolicy::with_retries(1), Some(60_000.0));
        assert!(matches!(
            state.on_failure(0.0, &Failure::Stalled, 0.5),
            Decision::RetryAfterMs(_)
        ));
        assert_eq!(
            state.on_failure(1.0, &Failure::Stalled, 0.5),
            Decision::GiveUp
        );
        // Without an offline timeout, network errors spend it too.
        let mut state = RetryState::new(RetryPolicy::with_retries(1), None);
        assert!(matches!(
            state.on_failure(0.0, &Failure::Network, 0.5),
            Decision::RetryAfterMs(_)
        ));
        assert_eq!(
            state.on_failure(1.0, &Failure::Network, 0.5),
            Decision::GiveUp
        );
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::with_retries(5);
        let f = Failure::Status {
            status: 429,
            retry_after_ms: Some(3000.0),
        };
        assert_eq!(p.decide(1, &f, 0.1), Decision::RetryAfterMs(3000.0));
    }
}
