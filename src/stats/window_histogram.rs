//! [`WindowHistogram`]: the HDR histogram behind one window's percentiles, sized to what the
//! report prints. Two significant digits (a percentile within 1 %: the report prints two
//! decimals, or three significant digits under 0.01; a percentile is the lowest value of its
//! bucket, or the maximum in the maximum's bucket, so a recorded 700 B still prints 0.68 KB),
//! 32-bit counts, allocated at the first
//! value, grown when a value is beyond its range, and reset in place when the window closes so
//! the next window reuses the memory.

use hdrhistogram::Histogram;

/// Significant decimal digits kept (bucket width at most 1/128 of the value).
const SIGNIFICANT_DIGITS: u8 = 2;

/// A histogram of `u64` values (µs or bytes) for one window, empty until the first value.
#[derive(Debug, Clone)]
pub(crate) struct WindowHistogram {
    /// The highest value the histogram is sized for when first allocated (it grows beyond).
    initial_high: u64,
    counts: Option<Box<Histogram<u32>>>,
}

impl WindowHistogram {
    /// An empty histogram that, once used, is sized for values up to `initial_high` first.
    pub(crate) const fn new(initial_high: u64) -> Self {
        Self {
            initial_high,
            counts: None,
        }
    }

    /// Count `value` (allocating at the first value, growing past the range).
    pub(crate) fn record(&mut self, value: u64) {
        let high = self.initial_high.max(2);
        let histogram = self.counts.get_or_insert_with(|| {
            let mut histogram = Histogram::new_with_bounds(1, high, SIGNIFICANT_DIGITS)
                .expect("bounds 1..high (high >= 2) at 2 digits are valid");
            histogram.auto(true);
            Box::new(histogram)
        });
        if histogram.record(value).is_err() {
            histogram.saturating_record(value);
        }
    }

    /// The value at `quantile` of values recorded between `min` and `max`: the maximum when
    /// the quantile falls in the bucket holding it, else the lowest value of its bucket (so
    /// at most 1 % under, and exact below 256), never outside `min..=max` (`min` without a
    /// value).
    pub(crate) fn value_at_quantile(&self, quantile: f64, min: u64, max: u64) -> u64 {
        let Some(histogram) = &self.counts else {
            return min;
        };
        let value = histogram.value_at_quantile(quantile);
        if value >= max {
            max
        } else {
            histogram.lowest_equivalent(value).clamp(min, max)
        }
    }

    /// Add every count of `other` (growing when needed).
    pub(crate) fn add(&mut self, other: &WindowHistogram) {
        let Some(theirs) = &other.counts else {
            return;
        };
        match &mut self.counts {
            Some(ours) => {
                if ours.add(theirs.as_ref()).is_err() {
                    // Only a value beyond u64 could refuse; count what fits, value by value.
                    for value in theirs.iter_recorded() {
                        ours.saturating_record_n(value.value_iterated_to(), value.count_at_value());
                    }
                }
            }
            None => self.counts = Some(theirs.clone()),
        }
    }

    /// Forget the counts, keeping the memory for the next window.
    pub(crate) fn reset(&mut self) {
        if let Some(histogram) = &mut self.counts {
            histogram.reset();
        }
    }

    /// Bytes held by the counts (0 until the first value).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.counts
            .as_ref()
            .map_or(0, |h| h.distinct_values() * std::mem::size_of::<u32>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_allocated_until_the_first_value() {
        let mut histogram = WindowHistogram::new(60_000_000);
        assert_eq!(histogram.heap_bytes(), 0);
        assert_eq!(histogram.value_at_quantile(0.99, 7, 9), 7);
        histogram.record(1_500);
        assert!(histogram.heap_bytes() > 0);
        assert!(
            histogram.heap_bytes() < 16 * 1024,
            "{}",
            histogram.heap_bytes()
        );
    }

    #[test]
    fn percentiles_are_within_one_percent_and_values_beyond_the_range_grow_it() {
        let mut histogram = WindowHistogram::new(1_000);
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
        let mut a = WindowHistogram::new(1_000_000);
        a.record(100);
        let bytes = a.heap_bytes();
        a.reset();
        assert_eq!(a.heap_bytes(), bytes);
        assert_eq!(a.value_at_quantile(0.5, 0, 0), 0);
        let mut b = WindowHistogram::new(1_000_000);
        b.record(5_000);
        a.add(&b);
        a.add(&WindowHistogram::new(10));
        assert!((4_950..=5_000).contains(&a.value_at_quantile(0.5, 100, 10_000)));
        // The quantile in the maximum's bucket is the maximum itself.
        assert_eq!(a.value_at_quantile(0.99, 100, 5_003), 5_003);
    }
}
