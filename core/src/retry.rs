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
            Failure::Network | Failure::Stalled => true,
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
        let jittered = ceiling * random.clamp(0.0, 1.0);
        let floor = match failure {
            Failure::Status {
                retry_after_ms: Some(ms),
                ..
            } => ms.clamp(0.0, 10.0 * self.max_delay_ms),
            _ => 0.0,
        };
        Decision::RetryAfterMs(jittered.max(floor))
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
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::with_retries(5);
        let f = Failure::Status {
            status: 429,
            retry_after_ms: Some(3000.0),
        };
        assert_eq!(p.decide(1, &f, 0.1), Decision::RetryAfterMs(3000.0));
    }
}
