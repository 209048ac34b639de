//! `--plot FILE.svg`: one SVG with four panels against batch size (log scale): submission loop
//! time, monitor loop time (mean, seconds), submission packet and monitor packet (mean, KB), on
//! log y axes that run from the decade below the smallest value to the decade above the largest.
//! One line per link and turbo mode, with a marker at every measured point. Turbo off sends one
//! task per call whatever the batch size, so its single measurement is drawn as a dashed
//! horizontal line across the range. One legend beside the panels, outside every plot area,
//! draws each line as the panels do (colour, width, dashes, marker).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
    unit: &'static str,
    value: fn(&Row) -> f64,
}

const PANELS: [Panel; 4] = [
    Panel {
        title: "Submission loop time (mean)",
        unit: "seconds",
        value: |r| r.submit_loop_s.avg,
    },
    Panel {
        title: "Monitor loop time (mean)",
        unit: "seconds",
        value: |r| r.monitor_loop_s.avg,
    },
    Panel {
        title: "Submission packet (mean; the same on every link)",
        unit: "KB",
        value: |r| r.submit_packet_kb.avg,
    },
    Panel {
        title: "Monitor packet (mean; the same on every link)",
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
    // An automatic row is one size chosen per loop, not a point of the batch-size sweep.
    for row in rows.iter().filter(|r| !r.auto) {
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

/// Size of the whole figure, in pixels; the legend takes what its labels need on the right.
const FIGURE: (u32, u32) = (1600, 1000);
/// Dash and gap of a turbo-off line, in pixels, in the panels and the legend alike.
const DASH: (u32, u32) = (8, 4);
/// Legend: top of the first entry, height of an entry, length of its line sample, margins.
const LEGEND_TOP: i32 = 70;
const LEGEND_ROW: i32 = 28;
const LEGEND_SAMPLE: i32 = 48;
const LEGEND_MARGIN: i32 = 16;
const LEGEND_FONT: (&str, u32) = ("sans-serif", 16);
const AXIS_FONT: (&str, u32) = ("sans-serif", 15);

/// How one series is drawn, the same in every panel and in the legend.
#[derive(Debug, Clone, Copy)]
struct Look {
    colour: RGBColor,
    width: u32,
    marker_radius: u32,
    dashed: bool,
}

impl Look {
    /// Series `index` of `count`. Earlier lines are drawn wider, with larger markers, so a line
    /// hidden under a later identical one (packet sizes do not depend on the link) still shows
    /// as a halo around it.
    fn of(index: usize, count: usize, line: &Series) -> Self {
        let width = 2 + count.saturating_sub(1 + index).min(3) as u32;
        Self {
            colour: COLOURS[index % COLOURS.len()],
            width,
            marker_radius: width + 2,
            dashed: line.turbo_off,
        }
    }

    fn stroke(&self) -> ShapeStyle {
        self.colour.stroke_width(self.width)
    }

    fn marker(&self, at: (f64, f64)) -> Circle<(f64, f64), u32> {
        Circle::new(at, self.marker_radius, self.colour.filled())
    }
}

/// A log-scale range around positive values for the x axis, with some room at both ends.
fn log_range(values: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    let (lo, hi) = positive_extremes(values)?;
    Some((lo / 1.5)..(hi * 1.5))
}

/// A log-scale range for a y axis: from the power of ten at or below the smallest value (less a
/// fifth) to the one at or above the largest (plus a fifth), so every value lies inside the axis
/// with labelled decades below and above it. `None` without a positive finite value.
fn decade_range(values: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    const MARGIN: f64 = 1.2;
    // A hair beyond each decade, so rounding in the axis's own logarithms cannot drop the
    // decade's label at either end.
    const HAIR: f64 = 1e-9;
    let (lo, hi) = positive_extremes(values)?;
    let bottom = 10f64.powf((lo / MARGIN).log10().floor()) * (1.0 - HAIR);
    let top = 10f64.powf((hi * MARGIN).log10().ceil()) * (1.0 + HAIR);
    // Far beyond f64's decades `powf` gives 0 or infinity; the plain margin still works there.
    if bottom > 0.0 && top.is_finite() {
        Some(bottom..top)
    } else {
        Some((lo / MARGIN)..(hi * MARGIN))
    }
}

/// The smallest and largest positive finite values, if any.
fn positive_extremes(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (lo <= hi).then_some((lo, hi))
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
    let looks: Vec<Look> = series
        .iter()
        .enumerate()
        .map(|(i, line)| Look::of(i, series.len(), line))
        .collect();
    let x_range =
        log_range(rows.iter().map(|r| r.batch_size as f64)).ok_or("no batch sizes to plot")?;
    let root = SVGBackend::new(path, FIGURE).into_drawing_area();
    root.fill(&WHITE)?;
    let tasks = rows.first().map_or(0, |r| r.tasks);
    let loops = rows.first().map_or(0, |r| r.loops);
    let root = root.titled(
        &format!("turbomon bench: {tasks} tasks per loop, {loops} loops per point"),
        ("sans-serif", 24),
    )?;
    let legend_width = legend_width(&root, &series)?;
    let (panels, legend) = root.split_horizontally(FIGURE.0.saturating_sub(legend_width));
    for (area, panel) in panels.split_evenly((2, 2)).iter().zip(PANELS.iter()) {
        let Some(y_range) = decade_range(rows.iter().map(panel.value)) else {
            continue;
        };
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d(x_range.clone().log_scale(), y_range.log_scale())?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|x| compact(*x))
            .y_label_formatter(&|y| compact(*y))
            .label_style(AXIS_FONT)
            .axis_desc_style(AXIS_FONT)
            .x_desc("batch size (tasks per batch)")
            .y_desc(panel.unit)
            .draw()?;
        for (line, look) in series.iter().zip(&looks) {
            let points: Vec<(f64, f64)> = line
                .rows
                .iter()
                .map(|r| (r.batch_size as f64, (panel.value)(r)))
                .filter(|(_, y)| y.is_finite() && *y > 0.0)
                .collect();
            match (look.dashed, points.as_slice()) {
                (_, []) => continue,
                // One measurement for every batch size: a level line across the whole range.
                (true, [(_, y)]) => {
                    let across = [(x_range.start, *y), (x_range.end, *y)];
                    chart.draw_series(DashedLineSeries::new(
                        across,
                        DASH.0,
                        DASH.1,
                        look.stroke(),
                    ))?;
                }
                (true, _) => {
                    chart.draw_series(DashedLineSeries::new(
                        points.clone(),
                        DASH.0,
                        DASH.1,
                        look.stroke(),
                    ))?;
                }
                (false, _) => {
                    chart.draw_series(LineSeries::new(points.clone(), look.stroke()))?;
                }
            }
            chart.draw_series(points.iter().map(|&at| look.marker(at)))?;
        }
    }
    draw_legend(&legend, &series, &looks)?;
    root.present()?;
    Ok(())
}

/// Pixels the legend needs: margins, the line sample and the longest label.
fn legend_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
) -> Result<u32, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let font = LEGEND_FONT.into_text_style(area);
    let mut longest = 0;
    for line in series {
        longest = longest.max(area.estimate_text_size(&line.label, &font)?.0);
    }
    let fixed = (3 * LEGEND_MARGIN + LEGEND_SAMPLE).unsigned_abs();
    // Never more than half the figure: the panels come first.
    Ok((fixed + longest).min(FIGURE.0 / 2))
}

/// One entry per series, top to bottom: its line sample (dashed for turbo off), its marker in
/// the middle of the sample, and its label.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
    looks: &[Look],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let font = LEGEND_FONT
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let (left, right) = (LEGEND_MARGIN, LEGEND_MARGIN + LEGEND_SAMPLE);
    let mut y = LEGEND_TOP;
    for (line, look) in series.iter().zip(looks) {
        let sample = [(left, y), (right, y)];
        if look.dashed {
            area.draw(&DashedPathElement::new(
                sample,
                DASH.0,
                DASH.1,
                look.stroke(),
            ))?;
        } else {
            area.draw(&PathElement::new(sample, look.stroke()))?;
        }
        area.draw(&Circle::new(
            ((left + right) / 2, y),
            look.marker_radius,
            look.colour.filled(),
        ))?;
        area.draw(&Text::new(
            line.label.clone(),
            (right + LEGEND_MARGIN, y),
            font.clone(),
        ))?;
        y += LEGEND_ROW;
    }
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
            auto: false,
            auto_sizes: None,
            auto_vs_best: None,
            auto_vs_best_monitor: None,
            to_engine_bytes_per_s: None,
        }
    }

    /// wan on at three batch sizes, wan off, lan on at two: six points per panel.
    fn sample_rows() -> Vec<Row> {
        vec![
            row("wan", TurboMode::On, 1, 0.3, 0.2),
            row("wan", TurboMode::On, 30, 0.07, 3.0),
            row("wan", TurboMode::On, 100, 0.08, 9.5),
            row("wan", TurboMode::Off, 1, 3.1, 0.2),
            row("lan", TurboMode::On, 1, 0.01, 0.2),
            row("lan", TurboMode::On, 30, 0.002, 3.0),
        ]
    }

    fn svg_of(rows: &[Row]) -> String {
        let dir = std::env::temp_dir().join(format!(
            "turbomon-plot-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bench.svg");
        write_svg(rows, &path).expect("svg written");
        let svg = std::fs::read_to_string(&path).expect("svg readable");
        let _ = std::fs::remove_dir_all(&dir);
        svg
    }

    /// One SVG element: its attributes and its text content.
    struct Element {
        attributes: Vec<(String, String)>,
        content: String,
    }

    impl Element {
        fn get(&self, name: &str) -> &str {
            self.attributes
                .iter()
                .find(|(key, _)| key == name)
                .map_or("", |(_, value)| value.as_str())
        }

        fn number(&self, name: &str) -> f64 {
            self.get(name).parse().unwrap_or(f64::NAN)
        }

        /// The points of a polyline.
        fn points(&self) -> Vec<(f64, f64)> {
            self.get("points")
                .split_whitespace()
                .filter_map(|p| p.split_once(','))
                .map(|(x, y)| (x.parse().unwrap_or(f64::NAN), y.parse().unwrap_or(f64::NAN)))
                .collect()
        }
    }

    /// Every `<tag ...>` element of `svg` (as plotters writes them: `key="value"` attributes).
    fn elements(svg: &str, tag: &str) -> Vec<Element> {
        let open = format!("<{tag} ");
        let close = format!("</{tag}>");
        let mut found = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find(&open) {
            rest = &rest[start + open.len()..];
            let end = rest.find('>').unwrap_or(rest.len());
            let head = &rest[..end];
            let attributes = head
                .split('"')
                .collect::<Vec<_>>()
                .chunks(2)
                .filter_map(|pair| match pair {
                    [key, value] => Some((
                        key.trim().trim_end_matches('=').to_string(),
                        value.to_string(),
                    )),
                    _ => None,
                })
                .collect();
            let content = if head.ends_with('/') {
                String::new()
            } else {
                let body = &rest[end + 1..];
                body[..body.find(&close).unwrap_or(0)].trim().to_string()
            };
            found.push(Element {
                attributes,
                content,
            });
        }
        found
    }

    fn hex(colour: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", colour.0, colour.1, colour.2)
    }

    #[test]
    fn the_svg_has_one_legend_entry_per_link_and_turbo_mode() {
        let svg = svg_of(&sample_rows());
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        let texts = elements(&svg, "text");
        for label in [
            "wan turbo on",
            "wan turbo off (one task per call)",
            "lan turbo on",
        ] {
            // One legend for the four panels.
            assert_eq!(
                texts.iter().filter(|t| t.content == label).count(),
                1,
                "{label}"
            );
        }
        assert!(svg.contains("Submission loop time"));
        assert!(svg.contains("Monitor packet"));
    }

    #[test]
    fn every_point_has_a_marker_in_every_panel_and_each_series_one_in_the_legend() {
        let svg = svg_of(&sample_rows());
        let circles = elements(&svg, "circle");
        // Per series (in order of first appearance): its points in four panels, one in the legend.
        let expected = [("wan on", 3), ("wan off", 1), ("lan on", 2)];
        for (i, (name, points)) in expected.iter().enumerate() {
            let colour = hex(COLOURS[i]);
            let drawn = circles.iter().filter(|c| c.get("fill") == colour).count();
            assert_eq!(drawn, 4 * points + 1, "{name} ({colour})");
        }
        assert_eq!(circles.len(), 4 * 6 + 3);
    }

    #[test]
    fn the_legend_draws_turbo_off_dashed_and_turbo_on_solid_as_the_panels_do() {
        let svg = svg_of(&sample_rows());
        let texts = elements(&svg, "text");
        let polylines = elements(&svg, "polyline");
        // The line sample of a legend entry: the polylines of its colour on the label's row, to
        // the left of the label.
        let sample = |label: &str, colour: RGBColor| -> Vec<&Element> {
            let text = texts
                .iter()
                .find(|t| t.content == label)
                .unwrap_or_else(|| panic!("no legend label {label}"));
            let (x, y) = (text.number("x"), text.number("y"));
            polylines
                .iter()
                .filter(|p| p.get("stroke") == hex(colour))
                .filter(|p| {
                    let points = p.points();
                    !points.is_empty()
                        && points
                            .iter()
                            .all(|&(px, py)| px < x && px > x - 100.0 && (py - y).abs() <= 1.0)
                })
                .collect()
        };
        let off = sample("wan turbo off (one task per call)", COLOURS[1]);
        assert!(
            off.len() >= 3,
            "turbo off is dashed: {} segments",
            off.len()
        );
        let on = sample("wan turbo on", COLOURS[0]);
        assert_eq!(on.len(), 1, "turbo on is one solid line");
        // Same width as in the panels: the panels' dashes of wan off have the legend's width.
        let width = off[0].get("stroke-width");
        let in_panels = polylines
            .iter()
            .filter(|p| p.get("stroke") == hex(COLOURS[1]))
            .filter(|p| p.get("stroke-width") == width)
            .count();
        assert!(in_panels > 4 * 20 + off.len(), "{in_panels} dashes");
    }

    #[test]
    fn the_y_axes_reach_below_the_smallest_and_above_the_largest_value() {
        let svg = svg_of(&sample_rows());
        // y tick labels are the right-aligned numbers.
        let ticks: Vec<f64> = elements(&svg, "text")
            .iter()
            .filter(|t| t.get("text-anchor") == "end")
            .filter_map(|t| t.content.parse().ok())
            .collect();
        let lowest = ticks.iter().copied().fold(f64::MAX, f64::min);
        let highest = ticks.iter().copied().fold(f64::MIN, f64::max);
        // lan's 2 ms loop is the smallest value, wan's 9.5 KB packet the largest.
        assert!(lowest <= 0.002, "lowest tick {lowest}");
        assert!(highest >= 9.5, "highest tick {highest}");
    }

    #[test]
    fn y_ranges_are_whole_decades_around_every_value() {
        let cases: [&[f64]; 5] = [
            &[0.002, 0.01, 3.1],
            &[0.00089, 0.00285, 3.13129],
            &[0.001, 0.1],
            &[1.0],
            &[0.14, 12.61, 0.0, -1.0, f64::NAN, f64::INFINITY],
        ];
        for values in cases {
            let range = decade_range(values.iter().copied()).expect("a range");
            for &v in values.iter().filter(|v| v.is_finite() && **v > 0.0) {
                assert!(
                    range.start < v / 1.1 && v * 1.1 < range.end,
                    "{v} in {range:?}"
                );
            }
            for end in [range.start, range.end] {
                let decade = end.log10().round();
                assert!((end.log10() - decade).abs() < 1e-6, "{end} in {range:?}");
            }
        }
        assert_eq!(decade_range([0.0, -2.0, f64::NAN].into_iter()), None);
        let tiny = decade_range([1e-310].into_iter()).expect("a range");
        assert!(tiny.start > 0.0 && tiny.start < 1e-310, "{tiny:?}");
    }

    #[test]
    fn axis_labels_are_compact() {
        assert_eq!(compact(0.30000000000000004), "0.3");
        assert_eq!(compact(10.0), "10");
        assert_eq!(compact(0.001), "0.001");
        assert_eq!(compact(0.0), "0");
    }
}
