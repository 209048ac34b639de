//! Monitoring Plugins run as exec checks by a real engine: exit codes mapped to states, the
//! status text and long text in the message, performance data parsed and returned in every
//! status answer (push notice, status stream, StatusOne), malformed perfdata kept as text, the
//! bounds that hold; and the perfdata parser under arbitrary input.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    RunningEngine, TempDir, batch, engine_config, eventually, ok_task, state_of, status_of,
    status_stream, submit_stream,
};
use proptest::prelude::*;
use turbomon::check::perfdata::{
    MAX_LABEL_BYTES, MAX_PERFDATA_ITEMS, PluginOutput, UNITS, format_item, parse_item,
};
use turbomon::config::{EngineConfig, ExecConfig};
use turbomon::proto::{self, PerfData, TaskState};

/// Writes an executable `#!/bin/sh` script `name` running `body` into `dir`.
fn plugin(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// An engine that may run the programs in `dir`, keeping `output_limit_bytes` of output.
async fn plugin_engine(dir: &Path, output_limit_bytes: usize) -> RunningEngine {
    RunningEngine::start(EngineConfig {
        exec: ExecConfig {
            allow: vec![format!("{}/*", dir.display())],
        },
        output_limit_bytes,
        ..engine_config()
    })
    .await
}

fn exec_task(id: &str, program: &Path, timeout_ms: u64) -> proto::Task {
    proto::Task {
        timeout_ms,
        check: Some(proto::Check {
            kind: Some(proto::check::Kind::Exec(proto::ExecCheck {
                program: program.display().to_string(),
                args: Vec::new(),
            })),
        }),
        ..ok_task(id, 0)
    }
}

async fn wait_final(engine: &RunningEngine, ids: &[&str]) {
    eventually("every plugin finished", Duration::from_secs(15), || {
        ids.iter().all(|id| state_of(&engine.engine, id).is_final())
    })
    .await;
}

fn perf(label: &str, value: f64, uom: &str) -> PerfData {
    PerfData {
        label: label.into(),
        value,
        uom: uom.into(),
        ..PerfData::default()
    }
}

#[tokio::test]
async fn plugin_exit_codes_map_to_task_states_with_the_code_as_value() {
    let dir = TempDir::new("plugins-exit");
    let cases: [(&str, &str, TaskState, f64); 8] = [
        ("ok", "echo 'OK - fine'; exit 0", TaskState::Ok, 0.0),
        (
            "warning",
            "echo 'WARNING - meh'; exit 1",
            TaskState::Warning,
            1.0,
        ),
        (
            "critical",
            "echo 'CRITICAL - down'; exit 2",
            TaskState::Broken,
            2.0,
        ),
        (
            "unknown",
            "echo 'UNKNOWN - no idea'; exit 3",
            TaskState::PluginUnknown,
            3.0,
        ),
        ("four", "echo 'odd'; exit 4", TaskState::PluginUnknown, 4.0),
        (
            "killed",
            "echo 'about to die'; kill -9 $$",
            TaskState::PluginUnknown,
            137.0,
        ),
        ("slow", "echo 'started'; sleep 10", TaskState::TimedOut, 0.0),
        ("silent", "exit 2", TaskState::Broken, 2.0),
    ];
    let mut tasks: Vec<proto::Task> = cases
        .iter()
        .map(|(name, body, _, _)| exec_task(name, &plugin(dir.path(), name, body), 2000))
        .collect();
    tasks[6].timeout_ms = 300;
    // Allowed by the pattern, but nothing there to start.
    tasks.push(exec_task("missing", &dir.path().join("missing"), 2000));
    let engine = plugin_engine(dir.path(), 1024).await;
    let ack = engine.engine.submit_batch(batch(1, tasks));
    assert!(ack.acks.iter().all(|a| a.accepted), "{:?}", ack.acks);
    let mut ids: Vec<&str> = cases.iter().map(|c| c.0).collect();
    ids.push("missing");
    wait_final(&engine, &ids).await;

    for (name, _, state, value) in cases {
        let status = status_of(&engine.engine, name);
        assert_eq!(
            (TaskState::try_from(status.state).unwrap(), status.value),
            (state, value),
            "{name}: {}",
            status.message
        );
    }
    assert_eq!(status_of(&engine.engine, "ok").message, "OK - fine");
    assert_eq!(
        status_of(&engine.engine, "critical").message,
        "CRITICAL - down"
    );
    assert_eq!(status_of(&engine.engine, "silent").message, "");
    let killed = status_of(&engine.engine, "killed").message;
    assert!(
        killed.contains("killed by signal 9") && killed.ends_with(": about to die"),
        "{killed}"
    );
    let slow = status_of(&engine.engine, "slow").message;
    assert!(slow.starts_with("timed out after 300ms"), "{slow}");
    let missing = status_of(&engine.engine, "missing");
    assert_eq!(
        missing.state,
        TaskState::Failed as i32,
        "{}",
        missing.message
    );
    assert!(
        missing.message.contains("cannot run"),
        "{}",
        missing.message
    );
    engine.stop().await;
}

/// A plugin in the style of check_disk: status line and perfdata, long text, more perfdata on
/// the lines after a later `|`, quoted labels, every unit, min and max present or not.
const DISK_PLUGIN: &str = r#"echo "DISK WARNING - free space: / 3326 MB (56%) | /=2643MB;5948;5958;0;5968"
echo "/ 15272 MB (77%);"
echo "/boot 68 MB (69%); | '/var log'=819KB;970;975;0;980 'it''s'=5%;@10:20;~:30"
echo "rta=0.5ms;100;200;0 up=12s;;; rx=1234c wait=7us"
echo "tmp=10B;;;0 big=2TB;1;2;; load=0.42 "
exit 1"#;

fn disk_perfdata() -> Vec<PerfData> {
    let with = |p: PerfData, warn: &str, crit: &str, min: Option<f64>, max: Option<f64>| PerfData {
        warn: warn.into(),
        crit: crit.into(),
        min,
        max,
        ..p
    };
    vec![
        with(
            perf("/", 2643.0, "MB"),
            "5948",
            "5958",
            Some(0.0),
            Some(5968.0),
        ),
        with(
            perf("/var log", 819.0, "KB"),
            "970",
            "975",
            Some(0.0),
            Some(980.0),
        ),
        with(perf("it's", 5.0, "%"), "@10:20", "~:30", None, None),
        with(perf("rta", 0.5, "ms"), "100", "200", Some(0.0), None),
        perf("up", 12.0, "s"),
        perf("rx", 1234.0, "c"),
        perf("wait", 7.0, "us"),
        with(perf("tmp", 10.0, "B"), "", "", Some(0.0), None),
        with(perf("big", 2.0, "TB"), "1", "2", None, None),
        perf("load", 0.42, ""),
    ]
}

#[tokio::test]
async fn perfdata_over_several_lines_comes_back_in_every_status_answer() {
    let dir = TempDir::new("plugins-perf");
    let disk = plugin(dir.path(), "check_disk", DISK_PLUGIN);
    let engine = plugin_engine(dir.path(), 4096).await;
    let mut client = engine.client().await;
    let mut notices = client
        .completions(proto::CompletionsRequest {
            flush_window_ms: 1,
            max_batch: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut submit = submit_stream(&mut client).await;
    let ack = submit
        .exchange(batch(1, vec![exec_task("disk", &disk, 5000)]))
        .await;
    assert!(ack.acks[0].accepted, "{:?}", ack.acks);

    let pushed = tokio::time::timeout(Duration::from_secs(10), notices.message())
        .await
        .expect("a completion notice")
        .unwrap()
        .expect("stream open");
    let status = &pushed.statuses[0];
    assert_eq!(
        status.state,
        TaskState::Warning as i32,
        "{}",
        status.message
    );
    assert_eq!(status.value, 1.0);
    assert_eq!(
        status.message,
        "DISK WARNING - free space: / 3326 MB (56%)\n/ 15272 MB (77%);\n/boot 68 MB (69%);"
    );
    assert_eq!(status.perfdata, disk_perfdata());

    let mut statuses = status_stream(&mut client).await;
    let polled = statuses
        .exchange(proto::StatusQuery {
            batch_id: 2,
            task_ids: vec!["disk".into()],
            release_ids: Vec::new(),
        })
        .await;
    assert_eq!(polled.statuses[0].perfdata, disk_perfdata());

    let one = client
        .status_one(proto::StatusOneRequest {
            task_id: "disk".into(),
            release_ids: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(one.perfdata, disk_perfdata());
    assert_eq!(one.message, status.message);
    engine.stop().await;
}

#[tokio::test]
async fn malformed_perfdata_is_kept_as_text_and_the_state_follows_the_exit_code() {
    let dir = TempDir::new("plugins-malformed");
    let plain = plugin(
        dir.path(),
        "plain",
        "echo 'OK - no perfdata here'; echo 'second line'",
    );
    let bad_ok = plugin(
        dir.path(),
        "bad_ok",
        "echo 'OK - mostly | good=1 load=U novalue bad=3XB half=1;2;3;4;5;6'",
    );
    let bad_warning = plugin(
        dir.path(),
        "bad_warning",
        "echo 'WARNING - odd | x=1,5 y=2'; exit 1",
    );
    let engine = plugin_engine(dir.path(), 1024).await;
    let ack = engine.engine.submit_batch(batch(
        1,
        vec![
            exec_task("plain", &plain, 5000),
            exec_task("bad_ok", &bad_ok, 5000),
            exec_task("bad_warning", &bad_warning, 5000),
        ],
    ));
    assert!(ack.acks.iter().all(|a| a.accepted));
    wait_final(&engine, &["plain", "bad_ok", "bad_warning"]).await;

    let plain = status_of(&engine.engine, "plain");
    assert_eq!(plain.state, TaskState::Ok as i32);
    assert_eq!(plain.message, "OK - no perfdata here\nsecond line");
    assert!(plain.perfdata.is_empty());

    let bad_ok = status_of(&engine.engine, "bad_ok");
    assert_eq!(bad_ok.state, TaskState::Ok as i32, "{}", bad_ok.message);
    assert_eq!(bad_ok.perfdata, [perf("good", 1.0, "")]);
    assert_eq!(
        bad_ok.message,
        "OK - mostly (unparsed perfdata: load=U novalue bad=3XB half=1;2;3;4;5;6)"
    );

    let bad_warning = status_of(&engine.engine, "bad_warning");
    assert_eq!(bad_warning.state, TaskState::Warning as i32);
    assert_eq!(bad_warning.perfdata, [perf("y", 2.0, "")]);
    assert_eq!(
        bad_warning.message,
        "WARNING - odd (unparsed perfdata: x=1,5)"
    );
    engine.stop().await;
}

#[tokio::test]
async fn a_results_perfdata_is_bounded_by_the_item_cap_and_the_output_limit() {
    let dir = TempDir::new("plugins-bounds");
    // 100 items: 64 kept, the rest counted.
    let many = plugin(
        dir.path(),
        "many",
        "printf 'OK |'; i=0; while [ $i -lt 100 ]; do printf ' m%d=%d' $i $i; i=$((i+1)); done; echo",
    );
    // Cut in the middle of its last item by the 35-byte output limit below.
    let cut = plugin(
        dir.path(),
        "cut",
        "echo 'OK | first=1 second=2 third=0.123456789s'",
    );
    let many_engine = plugin_engine(dir.path(), 4096).await;
    many_engine
        .engine
        .submit_batch(batch(1, vec![exec_task("many", &many, 5000)]));
    wait_final(&many_engine, &["many"]).await;
    let status = status_of(&many_engine.engine, "many");
    assert_eq!(status.perfdata.len(), MAX_PERFDATA_ITEMS);
    assert_eq!(status.perfdata[63], perf("m63", 63.0, ""));
    assert_eq!(
        status.message,
        "OK (36 perfdata items over the limit of 64 not kept)"
    );
    many_engine.stop().await;

    let small = plugin_engine(dir.path(), 35).await;
    small
        .engine
        .submit_batch(batch(1, vec![exec_task("cut", &cut, 5000)]));
    wait_final(&small, &["cut"]).await;
    let status = status_of(&small.engine, "cut");
    assert_eq!(
        status.perfdata,
        [perf("first", 1.0, ""), perf("second", 2.0, "")]
    );
    assert_eq!(status.message, "OK (unparsed perfdata: third=0.12345)");
    small.stop().await;
}

/// A threshold range as a plugin writes it.
fn range() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        (-1000i32..1000).prop_map(|n| n.to_string()),
        (-1.0e6f64..1.0e6).prop_map(|v| v.to_string()),
    ];
    (
        any::<bool>(),
        prop_oneof![
            Just(None),
            Just(Some("~".to_string())),
            number.clone().prop_map(Some)
        ],
        prop::option::of(number),
    )
        .prop_filter("a range has an end or a start", |(_, start, end)| {
            start.is_some() || end.is_some()
        })
        .prop_map(|(inside, start, end)| {
            let at = if inside { "@" } else { "" };
            match start {
                None => format!("{at}{}", end.unwrap_or_default()),
                Some(start) => format!("{at}{start}:{}", end.unwrap_or_default()),
            }
        })
}

/// A well-formed item: any label a line can carry, a finite value, a unit, ranges, bounds.
fn item() -> impl Strategy<Value = PerfData> {
    let label = "[^|\n\r]{1,40}";
    let finite = prop::num::f64::NORMAL | prop::num::f64::ZERO | prop::num::f64::SUBNORMAL;
    (
        label,
        finite,
        prop::sample::select(&UNITS[..]),
        prop::option::of(range()),
        prop::option::of(range()),
        prop::option::of(-1.0e9f64..1.0e9),
        prop::option::of(-1.0e9f64..1.0e9),
    )
        .prop_map(|(label, value, uom, warn, crit, min, max)| PerfData {
            label,
            value,
            uom: uom.to_string(),
            warn: warn.unwrap_or_default(),
            crit: crit.unwrap_or_default(),
            min,
            max,
        })
}

proptest! {
    #[test]
    fn the_parser_never_panics_and_keeps_its_bounds(
        output in prop_oneof![
            ".{0,400}",
            "[a-zA-Z0-9'=;|.:@~ \n\t%+-]{0,400}",
        ],
        cut in any::<bool>(),
    ) {
        let parsed = PluginOutput::parse(&output, cut);
        prop_assert!(parsed.perfdata.len() <= MAX_PERFDATA_ITEMS);
        for item in &parsed.perfdata {
            prop_assert!(!item.label.is_empty() && item.label.len() <= MAX_LABEL_BYTES);
            prop_assert!(item.value.is_finite());
            prop_assert!(UNITS.contains(&item.uom.as_str()));
        }
        prop_assert!(parsed.message().len() <= output.len() + 400);
    }

    #[test]
    fn well_formed_items_round_trip(items in prop::collection::vec(item(), 0..10)) {
        for item in &items {
            let parsed = parse_item(&format_item(item));
            prop_assert_eq!(parsed.as_ref(), Some(item));
        }
        let line: Vec<String> = items.iter().map(format_item).collect();
        let parsed = PluginOutput::parse(&format!("OK - status | {}\n", line.join(" ")), false);
        prop_assert_eq!(&parsed.perfdata, &items);
        prop_assert!(parsed.unparsed.is_empty(), "{:?}", parsed.unparsed);
        prop_assert_eq!(parsed.text, "OK - status");
    }
}
