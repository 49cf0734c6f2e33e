//! An upload's journal as the server reads it at start: any bytes (a torn record, a
//! corrupted disk) replay into slices that fit the upload, never a panic; and records the
//! store wrote read back, exactly: the first of each index, in index order (an empty replay
//! fails here).
#![no_main]

use std::collections::BTreeMap;

use chunkwise_core::geometry::Geometry;
use libfuzzer_sys::fuzz_target;

#[path = "../../server/src/store/disk/journal.rs"]
#[allow(dead_code)]
mod journal;

use journal::{record, replay, Entry, RECORD_BYTES};

fuzz_target!(|input: (u16, Option<u32>, Vec<(u16, Option<u8>)>, &[u8])| {
    let (chunk_size, size, writes, bytes) = input;
    let (chunk_size, size) = (u64::from(chunk_size), size.map(u64::from));

    // Any bytes at all.
    let replayed = replay(bytes, chunk_size, size);
    assert_eq!(replayed.whole_len % RECORD_BYTES, 0);
    assert!(bytes.len() - replayed.whole_len < RECORD_BYTES);
    let Ok(geometry) = Geometry::new(chunk_size, size) else {
        assert!(replayed.entries.is_empty());
        return;
    };
    for pair in replayed.entries.windows(2) {
        assert!(
            pair[0].index < pair[1].index,
            "one entry per index, in order"
        );
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

    // Records as the store appends them (slices in any order, an index again after a
    // retry), then a tail torn by a crash: each slice written reads back.
    let mut journal = Vec::new();
    let mut written: BTreeMap<u64, Entry> = BTreeMap::new();
    for (index, sha256) in writes {
        let index = u64::from(index);
        let Ok(len) = geometry.slice_len(index) else {
            continue;
        };
        // A SHA-256 of all zeros is how a record says "none": never a real one.
        let entry = Entry {
            index,
            len,
            sha256: sha256.map(|b| [b.max(1); 32]),
        };
        journal.extend_from_slice(&record(&entry));
        written.entry(index).or_insert(entry);
    }
    let whole_len = journal.len();
    journal.extend_from_slice(&bytes[..bytes.len().min(RECORD_BYTES - 1)]);
    let replayed = replay(&journal, chunk_size, size);
    assert_eq!(
        replayed.whole_len, whole_len,
        "the torn tail is cut, nothing else"
    );
    assert_eq!(
        replayed.entries,
        written.into_values().collect::<Vec<_>>(),
        "what was written reads back"
    );
});
