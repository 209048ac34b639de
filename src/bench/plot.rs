//! `--plot FILE.svg`: one SVG with four panels against batch size (log scale): submission loop
//! time, monitor loop time (mean, seconds, log scale), submission packet and monitor packet
//! (mean, KB). One line per link and turbo mode. Turbo off sends one task per call whatever the
//! batch size, so its single measurement is drawn as a dashed horizontal line across the range.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::error::BenchError;
use super::plan::TurboMode;
use super::report::Row;

/// Line colours, one per series (cycled).
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// One panel: its title, its y unit and how to read the value from a row.
struct Panel {
    title: &'static str,
    legend: SeriesLabelPosition,
    unit: &'static str,
    value: fn(&Row) -> f64,
}

const PANELS: [Panel; 4] = [
    Panel {
        title: "Submission loop time (mean)",
        legend: SeriesLabelPosition::UpperRight,
        unit: "seconds",
        value: |r| r.submit_loop_s.avg,
    },
    Panel {
        title: "Monitor loop time (mean)",
        legend: SeriesLabelPosition::UpperRight,
        unit: "seconds",
        value: |r| r.monitor_loop_s.avg,
    },
    Panel {
        title: "Submission packet (mean; the same on every link)",
        legend: SeriesLabelPosition::UpperLeft,
        unit: "KB",
        value: |r| r.submit_packet_kb.avg,
    },
    Panel {
        title: "Monitor packet (mean; the same on every link)",
        legend: SeriesLabelPosition::UpperLeft,
        unit: "KB",
        value: |r| r.monitor_packet_kb.avg,
    },
];

/// A line: its label, whether it is a single turbo-off measurement, and its points.
struct Series {
    label: String,
    turbo_off: bool,
    rows: Vec<Row>,
}

fn series_of(rows: &[Row]) -> Vec<Series> {
    let mut grouped: BTreeMap<(String, TurboMode), Vec<Row>> = BTreeMap::new();
    // Keep the order links were given in: index by first appearance.
    let mut order: Vec<(String, TurboMode)> = Vec::new();
    for row in rows {
        let key = (row.link.clone(), row.turbo);
        if !grouped.contains_key(&key) {
            order.push(key.clone());
        }
        grouped.entry(key).or_default().push(row.clone());
    }
    order
        .into_iter()
        .filter_map(|key| {
            let mut rows = grouped.remove(&key)?;
            rows.sort_by_key(|r| r.batch_size);
            let (link, turbo) = key;
            let turbo_off = turbo == TurboMode::Off;
            let label = if turbo_off {
                format!("{link} turbo off (one task per call)")
            } else {
                format!("{link} turbo {turbo}")
            };
            Some(Series {
                label,
                turbo_off,
                rows,
            })
        })
        .collect()
}

/// A log-scale range around positive values, with some room at both ends.
fn log_range(values: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (lo <= hi).then(|| (lo / 1.5)..(hi * 1.5))
}

/// A number for an axis label: at most six decimals, trailing zeros dropped.
fn compact(value: f64) -> String {
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// Draw the four panels for `rows` into the SVG file `path`.
pub fn write_svg(rows: &[Row], path: &Path) -> Result<(), BenchError> {
    let failed = |reason: String| BenchError::Write {
        path: path.to_path_buf(),
        reason,
    };
    if rows.is_empty() {
        return Err(failed("no rows to plot".to_string()));
    }
    draw(rows, path).map_err(|e| failed(e.to_string()))
}

fn draw(rows: &[Row], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let series = series_of(rows);
    let x_range =
        log_range(rows.iter().map(|r| r.batch_size as f64)).ok_or("no batch sizes to plot")?;
    let root = SVGBackend::new(path, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let tasks = rows.first().map_or(0, |r| r.tasks);
    let loops = rows.first().map_or(0, |r| r.loops);
    let root = root.titled(
        &format!("turbomon bench: {tasks} tasks per loop, {loops} loops per point"),
        ("sans-serif", 24),
    )?;
    for (area, panel) in root.split_evenly((2, 2)).iter().zip(PANELS.iter()) {
        let Some(y_range) = log_range(rows.iter().map(panel.value)) else {
            continue;
        };
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(x_range.clone().log_scale(), y_range.log_scale())?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|x| compact(*x))
            .y_label_formatter(&|y| compact(*y))
            .x_desc("batch size (tasks per batch)")
            .y_desc(panel.unit)
            .draw()?;
        for (i, line) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            // Earlier lines are drawn wider, so a line hidden under a later identical one (packet
            // sizes do not depend on the link) still shows as a halo around it.
            let width = 2 + (series.len() - 1 - i).min(3) as u32;
            let style = colour.stroke_width(width);
            let points: Vec<(f64, f64)> = line
                .rows
                .iter()
                .map(|r| (r.batch_size as f64, (panel.value)(r)))
                .filter(|(_, y)| *y > 0.0)
                .collect();
            let drawn = match points.as_slice() {
                [] => continue,
                [(x, y)] if line.turbo_off || points.len() == 1 => {
                    let (from, to) = if line.turbo_off {
                        (x_range.start, x_range.end)
                    } else {
                        (x / 1.2, x * 1.2)
                    };
                    chart.draw_series(DashedLineSeries::new(
                        vec![(from, *y), (to, *y)],
                        8,
                        4,
                        style,
                    ))?
                }
                _ => chart.draw_series(LineSeries::new(points, style))?,
            };
            drawn.label(line.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(width))
            });
        }
        chart
            .configure_series_labels()
            .position(panel.legend.clone())
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{LoopTimes, PacketSizes};

    fn row(link: &str, turbo: TurboMode, batch_size: usize, loop_s: f64, kb: f64) -> Row {
        let times = LoopTimes {
            avg: loop_s,
            p50: loop_s,
            p99: loop_s,
            max: loop_s,
            min: loop_s,
        };
        let sizes = PacketSizes {
            avg: kb,
            max: kb,
            min: kb,
        };
        Row {
            link: link.to_string(),
            turbo,
            batch_size,
            tasks: 300,
            loops: 5,
            submit_loop_s: times,
            monitor_loop_s: times,
            submit_packet_kb: sizes,
            monitor_packet_kb: sizes,
            wire_bytes_per_task: Some(150.0),
            tasks_per_s: 1000.0,
            bound_s: Some(0.06),
            efficiency: Some(0.9),
            status_mode: None,
            alert_latency_s: None,
        }
    }

    #[test]
    fn the_svg_has_one_legend_entry_per_link_and_turbo_mode() {
        let rows = vec![
            row("wan", TurboMode::On, 1, 0.3, 0.2),
            row("wan", TurboMode::On, 30, 0.07, 3.0),
            row("wan", TurboMode::On, 100, 0.08, 9.5),
            row("wan", TurboMode::Off, 1, 3.1, 0.2),
            row("lan", TurboMode::On, 1, 0.01, 0.2),
            row("lan", TurboMode::On, 30, 0.002, 3.0),
        ];
        let dir = std::env::temp_dir().join(format!("turbomon-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bench.svg");
        write_svg(&rows, &path).expect("svg written");
        let svg = std::fs::read_to_string(&path).expect("svg readable");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for label in [
            "wan turbo on",
            "wan turbo off (one task per call)",
            "lan turbo on",
        ] {
            // Each label appears once per panel.
            assert_eq!(svg.matches(label).count(), 4, "{label}");
        }
        assert!(svg.contains("Submission loop time"));
        assert!(svg.contains("Monitor packet"));
    }

    #[test]
    fn axis_labels_are_compact() {
        assert_eq!(compact(0.30000000000000004), "0.3");
        assert_eq!(compact(10.0), "10");
        assert_eq!(compact(0.001), "0.001");
        assert_eq!(compact(0.0), "0");
    }
}
