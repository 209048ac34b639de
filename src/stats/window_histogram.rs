//! [`WindowHistogram`]: the histogram behind one window's percentiles, sized to what the report
//! prints and to the values it was given. The buckets are HDR's at two significant digits (a
//! percentile within 1 %: the report prints two decimals, or three significant digits under
//! 0.01; a percentile is the lowest value of its bucket, or the maximum in the maximum's
//! bucket, so a recorded 700 B still prints 0.68 KB), but only the buckets that hold a value
//! take room: 8 bytes each, kept sorted, where a dense HDR array over 1 µs–67 s is 10 KB
//! however few values came. An engine's window holds few distinct values per histogram (six
//! monitor loops a minute, a few hundred lateness buckets), and a supervisor of 1,000 engines
//! holds eight histograms per engine. Nothing is allocated before the first value; closing the
//! window clears the buckets in place so the next window reuses the memory.

/// Values below this are their own bucket; above it a bucket is 1/128 of its lowest value or
/// less (HDR's layout for two significant digits: 256 sub-buckets, half of them per doubling).
const EXACT_BELOW: u64 = 256;
/// Buckets per doubling above [`EXACT_BELOW`].
const HALF: u64 = 128;

/// One bucket that holds values: its place in the HDR layout and its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    index: u16,
    count: u32,
}

/// A histogram of `u64` values (µs or bytes) for one window, empty until the first value.
#[derive(Debug, Clone, Default)]
pub(crate) struct WindowHistogram {
    /// Buckets holding values, by increasing index.
    buckets: Vec<Bucket>,
    /// The sum of the counts.
    total: u64,
}

/// The bucket `value` falls in.
fn index_of(value: u64) -> u16 {
    if value < EXACT_BELOW {
        return value as u16;
    }
    // The doubling: value >> shift is in 128..256.
    let shift = 56 - u64::from(value.leading_zeros());
    ((shift + 1) * HALF + ((value >> shift) - HALF)) as u16
}

/// The width of bucket `index`, as a power of two.
fn shift_of(index: u16) -> u64 {
    (u64::from(index) / HALF).saturating_sub(1)
}

/// The lowest value of bucket `index`.
fn lowest(index: u16) -> u64 {
    let i = u64::from(index);
    if i < EXACT_BELOW {
        return i;
    }
    ((i % HALF) + HALF) << shift_of(index)
}

/// The highest value of bucket `index`.
fn highest(index: u16) -> u64 {
    lowest(index) + ((1u64 << shift_of(index)) - 1)
}

impl WindowHistogram {
    /// An empty histogram (nothing allocated).
    pub(crate) const fn new() -> Self {
        Self {
            buckets: Vec::new(),
            total: 0,
        }
    }

    /// Count `value` (a bucket's count saturates at `u32::MAX`).
    pub(crate) fn record(&mut self, value: u64) {
        self.add_count(index_of(value), 1);
    }

    fn add_count(&mut self, index: u16, count: u32) {
        match self.buckets.binary_search_by_key(&index, |b| b.index) {
            Ok(at) => {
                let bucket = &mut self.buckets[at];
                let added = count.min(u32::MAX - bucket.count);
                bucket.count += added;
                self.total += u64::from(added);
            }
            Err(at) => {
                self.buckets.insert(at, Bucket { index, count });
                self.total += u64::from(count);
            }
        }
    }

    /// The value at `quantile` of values recorded between `min` and `max`: the maximum when
    /// the quantile falls in the bucket holding it, else the lowest value of its bucket (so
    /// at most 1 % under, and exact below 256), never outside `min..=max` (`min` without a
    /// value). The bucket is the one HDR's `value_at_quantile` finds: the first whose running
    /// count reaches `quantile` of the total, rounded up (at least the first value).
    pub(crate) fn value_at_quantile(&self, quantile: f64, min: u64, max: u64) -> u64 {
        let Some(last) = self.buckets.last() else {
            return min;
        };
        let quantile = quantile.min(1.0);
        let target = ((quantile * self.total as f64).ceil() as u64).max(1);
        let mut running = 0u64;
        let found = self
            .buckets
            .iter()
            .find(|bucket| {
                running += u64::from(bucket.count);
                running >= target
            })
            .unwrap_or(last);
        let value = if quantile == 0.0 {
            lowest(found.index)
        } else {
            highest(found.index)
        };
        if value >= max {
            max
        } else {
            lowest(found.index).clamp(min, max)
        }
    }

    /// Add every count of `other`.
    pub(crate) fn add(&mut self, other: &WindowHistogram) {
        if self.buckets.is_empty() {
            self.buckets.clone_from(&other.buckets);
            self.total = other.total;
            return;
        }
        for bucket in &other.buckets {
            self.add_count(bucket.index, bucket.count);
        }
    }

    /// Forget the counts, keeping the memory for the next window.
    pub(crate) fn reset(&mut self) {
        self.buckets.clear();
        self.total = 0;
    }

    /// Bytes held by the buckets (0 until the first value).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;

    /// The same question asked of HDR's dense histogram at two significant digits, as this
    /// module asked it before it kept only the buckets in use.
    fn dense_quantile(values: &[u64], quantile: f64, min: u64, max: u64) -> u64 {
        let mut dense =
            Histogram::<u64>::new_with_bounds(1, 2, 2).unwrap_or_else(|e| panic!("{e}"));
        dense.auto(true);
        for &value in values {
            dense.record(value).unwrap_or_else(|e| panic!("{e}"));
        }
        let value = dense.value_at_quantile(quantile);
        if value >= max {
            max
        } else {
            dense.lowest_equivalent(value).clamp(min, max)
        }
    }

    #[test]
    fn the_buckets_are_hdrs_at_two_significant_digits() {
        for value in (0..100_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let index = index_of(value);
            assert!(lowest(index) <= value && value <= highest(index), "{value}");
            if value >= EXACT_BELOW {
                assert!(
                    highest(index) - lowest(index) < lowest(index) / 127,
                    "{value}"
                );
            } else {
                assert_eq!(lowest(index), highest(index));
            }
        }
        assert_eq!(
            (index_of(255), index_of(256), index_of(511), index_of(512)),
            (255, 256, 383, 384)
        );
    }

    #[test]
    fn quantiles_are_the_dense_histograms() {
        // A deterministic spread over six decades, with repeats.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut values = Vec::new();
        for _ in 0..5_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            values.push((state % 1_000) * 10u64.pow((state >> 32) as u32 % 6));
        }
        let mut sparse = WindowHistogram::new();
        for &value in &values {
            sparse.record(value);
        }
        let (min, max) = (
            *values.iter().min().unwrap_or(&0),
            *values.iter().max().unwrap_or(&0),
        );
        for quantile in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                sparse.value_at_quantile(quantile, min, max),
                dense_quantile(&values, quantile, min, max),
                "{quantile}"
            );
        }
    }

    #[test]
    fn nothing_is_allocated_until_the_first_value_and_few_values_take_little() {
        let mut histogram = WindowHistogram::new();
        assert_eq!(histogram.heap_bytes(), 0);
        assert_eq!(histogram.value_at_quantile(0.99, 7, 9), 7);
        for loop_time_us in [1_500, 1_510, 30_000_000, 2_000] {
            histogram.record(loop_time_us);
        }
        assert!(histogram.heap_bytes() <= 64, "{}", histogram.heap_bytes());
        assert_eq!(histogram.value_at_quantile(0.5, 1_500, 30_000_000), 1_504);
        assert_eq!(
            histogram.value_at_quantile(0.99, 1_500, 30_000_000),
            30_000_000
        );
    }

    #[test]
    fn percentiles_are_within_one_percent() {
        let mut histogram = WindowHistogram::new();
        for value in 1..=100_000u64 {
            histogram.record(value * 10);
        }
        for (quantile, exact) in [(0.5, 500_000.0), (0.9, 900_000.0), (0.99, 990_000.0)] {
            let got = histogram.value_at_quantile(quantile, 10, 1_000_000) as f64;
            assert!((got - exact).abs() / exact < 0.01, "{quantile}: {got}");
        }
    }

    #[test]
    fn reset_keeps_the_memory_and_add_merges() {
        let mut a = WindowHistogram::new();
        a.record(100);
        let bytes = a.heap_bytes();
        a.reset();
        assert_eq!(a.heap_bytes(), bytes);
        assert_eq!(a.value_at_quantile(0.5, 0, 0), 0);
        let mut b = WindowHistogram::new();
        b.record(5_000);
        a.add(&b);
        a.add(&WindowHistogram::new());
        assert!((4_950..=5_000).contains(&a.value_at_quantile(0.5, 100, 10_000)));
        // The quantile in the maximum's bucket is the maximum itself.
        assert_eq!(a.value_at_quantile(0.99, 100, 5_003), 5_003);
        let mut c = WindowHistogram::new();
        c.record(10);
        c.record(5_001);
        a.add(&c);
        assert_eq!(a.value_at_quantile(0.0, 10, 6_000), 10);
        assert_eq!(a.value_at_quantile(0.3, 10, 6_000), 10);
        assert_eq!(a.value_at_quantile(0.5, 10, 6_000), 4_992);
    }

    #[test]
    fn a_bucket_count_saturates() {
        let mut a = WindowHistogram::new();
        a.add_count(index_of(7), u32::MAX);
        a.record(7);
        a.record(9);
        assert_eq!(a.total, u64::from(u32::MAX) + 1);
        assert_eq!(a.value_at_quantile(1.0, 7, 9), 9);
    }
}
