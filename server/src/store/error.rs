//! What a store answers when it cannot do what was asked: a kind the HTTP layer maps to a
//! status (in [`crate::error`], the one place), a stable code and words for people. A store
//! never speaks HTTP.

use std::fmt;

/// Why a store refused or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request does not fit the upload (a slice out of range, a wrong length or
    /// digest, a size that does not match).
    Invalid,
    /// No such upload, or no such part of one.
    NotFound,
    /// The upload's state forbids it now (already completed, a newer attempt took over).
    Conflict,
    /// Larger than this store takes.
    TooLarge,
    /// The store needs the length before the bytes.
    LengthRequired,
    /// The bytes stopped arriving for longer than the server waits.
    TimedOut,
    /// No room left; the upload stays resumable once there is.
    Full,
    /// A bound was reached that clears by itself; try again later.
    Busy,
    /// The object store behind this server refused or failed.
    Upstream,
    /// The object store behind this server cannot be reached now.
    Unavailable,
    /// This store does not do that (for instance, signing when slices pass through it).
    Unsupported,
    /// Something that should not happen; the detail is logged, not sent.
    Internal,
}

/// A store's error: its kind, a stable snake_case code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct StoreError {
    /// Why.
    pub kind: ErrorKind,
    /// Stable, snake_case.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Seconds after which trying again may work, for a refusal that clears by itself.
    pub retry_after_secs: Option<u64>,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}: {}", self.kind, self.code, self.message)
    }
}

/// What a store's fallible calls return.
pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// An error of any kind.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// [`ErrorKind::Invalid`].
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }

    /// [`ErrorKind::Conflict`].
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    /// [`ErrorKind::Internal`]; log the detail where it happened.
    pub fn internal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, code, message)
    }

    /// [`ErrorKind::Upstream`].
    pub fn upstream(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Upstream, code, message)
    }

    /// [`ErrorKind::Busy`], to be tried again after `retry_after_secs`.
    pub fn busy(code: &'static str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(ErrorKind::Busy, code, message)
        }
    }

    /// An upload id that is well formed but unknown.
    pub fn upload_not_found(id: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            "upload_not_found",
            format!("no upload with id {id:?}"),
        )
    }

    /// An upload larger than the store takes.
    pub fn upload_too_large(size: u64, limit: u64) -> Self {
        Self::new(
            ErrorKind::TooLarge,
            "upload_too_large",
            format!("size {size} exceeds the server's limit of {limit} bytes"),
        )
    }

    /// A file-system error while `context`: a full disk is [`ErrorKind::Full`] (the upload
    /// stays resumable); the rest is [`ErrorKind::Internal`], with the detail logged, not
    /// sent.
    pub fn io(context: &str, error: &std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::StorageFull || error.raw_os_error() == Some(28) {
            return Self::new(
                ErrorKind::Full,
                "insufficient_storage",
                format!(
                    "the server's disk is full while {context}; the upload can be resumed later"
                ),
            );
        }
        tracing::error!(%error, context, "storage error");
        Self::internal(
            "storage_error",
            format!("the server failed while {context}"),
        )
    }
}
