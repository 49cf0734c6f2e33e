//! The bucket modes' upload id, a token any client can send: any text opens to nothing or to
//! a token that seals back to exactly that text (nothing forged, nothing ambiguous), and
//! every token sealed opens to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../server/src/store/token.rs"]
mod token;

use token::{key, open, seal, Token};

fuzz_target!(|input: (&str, String, u64, Option<u64>)| {
    let (text, upload_id, chunk_size, size) = input;
    let key = key("secret", "bucket", "prefix/");
    if let Some(token) = open(&key, text) {
        assert_eq!(seal(&key, &token), text);
    }
    let token = Token {
        id: "abcdefghijklmnopqrstuv".into(),
        upload_id,
        chunk_size,
        size,
    };
    let sealed = seal(&key, &token);
    assert_eq!(open(&key, &sealed), Some(token));
    assert_eq!(
        open(&self::key("other", "bucket", "prefix/"), &sealed),
        None
    );
});
