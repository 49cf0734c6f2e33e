//! The received-slices set against a plain `BTreeSet` model, for any order of inserts (the
//! order a client, or a journal, gives them in).
#![no_main]

use std::collections::BTreeSet;

use chunkwise_core::ranges::IndexSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|inserts: Vec<u16>| {
    let mut set = IndexSet::new();
    let mut model = BTreeSet::new();
    for index in inserts {
        assert_eq!(set.insert(u64::from(index)), model.insert(u64::from(index)));
    }
    assert_eq!(set.len(), model.len() as u64);
    assert_eq!(set.max(), model.last().copied());
    let listed: Vec<u64> = set.ranges().flat_map(|r| r.start..r.end).collect();
    assert_eq!(listed, model.iter().copied().collect::<Vec<_>>());
    let count = model.last().map_or(0, |m| m + 2);
    let missing: Vec<u64> = set
        .missing(count)
        .into_iter()
        .flat_map(|r| r.start..r.end)
        .collect();
    let expected: Vec<u64> = (0..count).filter(|i| !model.contains(i)).collect();
    assert_eq!(missing, expected);
});
