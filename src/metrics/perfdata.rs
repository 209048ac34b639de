//! Performance data of the checks on the supervisor's metrics endpoint: the last value reported
//! per (relator, rule, node, label), for relators with `export_perfdata = true`, as
//! `turbomon_check_perfdata{relator,rule,node,label,unit}` in base units (a time in seconds, a
//! size in bytes; `%`, `c` and unitless values as they are).
//!
//! Labels come from plugin output, which the supervisor does not control, so the number of
//! series is capped at [`MAX_SERIES`]; data for a new series beyond it is dropped and counted in
//! `turbomon_check_perfdata_dropped_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::proto::PerfData;

/// Most series `turbomon_check_perfdata` holds.
pub const MAX_SERIES: usize = 100_000;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PerfLabels {
    relator: String,
    rule: String,
    node: String,
    label: String,
    unit: &'static str,
}

/// The exported performance data. Cheap to clone: clones share the series.
#[derive(Debug, Clone)]
pub struct PerfdataExport {
    values: Family<PerfLabels, Gauge<f64, AtomicU64>>,
    dropped: Counter,
    series: Arc<AtomicUsize>,
}

impl PerfdataExport {
    /// Registers the families in `registry`.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let values = Family::<PerfLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "turbomon_check_perfdata",
            "Last performance value a check reported (relators with export_perfdata), in base \
             units: seconds, bytes, percent, counter, or none",
            values.clone(),
        );
        let dropped = Counter::default();
        registry.register(
            "turbomon_check_perfdata_dropped",
            "Performance values not exported because the series limit was reached",
            dropped.clone(),
        );
        Self {
            values,
            dropped,
            series: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Sets the last value of every datum in `data` for (`relator`, `rule`, `node`).
    pub fn record(&self, relator: &str, rule: &str, node: &str, data: &[PerfData]) {
        for datum in data {
            let (value, unit) = base_unit(datum.value, &datum.uom);
            let labels = PerfLabels {
                relator: relator.to_string(),
                rule: rule.to_string(),
                node: node.to_string(),
                label: datum.label.clone(),
                unit,
            };
            if self.values.get(&labels).is_none() {
                if self.series.load(Ordering::Relaxed) >= MAX_SERIES {
                    self.dropped.inc();
                    continue;
                }
                self.series.fetch_add(1, Ordering::Relaxed);
            }
            self.values.get_or_create(&labels).set(value);
        }
    }
}

/// `value` in `uom` as a base-unit value and the unit's name: times in seconds, sizes in bytes
/// (KB, MB and TB as powers of 1024, as the plugins' disk and memory checks mean them).
pub fn base_unit(value: f64, uom: &str) -> (f64, &'static str) {
    match uom {
        "s" => (value, "seconds"),
        "ms" => (value / 1e3, "seconds"),
        "us" => (value / 1e6, "seconds"),
        "B" => (value, "bytes"),
        "KB" => (value * 1024.0, "bytes"),
        "MB" => (value * 1024.0 * 1024.0, "bytes"),
        "TB" => (value * 1024f64.powi(4), "bytes"),
        "%" => (value, "percent"),
        "c" => (value, "counter"),
        _ => (value, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datum(label: &str, value: f64, uom: &str) -> PerfData {
        PerfData {
            label: label.into(),
            value,
            uom: uom.into(),
            ..PerfData::default()
        }
    }

    #[test]
    fn values_are_kept_in_base_units() {
        assert_eq!(base_unit(250.0, "ms"), (0.25, "seconds"));
        assert_eq!(base_unit(2.0, "KB"), (2048.0, "bytes"));
        assert_eq!(base_unit(1.0, "MB"), (1_048_576.0, "bytes"));
        assert_eq!(base_unit(42.0, "%"), (42.0, "percent"));
        assert_eq!(base_unit(7.0, ""), (7.0, ""));
    }

    #[test]
    fn the_last_value_wins_and_series_are_capped() {
        let mut registry = Registry::default();
        let export = PerfdataExport::register(&mut registry);
        export.record(
            "r",
            "load",
            "n1",
            &[datum("load1", 0.5, ""), datum("time", 12.0, "ms")],
        );
        export.record("r", "load", "n1", &[datum("load1", 0.75, "")]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"turbomon_check_perfdata{relator="r",rule="load",node="n1",label="load1",unit=""} 0.75"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"label="time",unit="seconds"} 0.012"#),
            "{text}"
        );
        export.series.store(MAX_SERIES, Ordering::Relaxed);
        export.record("r", "load", "n2", &[datum("load1", 1.0, "")]);
        export.record("r", "load", "n1", &[datum("load1", 2.0, "")]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains(r#"node="n2""#), "{text}");
        assert!(
            text.contains(r#"node="n1",label="load1",unit=""} 2.0"#),
            "{text}"
        );
        assert!(
            text.contains("turbomon_check_perfdata_dropped_total 1"),
            "{text}"
        );
    }
}
