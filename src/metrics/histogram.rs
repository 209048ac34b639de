//! A histogram of atomics for Prometheus: observing takes no lock, so it can sit on a per-task
//! path (prometheus-client's own `Histogram` locks a mutex per observation). Fixed buckets,
//! chosen once: [`seconds_buckets`] (1 ms to about 65 s) and [`bytes_buckets`] (100 B to about
//! 26 MB), both doubling.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of the seconds histograms: 1 ms doubling to 65.536 s (17 buckets, then `+Inf`).
pub fn seconds_buckets() -> Vec<f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17).collect()
}

/// Upper bounds of the bytes histograms: 100 B doubling to about 26 MB (19 buckets, then
/// `+Inf`).
pub fn bytes_buckets() -> Vec<f64> {
    prometheus_client::metrics::histogram::exponential_buckets(100.0, 2.0, 19).collect()
}

/// A cumulative histogram whose observations are a few relaxed atomic operations. Cheap to
/// clone: clones share the counts.
///
/// The count is the sum of the bucket counts, read at encoding, so `_count` always equals the
/// `+Inf` bucket; `_sum` may lag an observation made during the read by that one value.
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Finite upper bounds, ascending.
    bounds: Vec<f64>,
    /// One count per bound, then the `+Inf` bucket (not cumulative).
    counts: Vec<AtomicU64>,
    /// The sum of observations, as `f64` bits.
    sum_bits: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram over `bounds` (sorted; non-finite bounds are dropped, `+Inf` is
    /// always there).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let mut bounds: Vec<f64> = bounds.into_iter().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                bounds,
                counts,
                sum_bits: AtomicU64::new(0f64.to_bits()),
            }),
        }
    }

    /// An empty histogram over [`seconds_buckets`].
    pub fn seconds() -> Self {
        Self::new(seconds_buckets())
    }

    /// An empty histogram over [`bytes_buckets`].
    pub fn bytes() -> Self {
        Self::new(bytes_buckets())
    }

    /// Count `value` in the first bucket whose bound is at least `value` (`+Inf` for larger
    /// values and NaN) and add it to the sum.
    pub fn observe(&self, value: f64) {
        let inner = &*self.inner;
        let bucket = if value.is_nan() {
            inner.bounds.len()
        } else {
            inner.bounds.partition_point(|bound| *bound < value)
        };
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let mut current = inner.sum_bits.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match inner.sum_bits.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The sum of observations so far.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.inner.sum_bits.load(Ordering::Relaxed))
    }

    /// (upper bound, count in that bucket alone), `+Inf` last.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let inner = &*self.inner;
        inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(inner.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect()
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(
            self.sum(),
            count,
            &buckets,
            None::<&std::collections::HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_at_or_above_them() {
        let histogram = AtomicHistogram::new([1.0, 10.0]);
        for value in [0.5, 1.0, 1.5, 10.0, 11.0, f64::NAN] {
            histogram.observe(value);
        }
        let counts: Vec<u64> = histogram.buckets().iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, vec![2, 2, 2]);
        assert_eq!(histogram.count(), 6);
    }

    #[test]
    fn the_sum_adds_every_observation_across_threads() {
        let histogram = AtomicHistogram::seconds();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        histogram.observe(0.25);
                    }
                });
            }
        });
        assert_eq!(histogram.count(), 4000);
        assert_eq!(histogram.sum(), 1000.0);
    }

    #[test]
    fn buckets_cover_a_millisecond_to_a_minute_and_100_bytes_to_16_mb() {
        let seconds = seconds_buckets();
        assert_eq!(seconds.first(), Some(&0.001));
        assert!(seconds.last().is_some_and(|&last| last >= 60.0));
        let bytes = bytes_buckets();
        assert_eq!(bytes.first(), Some(&100.0));
        assert!(
            bytes
                .last()
                .is_some_and(|&last| last >= 16.0 * 1024.0 * 1024.0)
        );
        assert!(seconds.windows(2).all(|w| w[1] == w[0] * 2.0));
    }
}
