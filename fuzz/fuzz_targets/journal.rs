//! An upload's journal as the server reads it at start: any bytes (a torn record, a
//! corrupted disk) replay into slices that fit the upload, never a panic; what was written
//! reads back.
#![no_main]

use chunkwise_core::geometry::Geometry;
use libfuzzer_sys::fuzz_target;

#[path = "../../server/src/store/disk/journal.rs"]
#[allow(dead_code)]
mod journal;

use journal::{record, replay, RECORD_BYTES};

fuzz_target!(|input: (u16, Option<u32>, &[u8])| {
    let (chunk_size, size, bytes) = input;
    let (chunk_size, size) = (u64::from(chunk_size), size.map(u64::from));
    let replayed = replay(bytes, chunk_size, size);
    assert_eq!(replayed.whole_len % RECORD_BYTES, 0);
    assert!(bytes.len() - replayed.whole_len < RECORD_BYTES);
    let Ok(geometry) = Geometry::new(chunk_size, size) else {
        assert!(replayed.entries.is_empty());
        return;
    };
    for pair in replayed.entries.windows(2) {
        assert!(pair[0].index < pair[1].index, "one entry per index, in order");
    }
    for entry in &replayed.entries {
        assert_eq!(geometry.slice_len(entry.index), Ok(entry.len));
        // The first record of each index is the one kept.
        let first = bytes[..replayed.whole_len]
            .chunks_exact(RECORD_BYTES)
            .find(|r| r[..8] == entry.index.to_le_bytes() && r[8..16] == entry.len.to_le_bytes())
            .expect("every entry comes from a record");
        assert_eq!(first, record(entry));
    }
});
