//! The bucket modes' upload id: a token naming the multipart upload, sealed with a key
//! derived from the store's secret, so any instance sharing the store can serve the upload
//! and nobody without the secret can forge or alter one. Client input: [`open`] takes any
//! text and either gives back exactly what [`seal`] sealed or nothing (fuzzed in `fuzz/`).
//!
//! Format: `{id}.{base64url(upload id)}.{chunk size}.{size or "u"}.{base64url(mac)}`, the
//! MAC being the first 16 bytes of HMAC-SHA-256 over everything before its dot.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the HMAC kept in a token.
const MAC_BYTES: usize = 16;

/// An upload as its token names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The upload's own id (base64url, no dots): the object key's last part.
    pub id: String,
    /// The store's multipart upload id (any text).
    pub upload_id: String,
    /// The slice size.
    pub chunk_size: u64,
    /// The total size, when known at creation.
    pub size: Option<u64>,
}

fn mac(key: &[u8; 32], body: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(body.as_bytes());
    mac
}

/// The token's text.
pub fn seal(key: &[u8; 32], token: &Token) -> String {
    let body = format!(
        "{}.{}.{}.{}",
        token.id,
        URL_SAFE_NO_PAD.encode(&token.upload_id),
        token.chunk_size,
        token.size.map_or("u".to_string(), |s| s.to_string())
    );
    let tag = mac(key, &body).finalize().into_bytes();
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(&tag[..MAC_BYTES]))
}

/// The token `text` seals under `key`, or `None` for anything else (compared in constant
/// time, so a forger learns nothing from how long a refusal takes).
pub fn open(key: &[u8; 32], text: &str) -> Option<Token> {
    let (body, tag) = text.rsplit_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    if tag.len() != MAC_BYTES {
        return None;
    }
    mac(key, body).verify_truncated_left(&tag).ok()?;
    let mut fields = body.split('.');
    let (Some(id), Some(upload), Some(chunk), Some(size), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return None;
    };
    Some(Token {
        id: id.to_string(),
        upload_id: String::from_utf8(URL_SAFE_NO_PAD.decode(upload).ok()?).ok()?,
        chunk_size: chunk.parse().ok()?,
        size: match size {
            "u" => None,
            s => Some(s.parse().ok()?),
        },
    })
}

/// The key that signs upload tokens, derived from the store's secret: every instance with
/// the same credentials accepts the others' tokens, and nobody without them can forge one.
pub fn key(secret_access_key: &str, bucket: &str, prefix: &str) -> [u8; 32] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret_access_key.as_bytes()).expect("any key length");
    mac.update(b"chunkwise upload token v1\0");
    mac.update(bucket.as_bytes());
    mac.update(b"\0");
    mac.update(prefix.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let key = key("secret", "b", "p/");
        let token = Token {
            id: "abcdefghijklmnopqrstuv".into(),
            upload_id: "some/upload+id=".into(),
            chunk_size: 8 << 20,
            size: Some(12345),
        };
        let sealed = seal(&key, &token);
        assert_eq!(open(&key, &sealed), Some(token.clone()));
        let unknown = Token {
            size: None,
            ..token
        };
        assert_eq!(open(&key, &seal(&key, &unknown)), Some(unknown));
        assert_eq!(open(&key, &sealed.replacen("12345", "12346", 1)), None);
        assert_eq!(open(&key, &sealed[..sealed.len() - 1]), None);
        assert_eq!(open(&key, ""), None);
        let other = super::key("other", "b", "p/");
        assert_eq!(
            open(&other, &sealed),
            None,
            "another store's key refuses it"
        );
    }
}
