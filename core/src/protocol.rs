//! Protocol v2 (and v1): the JSON bodies and headers exchanged by the client and the server.
//!
//! v2 sends every slice of an upload to the upload's own URL, `PUT /uploads/{id}` with the
//! index in [`SLICE_INDEX`], and completes it with `POST /uploads/{id}`: a cross-origin page
//! then needs one CORS preflight per upload instead of one per slice, since browsers cache
//! preflights per URL. A v2 server says so in `protocol` of its create and status answers
//! and still answers v1's per-slice URLs.
//!
//! See `docs/protocol.md` for the full description. Field names are camelCase on the
//! wire. Sizes and offsets are `u64` (JSON numbers; browsers read them exactly up to
//! 2^53, that is 8 PiB).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `Content-Digest` header (RFC 9530).
pub const CONTENT_DIGEST: &str = "content-digest";

/// The header naming the slice a v2 `PUT /uploads/{id}` carries.
pub const SLICE_INDEX: &str = "chunkwise-slice";

/// The protocol version this crate speaks.
pub const VERSION: u32 = 2;

fn v1() -> u32 {
    1
}

/// `POST /uploads` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUpload {
    /// The slice size in bytes.
    pub chunk_size: u64,
    /// The total size, when known at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Free-form string metadata, stored beside the upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Where an upload's slices go, as create and status say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    /// To the server: `PUT /uploads/{id}` with [`SLICE_INDEX`].
    #[default]
    Server,
    /// Straight to an object store: the client asks `POST /uploads/{id}/sign` for each
    /// slice and sends it where the signed request says.
    Direct,
}

/// `POST /uploads` answer (`201 Created`, with `Location: /uploads/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    /// The upload's id: 128 random bits, URL-safe base64.
    pub id: String,
    /// The slice size in bytes.
    pub chunk_size: u64,
    /// The total size, or `null` while deferred.
    pub size: Option<u64>,
    /// The protocol version the server speaks for this upload (1 when absent).
    #[serde(default = "v1")]
    pub protocol: u32,
    /// Where slices go.
    #[serde(default)]
    pub transfer: Transfer,
}

/// `GET /uploads/{id}` answer: everything a resuming client needs in one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The upload's id.
    pub id: String,
    /// The slice size in bytes.
    pub chunk_size: u64,
    /// The total size, or `null` while deferred.
    pub size: Option<u64>,
    /// Received slice indices as `[start, end)` ranges.
    pub received: Vec<[u64; 2]>,
    /// Bytes held in received slices.
    pub bytes_received: u64,
    /// Whether `complete` has succeeded.
    pub complete: bool,
    /// The protocol version the server speaks for this upload (1 when absent).
    #[serde(default = "v1")]
    pub protocol: u32,
    /// Where slices go.
    #[serde(default)]
    pub transfer: Transfer,
    /// The upload's metadata, as stored (a `pre-create` hook may have replaced it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// `POST /uploads/{id}/complete` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Complete {
    /// The total size; required when it was deferred at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The whole-file SHA-256 the client computed, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The [`SlicesDigest`] of the slices the client read, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices_sha256: Option<String>,
}

/// `POST /uploads/{id}/complete` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completed {
    /// The upload's id.
    pub id: String,
    /// The final size in bytes.
    pub size: u64,
    /// The server's own SHA-256 of the stored bytes, lowercase hex; `null` when the bytes
    /// went straight to an object store, which checked each slice's SHA-256 instead.
    pub sha256: Option<String>,
    /// The [`SlicesDigest`] of the stored slices, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices_sha256: Option<String>,
}

/// The body of every error answer: `{"error":{"code","message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A machine-readable code and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// snake_case, stable.
    pub code: String,
    /// For people.
    pub message: String,
}

/// The digest of a whole upload from its slices' digests: SHA-256 over the 32-byte
/// SHA-256 of every slice, in index order (an empty upload hashes nothing).
///
/// Equal digests mean equal slices, so the server checking it at `complete` proves that
/// it holds exactly the bytes the client read, slice by slice; unlike a whole-file
/// SHA-256, each part can be hashed on its own (in the browser by WebCrypto, natively and
/// off the main thread) and the server learns it from the digests it checked on arrival.
#[derive(Clone, Debug, Default)]
pub struct SlicesDigest {
    hasher: Sha256,
    slices: u64,
}

impl SlicesDigest {
    /// No slices yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next slice's SHA-256.
    pub fn push(&mut self, slice_sha256: &[u8; 32]) {
        self.hasher.update(slice_sha256);
        self.slices += 1;
    }

    /// Slices added so far.
    pub fn slices(&self) -> u64 {
        self.slices
    }

    /// The digest, lowercase hex.
    pub fn finish(self) -> String {
        hex(&self.hasher.finalize())
    }
}

/// Formats a SHA-256 as a `Content-Digest` value: `sha-256=:BASE64:`.
pub fn content_digest(sha256: &[u8; 32]) -> String {
    format!("sha-256=:{}:", BASE64.encode(sha256))
}

/// A `Content-Digest` header that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestHeaderError {
    /// The header has no `sha-256` member.
    #[error("Content-Digest has no sha-256 member (only sha-256 is supported)")]
    NoSha256,
    /// The `sha-256` member is not a 32-byte base64 byte sequence.
    #[error("Content-Digest sha-256 must be a 32-byte base64 value as :BASE64:")]
    Malformed,
}

/// Reads the `sha-256` member of a `Content-Digest` header (an RFC 8941 dictionary).
///
/// Other algorithms are ignored, as RFC 9530 allows.
pub fn parse_content_digest(value: &str) -> Result<[u8; 32], DigestHeaderError> {
    for member in value.split(',') {
        let member = member.trim();
        let Some((name, rest)) = member.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("sha-256") {
            continue;
        }
        // Parameters (`;key=value`) may follow the byte sequence.
        let item = rest.trim().split(';').next().unwrap_or_default();
        let encoded = item
            .strip_prefix(':')
            .and_then(|s| s.strip_suffix(':'))
            .ok_or(DigestHeaderError::Malformed)?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|_| DigestHeaderError::Malformed)?;
        return bytes.try_into().map_err(|_| DigestHeaderError::Malformed);
    }
    Err(DigestHeaderError::NoSha256)
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parses a 64-character hex SHA-256 (either case).
pub fn parse_hex_sha256(text: &str) -> Option<[u8; 32]> {
    // Hex digits only: `from_str_radix` alone would also take a sign ("+1").
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn a_hex_digest_is_hex_digits_only() {
        // Found by `cargo fuzz run digest_headers`: a sign was taken as part of a byte.
        assert_eq!(parse_hex_sha256(&"+1".repeat(32)), None);
        assert_eq!(parse_hex_sha256(&"aB".repeat(32)), Some([0xab; 32]));
    }

    #[test]
    fn content_digest_round_trips() {
        let sha: [u8; 32] = Sha256::digest(b"hello").into();
        let header = content_digest(&sha);
        assert_eq!(
            header,
            "sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:"
        );
        assert_eq!(parse_content_digest(&header), Ok(sha));
        assert_eq!(
            parse_content_digest(&format!("sha-512=:AAAA:, {header}")),
            Ok(sha)
        );
    }

    #[test]
    fn content_digest_rejects_garbage() {
        assert_eq!(
            parse_content_digest("md5=:AAAA:"),
            Err(DigestHeaderError::NoSha256)
        );
        assert_eq!(
            parse_content_digest("sha-256=abc"),
            Err(DigestHeaderError::Malformed)
        );
        assert_eq!(
            parse_content_digest("sha-256=:AAAA:"),
            Err(DigestHeaderError::Malformed)
        );
        assert_eq!(
            parse_content_digest("sha-256=:!!:"),
            Err(DigestHeaderError::Malformed)
        );
    }

    #[test]
    fn hex_round_trips() {
        let sha: [u8; 32] = Sha256::digest(b"").into();
        let text = hex(&sha);
        assert_eq!(
            text,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(parse_hex_sha256(&text), Some(sha));
        assert_eq!(parse_hex_sha256(&text.to_uppercase()), Some(sha));
        assert_eq!(parse_hex_sha256("zz"), None);
        assert_eq!(parse_hex_sha256(&"é".repeat(32)), None);
    }

    #[test]
    fn wire_names_are_camel_case_and_strict() {
        let body: CreateUpload = serde_json::from_str(r#"{"chunkSize":8,"size":9}"#).unwrap();
        assert_eq!(
            body,
            CreateUpload {
                chunk_size: 8,
                size: Some(9),
                metadata: None
            }
        );
        assert!(serde_json::from_str::<CreateUpload>(r#"{"chunk_size":8}"#).is_err());
        assert!(serde_json::from_str::<CreateUpload>(r#"{"chunkSize":-1}"#).is_err());
        assert!(
            serde_json::from_str::<CreateUpload>(r#"{"chunkSize":18446744073709551616}"#).is_err()
        );
    }

    #[test]
    fn a_v1_server_is_recognised_by_the_missing_protocol_field() {
        let v1: Created = serde_json::from_str(r#"{"id":"a","chunkSize":8,"size":null}"#).unwrap();
        assert_eq!(v1.protocol, 1);
        let v2: Created =
            serde_json::from_str(r#"{"id":"a","chunkSize":8,"size":null,"protocol":2}"#).unwrap();
        assert_eq!(v2.protocol, VERSION);
    }
}
