//! `turbomon bench` and `turbomon tune` as a user runs them: bad arguments are refused naming
//! the flag before anything starts; a small run prints rows with sane fields as valid JSON, CSV
//! and SVG; the bound arithmetic matches the wan profile; tune recommends and respects a black
//! hole.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::TempDir;
use serde_json::Value;
use turbomon::bench::LoopBytes;
use turbomon::bench::bound::{LinkShape, turbo_loop_bound, unary_loop_bound};

fn turbomon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_turbomon"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("turbomon runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Run `bench` with arguments that must be refused; return its stderr.
fn refused(args: &[&str]) -> String {
    let started = Instant::now();
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    let output = turbomon(&all);
    assert!(
        !output.status.success(),
        "bench {args:?} should be refused; stdout: {}",
        stdout(&output)
    );
    assert!(
        stdout(&output).trim().is_empty(),
        "nothing is measured or printed on stdout when refused: {}",
        stdout(&output)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused before anything starts"
    );
    stderr(&output)
}

#[test]
fn a_batch_size_of_zero_is_refused_naming_the_flag() {
    let error = refused(&["--links", "none", "--batch-sizes", "1,0,30"]);
    assert!(error.contains("--batch-sizes"), "{error}");
    assert!(error.contains("batch size 0"), "{error}");
}

#[test]
fn an_unknown_link_is_refused_with_the_known_profiles_listed() {
    let error = refused(&["--links", "none,moon"]);
    assert!(error.contains("--links"), "{error}");
    assert!(error.contains("`moon`"), "{error}");
    for known in ["none", "lan", "wan", "lossy-wan", "satellite", "modem"] {
        assert!(error.contains(known), "{known} missing from: {error}");
    }
}

#[test]
fn zero_tasks_or_loops_are_refused_naming_the_flag() {
    let error = refused(&["--links", "none", "--tasks", "0"]);
    assert!(error.contains("--tasks"), "{error}");
    let error = refused(&["--links", "none", "--loops", "0"]);
    assert!(error.contains("--loops"), "{error}");
    let error = refused(&["--links", "none", "--max-connections", "0"]);
    assert!(error.contains("--max-connections"), "{error}");
}

#[test]
fn a_turbo_value_other_than_on_off_or_bare_is_refused() {
    let error = refused(&["--links", "none", "--turbo", "on,fast"]);
    assert!(error.contains("--turbo"), "{error}");
    assert!(error.contains("fast"), "{error}");
}

#[test]
fn bare_without_link_none_is_refused() {
    let error = refused(&["--links", "wan", "--turbo", "bare"]);
    assert!(error.contains("--turbo"), "{error}");
    assert!(error.contains("none"), "{error}");
}

#[test]
fn a_run_estimated_over_max_time_is_refused_saying_how_long_it_would_take() {
    // Turbo off over satellite: 300 connections, 10 at a time, 1.2 s per wave, 10 loops.
    let error = refused(&["--links", "satellite", "--turbo", "off", "--max-time", "1m"]);
    assert!(error.contains("--max-time"), "{error}");
    assert!(error.contains("estimated to take about"), "{error}");
}

#[test]
fn the_bound_for_wan_follows_the_profile() {
    let wan = turbomon::link::builtin_profiles()
        .get("wan")
        .map(LinkShape::from)
        .expect("wan is built in");
    // 25 ms one-way and 10 Mbit/s: 12,500 bytes take 10 ms.
    let bytes = LoopBytes {
        client_to_server: 12_500,
        server_to_client: 2_000,
    };
    assert_eq!(turbo_loop_bound(&wan, bytes), Duration::from_millis(60));
    // Turbo off, 300 tasks at 10 connections: 30 waves of a connect round trip and a call.
    assert_eq!(
        unary_loop_bound(&wan, bytes, 300, 10, false),
        Duration::from_millis(30 * 100 + 10)
    );
}

fn loop_times_are_sane(row: &Value, key: &str) {
    let t = &row[key];
    let get = |k: &str| {
        t[k].as_f64()
            .unwrap_or_else(|| panic!("{key}.{k} in {row}"))
    };
    let (avg, p50, p99, max, min) = (get("avg"), get("p50"), get("p99"), get("max"), get("min"));
    assert!(min > 0.0, "{key}: {t}");
    assert!(min <= p50 && p50 <= p99 && p99 <= max, "{key}: {t}");
    assert!(min <= avg && avg <= max, "{key}: {t}");
    assert!(max < 30.0, "{key}: {t}");
}

#[test]
fn a_small_run_on_plain_loopback_prints_one_valid_json_row_per_combination() {
    let dir = TempDir::new("bench-small");
    let csv = dir.path().join("rows.csv");
    let svg = dir.path().join("rows.svg");
    let output = turbomon(&[
        "bench",
        "--links",
        "none",
        "--batch-sizes",
        "1,30",
        "--turbo",
        "on,off,bare",
        "--tasks",
        "60",
        "--loops",
        "2",
        "--json",
        "--csv",
        csv.to_str().expect("utf-8 path"),
        "--plot",
        svg.to_str().expect("utf-8 path"),
    ]);
    assert!(output.status.success(), "bench failed: {}", stderr(&output));
    // stdout is the JSON array and nothing else.
    let rows: Value = serde_json::from_str(&stdout(&output)).expect("stdout is valid JSON");
    let rows = rows.as_array().expect("a JSON array");
    let shape: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["turbo"].as_str().unwrap_or("?").to_string(),
                r["batch_size"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> =
        [("on", 1), ("on", 30), ("off", 1), ("bare", 1), ("bare", 30)]
            .iter()
            .map(|(t, b)| (t.to_string(), *b))
            .collect();
    assert_eq!(shape, expected);
    for row in rows {
        let keys: Vec<&str> = row
            .as_object()
            .expect("row object")
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "link",
            "turbo",
            "batch_size",
            "tasks",
            "loops",
            "submit_loop_s",
            "monitor_loop_s",
            "submit_packet_kb",
            "monitor_packet_kb",
            "wire_bytes_per_task",
            "tasks_per_s",
            "bound_s",
            "efficiency",
        ] {
            assert!(keys.contains(&key), "{key} missing in {row}");
        }
        assert_eq!(row["link"], "none");
        assert_eq!(row["tasks"], 60);
        assert_eq!(row["loops"], 2);
        loop_times_are_sane(row, "submit_loop_s");
        loop_times_are_sane(row, "monitor_loop_s");
        // No link: no counters, no bound; never a made-up figure.
        assert!(row["wire_bytes_per_task"].is_null(), "{row}");
        assert!(row["bound_s"].is_null(), "{row}");
        assert!(row["efficiency"].is_null(), "{row}");
        // Tasks per second is tasks ÷ mean submission loop time.
        let rate = row["tasks_per_s"].as_f64().expect("rate");
        let avg = row["submit_loop_s"]["avg"].as_f64().expect("avg");
        assert!(
            (rate * avg / 60.0 - 1.0).abs() < 0.01,
            "{rate} tasks/s vs avg {avg} s"
        );
        let packet = row["submit_packet_kb"]["avg"].as_f64().expect("packet");
        assert!(packet > 0.05, "{row}");
    }
    let kb = |i: usize| rows[i]["submit_packet_kb"]["avg"].as_f64().unwrap_or(0.0);
    assert!(kb(1) > 20.0 * kb(0), "batch 30 packets are ~30× batch 1's");
    let csv = std::fs::read_to_string(&csv).expect("csv written");
    assert_eq!(csv.lines().count(), 1 + rows.len());
    assert!(csv.starts_with("link,turbo,batch_size,"));
    let svg = std::fs::read_to_string(&svg).expect("svg written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

#[test]
fn over_wan_the_row_has_wire_bytes_a_bound_and_an_efficiency_at_most_one() {
    let output = turbomon(&[
        "bench",
        "--links",
        "wan",
        "--batch-sizes",
        "30",
        "--turbo",
        "on",
        "--tasks",
        "60",
        "--loops",
        "2",
        "--json",
    ]);
    assert!(output.status.success(), "bench failed: {}", stderr(&output));
    let rows: Value = serde_json::from_str(&stdout(&output)).expect("valid JSON");
    let row = &rows[0];
    assert_eq!(row["link"], "wan");
    let wire = row["wire_bytes_per_task"]
        .as_f64()
        .expect("wire bytes counted");
    // At least the task itself went up and its ack came back.
    assert!(wire > 80.0 && wire < 1000.0, "{row}");
    let bound = row["bound_s"].as_f64().expect("bound");
    assert!(bound >= 0.05, "two 25 ms latencies at least: {row}");
    let efficiency = row["efficiency"].as_f64().expect("efficiency");
    assert!(efficiency > 0.0 && efficiency <= 1.05, "{row}");
    assert!(
        row["submit_loop_s"]["min"].as_f64().unwrap_or(0.0) >= 0.05,
        "{row}"
    );
}

#[test]
fn the_table_is_aligned_and_explains_its_columns() {
    let output = turbomon(&[
        "bench",
        "--links",
        "none",
        "--batch-sizes",
        "10",
        "--turbo",
        "on",
        "--tasks",
        "20",
        "--loops",
        "1",
    ]);
    assert!(output.status.success(), "bench failed: {}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("link"), "{text}");
    assert!(
        lines[0].contains("tasks/s") && lines[0].contains("eff"),
        "{text}"
    );
    assert!(lines[2].starts_with("none"), "{text}");
    // Right-aligned columns end at the same place in the header and the row.
    assert_eq!(lines[0].len(), lines[2].len(), "{text}");
    assert!(text.contains("bound"), "{text}");
}

/// A small run over loopback and lan, turbo on and off, printed as a table with `extra` flags.
fn small_table(extra: &[&str]) -> String {
    let mut args = vec![
        "bench",
        "--links",
        "none,lan",
        "--batch-sizes",
        "1,30",
        "--turbo",
        "on,off",
        "--tasks",
        "30",
        "--loops",
        "1",
    ];
    args.extend_from_slice(extra);
    let output = turbomon(&args);
    assert!(output.status.success(), "bench failed: {}", stderr(&output));
    stdout(&output)
}

/// The header cells of a table: separated by at least two spaces, as cells are.
fn header_cells(text: &str) -> Vec<&str> {
    text.lines()
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect()
}

#[test]
fn the_default_table_fits_120_columns_and_wide_shows_every_column() {
    let text = small_table(&[]);
    for line in text.lines() {
        assert!(
            line.chars().count() <= 120,
            "{} characters: {line}\n{text}",
            line.chars().count()
        );
    }
    assert_eq!(
        header_cells(&text),
        [
            "link", "turbo", "batch", "sub avg", "sub p99", "mon avg", "subKB", "monKB", "B/task",
            "tasks/s", "bound", "eff"
        ],
        "{text}"
    );
    // Six rows: none on 1 and 30, none off, lan on 1 and 30, lan off; lan has a bound.
    let rows: Vec<&str> = text.lines().skip(2).take_while(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 6, "{text}");
    assert!(
        rows.iter().all(|r| r.split_whitespace().count() == 12),
        "{text}"
    );
    assert!(
        rows[3].starts_with("lan") && !rows[3].ends_with('-'),
        "{text}"
    );
    assert!(
        text.contains("tasks per loop: 30, loops per row: 1; --wide"),
        "{text}"
    );
    assert!(
        text.contains("note: turbo off sends one task per call"),
        "{text}"
    );

    let wide = small_table(&["--wide"]);
    assert_eq!(
        header_cells(&wide),
        [
            "link",
            "turbo",
            "batch",
            "tasks",
            "loops",
            "sub avg",
            "sub p50",
            "sub p99",
            "sub max",
            "sub min",
            "mon avg",
            "mon p50",
            "mon p99",
            "mon max",
            "mon min",
            "subKB avg",
            "subKB max",
            "subKB min",
            "monKB avg",
            "monKB max",
            "monKB min",
            "wire B/task",
            "tasks/s",
            "bound",
            "eff"
        ],
        "{wide}"
    );
    let rows: Vec<&str> = wide.lines().skip(2).take_while(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 6, "{wide}");
    assert!(
        rows.iter().all(|r| r.split_whitespace().count() == 25),
        "{wide}"
    );
    assert!(rows.iter().all(|r| r.chars().count() > 120), "{wide}");
}

#[test]
fn tune_recommends_batch_sizes_for_wan_with_a_reason() {
    let output = turbomon(&[
        "tune",
        "--link",
        "wan",
        "--tasks",
        "60",
        "--loops",
        "2",
        "--batch-sizes",
        "1,10,30",
        "--json",
    ]);
    assert!(output.status.success(), "tune failed: {}", stderr(&output));
    let report: Value = serde_json::from_str(&stdout(&output)).expect("valid JSON");
    assert_eq!(report["link"], "wan");
    assert_eq!(report["sweep"].as_array().map(Vec::len), Some(3));
    for key in ["task_submit_batch_size", "task_info_batch_size"] {
        let r = &report[key];
        let size = r["batch_size"].as_u64().expect("a batch size");
        assert!([1, 10, 30].contains(&size), "{r}");
        let reason = r["reason"].as_str().expect("a reason");
        assert!(reason.contains(&format!("Batch {size}")), "{reason}");
        assert!(r["loop_s"].as_f64().expect("loop time") >= 0.05, "{r}");
    }
}

#[test]
fn tune_refuses_batch_sizes_whose_packets_exceed_the_links_black_hole() {
    let dir = TempDir::new("bench-holey");
    let profiles = dir.path().join("links.toml");
    std::fs::write(
        &profiles,
        "[profiles.holey]\nlatency = \"2ms\"\nbandwidth = \"100Mbit\"\nblackhole_bytes = 2000\n",
    )
    .expect("profiles written");
    let output = turbomon(&[
        "tune",
        "--link",
        "holey",
        "--profiles",
        profiles.to_str().expect("utf-8 path"),
        "--tasks",
        "10",
        "--loops",
        "2",
        "--batch-sizes",
        "1,5,30,100",
        "--max-time",
        "60s",
    ]);
    drop(dir);
    assert!(output.status.success(), "tune failed: {}", stderr(&output));
    let text = stdout(&output);
    let submit_line = text
        .lines()
        .find(|l| l.starts_with("task_submit_batch_size = "))
        .unwrap_or_else(|| panic!("no submission recommendation in:\n{text}"));
    let size: usize = submit_line
        .trim_start_matches("task_submit_batch_size = ")
        .trim()
        .parse()
        .expect("a number");
    assert!(size == 1 || size == 5, "{text}");
    assert!(text.contains("Refused: 30 (packets of"), "{text}");
    assert!(text.contains("black hole"), "{text}");
}

#[test]
fn an_auto_row_sits_beside_the_fixed_ones_with_its_ratio_to_the_best() {
    let output = turbomon(&[
        "bench",
        "--links",
        "wan",
        "--turbo",
        "on",
        "--batch-sizes",
        "auto,10,30",
        "--tasks",
        "60",
        "--loops",
        "2",
        "--plaintext",
        "--json",
    ]);
    assert!(output.status.success(), "bench failed: {}", stderr(&output));
    let rows: Value = serde_json::from_str(&stdout(&output)).expect("valid JSON");
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 3, "two fixed rows and the automatic one");
    let fixed: Vec<&Value> = rows.iter().filter(|r| r.get("auto").is_none()).collect();
    assert_eq!(fixed.len(), 2, "fixed rows carry no auto fields: {rows:?}");
    let auto = rows
        .iter()
        .find(|r| r["auto"] == true)
        .expect("an automatic row");
    let sizes = auto["auto_sizes"]["submit"].as_array().expect("sizes");
    assert_eq!(sizes.len(), 22, "20 learning loops and the 2 reported");
    assert_eq!(
        auto["batch_size"], sizes[21],
        "batch_size is the last size chosen"
    );
    for key in ["auto_vs_best", "auto_vs_best_monitor"] {
        let ratio = auto[key].as_f64().expect("a ratio");
        assert!(ratio > 0.5 && ratio < 3.0, "{key} = {ratio}");
    }
}

#[test]
fn max_bandwidth_limits_what_the_link_carries_and_says_how_much() {
    let output = turbomon(&[
        "bench",
        "--links",
        "lan",
        "--turbo",
        "on",
        "--batch-sizes",
        "30",
        "--tasks",
        "300",
        "--loops",
        "2",
        "--plaintext",
        "--max-bandwidth",
        "20KB/s",
        "--json",
    ]);
    assert!(output.status.success(), "bench failed: {}", stderr(&output));
    let rows: Value = serde_json::from_str(&stdout(&output)).expect("valid JSON");
    let rate = rows[0]["to_engine_bytes_per_s"]
        .as_f64()
        .expect("the rate the link carried");
    assert!(
        rate > 10.0 * 1024.0 && rate <= 20.0 * 1024.0 * 1.10,
        "{rate} bytes/s for a 20 KB/s limit"
    );
    let error = refused(&["--max-bandwidth", "fast"]);
    assert!(error.contains("--max-bandwidth"), "{error}");
}
