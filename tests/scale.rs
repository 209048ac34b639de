//! `turbomon scale` as a user runs it: a small run (50 engines in one farm process, 6,000 sim
//! tasks a minute, 20 s) reports sane figures about the supervisor and loses no task; the
//! generated files are kept where asked and hold what the run used.

mod common;

use std::process::Command;

use common::TempDir;
use serde_json::Value;

#[test]
fn a_small_run_reports_the_supervisor_and_loses_nothing() {
    let dir = TempDir::new("scale");
    let keep = dir.path().join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_turbomon"))
        .args([
            "scale",
            "--engines",
            "50",
            "--tasks-per-min",
            "6000",
            "--duration",
            "20s",
            "--stats-interval",
            "10s",
            "--json",
            "--keep-dir",
        ])
        .arg(&keep)
        .env_remove("RUST_LOG")
        .output()
        .expect("turbomon runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let report: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let number = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("`{key}` is a number: {report}"))
    };
    assert_eq!(report["engines"], 50);
    assert_eq!(report["tasks_per_min"], 6000);
    assert_eq!(report["rules_per_node"], 10);
    assert!(number("duration_s") >= 20.0, "{report}");
    // CPU: some, and no more than the machine has.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let (avg, peak) = (number("cpu_avg_cores"), number("cpu_peak_cores"));
    assert!(avg > 0.0 && avg <= cores + 0.1, "{report}");
    assert!(peak >= avg * 0.5 && peak <= cores + 0.1, "{report}");
    // Memory: the peak is the high-water mark, at least what was resident at the end.
    let (rss_peak, rss_end) = (number("rss_peak_mb"), number("rss_end_mb"));
    assert!(rss_end > 1.0 && rss_peak >= rss_end, "{report}");
    assert_eq!(
        report["rss_by_minute_mb"],
        Value::Array(Vec::new()),
        "a 20 s run has no whole minute"
    );
    // Lateness from the supervisor's own summary windows.
    assert!(number("stats_windows") >= 2.0, "{report}");
    let lateness = number("lateness_p99_s");
    assert!((0.0..10.0).contains(&lateness), "{report}");
    // Tasks: most of the first minute's firings are due in 20 s (randomized over 30 s); every
    // submitted task is completed or still in flight (the two counters are read one after the
    // other, so a task finishing in between may slip), none lost.
    let (submitted, completed, in_flight) = (
        number("submitted"),
        number("completed"),
        number("in_flight_at_end"),
    );
    assert!((1000.0..=6000.0).contains(&submitted), "{report}");
    assert!(completed > 0.0, "{report}");
    assert!(
        (completed + in_flight - submitted).abs() <= submitted / 100.0,
        "{report}"
    );
    assert_eq!(report["lost"], 0, "{report}");
    // The configuration the supervisor ran and its summary windows are kept.
    let config = std::fs::read_to_string(keep.join("supervisor.toml")).expect("config kept");
    assert_eq!(config.matches("[[engines]]").count(), 50);
    assert_eq!(config.matches("[[rules]]").count(), 10);
    assert!(config.contains("stats_report = \"summary\""));
    let stats = std::fs::read_to_string(keep.join("stats.jsonl")).expect("stats kept");
    assert!(
        stats
            .lines()
            .all(|line| line.contains("\"engine\":\"all engines\"")
                && line.contains("\"engines\":50")),
        "only summary windows: {stats}"
    );
}

#[test]
fn an_open_files_limit_too_low_for_the_engines_is_said_before_anything_starts() {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_turbomon"));
    command
        .args(["scale", "--engines", "200", "--duration", "1s"])
        .env_remove("RUST_LOG");
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // A hard limit of 256 open files: 200 engines need about 464.
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let output = command.output().expect("turbomon runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the open-files limit is 256 (hard limit 256), too low for 200 engines"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing measured");
}
