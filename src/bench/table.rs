//! The bench rows as an aligned text table for people, with a legend and the plan's notes.
//!
//! Every column is described once, in `COLUMNS`: its header in the wide table, its shorter
//! header when the default table keeps it, and how a row fills it. By default the table keeps the
//! columns that choose a batch size (link, turbo mode, batch, mean and p99 submission loop time,
//! mean monitor loop time, mean packets, wire bytes per task, tasks per second, bound and
//! efficiency) and fits 120 columns; `--wide` ([`Layout::Wide`]) prints all 25 columns. Loop
//! times are in ms, packets in KB of 1024 bytes.

use super::plan::BenchPlan;
use super::report::Row;

/// Widest line of the default table, legend and notes included.
pub const DEFAULT_WIDTH: usize = 120;

/// Which columns the table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The columns that choose a batch size, within [`DEFAULT_WIDTH`].
    Default,
    /// Every column (`--wide`).
    Wide,
}

/// One column of the table.
struct Column {
    /// Header in the wide table.
    wide: &'static str,
    /// Header in the default table; `None` for a column only the wide table shows.
    default: Option<&'static str>,
    /// Text, left-aligned; numbers are right-aligned.
    text: bool,
    /// The cell of one row.
    cell: fn(&Row) -> String,
}

const COLUMNS: [Column; 25] = [
    text("link", Some("link"), |r| r.link.clone()),
    text("turbo", Some("turbo"), |r| r.turbo.to_string()),
    number("batch", Some("batch"), |r| {
        if r.auto {
            format!("auto:{}", r.batch_size)
        } else {
            r.batch_size.to_string()
        }
    }),
    // The same for every row: the default table says them once, under the table.
    number("tasks", None, |r| r.tasks.to_string()),
    number("loops", None, |r| r.loops.to_string()),
    number("sub avg", Some("sub avg"), |r| ms(r.submit_loop_s.avg)),
    number("sub p50", None, |r| ms(r.submit_loop_s.p50)),
    number("sub p99", Some("sub p99"), |r| ms(r.submit_loop_s.p99)),
    number("sub max", None, |r| ms(r.submit_loop_s.max)),
    number("sub min", None, |r| ms(r.submit_loop_s.min)),
    number("mon avg", Some("mon avg"), |r| ms(r.monitor_loop_s.avg)),
    number("mon p50", None, |r| ms(r.monitor_loop_s.p50)),
    number("mon p99", None, |r| ms(r.monitor_loop_s.p99)),
    number("mon max", None, |r| ms(r.monitor_loop_s.max)),
    number("mon min", None, |r| ms(r.monitor_loop_s.min)),
    number("subKB avg", Some("subKB"), |r| kb(r.submit_packet_kb.avg)),
    number("subKB max", None, |r| kb(r.submit_packet_kb.max)),
    number("subKB min", None, |r| kb(r.submit_packet_kb.min)),
    number("monKB avg", Some("monKB"), |r| kb(r.monitor_packet_kb.avg)),
    number("monKB max", None, |r| kb(r.monitor_packet_kb.max)),
    number("monKB min", None, |r| kb(r.monitor_packet_kb.min)),
    number("wire B/task", Some("B/task"), |r| {
        or_dash(r.wire_bytes_per_task, |w| format!("{w:.0}"))
    }),
    number("tasks/s", Some("tasks/s"), |r| {
        format!("{:.0}", r.tasks_per_s)
    }),
    number("bound", Some("bound"), |r| or_dash(r.bound_s, ms)),
    number("eff", Some("eff"), |r| {
        or_dash(r.efficiency, |e| format!("{e:.2}"))
    }),
];

const fn text(
    wide: &'static str,
    default: Option<&'static str>,
    cell: fn(&Row) -> String,
) -> Column {
    Column {
        wide,
        default,
        text: true,
        cell,
    }
}

const fn number(
    wide: &'static str,
    default: Option<&'static str>,
    cell: fn(&Row) -> String,
) -> Column {
    Column {
        wide,
        default,
        text: false,
        cell,
    }
}

/// Seconds as milliseconds with two decimals.
fn ms(seconds: f64) -> String {
    format!("{:.2}", seconds * 1000.0)
}

fn kb(value: f64) -> String {
    format!("{value:.2}")
}

/// `-` for a figure that does not exist (no link: no counters, no bound).
fn or_dash(value: Option<f64>, show: fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_string(), show)
}

const WIDE_LEGEND: &str = "sub/mon: submission/monitor loop time in ms; KB: packet (request + reply) in KB of 1024 bytes;
wire B/task: bytes the link carried per task submitted (- without a link);
bound: what the link alone forces on a submission loop, in ms; eff: bound / mean submission loop time.
";

const DEFAULT_LEGEND: &str = "sub/mon: submission/monitor loop time in ms; subKB/monKB: mean packet (request + reply) in KB of 1024 bytes;
B/task: bytes the link carried per task submitted (- without a link); tasks/s: tasks submitted / submission time;
bound: what the link alone forces on a submission loop, in ms; eff: bound / mean submission loop time.
";

/// The rows as an aligned text table, then a legend and the plan's notes.
pub fn render_table(rows: &[Row], plan: &BenchPlan, layout: Layout) -> String {
    let columns: Vec<(&str, &Column)> = COLUMNS
        .iter()
        .filter_map(|column| match layout {
            Layout::Wide => Some((column.wide, column)),
            Layout::Default => column.default.map(|header| (header, column)),
        })
        .collect();
    let mut cells: Vec<Vec<String>> = vec![columns.iter().map(|(h, _)| h.to_string()).collect()];
    cells.extend(
        rows.iter()
            .map(|row| columns.iter().map(|(_, c)| (c.cell)(row)).collect()),
    );
    let mut widths: Vec<usize> = (0..columns.len())
        .map(|c| cells.iter().map(|row| width(&row[c])).max().unwrap_or(0))
        .collect();
    if layout == Layout::Default {
        shorten_link_names(&mut cells, &mut widths);
    }
    let table_width = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);

    let mut out = String::new();
    for (i, row) in cells.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(&columns)
            .map(|((cell, &w), (_, column))| {
                if column.text {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(table_width));
            out.push('\n');
        }
    }
    out.push('\n');
    match layout {
        Layout::Wide => out.push_str(WIDE_LEGEND),
        Layout::Default => {
            out.push_str(DEFAULT_LEGEND);
            out.push_str(&format!(
                "tasks per loop: {}, loops per row: {}; --wide adds p50, max and min, packet max and min, tasks, loops.\n",
                plan.settings.tasks, plan.settings.loops
            ));
        }
    }
    for note in &plan.notes {
        for line in wrap(&format!("note: {note}"), DEFAULT_WIDTH, "      ") {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// Narrows the link column (the first) when the default table would be wider than
/// [`DEFAULT_WIDTH`]: only a long custom profile name can make it so, and the name keeps its
/// start and its end, which tell profiles apart, around a `…`. The figures are never cut.
fn shorten_link_names(cells: &mut [Vec<String>], widths: &mut [usize]) {
    let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
    let Some(over) = total.checked_sub(DEFAULT_WIDTH).filter(|&over| over > 0) else {
        return;
    };
    let Some(link_width) = widths.first_mut() else {
        return;
    };
    // Room for the header and a few characters of each end.
    const NARROWEST: usize = 8;
    let narrowed = link_width.saturating_sub(over).max(NARROWEST);
    if narrowed >= *link_width {
        return;
    }
    *link_width = narrowed;
    for row in cells.iter_mut().skip(1) {
        if let Some(name) = row.first_mut() {
            *name = elide_middle(name, narrowed);
        }
    }
}

/// `text` in at most `max` characters: its start and end around a `…` when it is longer.
fn elide_middle(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max || max < 3 {
        return text.to_string();
    }
    let kept = max - 1;
    let head = kept - kept / 2;
    let tail = kept / 2;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// `text` broken at spaces into lines of at most `max` characters, every line after the first
/// starting with `indent`. A single word longer than a line stays whole.
fn wrap(text: &str, max: usize, indent: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let candidate = width(&line) + usize::from(!line.trim().is_empty()) + width(word);
        if !line.trim().is_empty() && candidate > max {
            lines.push(std::mem::replace(&mut line, indent.to_string()));
        }
        if !line.trim().is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::{RunSettings, TurboMode};
    use crate::bench::report::{LoopTimes, PacketSizes};
    use std::time::Duration;

    fn row(link: &str, loop_s: f64) -> Row {
        let times = LoopTimes {
            avg: loop_s,
            p50: loop_s,
            p99: loop_s,
            max: loop_s,
            min: loop_s,
        };
        let sizes = PacketSizes {
            avg: 1300.5,
            max: 1300.5,
            min: 1300.5,
        };
        Row {
            link: link.to_string(),
            turbo: TurboMode::Bare,
            batch_size: 10_000,
            tasks: 1_000_000,
            loops: 10_000,
            submit_loop_s: times,
            monitor_loop_s: times,
            submit_packet_kb: sizes,
            monitor_packet_kb: sizes,
            wire_bytes_per_task: Some(12_345.0),
            tasks_per_s: 1_234_567.0,
            bound_s: Some(loop_s),
            efficiency: Some(0.99),
            status_mode: None,
            alert_latency_s: None,
            auto: false,
            auto_sizes: None,
            auto_vs_best: None,
            auto_vs_best_monitor: None,
            to_engine_bytes_per_s: None,
        }
    }

    fn plan(notes: Vec<String>) -> BenchPlan {
        BenchPlan {
            combinations: Vec::new(),
            settings: RunSettings {
                tasks: 300,
                loops: 5,
                max_connections: 10,
                max_inflight_batches: 64,
                reply_timeout: Duration::from_secs(30),
                seed: None,
                plaintext: false,
                max_bandwidth: None,
            },
            max_time: Duration::from_secs(300),
            estimated: Duration::from_secs(1),
            safe_packet_bytes: 64 * 1024,
            notes,
        }
    }

    fn longest_line(text: &str) -> usize {
        text.lines().map(width).max().unwrap_or(0)
    }

    #[test]
    fn every_column_has_a_distinct_header() {
        let mut wide: Vec<&str> = COLUMNS.iter().map(|c| c.wide).collect();
        wide.sort_unstable();
        wide.dedup();
        assert_eq!(wide.len(), COLUMNS.len());
        let mut default: Vec<&str> = COLUMNS.iter().filter_map(|c| c.default).collect();
        let kept = default.len();
        default.sort_unstable();
        default.dedup();
        assert_eq!(default.len(), kept);
    }

    #[test]
    fn the_default_table_fits_120_columns_with_the_largest_figures_and_a_long_link_name() {
        // 9,999 s loops, 1,300 KB packets, 1.2 M tasks/s, and a 40-character profile name.
        let long = "datacenter-frankfurt-to-branch-office-17";
        let rows = vec![row(long, 9_999.0), row("wan", 0.0775)];
        let note = "turbo off sends one task per call on its own connection, so batch sizes do not \
                    apply: it runs once per link and is reported at batch size 1";
        let text = render_table(&rows, &plan(vec![note.to_string()]), Layout::Default);
        assert!(longest_line(&text) <= DEFAULT_WIDTH, "{text}");
        let lines: Vec<&str> = text.lines().collect();
        // The name keeps both ends; the figures are whole.
        assert!(lines[2].starts_with("datacen"), "{text}");
        assert!(lines[2].contains("…"), "{text}");
        assert!(lines[2].contains("9999000.00"), "{text}");
        assert!(lines[2].contains("1234567"), "{text}");
        assert!(lines[3].starts_with("wan "), "{text}");
        // Header and rows end in the same column.
        assert_eq!(width(lines[0]), width(lines[2]), "{text}");
        // The note is wrapped, not cut.
        let wrapped: String = text
            .lines()
            .skip_while(|l| !l.starts_with("note: "))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(wrapped, format!("note: {note}"));
    }

    #[test]
    fn the_wide_table_has_every_column_and_the_default_only_its_own() {
        let rows = vec![row("wan", 0.0775)];
        let wide = render_table(&rows, &plan(Vec::new()), Layout::Wide);
        let header: Vec<&str> = wide
            .lines()
            .next()
            .unwrap_or_default()
            .split("  ")
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        let all: Vec<&str> = COLUMNS.iter().map(|c| c.wide).collect();
        assert_eq!(header, all);
        let default = render_table(&rows, &plan(Vec::new()), Layout::Default);
        let header: Vec<&str> = default
            .lines()
            .next()
            .unwrap_or_default()
            .split("  ")
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        assert_eq!(
            header,
            [
                "link", "turbo", "batch", "sub avg", "sub p99", "mon avg", "subKB", "monKB",
                "B/task", "tasks/s", "bound", "eff"
            ]
        );
        assert!(
            default.contains("tasks per loop: 300, loops per row: 5"),
            "{default}"
        );
    }

    #[test]
    fn long_names_are_elided_in_the_middle() {
        assert_eq!(elide_middle("lossy-wan", 9), "lossy-wan");
        assert_eq!(elide_middle("abcdefghij", 7), "abc…hij");
        assert_eq!(elide_middle("abcdefghij", 8), "abcd…hij");
        assert_eq!(width(&elide_middle("abcdefghij", 8)), 8);
    }

    #[test]
    fn wrapping_keeps_every_word_and_indents_continuations() {
        let lines = wrap("note: one two three four", 14, "  ");
        assert_eq!(lines, ["note: one two", "  three four"]);
        assert_eq!(wrap("short", 14, "  "), ["short"]);
        assert_eq!(
            wrap("averyveryverylongword x", 5, " "),
            ["averyveryverylongword", " x"]
        );
    }
}
