//! Every error the API answers with: a status and `{"error":{"code","message"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chunkwise_core::protocol::{ErrorBody, ErrorDetail};

/// An API error: status, stable snake_case code, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable, snake_case.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Seconds after which to try again (`Retry-After`), for a refusal that clears.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// The same error, telling the client to try again after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 503 with `Retry-After`: a bound was reached that clears by itself.
    pub fn busy(code: &'static str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry_after(retry_after_secs)
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for an upload id that is well formed but unknown.
    pub fn upload_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "upload_not_found",
            format!("no upload with id {id:?}"),
        )
    }

    /// 413 for an upload larger than the server takes.
    pub fn upload_too_large(size: u64, limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
            format!("size {size} exceeds the server's limit of {limit} bytes"),
        )
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// Maps a file-system error: a full disk is 507 (the upload stays resumable), the
    /// rest is 500 with the detail logged, not sent.
    pub fn storage(context: &str, error: &std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::StorageFull || error.raw_os_error() == Some(28) {
            return Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                format!(
                    "the server's disk is full while {context}; the upload can be resumed later"
                ),
            );
        }
        tracing::error!(%error, context, "storage error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
            format!("the server failed while {context}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after_secs;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
