//! Upload options and their validation. The engine only ever sees [`Valid`] options.

/// 1 KiB.
pub const KIB: u64 = 1024;
/// 1 MiB.
pub const MIB: u64 = 1024 * KIB;
/// 1 GiB.
pub const GIB: u64 = 1024 * MIB;

/// Default slice size: 8 MiB.
pub const DEFAULT_CHUNK_SIZE_BYTES: u64 = 8 * MIB;
/// Smallest slice size a client may choose.
pub const MIN_CHUNK_SIZE_BYTES: u64 = 256 * KIB;
/// Largest slice size a client may choose.
pub const MAX_CHUNK_SIZE_BYTES: u64 = GIB;
/// Default bound on slice requests in flight.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 4;
/// Largest bound on slice requests in flight.
pub const MAX_MAX_IN_FLIGHT: u32 = 32;
/// Default retries per slice.
pub const DEFAULT_RETRIES: u32 = 5;
/// Largest retry budget per slice.
pub const MAX_RETRIES: u32 = 100;
/// Default time a request may go without an answer before it is aborted and retried.
pub const DEFAULT_STALL_TIMEOUT_MS: u64 = 30_000;
/// Default time to keep waiting while every request fails at the network level.
pub const DEFAULT_OFFLINE_TIMEOUT_MS: u64 = 10 * 60_000;
/// Largest size a JS number holds exactly (2^53 - 1).
pub const MAX_SAFE_SIZE_BYTES: u64 = (1 << 53) - 1;

/// Which digest protects the upload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// SHA-256 per slice (`Content-Digest`) and over the whole file (checked at `complete`).
    #[default]
    Sha256,
    /// No digest.
    None,
}

/// Options as given, before validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Slice size in bytes.
    pub chunk_size_bytes: u64,
    /// Bound on slice requests in flight.
    pub max_in_flight: u32,
    /// Total size for a stream source of known length.
    pub size_bytes: Option<u64>,
    /// Digest algorithm.
    pub digest: DigestAlgorithm,
    /// Retries per slice on retryable failures other than network errors.
    pub retries: u32,
    /// A request with no answer after this long is aborted and retried.
    pub stall_timeout_ms: u64,
    /// How long to keep waiting out network errors (offline, server down) before failing.
    pub offline_timeout_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            chunk_size_bytes: DEFAULT_CHUNK_SIZE_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            size_bytes: None,
            digest: DigestAlgorithm::Sha256,
            retries: DEFAULT_RETRIES,
            stall_timeout_ms: DEFAULT_STALL_TIMEOUT_MS,
            offline_timeout_ms: DEFAULT_OFFLINE_TIMEOUT_MS,
        }
    }
}

/// An option outside its allowed range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{option} must be {allowed}; got {got}")]
pub struct ConfigError {
    /// The option's JS name.
    pub option: &'static str,
    /// What is allowed, in words.
    pub allowed: &'static str,
    /// What was given.
    pub got: String,
}

/// Options that passed [`Options::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Valid(Options);

impl Valid {
    /// The validated options.
    pub fn get(&self) -> &Options {
        &self.0
    }

    /// The same options, one slice request at a time: for a protocol that appends to an
    /// upload in order (tus).
    pub fn in_order(mut self) -> Valid {
        self.0.max_in_flight = 1;
        self
    }

    /// The same options without slice digests: for a receiver that checks none.
    pub fn without_digest(&self) -> Valid {
        let mut options = self.0.clone();
        options.digest = DigestAlgorithm::None;
        Valid(options)
    }
}

impl Options {
    /// Checks every range; the first violation is reported.
    pub fn validate(self) -> Result<Valid, ConfigError> {
        fn check(
            ok: bool,
            option: &'static str,
            allowed: &'static str,
            got: impl ToString,
        ) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError {
                    option,
                    allowed,
                    got: got.to_string(),
                })
            }
        }
        check(
            (MIN_CHUNK_SIZE_BYTES..=MAX_CHUNK_SIZE_BYTES).contains(&self.chunk_size_bytes),
            "chunkSize",
            "an integer number of bytes from 262144 (256 KiB) to 1073741824 (1 GiB)",
            self.chunk_size_bytes,
        )?;
        check(
            (1..=MAX_MAX_IN_FLIGHT).contains(&self.max_in_flight),
            "maxInFlight",
            "an integer from 1 to 32",
            self.max_in_flight,
        )?;
        check(
            self.retries <= MAX_RETRIES,
            "retries",
            "an integer from 0 to 100",
            self.retries,
        )?;
        check(
            (100..=3_600_000).contains(&self.stall_timeout_ms),
            "stallTimeoutMs",
            "an integer number of milliseconds from 100 to 3600000 (1 hour)",
            self.stall_timeout_ms,
        )?;
        check(
            self.offline_timeout_ms <= 86_400_000,
            "offlineTimeoutMs",
            "an integer number of milliseconds from 0 to 86400000 (1 day)",
            self.offline_timeout_ms,
        )?;
        if let Some(size) = self.size_bytes {
            check(
                size <= MAX_SAFE_SIZE_BYTES,
                "size",
                "an integer number of bytes from 0 to Number.MAX_SAFE_INTEGER",
                size,
            )?;
        }
        Ok(Valid(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let valid = Options::default().validate().unwrap();
        assert_eq!(valid.get().chunk_size_bytes, 8 * MIB);
        assert_eq!(valid.get().max_in_flight, 4);
    }

    #[test]
    fn bounds_are_inclusive() {
        for chunk in [256 * KIB, GIB] {
            assert!(Options {
                chunk_size_bytes: chunk,
                ..Options::default()
            }
            .validate()
            .is_ok());
        }
        for max in [1, 32] {
            assert!(Options {
                max_in_flight: max,
                ..Options::default()
            }
            .validate()
            .is_ok());
        }
    }

    #[test]
    fn out_of_range_names_the_option() {
        let err = Options {
            chunk_size_bytes: 256 * KIB - 1,
            ..Options::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.option, "chunkSize");
        assert!(err
            .to_string()
            .starts_with("chunkSize must be an integer number of bytes from 262144"));
        let err = Options {
            max_in_flight: 33,
            ..Options::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.option, "maxInFlight");
        let err = Options {
            max_in_flight: 0,
            ..Options::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.got, "0");
        let err = Options {
            retries: 101,
            ..Options::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.option, "retries");
        let err = Options {
            size_bytes: Some(1 << 53),
            ..Options::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.option, "size");
    }
}
