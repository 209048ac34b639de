//! Scheduling behaviour (issue 4): retries with the same identity, chains without waiting for a
//! tick, a reserve of session slots no single engine can take, catch-up after an outage, and
//! priorities within a loop.

mod common;

use std::time::{Duration, Instant};

use common::{
    Extra, MockEngine, RunningMock, closed_address, engine_and_group, eventually, next_completion,
    node_names, one_engine_config, parse, serve_mock, serve_mock_at, start_supervisor,
};
use turbomon::proto::TaskState;
use turbomon::supervisor::{Completion, Supervisor};

/// Runs relator `r` (with `relator` keys added) on node `n1` against `mock`, statuses checked
/// every 20 ms; returns the supervisor, the serving mock and the task's final outcome.
async fn run_one_task(mock: &MockEngine, relator: &str) -> (Supervisor, RunningMock, Completion) {
    let engine = serve_mock(mock.clone()).await;
    let text = one_engine_config(
        engine.address,
        &["n1"],
        Extra {
            top: "status_check_interval = \"20ms\"",
            relator,
            ..Extra::default()
        },
    );
    let (supervisor, _config, mut done) = start_supervisor(parse(&text));
    let completion = next_completion(&mut done, Duration::from_secs(10)).await;
    (supervisor, engine, completion)
}

#[tokio::test]
async fn a_task_failing_twice_then_passing_reports_three_attempts() {
    let mock = MockEngine::with_attempt_states(|_, attempt| {
        if attempt < 3 {
            TaskState::Failed
        } else {
            TaskState::Ok
        }
    });
    let (supervisor, _engine, completion) =
        run_one_task(&mock, "max_retries = 2\nretry_period = \"50ms\"").await;
    assert_eq!(completion.state, TaskState::Ok);
    assert_eq!(completion.attempt, 3);
    let attempts = mock.log().attempts;
    let ids: std::collections::HashSet<_> = attempts.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), 1, "every attempt keeps the task's identity");
    assert_eq!(
        attempts.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let counters = supervisor.shutdown().await;
    assert_eq!(counters[0].1.retries, 2);
    assert_eq!(
        counters[0].1.completed, 1,
        "only the final outcome counts as completed"
    );
}

#[tokio::test]
async fn retries_stop_at_the_end_of_the_start_window() {
    let mock = MockEngine::with_attempt_states(|_, _| TaskState::TimedOut);
    let (supervisor, _engine, completion) = run_one_task(
        &mock,
        "start_window = \"300ms\"\nmax_retries = 50\nretry_period = \"100ms\"",
    )
    .await;
    assert_eq!(completion.state, TaskState::TimedOut);
    assert!(
        (2..=4).contains(&completion.attempt),
        "a 300 ms window holds at most three 100 ms retry periods, got attempt {}",
        completion.attempt
    );
    supervisor.shutdown().await;
}

#[tokio::test]
async fn a_chain_of_ten_short_tasks_runs_without_waiting_for_a_tick() {
    let engine = common::serve_engine().await;
    let address = engine.address;
    let mut text = format!(
        r#"
status_mode = "push"
status_check_interval = "10s"
{}
[[rules]]
name = "step"
kind = "sim"
duration = "10ms"
"#,
        engine_and_group(address, &["n1"])
    );
    for i in 1..=10 {
        text.push_str(&format!(
            "\n[[relators]]\nname = \"c{i}\"\ngroup = \"g\"\nrules = [\"step\"]\nrandomize = 0\n"
        ));
        if i == 1 {
            text.push_str("interval = \"1h\"\n");
        }
        if i < 10 {
            text.push_str(&format!("on_ok = [\"c{}\"]\n", i + 1));
        }
    }
    let (supervisor, _config, mut done) = start_supervisor(parse(&text));
    let first = next_completion(&mut done, Duration::from_secs(10)).await;
    assert_eq!(first.relator, "c1");
    let started = Instant::now();
    let mut last = first;
    while last.relator != "c10" {
        last = next_completion(&mut done, Duration::from_secs(5)).await;
        assert_eq!(last.state, TaskState::Ok);
    }
    let chain = started.elapsed();
    assert!(
        chain < Duration::from_secs(1),
        "nine chained 10 ms steps took {chain:?} (the monitor loop runs every 10 s)"
    );
    let counters = supervisor.shutdown().await;
    assert_eq!(counters[0].1.chained, 9);
    engine.stop().await;
}

#[tokio::test]
async fn a_dead_engine_cannot_take_the_reserved_slots() {
    // "dead" accepts connections and batches but never answers.
    let dead = serve_mock(MockEngine::new().with_ack_delay(Duration::from_secs(3600))).await;
    let alive_mock = MockEngine::new();
    let alive = serve_mock(alive_mock.clone()).await;
    let nodes: Vec<String> = (0..10).map(|i| format!("\"n{i}\"")).collect();
    let text = format!(
        r#"
task_submit_batch_size = 1
status_check_interval = "20ms"
max_sessions = 4
reserved_percent = 50

[[engines]]
name = "dead"
address = "{dead}"

[[engines]]
name = "alive"
address = "{alive}"

[[groups]]
name = "gd"
engine = "dead"
nodes = [{nodes}]

[[groups]]
name = "ga"
engine = "alive"
nodes = [{nodes}]

[[rules]]
name = "sim"
kind = "sim"

[[relators]]
name = "rd"
group = "gd"
rules = ["sim"]
interval = "1h"
randomize = 0

[[relators]]
name = "ra"
group = "ga"
rules = ["sim"]
interval = "1h"
randomize = 0
"#,
        dead = dead.address,
        alive = alive.address,
        nodes = nodes.join(", ")
    );
    let (supervisor, _config, mut done) = start_supervisor(parse(&text));
    let mut finished = 0;
    while finished < 10 {
        let c = next_completion(&mut done, Duration::from_secs(5)).await;
        assert_eq!(c.engine, "alive");
        finished += 1;
    }
    assert_eq!(alive_mock.log().submit_batches.len(), 10);
    supervisor.shutdown().await;
}

async fn run_outage(policy: &str) -> (turbomon::supervisor::CountersSnapshot, Vec<String>) {
    let address = closed_address().await;
    let text = one_engine_config(
        address,
        &["n1"],
        Extra {
            top: "status_check_interval = \"50ms\"\nbatch_window = \"10ms\"",
            relator: &format!("catch_up = \"{policy}\""),
            ..Extra::default()
        },
    )
    .replace("interval = \"1h\"", "interval = \"100ms\"");
    let (supervisor, _config, _done) = start_supervisor(parse(&text));
    eventually(
        "missed firings while the engine is down",
        Duration::from_secs(10),
        || {
            supervisor
                .counters("e1")
                .is_some_and(|c| c.missed_firings >= 4)
        },
    )
    .await;
    let mock = MockEngine::new();
    let _engine = serve_mock_at(mock.clone(), address).await;
    eventually("catch-up applied", Duration::from_secs(10), || {
        supervisor
            .counters("e1")
            .is_some_and(|c| c.skipped_firings + c.caught_up_firings >= 4)
    })
    .await;
    // Let replayed firings (spaced 100 ms apart) go out.
    let counters = supervisor.counters("e1").unwrap();
    let replays = counters.caught_up_firings;
    tokio::time::sleep(Duration::from_millis(150) * (replays as u32 + 1)).await;
    let counters = supervisor.shutdown().await[0].1;
    let ids = mock.log().submit_batches.concat();
    (counters, ids)
}

#[tokio::test]
async fn catch_up_skip_runs_no_missed_firing_and_counts_them() {
    let (counters, _) = run_outage("skip").await;
    assert!(counters.missed_firings >= 4);
    assert_eq!(counters.caught_up_firings, 0);
    assert!(counters.skipped_firings >= counters.missed_firings);
}

#[tokio::test]
async fn catch_up_latest_runs_one_missed_firing() {
    let (counters, _) = run_outage("latest").await;
    assert!(counters.missed_firings >= 4);
    assert_eq!(counters.caught_up_firings, 1);
    assert_eq!(
        counters.skipped_firings + counters.caught_up_firings,
        counters.missed_firings
    );
}

#[tokio::test]
async fn catch_up_replay_runs_every_missed_firing_spaced_out() {
    let (counters, ids) = run_outage("replay").await;
    assert!(counters.missed_firings >= 4);
    assert_eq!(counters.caught_up_firings, counters.missed_firings);
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert!(
        distinct.len() as u64 >= counters.missed_firings,
        "each replayed instant is its own task ({} ids for {} missed)",
        distinct.len(),
        counters.missed_firings
    );
}

#[tokio::test]
async fn high_priority_tasks_go_in_the_first_batches() {
    let mock = MockEngine::new();
    let engine = serve_mock(mock.clone()).await;
    let text = format!(
        r#"
task_submit_batch_size = 5
{}
[[rules]]
name = "sim"
kind = "sim"

[[relators]]
name = "low"
group = "g"
rules = ["sim"]
interval = "1h"
randomize = 0
priority = "low"

[[relators]]
name = "high"
group = "g"
rules = ["sim"]
interval = "1h"
randomize = 0
priority = "high"
"#,
        engine_and_group(engine.address, &node_names(10))
    );
    let (supervisor, _config, _done) = start_supervisor(parse(&text));
    eventually("20 tasks submitted", Duration::from_secs(10), || {
        mock.log()
            .submit_batches
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            == 20
    })
    .await;
    let log = mock.log();
    let mut batches: Vec<(u64, Vec<String>)> = log
        .submit_batch_ids
        .iter()
        .copied()
        .zip(log.submit_batches.iter().cloned())
        .collect();
    batches.sort_by_key(|(id, _)| *id);
    for (_, tasks) in &batches[..2] {
        assert!(tasks.iter().all(|t| t.starts_with("high/")), "{tasks:?}");
    }
    for (_, tasks) in &batches[2..] {
        assert!(tasks.iter().all(|t| t.starts_with("low/")), "{tasks:?}");
    }
    supervisor.shutdown().await;
}

#[tokio::test]
async fn lateness_is_recorded_for_every_stage_a_task_passes() {
    let mock = MockEngine::with_states(|_| TaskState::Broken);
    let engine = serve_mock(mock).await;
    let text = one_engine_config(
        engine.address,
        &["a", "b", "c"],
        Extra {
            top: "status_check_interval = \"20ms\"",
            relator: "alerts = [\"log\"]",
            ..Extra::default()
        },
    ) + "\n[[alerts]]\nname = \"log\"\nkind = \"log\"\n";
    let (supervisor, _config, mut done) = start_supervisor(parse(&text));
    for _ in 0..3 {
        next_completion(&mut done, Duration::from_secs(10)).await;
    }
    use turbomon::stats::Stage;
    let counts = supervisor
        .with_stats("e1", |s| Stage::ALL.map(|stage| s.lateness.count(stage)))
        .unwrap();
    assert_eq!(counts, [3, 3, 3, 3, 3]);
    supervisor.shutdown().await;
}

#[tokio::test]
async fn alerts_arrive_within_100ms_in_push_mode_and_within_the_interval_in_poll_mode() {
    use turbomon::bench::{LinkChoice, alerts};
    use turbomon::config::StatusMode;
    let push = alerts::measure(&LinkChoice::none(), StatusMode::Push, 10, false)
        .await
        .expect("push run");
    assert!(push.max < 0.1, "push alert latency {push:?}");
    let poll = alerts::measure(&LinkChoice::none(), StatusMode::Poll, 10, false)
        .await
        .expect("poll run");
    let interval = alerts::POLL_INTERVAL.as_secs_f64();
    assert!(poll.max <= interval + 0.1, "poll alert latency {poll:?}");
    assert!(
        poll.p50 > push.p50,
        "polling waits for the next tick: {poll:?} vs {push:?}"
    );
}
