//! Slice geometry: which bytes slice `i` covers.
//!
//! Slice `i` covers `[i * chunk_size, min((i + 1) * chunk_size, size))`. Every slice is
//! exactly `chunk_size` long except the last, which may be shorter. A zero-byte upload
//! has no slices at all.

use std::ops::Range;

/// The slicing of an upload of (possibly not yet known) size into fixed-size slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    chunk_size_bytes: u64,
    size_bytes: Option<u64>,
}

/// A slice index or length that does not fit the upload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GeometryError {
    /// `chunk_size` was zero.
    #[error("chunk size must be at least 1 byte")]
    ZeroChunkSize,
    /// The slice lies wholly past the end of the upload.
    #[error("slice {index} is out of range: the upload has {count} slices")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// How many slices there are.
        count: u64,
    },
    /// The byte offset of the slice overflows a `u64`.
    #[error("slice {index} starts past the largest representable offset")]
    Overflow {
        /// The index asked for.
        index: u64,
    },
}

impl Geometry {
    /// A geometry for slices of `chunk_size_bytes`, over `size_bytes` if known.
    pub fn new(chunk_size_bytes: u64, size_bytes: Option<u64>) -> Result<Self, GeometryError> {
        if chunk_size_bytes == 0 {
            return Err(GeometryError::ZeroChunkSize);
        }
        Ok(Self {
            chunk_size_bytes,
            size_bytes,
        })
    }

    /// The slice size in bytes.
    pub fn chunk_size_bytes(&self) -> u64 {
        self.chunk_size_bytes
    }

    /// The total size in bytes, when known.
    pub fn size_bytes(&self) -> Option<u64> {
        self.size_bytes
    }

    /// The same slicing with the total size now known.
    pub fn with_size(self, size_bytes: u64) -> Self {
        Self {
            size_bytes: Some(size_bytes),
            ..self
        }
    }

    /// The number of slices, when the size is known.
    pub fn slice_count(&self) -> Option<u64> {
        self.size_bytes
            .map(|size| size.div_ceil(self.chunk_size_bytes))
    }

    /// The byte range of slice `index`.
    ///
    /// When the size is unknown, every slice is assumed to be full length.
    pub fn slice_range(&self, index: u64) -> Result<Range<u64>, GeometryError> {
        let chunk = self.chunk_size_bytes;
        if let Some(size) = self.size_bytes {
            let count = size.div_ceil(chunk);
            if index >= count {
                return Err(GeometryError::IndexOutOfRange { index, count });
            }
            // index < ceil(size / chunk), so the start lies inside the upload; the end is
            // taken from the size, never as start + chunk, which may pass u64::MAX for the
            // last slice of a huge chunk.
            let start = index * chunk;
            return Ok(start..start + (size - start).min(chunk));
        }
        let start = index
            .checked_mul(chunk)
            .ok_or(GeometryError::Overflow { index })?;
        let end = start
            .checked_add(chunk)
            .ok_or(GeometryError::Overflow { index })?;
        Ok(start..end)
    }

    /// The length in bytes of slice `index`.
    pub fn slice_len(&self, index: u64) -> Result<u64, GeometryError> {
        self.slice_range(index).map(|r| r.end - r.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn zero_bytes_have_no_slices() {
        let g = Geometry::new(MIB, Some(0)).unwrap();
        assert_eq!(g.slice_count(), Some(0));
        assert_eq!(
            g.slice_range(0),
            Err(GeometryError::IndexOutOfRange { index: 0, count: 0 })
        );
    }

    #[test]
    fn one_byte_is_one_short_slice() {
        let g = Geometry::new(MIB, Some(1)).unwrap();
        assert_eq!(g.slice_count(), Some(1));
        assert_eq!(g.slice_range(0).unwrap(), 0..1);
    }

    #[test]
    fn exact_multiple_has_full_last_slice() {
        let g = Geometry::new(MIB, Some(3 * MIB)).unwrap();
        assert_eq!(g.slice_count(), Some(3));
        assert_eq!(g.slice_range(2).unwrap(), 2 * MIB..3 * MIB);
        assert!(g.slice_range(3).is_err());
    }

    #[test]
    fn one_byte_past_a_multiple_adds_a_one_byte_slice() {
        let g = Geometry::new(MIB, Some(3 * MIB + 1)).unwrap();
        assert_eq!(g.slice_count(), Some(4));
        assert_eq!(g.slice_len(3).unwrap(), 1);
        assert_eq!(g.slice_len(2).unwrap(), MIB);
    }

    #[test]
    fn offsets_cross_four_gib() {
        let size = 5 * 1024 * MIB + 7;
        let g = Geometry::new(8 * MIB, Some(size)).unwrap();
        let last = g.slice_count().unwrap() - 1;
        assert_eq!(last, 640);
        assert_eq!(g.slice_range(last).unwrap(), 640 * 8 * MIB..size);
        assert!(g.slice_range(512).unwrap().start >= 1 << 32);
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let g = Geometry::new(MIB, None).unwrap();
        assert_eq!(
            g.slice_range(u64::MAX),
            Err(GeometryError::Overflow { index: u64::MAX })
        );
        assert!(Geometry::new(0, None).is_err());
    }

    #[test]
    fn the_last_slice_of_a_huge_chunk_is_not_an_overflow() {
        // start + chunk passes u64::MAX, but the slice ends at the size.
        let chunk = (1 << 63) + 1;
        let g = Geometry::new(chunk, Some(u64::MAX)).unwrap();
        assert_eq!(g.slice_count(), Some(2));
        assert_eq!(g.slice_range(1).unwrap(), chunk..u64::MAX);
        assert_eq!(
            g.slice_range(2),
            Err(GeometryError::IndexOutOfRange { index: 2, count: 2 })
        );
    }
}
