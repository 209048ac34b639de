//! Bench rows and their forms for programs: a JSON array and CSV. Loop times are seconds,
//! packets KB (1 KB = 1024 bytes). The table for people is in [`super::table`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bound::{LinkShape, loop_bound};
use super::plan::{Combination, Measurement, RunSettings, TurboMode};

/// Loop-time summary in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoopTimes {
    /// Mean.
    pub avg: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Longest.
    pub max: f64,
    /// Shortest.
    pub min: f64,
}

/// Packet-size summary in KB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PacketSizes {
    /// Mean.
    pub avg: f64,
    /// Largest.
    pub max: f64,
    /// Smallest.
    pub min: f64,
}

/// One combination's results; the JSON keys are the field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Link profile name, or `none`.
    pub link: String,
    /// `on`, `off` or `bare`.
    pub turbo: TurboMode,
    /// Tasks per batch (1 for turbo off: one task per call).
    pub batch_size: usize,
    /// Tasks per loop.
    pub tasks: usize,
    /// Submission loops (and as many monitor loops).
    pub loops: usize,
    /// Submission loop time, seconds.
    pub submit_loop_s: LoopTimes,
    /// Monitor loop time, seconds.
    pub monitor_loop_s: LoopTimes,
    /// Submission packet size, KB.
    pub submit_packet_kb: PacketSizes,
    /// Monitor packet size, KB.
    pub monitor_packet_kb: PacketSizes,
    /// Bytes the link carried (both directions) per task submitted; `null` without a link.
    pub wire_bytes_per_task: Option<f64>,
    /// Tasks submitted ÷ total submission loop time.
    pub tasks_per_s: f64,
    /// Mean physical bound of a submission loop, seconds; `null` without a link.
    pub bound_s: Option<f64>,
    /// `bound_s` ÷ mean submission loop time; `null` without a link.
    pub efficiency: Option<f64>,
    /// With `--status-mode`: `poll` or `push` (turbo-on rows only; `null` otherwise).
    #[serde(default)]
    pub status_mode: Option<crate::config::StatusMode>,
    /// With `--status-mode`: alert latency of a broken sim rule, seconds (`p50`, `p99`, `max`).
    #[serde(default)]
    pub alert_latency_s: Option<super::alerts::AlertLatency>,
    /// The batch size was chosen per loop by the automatic controller (`--batch-sizes auto`):
    /// `batch_size` is the size of the last submission loop, and the loop figures are those of
    /// the loops after the 20 learning ones. Absent for fixed sizes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto: bool,
    /// Automatic rows: the size of every loop, learning loops first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_sizes: Option<AutoSizes>,
    /// Automatic rows: median submission loop time ÷ the best median of the fixed sizes on the
    /// same link in the same run (1.05 = 5 % slower than the best fixed size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_vs_best: Option<f64>,
    /// The same for monitor loops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_vs_best_monitor: Option<f64>,
    /// With `--max-bandwidth`: bytes per second the link carried to the engine over the
    /// submission loops (their bytes ÷ their time); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_engine_bytes_per_s: Option<f64>,
}

/// The sizes an automatic row chose, loop by loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoSizes {
    /// Submission loops.
    pub submit: Vec<usize>,
    /// Monitor loops.
    pub monitor: Vec<usize>,
}

/// Fill `auto_vs_best` and `auto_vs_best_monitor` of every automatic row from the turbo-on
/// fixed rows of its link (left empty when there are none).
pub fn compare_auto_rows(rows: &mut [Row]) {
    let best = |rows: &[Row], link: &str, loop_s: fn(&Row) -> f64| {
        rows.iter()
            .filter(|r| !r.auto && r.turbo == TurboMode::On && r.link == link)
            .map(loop_s)
            .filter(|t| *t > 0.0)
            .min_by(f64::total_cmp)
    };
    for i in 0..rows.len() {
        if !rows[i].auto {
            continue;
        }
        let link = rows[i].link.clone();
        let submit = best(rows, &link, |r| r.submit_loop_s.p50);
        let monitor = best(rows, &link, |r| r.monitor_loop_s.p50);
        let row = &mut rows[i];
        row.auto_vs_best = submit.map(|b| round_to(row.submit_loop_s.p50 / b, 3));
        row.auto_vs_best_monitor = monitor.map(|b| round_to(row.monitor_loop_s.p50 / b, 3));
    }
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl LoopTimes {
    /// Summarise loop durations (all zero when there are none).
    pub fn from_durations(durations: &[Duration]) -> Self {
        let mut values: Vec<f64> = durations.iter().copied().map(secs).collect();
        values.sort_by(f64::total_cmp);
        let avg = if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        };
        let r = |v: f64| round_to(v, 6);
        Self {
            avg: r(avg),
            p50: r(percentile(&values, 50.0)),
            p99: r(percentile(&values, 99.0)),
            max: r(values.last().copied().unwrap_or(0.0)),
            min: r(values.first().copied().unwrap_or(0.0)),
        }
    }
}

impl PacketSizes {
    /// Summarise packet sizes given in bytes (all zero when there are none).
    pub fn from_bytes(bytes: &[u64]) -> Self {
        let kb = |b: u64| round_to(b as f64 / 1024.0, 3);
        let avg = if bytes.is_empty() {
            0.0
        } else {
            bytes.iter().sum::<u64>() as f64 / bytes.len() as f64 / 1024.0
        };
        Self {
            avg: round_to(avg, 3),
            max: kb(bytes.iter().copied().max().unwrap_or(0)),
            min: kb(bytes.iter().copied().min().unwrap_or(0)),
        }
    }
}

impl Row {
    /// Summarise one combination's measurement.
    pub fn new(combination: &Combination, settings: &RunSettings, measured: &Measurement) -> Self {
        let submit_total: Duration = measured.submit_loops.iter().sum();
        let submitted = (settings.tasks * measured.submit_loops.len()) as f64;
        let tasks_per_s = round_to(submitted / submit_total.as_secs_f64().max(1e-9), 1);
        let wire = measured
            .submit_wire
            .as_ref()
            .filter(|w| !w.is_empty() && combination.turbo != TurboMode::Bare);
        let wire_bytes_per_task = wire.map(|loops| {
            let bytes: u64 = loops.iter().map(|b| b.total()).sum();
            round_to(bytes as f64 / submitted.max(1.0), 1)
        });
        let link = combination.link.profile.as_ref().map(LinkShape::from);
        let bound = match (link, wire) {
            (Some(link), Some(loops)) => {
                let bounds: Option<Vec<Duration>> = loops
                    .iter()
                    .map(|bytes| {
                        loop_bound(
                            &link,
                            combination.turbo,
                            *bytes,
                            settings.tasks,
                            settings.max_connections,
                            !settings.plaintext,
                        )
                    })
                    .collect();
                bounds.map(|b| b.iter().sum::<Duration>() / b.len().max(1) as u32)
            }
            _ => None,
        };
        let submit_loop_s = LoopTimes::from_durations(&measured.submit_loops);
        let mean_loop = submit_total.as_secs_f64() / measured.submit_loops.len().max(1) as f64;
        let efficiency = bound.map(|b| round_to(b.as_secs_f64() / mean_loop.max(1e-9), 3));
        let auto_sizes = measured.auto.as_ref().map(|trace| AutoSizes {
            submit: trace.submit_sizes.clone(),
            monitor: trace.monitor_sizes.clone(),
        });
        let batch_size = auto_sizes
            .as_ref()
            .and_then(|sizes| sizes.submit.last().copied())
            .unwrap_or(combination.batch_size);
        Self {
            link: combination.link.name.clone(),
            turbo: combination.turbo,
            batch_size,
            tasks: settings.tasks,
            loops: settings.loops,
            submit_loop_s,
            monitor_loop_s: LoopTimes::from_durations(&measured.monitor_loops),
            submit_packet_kb: PacketSizes::from_bytes(&measured.submit_packets),
            monitor_packet_kb: PacketSizes::from_bytes(&measured.monitor_packets),
            wire_bytes_per_task,
            tasks_per_s,
            bound_s: bound.map(|b| round_to(b.as_secs_f64(), 6)),
            efficiency,
            status_mode: None,
            alert_latency_s: None,
            auto: combination.auto,
            auto_sizes,
            auto_vs_best: None,
            auto_vs_best_monitor: None,
            to_engine_bytes_per_s: settings.max_bandwidth.and(wire).map(|loops| {
                let bytes: u64 = loops.iter().map(|b| b.client_to_server).sum();
                round_to(bytes as f64 / submit_total.as_secs_f64().max(1e-9), 1)
            }),
        }
    }
}

/// The rows as a pretty JSON array.
pub fn to_json(rows: &[Row]) -> String {
    serde_json::to_string_pretty(rows).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

const CSV_HEADER: &str = "link,turbo,batch_size,tasks,loops,\
submit_loop_s_avg,submit_loop_s_p50,submit_loop_s_p99,submit_loop_s_max,submit_loop_s_min,\
monitor_loop_s_avg,monitor_loop_s_p50,monitor_loop_s_p99,monitor_loop_s_max,monitor_loop_s_min,\
submit_packet_kb_avg,submit_packet_kb_max,submit_packet_kb_min,\
monitor_packet_kb_avg,monitor_packet_kb_max,monitor_packet_kb_min,\
wire_bytes_per_task,tasks_per_s,bound_s,efficiency";

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn optional(value: Option<f64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// The rows as CSV with a header line; JSON's nested objects become `_avg`, `_p50`, … columns
/// and `null` an empty field.
pub fn to_csv(rows: &[Row]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let l = |t: &LoopTimes| [t.avg, t.p50, t.p99, t.max, t.min].map(|v| v.to_string());
        let p = |s: &PacketSizes| [s.avg, s.max, s.min].map(|v| v.to_string());
        let mut fields = vec![
            csv_field(&r.link),
            r.turbo.to_string(),
            r.batch_size.to_string(),
            r.tasks.to_string(),
            r.loops.to_string(),
        ];
        fields.extend(l(&r.submit_loop_s));
        fields.extend(l(&r.monitor_loop_s));
        fields.extend(p(&r.submit_packet_kb));
        fields.extend(p(&r.monitor_packet_kb));
        fields.push(optional(r.wire_bytes_per_task));
        fields.push(r.tasks_per_s.to_string());
        fields.push(optional(r.bound_s));
        fields.push(optional(r.efficiency));
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::{LinkChoice, LoopBytes};

    fn settings() -> RunSettings {
        RunSettings {
            tasks: 100,
            loops: 4,
            max_connections: 10,
            max_inflight_batches: 64,
            reply_timeout: Duration::from_secs(30),
            seed: None,
            plaintext: false,
            max_bandwidth: None,
        }
    }

    fn wan() -> LinkChoice {
        LinkChoice {
            name: "wan".to_string(),
            profile: crate::link::builtin_profiles().get("wan").cloned(),
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let ms =
            |v: &[u64]| -> Vec<Duration> { v.iter().map(|&m| Duration::from_millis(m)).collect() };
        let t = LoopTimes::from_durations(&ms(&[40, 10, 30, 20]));
        assert_eq!((t.min, t.p50, t.p99, t.max), (0.01, 0.02, 0.04, 0.04));
        assert_eq!(t.avg, 0.025);
    }

    #[test]
    fn a_row_over_wan_has_wire_bytes_bound_and_efficiency_from_the_link_counters() {
        let combination = Combination {
            link: wan(),
            turbo: TurboMode::On,
            batch_size: 30,
            auto: false,
        };
        // Each loop carried 31,250 bytes up (25 ms at 10 Mbit/s) and took 100 ms: bound 75 ms.
        let measured = Measurement {
            submit_loops: vec![Duration::from_millis(100); 4],
            monitor_loops: vec![Duration::from_millis(60); 4],
            submit_packets: vec![3072, 1024],
            monitor_packets: vec![2048],
            submit_wire: Some(vec![
                LoopBytes {
                    client_to_server: 31_250,
                    server_to_client: 8_750,
                };
                4
            ]),
            auto: None,
        };
        let row = Row::new(&combination, &settings(), &measured);
        assert_eq!(row.wire_bytes_per_task, Some(400.0));
        assert_eq!(row.bound_s, Some(0.075));
        assert_eq!(row.efficiency, Some(0.75));
        assert_eq!(row.tasks_per_s, 1000.0);
        assert_eq!(row.submit_packet_kb.avg, 2.0);
        assert_eq!(row.submit_packet_kb.max, 3.0);
    }

    #[test]
    fn without_a_link_wire_bytes_bound_and_efficiency_are_null_not_made_up() {
        let combination = Combination {
            link: LinkChoice::none(),
            turbo: TurboMode::On,
            batch_size: 30,
            auto: false,
        };
        let measured = Measurement {
            submit_loops: vec![Duration::from_millis(2)],
            monitor_loops: vec![Duration::from_millis(1)],
            submit_packets: vec![3000],
            monitor_packets: vec![2000],
            submit_wire: None,
            auto: None,
        };
        let row = Row::new(&combination, &settings(), &measured);
        let json: serde_json::Value =
            serde_json::from_str(&to_json(std::slice::from_ref(&row))).expect("valid JSON");
        assert!(json[0]["wire_bytes_per_task"].is_null());
        assert!(json[0]["bound_s"].is_null());
        assert!(json[0]["efficiency"].is_null());
        assert_eq!(json[0]["turbo"], "on");
        let csv = to_csv(&[row]);
        let line = csv.lines().nth(1).expect("a data line");
        assert!(line.ends_with(",,50000,,"), "{line}");
        assert_eq!(
            csv.lines().next().map(|h| h.split(',').count()),
            Some(line.split(',').count())
        );
    }
}
