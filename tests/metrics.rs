//! `/metrics` on both sides, scraped over HTTP from a supervisor and an engine running in this
//! process with real traffic: the histograms grow by exactly what the statistics window reports,
//! the counters are the supervisor's and engine's own, other paths are 404, an empty
//! `metrics_listen` serves nothing, a taken port is an error naming the key, and (with promtool
//! installed) `promtool check metrics` accepts both endpoints. Only `127.0.0.1:0` is bound.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{
    Extra, MockEngine, RunningEngine, TempDir, batch, engine_config, http_request, node_names,
    ok_task, one_engine_config, parse, serve_mock, start_supervisor_with, take_completions,
};
use turbomon::config::{EngineConfig, SupervisorConfig, parse_engine, parse_supervisor};
use turbomon::engine::Engine;
use turbomon::metrics::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};
use turbomon::proto;
use turbomon::stats::Stage;
use turbomon::supervisor::{Supervisor, SupervisorOptions};

/// Every sample of an exposition, by series (`name{labels}`), with its value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample line: {line}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("a number in: {line}"));
            (series.to_string(), value)
        })
        .collect()
}

/// The value of `series`, failing when it is missing.
fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series}; have: {:#?}", samples.keys()))
}

/// `GET /metrics` in OpenMetrics, checked for status and content type.
async fn scrape(address: SocketAddr) -> String {
    let answer = http_request(address, "GET", "/metrics", None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("content-type"),
        Some(OPENMETRICS_CONTENT_TYPE)
    );
    assert!(answer.body.ends_with("# EOF\n"), "{}", answer.body);
    answer.body
}

/// `GET /metrics` asking for the Prometheus text format 0.0.4.
async fn scrape_prometheus_text(address: SocketAddr) -> String {
    let answer = http_request(
        address,
        "GET",
        "/metrics",
        Some("text/plain; version=0.0.4"),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("content-type"),
        Some(PROMETHEUS_TEXT_CONTENT_TYPE)
    );
    answer.body
}

/// The statistics figures that only move while the supervisor sends or asks something.
fn window_figures(supervisor: &Supervisor) -> Vec<u64> {
    supervisor
        .with_stats("e1", |stats| {
            let mut figures = Vec::new();
            for kind in [&stats.submission, &stats.monitor] {
                figures.extend([kind.loops(), kind.failed_loops(), kind.packets()]);
            }
            figures.extend(Stage::ALL.map(|stage| stats.lateness.count(stage)));
            figures
        })
        .expect("engine e1")
}

/// Waits (at most 10 s) until nothing is unfinished and the window's figures stayed the same
/// over six monitor intervals: the traffic is over.
async fn wait_until_quiet(supervisor: &Supervisor) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = window_figures(supervisor);
    let mut unchanged = 0;
    while unchanged < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the supervisor kept recording: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = window_figures(supervisor);
        if now == last && supervisor.unfinished("e1") == Some(0) {
            unchanged += 1;
        } else {
            unchanged = 0;
            last = now;
        }
    }
}

/// The first line of the statistics JSON file, once written (at most 15 s).
async fn first_window(path: &Path) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            return serde_json::from_str(line).expect("a JSON window");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no statistics window written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A count from the window's JSON (`null` figures count 0).
fn json_count(value: &serde_json::Value) -> f64 {
    value.as_u64().unwrap_or(0) as f64
}

const TASKS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_figures_equal_the_first_statistics_window_and_the_counters() {
    let mut engine = RunningEngine::start(engine_config()).await;
    let engine_metrics = engine.serve_metrics();
    let dir = TempDir::new("metrics-window");
    let stats_json = dir.path().join("stats.jsonl");
    // One firing of 40 sim tasks at start, sent in batches of 7 and asked for in batches of 9;
    // the window closes well after the traffic is over.
    let text = one_engine_config(
        engine.address,
        &node_names(TASKS),
        Extra {
            top: r#"
metrics_listen = "127.0.0.1:0"
stats_interval = "4s"
status_check_interval = "100ms"
task_submit_batch_size = 7
task_info_batch_size = 9
batch_window = "10ms"
"#,
            rule: r#"duration = "30ms""#,
            ..Extra::default()
        },
    );
    let (supervisor, _reload, mut done) = start_supervisor_with(
        parse(&text),
        SupervisorOptions {
            stats_json: Some(stats_json.clone()),
            ..SupervisorOptions::default()
        },
    );
    let address = supervisor.metrics_addr().expect("metrics served");
    assert!(address.ip().is_loopback() && address.port() != 0);

    take_completions(&mut done, TASKS, Duration::from_secs(10)).await;
    wait_until_quiet(&supervisor).await;
    assert_eq!(
        std::fs::metadata(&stats_json).map_or(0, |m| m.len()),
        0,
        "the first window closed before the traffic was over (a very slow machine?)"
    );
    let scraped = samples(&scrape(address).await);
    let counters = supervisor.counters("e1").expect("engine e1");
    let window = first_window(&stats_json).await;

    for kind in ["submission", "monitor"] {
        let labels = format!(r#"{{engine="e1",kind="{kind}"}}"#);
        let figures = &window[kind];
        let loops = json_count(&figures["loops"]);
        let packets = json_count(&figures["packets"]);
        assert!(loops > 0.0 && packets > 0.0, "{kind}: {figures}");
        let count = |name: &str| value(&scraped, &format!("{name}{labels}"));
        assert_eq!(
            count("turbomon_supervisor_loop_duration_seconds_count"),
            loops,
            "{kind} loops"
        );
        let every = format!(
            r#"turbomon_supervisor_loop_duration_seconds_bucket{{le="+Inf",engine="e1",kind="{kind}"}}"#
        );
        assert_eq!(
            value(&scraped, &every),
            loops,
            "{kind}: +Inf holds every loop"
        );
        assert_eq!(
            count("turbomon_supervisor_packet_size_bytes_count"),
            packets,
            "{kind} packets"
        );
        assert_eq!(
            count("turbomon_supervisor_failed_loops_total"),
            json_count(&figures["failed_loops"]),
            "{kind} failed loops"
        );
        // The sums agree with the window's averages (exact sums, rounded differently).
        let seconds = figures["loop_time_s"]["avg"].as_f64().expect("avg") * loops;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
        assert!(close(
            count("turbomon_supervisor_loop_duration_seconds_sum"),
            seconds
        ));
        let bytes = figures["packet_kb"]["avg"].as_f64().expect("avg") * packets * 1024.0;
        assert!(close(
            count("turbomon_supervisor_packet_size_bytes_sum"),
            bytes
        ));
    }
    for stage in Stage::ALL {
        let series = format!(
            r#"turbomon_supervisor_lateness_seconds_count{{engine="e1",stage="{}"}}"#,
            stage.key()
        );
        assert_eq!(
            value(&scraped, &series),
            json_count(&window["lateness_s"][stage.key()]["count"]),
            "{series}"
        );
    }
    assert_eq!(
        value(
            &scraped,
            r#"turbomon_supervisor_lateness_seconds_count{engine="e1",stage="scheduled_to_sent"}"#
        ),
        TASKS as f64
    );

    assert_eq!(counters.accepted, TASKS as u64);
    for (name, _, count) in counters.fields() {
        let series = format!(r#"turbomon_supervisor_{name}_total{{engine="e1"}}"#);
        assert_eq!(value(&scraped, &series), count as f64, "{series}");
    }
    let gauge = |name: &str| {
        value(
            &scraped,
            &format!(r#"turbomon_supervisor_{name}{{engine="e1"}}"#),
        )
    };
    assert_eq!(gauge("unfinished_tasks"), 0.0);
    assert_eq!(
        value(
            &scraped,
            r#"turbomon_supervisor_batch_size{engine="e1",kind="submission"}"#
        ),
        7.0
    );
    assert_eq!(
        value(
            &scraped,
            r#"turbomon_supervisor_batch_size{engine="e1",kind="monitor"}"#
        ),
        9.0
    );
    assert_eq!(gauge("engine_reachable"), 1.0);
    assert_eq!(gauge("failover_active"), 0.0);
    assert_eq!(gauge("batches_in_flight"), 0.0);
    assert!(
        gauge("open_connections") >= 1.0,
        "the long-lived connection"
    );

    let engine_side = samples(&scrape(engine_metrics).await);
    assert_eq!(
        value(&engine_side, "turbomon_engine_tasks_accepted_total"),
        TASKS as f64,
        "every task sent was accepted once"
    );
    assert_eq!(engine.engine.counters().tasks_accepted, TASKS as u64);
    assert_eq!(
        value(&engine_side, "turbomon_engine_tasks_duplicate_total"),
        0.0
    );
    assert_eq!(
        value(
            &engine_side,
            r#"turbomon_engine_check_duration_seconds_count{kind="sim"}"#
        ),
        TASKS as f64
    );
    let sim_seconds = value(
        &engine_side,
        r#"turbomon_engine_check_duration_seconds_sum{kind="sim"}"#,
    );
    assert!(sim_seconds >= 0.029 * TASKS as f64, "{sim_seconds}");
    for state in ["pending", "running", "finished"] {
        let series = format!(r#"turbomon_engine_held_tasks{{state="{state}"}}"#);
        assert_eq!(value(&engine_side, &series), 0.0, "{series}: all released");
    }
    supervisor.shutdown().await;
    engine.stop().await;
}

#[tokio::test]
async fn refusals_are_counted_by_reason_like_the_engine_counters() {
    let mut engine = RunningEngine::start(EngineConfig {
        max_held_tasks: 2,
        // The running checks are abandoned at the end rather than waited for.
        shutdown_grace: Duration::ZERO,
        ..engine_config()
    })
    .await;
    let address = engine.serve_metrics();
    let invalid = proto::Task {
        check: None,
        ..ok_task("no-check", 0)
    };
    let ack = engine.engine.submit_batch(batch(
        1,
        vec![
            ok_task("a", 10_000),
            ok_task("b", 10_000),
            invalid,
            ok_task("c", 10_000),
        ],
    ));
    let accepted: Vec<bool> = ack.acks.iter().map(|ack| ack.accepted).collect();
    assert_eq!(accepted, [true, true, false, false]);
    let again = proto::Task {
        attempt: 2,
        ..ok_task("a", 10_000)
    };
    engine
        .engine
        .submit_batch(batch(2, vec![ok_task("b", 10_000), again]));
    assert!(engine.engine.submit_one(ok_task("", 0)).is_err());

    let scraped = samples(&scrape(address).await);
    let refused = |reason: &str| {
        value(
            &scraped,
            &format!(r#"turbomon_engine_tasks_refused_total{{reason="{reason}"}}"#),
        )
    };
    assert_eq!(refused("invalid"), 2.0, "no check, empty id");
    assert_eq!(refused("engine_full"), 1.0);
    assert_eq!(refused("attempt_running"), 1.0);
    assert_eq!(refused("unavailable"), 0.0);
    assert_eq!(refused("stale_epoch"), 0.0);
    let counters = engine.engine.counters();
    assert_eq!(
        ["invalid", "engine_full", "attempt_running", "unavailable"]
            .map(refused)
            .iter()
            .sum::<f64>(),
        counters.tasks_rejected as f64
    );
    assert_eq!(
        value(&scraped, "turbomon_engine_tasks_accepted_total"),
        counters.tasks_accepted as f64
    );
    assert_eq!(
        value(&scraped, "turbomon_engine_tasks_duplicate_total"),
        counters.duplicates as f64
    );
    assert_eq!(counters.duplicates, 1);
    assert_eq!(value(&scraped, "turbomon_engine_checks_running"), 2.0);
    assert_eq!(
        value(&scraped, r#"turbomon_engine_held_tasks{state="running"}"#),
        2.0
    );
    engine.stop().await;
}

#[tokio::test]
async fn journal_commit_time_is_served_only_with_a_journal() {
    let dir = TempDir::new("metrics-journal");
    let journaling = Engine::open(EngineConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..engine_config()
    })
    .expect("journal opens");
    journaling.submit_batch(batch(1, vec![ok_task("a", 0)]));
    journaling.flush_journal().await;
    let mut running = RunningEngine::serve(journaling).await;
    let scraped = samples(&scrape(running.serve_metrics()).await);
    assert!(
        value(
            &scraped,
            "turbomon_engine_journal_commit_duration_seconds_count"
        ) >= 1.0
    );
    running.stop().await;

    let mut memory_only = RunningEngine::start(engine_config()).await;
    let text = scrape(memory_only.serve_metrics()).await;
    assert!(!text.contains("journal"), "{text}");
    memory_only.stop().await;
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() {
    let mut engine = RunningEngine::start(engine_config()).await;
    let address = engine.serve_metrics();
    for path in ["/", "/metrics/", "/metric", "/favicon.ico", "/metrics/../x"] {
        let answer = http_request(address, "GET", path, None).await;
        assert_eq!(answer.status, 404, "{path}: {answer:?}");
    }
    let post = http_request(address, "POST", "/metrics", None).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let head = http_request(address, "HEAD", "/metrics", None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    // Prometheus asks for OpenMetrics first; a client preferring text/plain gets 0.0.4.
    let prometheus = http_request(
        address,
        "GET",
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
    )
    .await;
    assert_eq!(
        prometheus.header("content-type"),
        Some(OPENMETRICS_CONTENT_TYPE)
    );
    let text = scrape_prometheus_text(address).await;
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    assert!(text.contains("# TYPE turbomon_engine_tasks_accepted_total counter"));
    engine.stop().await;
}

#[tokio::test]
async fn names_are_turbomon_base_units_with_help_and_counters_end_in_total() {
    let mut engine = RunningEngine::start(engine_config()).await;
    let engine_text = scrape(engine.serve_metrics()).await;
    let config = parse(&one_engine_config(
        engine.address,
        &node_names(1),
        Extra {
            top: r#"metrics_listen = "127.0.0.1:0""#,
            ..Extra::default()
        },
    ));
    let (supervisor, _reload, _done) = start_supervisor_with(config, SupervisorOptions::default());
    let supervisor_text = scrape(supervisor.metrics_addr().expect("served")).await;
    for text in [&engine_text, &supervisor_text] {
        let mut helped = std::collections::BTreeSet::new();
        let mut families = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("name and help");
                assert!(!help.trim().is_empty(), "{line}");
                helped.insert(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                families += 1;
                let (name, kind) = rest.split_once(' ').expect("name and type");
                assert!(name.starts_with("turbomon_"), "{line}");
                assert!(helped.contains(name), "{name} has help");
                assert!(!name.ends_with("_total"), "{line}: OpenMetrics adds _total");
                match kind {
                    "counter" => assert!(
                        text.lines()
                            .any(|l| l.starts_with(&format!("{name}_total"))),
                        "{name}: samples end in _total"
                    ),
                    "histogram" => assert!(
                        name.ends_with("_seconds") || name.ends_with("_bytes"),
                        "{name}: a base unit"
                    ),
                    "gauge" => {}
                    other => panic!("unexpected type {other}"),
                }
            }
        }
        assert!(families >= 5, "{text}");
    }
    supervisor.shutdown().await;
    engine.stop().await;
}

#[tokio::test]
async fn an_empty_metrics_listen_serves_nothing() {
    let engine = RunningEngine::start(EngineConfig {
        metrics_listen: String::new(),
        ..engine_config()
    })
    .await;
    assert!(engine.engine.serve_metrics().expect("no error").is_none());
    let config = parse(&one_engine_config(
        engine.address,
        &node_names(1),
        Extra {
            top: r#"metrics_listen = """#,
            ..Extra::default()
        },
    ));
    assert_eq!(config.metrics_listen, "");
    let (supervisor, _reload, _done) = start_supervisor_with(config, SupervisorOptions::default());
    assert_eq!(supervisor.metrics_addr(), None);
    supervisor.shutdown().await;
    engine.stop().await;
}

#[tokio::test]
async fn a_port_in_use_is_a_startup_error_naming_the_key_and_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = taken.local_addr().expect("address").to_string();

    let (_tx, rx) = tokio::sync::watch::channel(std::sync::Arc::new(SupervisorConfig {
        metrics_listen: address.clone(),
        ..SupervisorConfig::default()
    }));
    let error = Supervisor::start(rx, SupervisorOptions::default())
        .err()
        .expect("the supervisor does not start")
        .to_string();
    assert!(
        error.contains("metrics_listen") && error.contains(&address),
        "{error}"
    );

    let engine = Engine::new(EngineConfig {
        metrics_listen: address.clone(),
        ..engine_config()
    });
    let error = engine.serve_metrics().expect_err("in use").to_string();
    assert!(
        error.contains("metrics_listen") && error.contains(&address),
        "{error}"
    );
    drop(taken);
}

#[test]
fn metrics_listen_is_validated_like_other_addresses_on_both_sides() {
    let file = Path::new("m.toml");
    let error = parse_supervisor("metrics_listen = \"9464\"\n", file)
        .expect_err("no host")
        .to_string();
    assert!(
        error.contains("m.toml:1") && error.contains("metrics_listen"),
        "{error}"
    );
    let error = parse_engine(
        "listen = \"127.0.0.1:7300\"\nmetrics_listen = \"::1:9465\"\n",
        file,
    )
    .expect_err("IPv6 without brackets")
    .to_string();
    assert!(
        error.contains("m.toml:2") && error.contains("metrics_listen"),
        "{error}"
    );
    for accepted in [
        "",
        "127.0.0.1:0",
        "localhost:9464",
        "[::1]:9464",
        "0.0.0.0:9464",
    ] {
        let line = format!("metrics_listen = \"{accepted}\"\n");
        parse_supervisor(&format!("{line}{ENGINE}"), file)
            .unwrap_or_else(|e| panic!("{accepted}: {e}"));
        parse_engine(&line, file).unwrap_or_else(|e| panic!("{accepted}: {e}"));
    }
    let supervisor = parse_supervisor(ENGINE, file).expect("only an engine");
    assert_eq!(supervisor.metrics_listen, "127.0.0.1:9464");
    let engine = parse_engine("", file).expect("empty file");
    assert_eq!(engine.metrics_listen, "127.0.0.1:9465");
    let shipped = |name: &str| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(name),
        )
        .expect("shipped file")
    };
    assert!(shipped("supervisor.toml").contains("\nmetrics_listen = \"127.0.0.1:9464\"\n"));
    assert!(shipped("engine.toml").contains("\nmetrics_listen = \"127.0.0.1:9465\"\n"));
}

/// The one table a supervisor file needs.
const ENGINE: &str = "[[engines]]\nname = \"e\"\naddress = \"127.0.0.1:1\"\n";

/// Pipes `text` through `promtool check metrics`; its findings, or why it could not run.
fn promtool_check(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool ({}): {said}", output.status))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs promtool"]
async fn promtool_accepts_the_output() {
    let mut engine = RunningEngine::start(engine_config()).await;
    let engine_metrics = engine.serve_metrics();
    let text = one_engine_config(
        engine.address,
        &node_names(5),
        Extra {
            top: r#"
metrics_listen = "127.0.0.1:0"
status_check_interval = "100ms"
"#,
            ..Extra::default()
        },
    );
    let (supervisor, _reload, mut done) =
        start_supervisor_with(parse(&text), SupervisorOptions::default());
    take_completions(&mut done, 5, Duration::from_secs(10)).await;
    let supervisor_metrics = supervisor.metrics_addr().expect("served");
    for address in [supervisor_metrics, engine_metrics] {
        let text = scrape_prometheus_text(address).await;
        assert!(text.contains("turbomon_"), "{text}");
        promtool_check(&text).unwrap_or_else(|e| panic!("{address}: {e}\n{text}"));
    }
    supervisor.shutdown().await;
    engine.stop().await;
}

#[tokio::test]
async fn supervisor_health_turns_not_serving_for_the_whole_drain() {
    // Batches are answered after a second, so a shutdown has something to wait for.
    let mock = MockEngine::new().with_ack_delay(Duration::from_secs(1));
    let served = serve_mock(mock.clone()).await;
    let config = parse(&one_engine_config(
        served.address,
        &node_names(3),
        Extra {
            top: r#"metrics_listen = "127.0.0.1:0""#,
            ..Extra::default()
        },
    ));
    let (supervisor, _reload, _done) = start_supervisor_with(config, SupervisorOptions::default());
    let address = supervisor.metrics_addr().expect("served");
    let health = http_request(address, "GET", "/health", None).await;
    assert_eq!((health.status, health.body.as_str()), (200, "SERVING\n"));
    mock.wait_submitted(3).await;

    let stopping = tokio::spawn(supervisor.shutdown());
    let mut seen = None;
    for _ in 0..100 {
        let health = http_request(address, "GET", "/health", None).await;
        if health.status == 503 {
            seen = Some(health.body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen.as_deref(), Some("NOT_SERVING\n"));
    assert!(!stopping.is_finished(), "the drain was still going on");
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("shutdown ends")
        .expect("shutdown task");
    // Then the port closes.
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
}

#[tokio::test]
async fn performance_data_is_exported_for_relators_that_ask_for_it() {
    let perf = |label: &str, value: f64, uom: &str| proto::PerfData {
        label: label.into(),
        value,
        uom: uom.into(),
        ..proto::PerfData::default()
    };
    let mock = MockEngine::new().with_output(
        "LOAD OK",
        vec![
            perf("load1", 0.25, ""),
            perf("rta", 12.5, "ms"),
            perf("used", 2.0, "KB"),
        ],
    );
    for export in [true, false] {
        let served = serve_mock(mock.clone()).await;
        let config = parse(&one_engine_config(
            served.address,
            &node_names(2),
            Extra {
                top: "metrics_listen = \"127.0.0.1:0\"\nstatus_check_interval = \"20ms\"",
                relator: &format!("export_perfdata = {export}"),
                ..Extra::default()
            },
        ));
        let (supervisor, _reload, mut done) =
            start_supervisor_with(config, SupervisorOptions::default());
        take_completions(&mut done, 2, Duration::from_secs(10)).await;
        let scraped = samples(&scrape(supervisor.metrics_addr().expect("served")).await);
        let series = |node: &str, label: &str, unit: &str| {
            format!(
                r#"turbomon_check_perfdata{{relator="r",rule="sim",node="{node}",label="{label}",unit="{unit}"}}"#
            )
        };
        let node = &node_names(2)[1];
        if export {
            assert_eq!(value(&scraped, &series(node, "load1", "")), 0.25);
            assert_eq!(value(&scraped, &series(node, "rta", "seconds")), 0.0125);
            assert_eq!(value(&scraped, &series(node, "used", "bytes")), 2048.0);
        } else {
            assert!(
                !scraped
                    .keys()
                    .any(|k| k.starts_with("turbomon_check_perfdata{")),
                "nothing exported without export_perfdata"
            );
        }
        supervisor.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_batch_size_is_scraped_and_written_in_the_window() {
    let engine = RunningEngine::start(engine_config()).await;
    let dir = TempDir::new("metrics-auto");
    let stats_json = dir.path().join("stats.jsonl");
    // Bounds of 5..=5 pin the automatic choice, so what is reported is known.
    let text = one_engine_config(
        engine.address,
        &node_names(TASKS),
        Extra {
            top: r#"
metrics_listen = "127.0.0.1:0"
stats_interval = "2s"
status_check_interval = "100ms"
task_submit_batch_size = "auto"
task_info_batch_size = "auto"
batch_size_min = 5
batch_size_max = 5
batch_window = "10ms"
"#,
            rule: r#"duration = "30ms""#,
            ..Extra::default()
        },
    );
    let (supervisor, _reload, mut done) = start_supervisor_with(
        parse(&text),
        SupervisorOptions {
            stats_json: Some(stats_json.clone()),
            ..SupervisorOptions::default()
        },
    );
    let address = supervisor.metrics_addr().expect("metrics served");
    take_completions(&mut done, TASKS, Duration::from_secs(10)).await;
    let scraped = samples(&scrape(address).await);
    for kind in ["submission", "monitor"] {
        let series = format!(r#"turbomon_supervisor_batch_size{{engine="e1",kind="{kind}"}}"#);
        assert_eq!(value(&scraped, &series), 5.0, "{series}");
    }
    let window = first_window(&stats_json).await;
    for kind in ["submission", "monitor"] {
        assert_eq!(window[kind]["mode"], "turbo", "{window}");
        assert_eq!(window[kind]["batch_size"], 5, "{window}");
        assert_eq!(window[kind]["batch_size_auto"], true, "{window}");
    }
    supervisor.shutdown().await;
    engine.stop().await;
}
