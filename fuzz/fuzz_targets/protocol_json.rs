//! Every JSON body a client or server sends: any bytes either parse or are refused, never
//! a panic; what parses serializes back to the same value.
#![no_main]

use chunkwise_core::protocol::{Complete, Completed, CreateUpload, Created, Status};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_vec(&value).expect("a parsed value serializes");
        let again: T = serde_json::from_slice(&text).expect("what was written parses");
        assert_eq!(again, value);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<CreateUpload>(data);
    round_trip::<Complete>(data);
    round_trip::<Created>(data);
    round_trip::<Status>(data);
    round_trip::<Completed>(data);
});
