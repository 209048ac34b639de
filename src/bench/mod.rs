//! `turbomon bench` and `turbomon tune`: the batch-size trade-off measured on one machine.
//!
//! `bench` starts, for every combination of link, turbo mode and batch size, a fresh in-process
//! engine on loopback behind a fresh simulated link, drives the supervisor's own submission and
//! monitor loop functions against it (no scheduler in between, so the real pipeline is what is
//! measured), and reports per combination loop times, packet sizes, wire bytes per task, tasks
//! per second, the physical bound the link alone forces and the efficiency (bound ÷ measured loop
//! time). `--turbo bare` adds a baseline: the same batches over a plain tonic stream to a server
//! that acknowledges without storing anything. `tune` sweeps batch sizes on one link and
//! recommends the smallest batch whose loop time is within 5 % of the best.
//!
//! - [`error`]: [`BenchError`], why a run was refused or stopped.
//! - [`plan`]: the data every file shares: [`Combination`] ([`LinkChoice`], [`TurboMode`],
//!   batch size), [`RunSettings`], [`BenchPlan`], the loops' tasks ([`bench_tasks`]) and what a
//!   combination measures ([`Measurement`], [`LoopBytes`]).
//! - [`alerts`]: alert latency by status mode (poll or push).
//! - [`args`]: command-line arguments and their validation into a [`BenchPlan`].
//! - [`bound`]: the physical bound of a loop, packet and message sizes, and the run-time
//!   estimate (pure arithmetic).
//! - [`run`]: running one combination and a whole plan, and the progress bar.
//! - [`bare`]: the bare tonic baseline (server and client).
//! - [`report`]: rows, and their JSON and CSV forms.
//! - [`table`]: the rows as a text table: by default the columns that fit 120 characters,
//!   every column with `--wide`.
//! - [`plot`]: the SVG figure.
//! - [`tune`]: the recommendation (a pure function) and the `tune` command.
//!
//! The files depend on each other one way only: [`plan`] and [`error`] on no other bench file;
//! [`bound`] and [`alerts`] on those two only; [`args`], [`bare`] and [`report`] also on
//! [`bound`] (and [`report`] on [`alerts`]); [`run`], [`plot`] and [`table`] also on [`report`]
//! (and [`run`] on [`bare`]); [`tune`] also on [`run`] and [`args`]; this file, which holds the two
//! commands, on all of them. Nothing below reaches back into this file.

pub mod alerts;
pub mod args;
pub mod bare;
pub mod bound;
pub mod error;
pub mod plan;
pub mod plot;
pub mod report;
pub mod run;
pub mod table;
pub mod tune;

use std::io::Write;
use std::path::PathBuf;

pub use args::{BenchArgs, TuneArgs};
pub use error::BenchError;
pub use plan::{
    BenchPlan, Combination, LinkChoice, LoopBytes, Measurement, RunSettings, TurboMode, bench_tasks,
};
pub use report::Row;
pub use run::{progress_bar, run_plan};

/// `turbomon bench`: validate, run, and print the table (or JSON), CSV, plot and
/// recommendations the arguments ask for. Nothing starts when an argument is invalid.
pub async fn run_cli(args: BenchArgs) -> Result<(), BenchError> {
    let plan = args.plan()?;
    if args.json {
        // The table carries the notes; with --json they go to stderr.
        for note in &plan.notes {
            eprintln!("note: {note}");
        }
    }
    let progress = progress_bar(plan.total_loops(), args.json);
    let outcome = run_plan(&plan, &progress).await;
    progress.finish_and_clear();
    let (mut rows, mut failure) = match outcome {
        Ok(rows) => (rows, None),
        Err((rows, error)) => (rows, Some(error)),
    };
    let mut latency_lines = Vec::new();
    if failure.is_none() && !args.status_mode.is_empty() {
        match alert_rows(&plan, &args, rows).await {
            Ok((with_modes, lines)) => {
                rows = with_modes;
                latency_lines = lines;
            }
            Err((kept, error)) => {
                rows = kept;
                failure = Some(error);
            }
        }
    }
    if let Some(error) = &failure {
        eprintln!("error: {error}");
        if !rows.is_empty() {
            eprintln!("reporting the {} rows measured before it", rows.len());
        }
    }
    let mut stdout = std::io::stdout().lock();
    let written = if args.json {
        writeln!(stdout, "{}", report::to_json(&rows))
    } else {
        let layout = if args.wide {
            table::Layout::Wide
        } else {
            table::Layout::Default
        };
        writeln!(stdout, "{}", table::render_table(&rows, &plan, layout)).and_then(|()| {
            latency_lines
                .iter()
                .chain(&auto_and_bandwidth_lines(&rows, &plan))
                .try_for_each(|line| writeln!(stdout, "{line}"))
        })
    };
    written.map_err(|e| BenchError::Write {
        path: PathBuf::from("<stdout>"),
        reason: e.to_string(),
    })?;
    if let Some(path) = &args.csv {
        std::fs::write(path, report::to_csv(&rows)).map_err(|e| BenchError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    if let Some(path) = &args.plot {
        plot::write_svg(&rows, path)?;
    }
    if args.recommend {
        let text = tune::recommend_from_rows(&rows, &plan);
        if args.json {
            eprintln!("{text}");
        } else {
            writeln!(stdout, "{text}").map_err(|e| BenchError::Write {
                path: PathBuf::from("<stdout>"),
                reason: e.to_string(),
            })?;
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Lines after the table: what each automatic row chose against the best fixed size, and with
/// `--max-bandwidth` the rate the link carried to the engine.
fn auto_and_bandwidth_lines(rows: &[Row], plan: &BenchPlan) -> Vec<String> {
    let mut lines = Vec::new();
    for row in rows.iter().filter(|r| r.auto) {
        let ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}"));
        let last = |sizes: &[usize]| sizes.last().map_or("-".to_string(), usize::to_string);
        let (submit, monitor) = row
            .auto_sizes
            .as_ref()
            .map(|s| (last(&s.submit), last(&s.monitor)))
            .unwrap_or_default();
        lines.push(format!(
            "auto on {}: settled at {submit} (submission) and {monitor} (monitor) after {} learning loops; loop time / best fixed size: {} (submission), {} (monitor)",
            row.link,
            plan::AUTO_LEARNING_LOOPS,
            ratio(row.auto_vs_best),
            ratio(row.auto_vs_best_monitor)
        ));
    }
    if let Some(limit) = plan.settings.max_bandwidth {
        for row in rows {
            if let Some(rate) = row.to_engine_bytes_per_s {
                lines.push(format!(
                    "{} turbo {} batch {}{}: the link carried {:.1} KB/s to the engine (limit {:.1} KB/s)",
                    row.link,
                    row.turbo,
                    if row.auto { "auto:" } else { "" },
                    row.batch_size,
                    rate / 1024.0,
                    limit as f64 / 1024.0
                ));
            }
        }
    }
    lines
}

/// Measure alert latency for every link and status mode, and give each turbo-on row one copy
/// per status mode carrying it (the loop figures do not depend on the status mode). Also the
/// lines of a small table for the text output.
async fn alert_rows(
    plan: &BenchPlan,
    args: &BenchArgs,
    rows: Vec<Row>,
) -> Result<(Vec<Row>, Vec<String>), (Vec<Row>, BenchError)> {
    let mut links: Vec<&LinkChoice> = Vec::new();
    for c in &plan.combinations {
        if !links.iter().any(|l| l.name == c.link.name) {
            links.push(&c.link);
        }
    }
    let mut measured = Vec::new();
    let mut lines = vec![
        String::new(),
        "alert latency (a broken sim rule, from its end on the engine to its alert), ms:"
            .to_string(),
        format!(
            "{:<10} {:<6} {:>8} {:>8} {:>8}",
            "link", "status", "p50", "p99", "max"
        ),
    ];
    for link in links {
        for &mode in &args.status_mode {
            let latency =
                match alerts::measure(link, mode, args.alert_samples, args.plaintext).await {
                    Ok(latency) => latency,
                    Err(error) => return Err((rows, error)),
                };
            lines.push(format!(
                "{:<10} {:<6} {:>8.1} {:>8.1} {:>8.1}",
                link.name,
                format!("{mode:?}").to_lowercase(),
                latency.p50 * 1e3,
                latency.p99 * 1e3,
                latency.max * 1e3
            ));
            measured.push((link.name.clone(), mode, latency));
        }
    }
    let mut out = Vec::new();
    for row in rows {
        if row.turbo != TurboMode::On {
            out.push(row);
            continue;
        }
        for (link, mode, latency) in &measured {
            if *link == row.link {
                out.push(Row {
                    status_mode: Some(*mode),
                    alert_latency_s: Some(*latency),
                    ..row.clone()
                });
            }
        }
    }
    Ok((out, lines))
}

/// `turbomon tune`: sweep batch sizes on one link and print the recommendation.
pub async fn tune_cli(args: TuneArgs) -> Result<(), BenchError> {
    tune::run_cli(args).await
}
