//! `Content-Digest` and hex SHA-256 fields: any text parses or is refused, and what parses
//! is written back as the same digest.
#![no_main]

use chunkwise_core::protocol::{content_digest, hex, parse_content_digest, parse_hex_sha256};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(digest) = parse_content_digest(text) {
        assert_eq!(
            parse_content_digest(&content_digest(&digest)).ok(),
            Some(digest)
        );
    }
    if let Some(digest) = parse_hex_sha256(text) {
        assert_eq!(hex(&digest), text.to_ascii_lowercase());
    }
});
