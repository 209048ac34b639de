//! Metrics read when scraped rather than kept: a [`Collector`] that asks a closure for whole
//! families (counters or gauges, with their labelled samples) at every scrape. Used for values
//! that already live elsewhere (the supervisor's delivery counters, the engine's store), so
//! nothing is counted twice and the two never disagree.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Label pairs of one sample.
pub type Labels = Vec<(&'static str, String)>;

/// Whether a sampled family counts up or goes both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampledKind {
    /// Only ever grows (the name gets `_total` when encoded).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One family as read at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledFamily {
    /// Its name, without `_total` for a counter.
    pub name: String,
    /// Its help text.
    pub help: String,
    /// Counter or gauge.
    pub kind: SampledKind,
    /// Each sample: labels and value.
    pub samples: Vec<(Labels, u64)>,
}

/// A collector calling `read` at every scrape.
pub struct Sampled<F>(pub F);

impl<F> std::fmt::Debug for Sampled<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sampled")
    }
}

impl<F> Collector for Sampled<F>
where
    F: Fn() -> Vec<SampledFamily> + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for family in (self.0)() {
            let kind = match family.kind {
                SampledKind::Counter => MetricType::Counter,
                SampledKind::Gauge => MetricType::Gauge,
            };
            let mut metric = encoder.encode_descriptor(&family.name, &family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                match family.kind {
                    SampledKind::Counter => ConstCounter::new(*value).encode(sample)?,
                    SampledKind::Gauge => {
                        ConstGauge::new(i64::try_from(*value).unwrap_or(i64::MAX)).encode(sample)?
                    }
                }
            }
        }
        Ok(())
    }
}
