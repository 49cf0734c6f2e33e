//! A compact set of slice indices, kept as sorted, disjoint, half-open ranges.
//!
//! The server records which slices it holds with it, and a resuming client reads the
//! same shape back from `GET /uploads/{id}`, so 100,000 received slices cost one range.

use std::ops::Range;

/// Sorted, disjoint, non-adjacent half-open ranges of slice indices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexSet {
    /// `(start, end)`, end exclusive, sorted; ranges never touch or overlap. A sorted Vec,
    /// not a BTreeMap: there are few ranges, and a B-tree costs the browser package ~10 KB.
    ranges: Vec<(u64, u64)>,
    len: u64,
}

impl IndexSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `index` is in the set.
    pub fn contains(&self, index: u64) -> bool {
        let after = self.ranges.partition_point(|&(start, _)| start <= index);
        after > 0 && index < self.ranges[after - 1].1
    }

    /// Adds `index`; returns whether it was new.
    pub fn insert(&mut self, index: u64) -> bool {
        let before = self.len;
        self.insert_range(index..index.saturating_add(1));
        self.len != before
    }

    /// Adds every index in `range`, merging with neighbours.
    pub fn insert_range(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // Every stored range that overlaps or touches `start..end` is absorbed: those from
        // the first that ends at or after `start` to the last that starts at or before `end`.
        let first = self.ranges.partition_point(|&(_, e)| e < start);
        let last = self.ranges.partition_point(|&(s, _)| s <= end);
        for &(s, e) in &self.ranges[first..last] {
            self.len -= e - s;
            start = start.min(s);
            end = end.max(e);
        }
        if first < last {
            self.ranges.drain(first + 1..last);
            self.ranges[first] = (start, end);
        } else {
            self.ranges.insert(first, (start, end));
        }
        self.len += end - start;
    }

    /// How many indices the set holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The largest index held.
    pub fn max(&self) -> Option<u64> {
        self.ranges.last().map(|&(_, end)| end - 1)
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|&(s, e)| s..e)
    }

    /// The ranges of `0..count` that are not in the set, in order.
    pub fn missing(&self, count: u64) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut next = 0;
        for r in self.ranges() {
            if r.start >= count {
                break;
            }
            if r.start > next {
                out.push(next..r.start);
            }
            next = r.end;
        }
        if next < count {
            out.push(next..count);
        }
        out
    }

    /// Builds the set from `[start, end)` pairs, as sent on the wire.
    pub fn from_ranges<I: IntoIterator<Item = [u64; 2]>>(pairs: I) -> Self {
        let mut set = Self::new();
        for [start, end] in pairs {
            set.insert_range(start..end);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_neighbours_in_any_order() {
        let mut set = IndexSet::new();
        for i in [5, 3, 4, 0, 9, 1] {
            assert!(set.insert(i));
        }
        assert!(!set.insert(4));
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![0..2, 3..6, 9..10]);
        assert_eq!(set.len(), 6);
        assert!(set.contains(3) && set.contains(5) && !set.contains(6) && !set.contains(2));
        assert_eq!(set.missing(11), vec![2..3, 6..9, 10..11]);
        assert_eq!(set.max(), Some(9));
    }

    #[test]
    fn missing_of_empty_and_full() {
        let mut set = IndexSet::new();
        assert_eq!(set.missing(3), vec![0..3]);
        assert_eq!(set.missing(0), Vec::<Range<u64>>::new());
        for i in 0..3 {
            set.insert(i);
        }
        assert!(set.missing(3).is_empty());
        assert_eq!(IndexSet::from_ranges([[0, 3]]), set);
    }

    #[test]
    fn ranges_merge_when_they_overlap_or_touch() {
        let mut set = IndexSet::from_ranges([[10, 20], [30, 40]]);
        set.insert_range(20..30);
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![10..40]);
        assert_eq!(set.len(), 30);
        set.insert_range(5..50);
        assert_eq!(set.len(), 45);
        set.insert_range(0..3);
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![0..3, 5..50]);
        assert_eq!(IndexSet::from_ranges([[0, 1 << 40]]).len(), 1 << 40);
    }

    #[test]
    fn handles_indices_near_u64_max() {
        let mut set = IndexSet::new();
        assert!(set.insert(u64::MAX - 1));
        assert!(set.contains(u64::MAX - 1));
        assert!(!set.contains(u64::MAX - 2));
    }

    #[test]
    fn agrees_with_a_plain_set_under_random_inserts() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..50 {
            let mut set = IndexSet::new();
            let mut plain = [false; 200];
            for _ in 0..60 {
                let start = next(200);
                let end = (start + next(8)).min(200);
                set.insert_range(start..end);
                plain[start as usize..end as usize].fill(true);
                let held: Vec<u64> = (0..200).filter(|&i| set.contains(i)).collect();
                let want: Vec<u64> = (0..200).filter(|&i| plain[i as usize]).collect();
                assert_eq!(held, want);
                assert_eq!(set.len(), want.len() as u64);
                let ranges: Vec<_> = set.ranges().collect();
                assert!(
                    ranges.windows(2).all(|w| w[0].end < w[1].start),
                    "{ranges:?}"
                );
            }
        }
    }
}
