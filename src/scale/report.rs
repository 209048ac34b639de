//! What `turbomon scale` reports about the supervisor it ran: CPU, memory, lateness and tasks,
//! as a table for people and JSON for programs.

use std::fmt::Write as _;

use serde::Serialize;

/// The supervisor's figures over one `turbomon scale` run.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Engines served by the farm.
    pub engines: usize,
    /// Tasks a minute the configuration asks for.
    pub tasks_per_min: u64,
    /// Rules checked on each node.
    pub rules_per_node: u64,
    /// How long the supervisor ran under load, seconds.
    pub duration_s: f64,
    /// CPU used over the run, in cores (CPU seconds over wall seconds).
    pub cpu_avg_cores: f64,
    /// The busiest 10-second window, in cores.
    pub cpu_peak_cores: f64,
    /// Peak resident memory (the kernel's high-water mark), MB of 2^20 bytes.
    pub rss_peak_mb: f64,
    /// Resident memory at the end of each whole minute, MB.
    pub rss_by_minute_mb: Vec<f64>,
    /// Resident memory when the run ended, MB.
    pub rss_end_mb: f64,
    /// Scheduled→sent lateness p99 of the worst statistics window, seconds (`null` when no
    /// window had a task).
    pub lateness_p99_s: Option<f64>,
    /// Statistics windows read.
    pub stats_windows: usize,
    /// Tasks submitted, as the supervisor counts them (resends count again).
    pub submitted: u64,
    /// Tasks whose final outcome the supervisor knows.
    pub completed: u64,
    /// Tasks still unfinished when the run ended (in flight: sent, not yet known).
    pub in_flight_at_end: u64,
    /// Tasks the supervisor gave up on or that were refused: rejected, shed, failed unanswered
    /// or unreadable, lost in an engine restart, left unsent at shutdown.
    pub lost: u64,
}

impl ScaleReport {
    /// Two columns, one figure a line.
    pub fn table(&self) -> String {
        let mb = |v: f64| format!("{v:.1} MB");
        let mut rows: Vec<(&str, String)> = vec![
            ("engines", self.engines.to_string()),
            ("tasks/min", self.tasks_per_min.to_string()),
            ("rules per node", self.rules_per_node.to_string()),
            ("duration", format!("{:.0} s", self.duration_s)),
            ("cpu average", format!("{:.3} cores", self.cpu_avg_cores)),
            (
                "cpu peak (10 s)",
                format!("{:.3} cores", self.cpu_peak_cores),
            ),
            ("rss peak", mb(self.rss_peak_mb)),
        ];
        let by_minute = self
            .rss_by_minute_mb
            .iter()
            .map(|v| format!("{v:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        rows.push((
            "rss each minute",
            if by_minute.is_empty() {
                "(run shorter than a minute)".to_string()
            } else {
                format!("{by_minute} MB")
            },
        ));
        rows.push(("rss at end", mb(self.rss_end_mb)));
        rows.push((
            "lateness p99",
            self.lateness_p99_s.map_or_else(
                || "no task in any window".to_string(),
                |p99| format!("{p99:.4} s (worst of {} windows)", self.stats_windows),
            ),
        ));
        rows.push(("submitted", self.submitted.to_string()));
        rows.push(("completed", self.completed.to_string()));
        rows.push(("in flight at end", self.in_flight_at_end.to_string()));
        rows.push(("lost", self.lost.to_string()));
        let mut text = String::new();
        for (label, value) in rows {
            let _ = writeln!(text, "{label:<18} {value}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_line_per_figure() {
        let report = ScaleReport {
            engines: 10,
            tasks_per_min: 1_000,
            rules_per_node: 10,
            duration_s: 90.0,
            cpu_avg_cores: 0.0123,
            cpu_peak_cores: 0.05,
            rss_peak_mb: 20.0,
            rss_by_minute_mb: vec![18.0],
            rss_end_mb: 19.5,
            lateness_p99_s: Some(0.0021),
            stats_windows: 2,
            submitted: 1_500,
            completed: 1_490,
            in_flight_at_end: 10,
            lost: 0,
        };
        let table = report.table();
        assert!(table.contains("cpu average        0.012 cores"), "{table}");
        assert!(table.contains("rss each minute    18.0 MB"), "{table}");
        assert!(
            table.contains("lateness p99       0.0021 s (worst of 2 windows)"),
            "{table}"
        );
        assert!(table.ends_with("lost               0\n"), "{table}");
    }
}
