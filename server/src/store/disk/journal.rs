//! An upload's journal: one fixed-size record per received slice, appended only after the
//! slice's bytes were flushed, so the journal never claims a byte the disk does not hold.
//!
//! A record is 48 bytes: the slice's index and length as little-endian u64, then its
//! SHA-256 (zeros when it came without `Content-Digest`). [`replay`] reads any bytes at
//! all (a torn tail, a corrupted disk) into the received set, never a panic, and keeps only
//! records that fit the upload (fuzzed in `fuzz/`).

use chunkwise_core::geometry::Geometry;

/// Bytes in one record.
pub const RECORD_BYTES: usize = 48;

/// One received slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The slice's index.
    pub index: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Its SHA-256, when the client sent one.
    pub sha256: Option<[u8; 32]>,
}

/// The record for a slice.
pub fn record(entry: &Entry) -> [u8; RECORD_BYTES] {
    let mut record = [0u8; RECORD_BYTES];
    record[..8].copy_from_slice(&entry.index.to_le_bytes());
    record[8..16].copy_from_slice(&entry.len.to_le_bytes());
    record[16..].copy_from_slice(&entry.sha256.unwrap_or_default());
    record
}

/// What a journal holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The length of its whole records; anything past it is a record torn by a crash, to
    /// be cut off before the next append.
    pub whole_len: usize,
    /// The received slices in index order, one per index (the first recorded counts), each
    /// of the length its place in the upload gives it.
    pub entries: Vec<Entry>,
}

/// Reads a journal of an upload sliced in `chunk_size` bytes, of `size` bytes once known.
///
/// Records that cannot be true are dropped, so the slice is sent again rather than an
/// impossible one counted: past the size (sent before a short slice fixed it, which is
/// expected), or of a length other than its place's (only a corrupted disk writes those).
pub fn replay(journal: &[u8], chunk_size: u64, size: Option<u64>) -> Replayed {
    let whole_len = journal.len() - journal.len() % RECORD_BYTES;
    let Ok(geometry) = Geometry::new(chunk_size, size) else {
        return Replayed {
            whole_len,
            entries: Vec::new(),
        };
    };
    let mut entries: Vec<Entry> = journal[..whole_len]
        .chunks_exact(RECORD_BYTES)
        .map(|record| {
            let word = |at: usize| {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&record[at..at + 8]);
                u64::from_le_bytes(bytes)
            };
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(&record[16..]);
            Entry {
                index: word(0),
                len: word(8),
                sha256: (sha256 != [0; 32]).then_some(sha256),
            }
        })
        .filter(|entry| geometry.slice_len(entry.index) == Ok(entry.len))
        .collect();
    // In index order, so that each insert into the received set appends (slices arrive in
    // any order: inserted as recorded, a million scattered ones would take minutes). The
    // sort is stable, so the first record of an index is the one kept.
    entries.sort_by_key(|entry| entry.index);
    entries.dedup_by_key(|entry| entry.index);
    Replayed { whole_len, entries }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(entries: &[Entry]) -> Vec<u8> {
        entries.iter().flat_map(record).collect()
    }

    #[test]
    fn records_round_trip_in_index_order_first_one_counting() {
        let a = Entry {
            index: 3,
            len: 10,
            sha256: Some([7; 32]),
        };
        let b = Entry {
            index: 0,
            len: 10,
            sha256: None,
        };
        let again = Entry {
            sha256: Some([9; 32]),
            ..a
        };
        let replayed = replay(&journal(&[a, b, again]), 10, None);
        assert_eq!(replayed.entries, vec![b, a]);
        assert_eq!(replayed.whole_len, 3 * RECORD_BYTES);
    }

    #[test]
    fn a_torn_tail_and_impossible_records_are_dropped() {
        let full = |index| Entry {
            index,
            len: 10,
            sha256: None,
        };
        let short_last = Entry {
            index: 2,
            len: 5,
            sha256: None,
        };
        let mut bytes = journal(&[
            full(0),
            full(5), // past the size: sent before the short slice fixed it
            short_last,
            Entry { len: 0, ..full(1) },
            Entry {
                len: u64::MAX,
                ..full(1)
            },
        ]);
        bytes.extend_from_slice(&[1, 2, 3]);
        let replayed = replay(&bytes, 10, Some(25));
        assert_eq!(replayed.entries, vec![full(0), short_last]);
        assert_eq!(replayed.whole_len, 5 * RECORD_BYTES);
        assert_eq!(replay(&bytes, 0, None).entries, vec![]);
    }
}
