//! Slice geometry for any chunk size, size and index a client can send: no panic, no
//! overflow, every slice lies inside the upload next to its neighbours, and every index
//! that is inside the upload gets its slice (a geometry that refused all would fail here).
#![no_main]

use chunkwise_core::geometry::Geometry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, Option<u64>, u64)| {
    let (chunk, size, index) = input;
    let Ok(geometry) = Geometry::new(chunk, size) else {
        assert_eq!(chunk, 0);
        return;
    };
    assert_ne!(chunk, 0, "a zero chunk size is refused");
    let range = geometry.slice_range(index);
    // Which indices must have a slice: below the count when the size is known; otherwise
    // every one whose full-length slice ends at or below u64::MAX.
    let inside = match size {
        Some(size) => index < size.div_ceil(chunk),
        None => index
            .checked_mul(chunk)
            .and_then(|start| start.checked_add(chunk))
            .is_some(),
    };
    assert_eq!(
        range.is_ok(),
        inside,
        "slice {index} of {chunk} over {size:?}: {range:?}"
    );
    let Ok(range) = range else {
        return;
    };
    assert!(range.start < range.end, "a slice is never empty");
    assert_eq!(range.start, index * chunk);
    match size {
        Some(size) => {
            assert!(range.end <= size);
            let count = geometry.slice_count().expect("a known size has a count");
            assert_eq!(count, size.div_ceil(chunk));
            // Every slice but the last is full; the last ends at the size.
            if index + 1 < count {
                assert_eq!(range.end - range.start, chunk);
            } else {
                assert_eq!(range.end, size);
            }
        }
        None => assert_eq!(range.end - range.start, chunk),
    }
    assert_eq!(geometry.slice_len(index), Ok(range.end - range.start));
    if index > 0 {
        let before = geometry
            .slice_range(index - 1)
            .expect("the slice before one inside is inside");
        assert_eq!(before.end, range.start);
    }
});
