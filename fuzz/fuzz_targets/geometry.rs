//! Slice geometry for any chunk size, size and index a client can send: no panic, no
//! overflow, and every slice lies inside the upload, next to its neighbours.
#![no_main]

use chunkwise_core::geometry::Geometry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, Option<u64>, u64)| {
    let (chunk, size, index) = input;
    let Ok(geometry) = Geometry::new(chunk, size) else {
        assert_eq!(chunk, 0);
        return;
    };
    let Ok(range) = geometry.slice_range(index) else {
        return;
    };
    assert!(range.start < range.end || size == Some(0));
    assert!(range.end - range.start <= chunk);
    if let Some(size) = size {
        assert!(range.end <= size);
        let count = geometry.slice_count().expect("a known size has a count");
        assert!(index < count.max(1));
    }
    if index > 0 {
        if let Ok(before) = geometry.slice_range(index - 1) {
            assert_eq!(before.end, range.start);
        }
    }
});
