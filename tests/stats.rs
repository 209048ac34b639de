//! The statistics report: exact text of the statistics block (docs/DESIGN.md, The statistics
//! block), window reset, rounding (two decimals, three significant digits below 0.01), units,
//! JSON.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{TempDir, capture_logs};
use turbomon::stats::{EngineStats, Mode, WindowReport, append_json};

/// 2026-11-22T02:40:00Z
fn window_start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_315_200)
}

fn window_end() -> SystemTime {
    window_start() + Duration::from_secs(300)
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Known recordings: three submission loops (one failed), three packets; monitor idle.
fn known_report() -> WindowReport {
    let mut stats = EngineStats::new("local", window_start());
    for loop_time in [ms(50), ms(100), ms(310)] {
        stats.submission.record_loop(loop_time);
    }
    stats.submission.record_failed_loop();
    for bytes in [400, 700, 2877] {
        stats.submission.record_packet(bytes);
    }
    stats.take_window(Mode::Turbo(30), Mode::Turbo(30), window_end())
}

#[test]
fn block_for_known_recordings_matches_the_spec_layout_exactly() {
    let expected = [
        "Statistics for engine local, window 2026-11-22T02:40:00Z .. 2026-11-22T02:45:00Z",
        "==================== TCP Statistics ========================",
        "Task Submission Mode        ===> Turbo (30)",
        "Task Monitor Mode           ===> Turbo (30)",
        "Task Submission Loop Time   ===> Average: 0.15, Maximum: 0.31, Minimum: 0.05, p50: 0.10, p90: 0.31, p99: 0.31, Loops: 3, Failed: 1",
        "Task Submission Packet (KB) ===> Average: 1.29, Maximum: 2.81, Minimum: 0.39, p50: 0.68, p90: 2.81, p99: 2.81, Packets: 3",
        "Task Monitor Loop Time      ===> No loops in this window",
        "Task Monitor Packet (KB)    ===> No packets in this window",
        "==================== TCP Statistics ========================",
        "Lateness Scheduled->Sent    ===> No tasks in this window",
        "Lateness Sent->Started      ===> No tasks in this window",
        "Lateness Started->Finished  ===> No tasks in this window",
        "Lateness Finished->Known    ===> No tasks in this window",
        "Lateness Broken->Alert      ===> No tasks in this window",
    ];
    assert_eq!(known_report().lines(), expected);
}

#[test]
fn the_field_reports_example_block_prints_byte_for_byte() {
    // Recordings whose figures are those of the block printed in the field report (KBI 310204);
    // every line of it must come out as it reads there, more fields following Minimum.
    let mut stats = EngineStats::new("local", window_start());
    for loop_time in [ms(50), ms(100), ms(310)] {
        stats.submission.record_loop(loop_time);
    }
    for bytes in [400, 2877, 400, 400, 400, 400, 400, 400, 400] {
        stats.submission.record_packet(bytes);
    }
    for loop_time in [ms(30), ms(90), ms(240)] {
        stats.monitor.record_loop(loop_time);
    }
    for bytes in [8325, 451, 732, 732] {
        stats.monitor.record_packet(bytes);
    }
    let lines = stats
        .take_window(Mode::Turbo(30), Mode::Turbo(30), window_end())
        .lines();
    let seed = [
        "==================== TCP Statistics ========================",
        "Task Submission Mode        ===> Turbo (30)",
        "Task Monitor Mode           ===> Turbo (30)",
        "Task Submission Loop Time   ===> Average: 0.15, Maximum: 0.31, Minimum: 0.05",
        "Task Submission Packet (KB) ===> Average: 0.66, Maximum: 2.81, Minimum: 0.39",
        "Task Monitor Loop Time      ===> Average: 0.12, Maximum: 0.24, Minimum: 0.03",
        "Task Monitor Packet (KB)    ===> Average: 2.50, Maximum: 8.13, Minimum: 0.44",
        "==================== TCP Statistics ========================",
    ];
    for (line, seed_line) in lines[1..=8].iter().zip(seed) {
        assert!(
            line == seed_line || line.starts_with(&format!("{seed_line}, ")),
            "{line}\nshould read\n{seed_line}"
        );
    }
}

#[test]
fn lateness_lines_follow_the_block_and_reach_the_json() {
    use turbomon::stats::Stage;
    let mut stats = EngineStats::new("local", window_start());
    stats.lateness.record(Stage::ScheduledToSent, ms(10));
    stats.lateness.record(Stage::ScheduledToSent, ms(30));
    stats.lateness.record(Stage::BrokenToAlert, ms(1250));
    let report = stats.take_window(Mode::Turbo(30), Mode::Turbo(30), window_end());
    let lines = report.lines();
    assert_eq!(
        lines[9],
        "Lateness Scheduled->Sent    ===> Average: 0.02, Maximum: 0.03, Minimum: 0.01, p50: 0.01, p90: 0.03, p99: 0.03, Tasks: 2"
    );
    assert_eq!(
        lines[13],
        "Lateness Broken->Alert      ===> Average: 1.25, Maximum: 1.25, Minimum: 1.25, p50: 1.25, p90: 1.25, p99: 1.25, Tasks: 1"
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
    let lateness = &json["lateness_s"];
    assert_eq!(lateness["scheduled_to_sent"]["count"], 2);
    assert!((lateness["scheduled_to_sent"]["max"].as_f64().unwrap() - 0.03).abs() < 1e-9);
    assert!(lateness["sent_to_started"].is_null());
    assert_eq!(lateness["broken_to_alert"]["count"], 1);
    // The window resets lateness too.
    let next = stats.take_window(Mode::Turbo(30), Mode::Turbo(30), window_end());
    assert!(next.lateness.stages.iter().all(|(_, f)| f.is_none()));
}

#[test]
fn both_kinds_and_modes_are_reported_separately() {
    let mut stats = EngineStats::new("remote", window_start());
    stats.submission.record_loop(ms(2000));
    stats.submission.record_packet(3 * 1024);
    stats.monitor.record_loop(ms(40));
    stats.monitor.record_loop(ms(60));
    stats.monitor.record_packet(512);
    stats.monitor.record_packet(1536);
    let lines = stats
        .take_window(Mode::Turbo(10), Mode::Off, window_end())
        .lines();
    assert_eq!(
        lines[0],
        "Statistics for engine remote, window 2026-11-22T02:40:00Z .. 2026-11-22T02:45:00Z"
    );
    assert_eq!(lines[2], "Task Submission Mode        ===> Turbo (10)");
    assert_eq!(lines[3], "Task Monitor Mode           ===> Off");
    assert_eq!(
        lines[4],
        "Task Submission Loop Time   ===> Average: 2.00, Maximum: 2.00, Minimum: 2.00, p50: 2.00, p90: 2.00, p99: 2.00, Loops: 1, Failed: 0"
    );
    assert_eq!(
        lines[5],
        "Task Submission Packet (KB) ===> Average: 3.00, Maximum: 3.00, Minimum: 3.00, p50: 3.00, p90: 3.00, p99: 3.00, Packets: 1"
    );
    assert_eq!(
        lines[6],
        "Task Monitor Loop Time      ===> Average: 0.05, Maximum: 0.06, Minimum: 0.04, p50: 0.04, p90: 0.06, p99: 0.06, Loops: 2, Failed: 0"
    );
    assert_eq!(
        lines[7],
        "Task Monitor Packet (KB)    ===> Average: 1.00, Maximum: 1.50, Minimum: 0.50, p50: 0.50, p90: 1.50, p99: 1.50, Packets: 2"
    );
}

#[test]
fn empty_window_says_so_instead_of_printing_zeros() {
    let mut stats = EngineStats::new("local", window_start());
    let lines = stats
        .take_window(Mode::Turbo(30), Mode::Turbo(30), window_end())
        .lines();
    assert_eq!(
        lines[4],
        "Task Submission Loop Time   ===> No loops in this window"
    );
    assert_eq!(
        lines[5],
        "Task Submission Packet (KB) ===> No packets in this window"
    );
    assert_eq!(
        lines[6],
        "Task Monitor Loop Time      ===> No loops in this window"
    );
    assert_eq!(
        lines[7],
        "Task Monitor Packet (KB)    ===> No packets in this window"
    );
    assert!(lines.iter().all(|l| !l.contains("0.00")));
}

#[test]
fn window_with_only_failed_loops_counts_them() {
    let mut stats = EngineStats::new("local", window_start());
    for _ in 0..3 {
        stats.monitor.record_failed_loop();
    }
    let lines = stats
        .take_window(Mode::Turbo(30), Mode::Turbo(30), window_end())
        .lines();
    assert_eq!(
        lines[6],
        "Task Monitor Loop Time      ===> No completed loops in this window, Failed: 3"
    );
}

#[test]
fn take_window_resets_both_kinds_and_starts_the_next_window() {
    let mut stats = EngineStats::new("local", window_start());
    stats.submission.record_loop(ms(100));
    stats.submission.record_packet(1000);
    stats.submission.record_failed_loop();
    stats.monitor.record_loop(ms(100));
    stats.monitor.record_packet(1000);
    let first = stats.take_window(Mode::Turbo(30), Mode::Turbo(30), window_end());
    assert_eq!(first.submission.loops, 1);
    assert_eq!(stats.window_start(), window_end());

    let later = window_end() + Duration::from_secs(300);
    let second = stats.take_window(Mode::Turbo(30), Mode::Turbo(30), later);
    assert_eq!(second.window_start, window_end());
    assert_eq!(second.window_end, later);
    assert_eq!(second.submission.loops, 0);
    assert_eq!(second.submission.failed_loops, 0);
    assert!(second.submission.loop_time.is_none());
    assert!(second.submission.packet_size.is_none());
    assert!(second.monitor.loop_time.is_none());
    assert!(second.monitor.packet_size.is_none());
    assert_eq!(
        second.lines()[0],
        "Statistics for engine local, window 2026-11-22T02:45:00Z .. 2026-11-22T02:50:00Z"
    );

    // The new window's figures do not carry the old extremes.
    stats.submission.record_loop(ms(20));
    let third = stats.take_window(Mode::Turbo(30), Mode::Turbo(30), later);
    assert_eq!(
        third.lines()[4],
        "Task Submission Loop Time   ===> Average: 0.02, Maximum: 0.02, Minimum: 0.02, p50: 0.02, p90: 0.02, p99: 0.02, Loops: 1, Failed: 0"
    );
}

#[test]
fn figures_round_half_up_to_two_decimals_or_below_0_01_to_three_significant_digits() {
    let mut stats = EngineStats::new("local", window_start());
    stats.submission.record_loop(ms(125)); // 0.125 s -> 0.13
    stats.submission.record_loop(Duration::from_micros(4_999)); // 0.004999 s -> 0.00500
    stats.submission.record_packet(5); // 0.0048828 KB -> 0.00488
    stats.submission.record_packet(1_034); // 1.00977 KB -> 1.01
    let lines = stats
        .take_window(Mode::Turbo(30), Mode::Turbo(30), window_end())
        .lines();
    // Average (0.125 + 0.004999) / 2 = 0.0649995 -> 0.06.
    assert!(
        lines[4].starts_with(
            "Task Submission Loop Time   ===> Average: 0.06, Maximum: 0.13, Minimum: 0.00500,"
        ),
        "{}",
        lines[4]
    );
    // Average 519.5 bytes = 0.5073 KB -> 0.51.
    assert!(
        lines[5].starts_with(
            "Task Submission Packet (KB) ===> Average: 0.51, Maximum: 1.01, Minimum: 0.00488,"
        ),
        "{}",
        lines[5]
    );
}

#[test]
fn a_block_of_sub_10_ms_loops_shows_their_digits_instead_of_zeros() {
    use turbomon::stats::Stage;
    let mut stats = EngineStats::new("local", window_start());
    for micros in [457, 2_130, 4_200] {
        stats.submission.record_loop(Duration::from_micros(micros));
    }
    stats.submission.record_packet(3 * 1024);
    // 0.009999 s rounds to 0.0100 at three significant digits: printed as 0.01.
    stats.monitor.record_loop(Duration::from_micros(9_999));
    stats.monitor.record_packet(1536);
    stats
        .lateness
        .record(Stage::ScheduledToSent, Duration::from_micros(1_500));
    stats.lateness.record(Stage::FinishedToKnown, ms(12));
    let lines = stats
        .take_window(Mode::Turbo(30), Mode::Turbo(30), window_end())
        .lines();
    // Average (0.457 + 2.130 + 4.200) / 3 ms = 2.2623 ms.
    assert_eq!(
        lines[4],
        "Task Submission Loop Time   ===> Average: 0.00226, Maximum: 0.00420, Minimum: 0.000457, p50: 0.00213, p90: 0.00420, p99: 0.00420, Loops: 3, Failed: 0"
    );
    assert_eq!(
        lines[5],
        "Task Submission Packet (KB) ===> Average: 3.00, Maximum: 3.00, Minimum: 3.00, p50: 3.00, p90: 3.00, p99: 3.00, Packets: 1"
    );
    assert_eq!(
        lines[6],
        "Task Monitor Loop Time      ===> Average: 0.01, Maximum: 0.01, Minimum: 0.01, p50: 0.01, p90: 0.01, p99: 0.01, Loops: 1, Failed: 0"
    );
    assert_eq!(
        lines[9],
        "Lateness Scheduled->Sent    ===> Average: 0.00150, Maximum: 0.00150, Minimum: 0.00150, p50: 0.00150, p90: 0.00150, p99: 0.00150, Tasks: 1"
    );
    assert_eq!(
        lines[12],
        "Lateness Finished->Known    ===> Average: 0.01, Maximum: 0.01, Minimum: 0.01, p50: 0.01, p90: 0.01, p99: 0.01, Tasks: 1"
    );
    for line in &lines {
        assert!(
            !line.contains(" 0.00,") && !line.contains(" 0.0100"),
            "a figure reads as zero or with a fourth digit: {line}"
        );
    }
}

#[test]
fn one_kilobyte_is_1024_bytes() {
    let mut stats = EngineStats::new("local", window_start());
    stats.monitor.record_packet(2048);
    let lines = stats
        .take_window(Mode::Turbo(30), Mode::Turbo(30), window_end())
        .lines();
    assert_eq!(
        lines[7],
        "Task Monitor Packet (KB)    ===> Average: 2.00, Maximum: 2.00, Minimum: 2.00, p50: 2.00, p90: 2.00, p99: 2.00, Packets: 1"
    );
}

#[test]
fn percentiles_come_from_the_distribution() {
    let mut stats = EngineStats::new("local", window_start());
    for millis in 1..=100 {
        stats.submission.record_loop(ms(millis));
    }
    let report = stats.take_window(Mode::Turbo(30), Mode::Turbo(30), window_end());
    let figures = report
        .submission
        .loop_time
        .unwrap_or_else(|| panic!("no loops"));
    // Within the histogram's 1 % resolution (two significant digits).
    let near = |actual: Duration, expected: Duration| {
        let diff = actual.abs_diff(expected);
        assert!(diff <= expected / 100, "{actual:?} vs {expected:?}");
    };
    near(figures.p50, ms(50));
    near(figures.p90, ms(90));
    near(figures.p99, ms(99));
    assert_eq!(figures.min, ms(1));
    assert_eq!(figures.max, ms(100));
    assert_eq!(figures.avg(), Duration::from_micros(50_500));
    assert_eq!(
        report.lines()[4],
        "Task Submission Loop Time   ===> Average: 0.05, Maximum: 0.10, Minimum: 0.00100, p50: 0.05, p90: 0.09, p99: 0.10, Loops: 100, Failed: 0"
    );
}

#[test]
fn average_minimum_and_maximum_are_exact_not_histogram_rounded() {
    let mut stats = EngineStats::new("local", window_start());
    stats
        .submission
        .record_loop(Duration::from_nanos(123_456_789));
    stats
        .submission
        .record_loop(Duration::from_nanos(987_654_321));
    stats.submission.record_packet(123_457);
    let report = stats.take_window(Mode::Turbo(30), Mode::Turbo(30), window_end());
    let loops = report
        .submission
        .loop_time
        .unwrap_or_else(|| panic!("no loops"));
    assert_eq!(loops.min, Duration::from_nanos(123_456_789));
    assert_eq!(loops.max, Duration::from_nanos(987_654_321));
    assert_eq!(loops.total, Duration::from_nanos(1_111_111_110));
    let packets = report
        .submission
        .packet_size
        .unwrap_or_else(|| panic!("no packets"));
    assert_eq!(packets.max_bytes, 123_457);
    assert_eq!(
        packets.p99_bytes, 123_457,
        "percentiles stay within min..=max"
    );

    let json: serde_json::Value =
        serde_json::from_str(&report.to_json()).unwrap_or_else(|e| panic!("{e}"));
    let max = json["submission"]["loop_time_s"]["max"]
        .as_f64()
        .unwrap_or_default();
    assert!((max - 0.987_654_321).abs() < 1e-12, "{max}");
    let kb = json["submission"]["packet_kb"]["max"]
        .as_f64()
        .unwrap_or_default();
    assert!((kb - 123_457.0 / 1024.0).abs() < 1e-12, "{kb}");
}

#[test]
fn mode_displays_as_in_the_spec() {
    assert_eq!(Mode::Turbo(30).to_string(), "Turbo (30)");
    assert_eq!(Mode::Off.to_string(), "Off");
}

#[test]
fn json_has_every_key_and_parses() {
    let json = known_report().to_json();
    assert!(!json.contains('\n'), "one line: {json}");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(value["engine"], "local");
    assert_eq!(value["window_start"], "2026-11-22T02:40:00Z");
    assert_eq!(value["window_end"], "2026-11-22T02:45:00Z");
    let submission = &value["submission"];
    assert_eq!(submission["mode"], "turbo");
    assert_eq!(submission["batch_size"], 30);
    assert_eq!(submission["loops"], 3);
    assert_eq!(submission["failed_loops"], 1);
    for figures in ["loop_time_s", "packet_kb"] {
        for key in ["avg", "max", "min", "p50", "p90", "p99"] {
            assert!(
                submission[figures][key].is_f64(),
                "submission.{figures}.{key} in {json}"
            );
        }
    }
    assert!(
        (submission["loop_time_s"]["min"]
            .as_f64()
            .unwrap_or_default()
            - 0.05)
            .abs()
            < 1e-9
    );
    let monitor = &value["monitor"];
    for key in [
        "mode",
        "batch_size",
        "loops",
        "failed_loops",
        "loop_time_s",
        "packet_kb",
    ] {
        assert!(
            monitor.get(key).is_some(),
            "monitor.{key} missing in {json}"
        );
    }
    assert!(monitor["loop_time_s"].is_null());
    assert!(monitor["packet_kb"].is_null());
    assert_eq!(monitor["loops"], 0);
}

#[test]
fn json_mode_off_has_null_batch_size() {
    let mut stats = EngineStats::new("local", window_start());
    let report = stats.take_window(Mode::Off, Mode::Turbo(50), window_end());
    let value: serde_json::Value =
        serde_json::from_str(&report.to_json()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(value["submission"]["mode"], "off");
    assert!(value["submission"]["batch_size"].is_null());
    assert_eq!(value["monitor"]["mode"], "turbo");
    assert_eq!(value["monitor"]["batch_size"], 50);
}

#[test]
fn append_json_writes_one_object_per_line() {
    let dir = TempDir::new("stats");
    let path = dir.path().join("stats.jsonl");
    let report = known_report();
    append_json(&path, &report).unwrap_or_else(|e| panic!("{e}"));
    append_json(&path, &report).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value["engine"], "local");
    }
}

#[test]
fn log_emits_every_line_on_the_stats_target() {
    let report = known_report();
    let ((), output) = capture_logs(|| report.log());
    let logged: Vec<&str> = output.lines().collect();
    assert_eq!(logged.len(), report.lines().len(), "{output}");
    for (logged, line) in logged.iter().zip(report.lines()) {
        assert!(logged.contains(" INFO "), "{logged}");
        assert!(
            logged.ends_with(&format!("turbomon::stats: {line}")),
            "{logged} does not end with {line}"
        );
    }
}

/// The engines named by each line a supervisor of two engines appends to its statistics JSON
/// from start to shutdown (the final windows), under `stats_report = "<choice>"`.
async fn json_engines_under(choice: &str) -> Vec<String> {
    use common::{Extra, RunningEngine, engine_config, node_names, one_engine_config, parse};
    use turbomon::supervisor::SupervisorOptions;
    let first = RunningEngine::start(engine_config()).await;
    let second = RunningEngine::start(engine_config()).await;
    let dir = TempDir::new("stats-report");
    let stats_json = dir.path().join("stats.jsonl");
    let top = format!(
        "stats_report = \"{choice}\"\nstats_interval = \"1h\"\n\n[[engines]]\nname = \"e2\"\naddress = \"{}\"\n",
        second.address
    );
    let text = one_engine_config(
        first.address,
        &node_names(3),
        Extra {
            top: &top,
            ..Extra::default()
        },
    );
    let (supervisor, _reload, _done) = common::start_supervisor_with(
        parse(&text),
        SupervisorOptions {
            stats_json: Some(stats_json.clone()),
            ..SupervisorOptions::default()
        },
    );
    supervisor.shutdown().await;
    first.stop().await;
    second.stop().await;
    let text = std::fs::read_to_string(&stats_json).unwrap_or_default();
    text.lines()
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            match value["engines"].as_u64() {
                Some(n) => format!("{} ({n})", value["engine"].as_str().unwrap_or_default()),
                None => value["engine"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_chooses_the_engines_blocks_the_summary_after_them_or_both() {
    let mut both = json_engines_under("both").await;
    assert_eq!(
        both.pop().as_deref(),
        Some("all engines (2)"),
        "the summary comes last"
    );
    both.sort();
    assert_eq!(both, ["e1", "e2"]);
    assert_eq!(json_engines_under("summary").await, ["all engines (2)"]);
    let mut engines = json_engines_under("engines").await;
    engines.sort();
    assert_eq!(engines, ["e1", "e2"]);
}

#[test]
fn an_automatic_size_shows_in_the_mode_line_and_the_json() {
    let mut stats = EngineStats::new("remote", window_start());
    stats.submission.record_loop(ms(80));
    let report = stats.take_window(Mode::Auto(24), Mode::Turbo(30), window_end());
    let lines = report.lines();
    assert_eq!(
        lines[2],
        "Task Submission Mode        ===> Turbo (auto: 24)"
    );
    assert_eq!(lines[3], "Task Monitor Mode           ===> Turbo (30)");
    let value: serde_json::Value =
        serde_json::from_str(&report.to_json()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(value["submission"]["mode"], "turbo");
    assert_eq!(value["submission"]["batch_size"], 24);
    assert_eq!(value["submission"]["batch_size_auto"], true);
    assert!(
        value["monitor"].get("batch_size_auto").is_none(),
        "a fixed size's JSON is unchanged: {value}"
    );
}
