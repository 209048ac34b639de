//! The engine journal (`state_dir`): what a restarted engine remembers, what it reports lost,
//! and what a graceful shutdown leaves for the next start.
//!
//! A "crash" is simulated by dropping the engine together with the tokio runtime it ran on, so
//! every check in flight dies with it, as in a killed process; a new engine then opens the same
//! state directory.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    RunningEngine, TempDir, batch, engine_client, engine_config, ok_task, serve_until, sim_task,
    state_of, status_of, submit_stream,
};
use tokio::runtime::Runtime;
use turbomon::config::EngineConfig;
use turbomon::engine::{Engine, EngineError, JOURNAL_FILE_NAME, JournalError};
use turbomon::proto::{self, TaskState};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn config(state_dir: &Path) -> EngineConfig {
    EngineConfig {
        state_dir: Some(state_dir.to_path_buf()),
        ..engine_config()
    }
}

/// Runs `body` with an engine opened on `state_dir` in its own runtime, then drops both: the
/// engine's process "dies" when `body` returns.
fn run_engine<T>(state_dir: &Path, body: impl AsyncFnOnce(Engine) -> T) -> T {
    run_engine_with(config(state_dir), body)
}

fn run_engine_with<T>(config: EngineConfig, body: impl AsyncFnOnce(Engine) -> T) -> T {
    let runtime = runtime();
    let result = runtime.block_on(async {
        let engine = Engine::open(config).expect("journal opens");
        body(engine).await
    });
    drop(runtime);
    result
}

async fn wait_until_finished(engine: &Engine, id: &str) {
    for _ in 0..500 {
        if !matches!(
            state_of(engine, id),
            TaskState::Pending | TaskState::Running
        ) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} unfinished after 5 s");
}

#[test]
fn finished_results_survive_a_restart_and_are_never_run_again() {
    let dir = TempDir::new("finished");
    run_engine(dir.path(), async |engine| {
        let ack = engine.submit_batch(batch(
            1,
            vec![
                sim_task("instant", 0, TaskState::Broken, 3.0),
                sim_task("quick", 20, TaskState::Ok, 4.0),
            ],
        ));
        assert!(ack.acks.iter().all(|a| a.accepted));
        wait_until_finished(&engine, "quick").await;
        engine.flush_journal().await;
    });
    assert!(dir.path().join(JOURNAL_FILE_NAME).exists());

    run_engine(dir.path(), async |engine| {
        let instant = status_of(&engine, "instant");
        assert_eq!(instant.state, TaskState::Broken as i32);
        assert_eq!((instant.value, instant.attempt), (3.0, 1));
        let quick = status_of(&engine, "quick");
        assert_eq!(quick.state, TaskState::Ok as i32);
        assert_eq!(quick.value, 4.0);
        assert!(quick.finished_unix_ms >= quick.started_unix_ms && quick.started_unix_ms > 0);

        let again = engine.submit_batch(batch(2, vec![ok_task("instant", 0), ok_task("quick", 0)]));
        assert!(again.acks.iter().all(|a| a.accepted && a.duplicate));
        let counters = engine.counters();
        assert_eq!(counters.checks_started, 0, "nothing ran again");
        assert_eq!(counters.results_restored, 2);
        assert_eq!(counters.lost_in_restart, 0);
        assert_eq!(counters.tasks_held, 2);
    });
}

#[test]
fn tasks_unfinished_when_the_engine_died_come_back_lost_in_restart_once() {
    let dir = TempDir::new("lost");
    let config = EngineConfig {
        max_concurrent_checks: 1,
        ..config(dir.path())
    };
    run_engine_with(config.clone(), async |engine| {
        engine.submit_batch(batch(
            1,
            vec![ok_task("running", 10_000), ok_task("waiting", 10_000)],
        ));
        assert_eq!(state_of(&engine, "running"), TaskState::Running);
        assert_eq!(state_of(&engine, "waiting"), TaskState::Pending);
        engine.flush_journal().await;
        // The process dies here, its checks with it.
    });

    run_engine_with(config.clone(), async |engine| {
        for id in ["running", "waiting"] {
            let lost = status_of(&engine, id);
            assert_eq!(lost.state, TaskState::LostInRestart as i32, "{id}");
            assert_eq!(lost.attempt, 1);
            assert!(lost.message.contains("lost in restart"), "{}", lost.message);
            assert!(lost.finished_unix_ms > 0);
        }
        assert_eq!(engine.counters().lost_in_restart, 2);

        // The same attempt is a duplicate (not run); the supervisor's retry runs.
        let same = engine.submit_batch(batch(2, vec![ok_task("running", 0)]));
        assert!(same.acks[0].duplicate);
        let retry = proto::Task {
            attempt: 2,
            ..ok_task("running", 0)
        };
        let ack = engine.submit_batch(batch(3, vec![retry]));
        assert!(ack.acks[0].accepted && !ack.acks[0].duplicate);
        assert_eq!(state_of(&engine, "running"), TaskState::Ok);
        let counters = engine.counters();
        assert_eq!(counters.retries_accepted, 1);
        assert_eq!(counters.checks_started, 1);
        engine.flush_journal().await;
    });

    run_engine_with(config, async |engine| {
        let counters = engine.counters();
        assert_eq!(
            counters.lost_in_restart, 0,
            "already reported by the last run"
        );
        assert_eq!(counters.results_restored, 2);
        assert_eq!(state_of(&engine, "waiting"), TaskState::LostInRestart);
        let retried = status_of(&engine, "running");
        assert_eq!(retried.state, TaskState::Ok as i32);
        assert_eq!(retried.attempt, 2);
    });
}

#[test]
fn a_plugins_perfdata_and_state_survive_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("perfdata");
    let plugins = TempDir::new("perfdata-plugins");
    let program = plugins.path().join("check_thing");
    std::fs::write(
        &program,
        "#!/bin/sh\necho \"WARNING - warm | temp=71.5;70;90;0;120 'fan speed'=1200c\"\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = EngineConfig {
        exec: turbomon::config::ExecConfig {
            allow: vec![format!("{}/*", plugins.path().display())],
        },
        ..config(dir.path())
    };
    let task = proto::Task {
        check: Some(proto::Check {
            kind: Some(proto::check::Kind::Exec(proto::ExecCheck {
                program: program.display().to_string(),
                args: Vec::new(),
            })),
        }),
        ..ok_task("plugin", 0)
    };
    let before = run_engine_with(config.clone(), async |engine| {
        let ack = engine.submit_batch(batch(1, vec![task]));
        assert!(ack.acks[0].accepted, "{:?}", ack.acks);
        wait_until_finished(&engine, "plugin").await;
        engine.flush_journal().await;
        status_of(&engine, "plugin")
    });
    assert_eq!(
        before.state,
        TaskState::Warning as i32,
        "{}",
        before.message
    );
    assert_eq!(before.perfdata.len(), 2, "{:?}", before.perfdata);
    assert_eq!(before.perfdata[1].label, "fan speed");

    run_engine_with(config, async |engine| {
        let after = status_of(&engine, "plugin");
        assert_eq!(after, before, "the same answer after the restart");
        assert_eq!(engine.counters().checks_started, 0);
    });
}

#[test]
fn released_results_are_gone_after_a_restart() {
    let dir = TempDir::new("released");
    run_engine(dir.path(), async |engine| {
        engine.submit_batch(batch(1, vec![ok_task("collected", 0), ok_task("kept", 0)]));
        let reply = engine.query_status(proto::StatusQuery {
            batch_id: 1,
            task_ids: vec!["collected".into()],
            release_ids: vec!["collected".into()],
        });
        assert_eq!(reply.statuses[0].state, TaskState::Ok as i32);
        engine.flush_journal().await;
    });
    run_engine(dir.path(), async |engine| {
        assert_eq!(state_of(&engine, "collected"), TaskState::Unknown);
        assert_eq!(state_of(&engine, "kept"), TaskState::Ok);
        assert_eq!(engine.counters().results_restored, 1);
        let ack = engine.submit_batch(batch(2, vec![ok_task("collected", 0)]));
        assert!(
            ack.acks[0].accepted && !ack.acks[0].duplicate,
            "a released id is a new task"
        );
    });
}

#[test]
fn results_older_than_the_retention_are_not_taken_back() {
    let dir = TempDir::new("retention");
    run_engine(dir.path(), async |engine| {
        engine.submit_batch(batch(1, vec![ok_task("old", 0)]));
        engine.flush_journal().await;
    });
    std::thread::sleep(Duration::from_millis(30));
    let short = EngineConfig {
        result_retention: Duration::from_millis(10),
        ..config(dir.path())
    };
    run_engine_with(short, async |engine| {
        assert_eq!(state_of(&engine, "old"), TaskState::Unknown);
        assert_eq!(engine.counters().results_expired, 1);
        engine.flush_journal().await;
    });
    run_engine(dir.path(), async |engine| {
        assert_eq!(
            state_of(&engine, "old"),
            TaskState::Unknown,
            "deleted from the journal"
        );
    });
}

#[test]
fn a_graceful_shutdown_journals_checks_still_running_after_the_grace_as_lost() {
    let dir = TempDir::new("shutdown");
    let config = EngineConfig {
        shutdown_grace: Duration::from_millis(300),
        ..config(dir.path())
    };
    let counters = run_engine_with(config.clone(), async |engine| {
        let mut running = RunningEngine::serve(engine.clone()).await;
        let mut client = running.client().await;
        let mut submit = submit_stream(&mut client).await;
        let ack = submit
            .exchange(batch(
                1,
                vec![
                    ok_task("finishes-in-grace", 100),
                    ok_task("too-long", 10_000),
                ],
            ))
            .await;
        assert!(ack.acks.iter().all(|a| a.accepted));
        assert!(
            engine.counters().journal_commits >= 1,
            "acknowledged only once journaled"
        );

        let stop_requested = Instant::now();
        running.request_shutdown();
        // Serve returns after the grace.
        let served = running.shutdown().await;
        assert!(served.is_ok(), "{served:?}");
        let took = stop_requested.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(state_of(&engine, "finishes-in-grace"), TaskState::Ok);
        assert_eq!(state_of(&engine, "too-long"), TaskState::LostInRestart);
        engine.counters()
    });
    assert_eq!(counters.lost_in_restart, 1);
    assert_eq!(counters.checks_finished, 1);

    run_engine_with(config, async |engine| {
        assert_eq!(state_of(&engine, "finishes-in-grace"), TaskState::Ok);
        let lost = status_of(&engine, "too-long");
        assert_eq!(lost.state, TaskState::LostInRestart as i32);
        assert!(lost.message.contains("shut down"), "{}", lost.message);
        assert_eq!(
            engine.counters().lost_in_restart,
            0,
            "counted once, by the engine that gave up on it"
        );
    });
}

#[test]
fn a_unary_submission_is_journaled_before_it_is_acknowledged() {
    let dir = TempDir::new("unary");
    run_engine(dir.path(), async |engine| {
        let (address, _served) = serve_until(engine.clone(), std::future::pending()).await;
        let mut client = engine_client(address).await;
        let reply = client
            .submit_one(proto::SubmitOneRequest {
                task: Some(ok_task("unary", 60_000)),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(reply.ack.unwrap().accepted);
        // No flush: the reply itself promises the task is on disk (a commit happened before it).
        assert!(engine.counters().journal_commits >= 1);
        // The engine dies now.
    });
    run_engine(dir.path(), async |engine| {
        assert_eq!(state_of(&engine, "unary"), TaskState::LostInRestart);
    });
}

#[test]
fn a_state_dir_that_cannot_be_used_is_refused_at_open() {
    let dir = TempDir::new("refused");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let error = Engine::open(config(&file.join("state"))).unwrap_err();
    assert!(
        matches!(error, EngineError::Journal(JournalError::CreateDir { .. })),
        "{error}"
    );

    let validation =
        turbomon::config::validate_engine(&config(&file.join("state")), Path::new("engine.toml"))
            .unwrap_err();
    assert!(validation.to_string().contains("state_dir"), "{validation}");

    // One engine per state directory.
    let state_dir = dir.path().join("state");
    let _first = Engine::open(config(&state_dir)).unwrap();
    let error = Engine::open(config(&state_dir)).unwrap_err();
    assert!(
        matches!(error, EngineError::Journal(JournalError::Open { .. })),
        "{error}"
    );
}

#[test]
fn without_state_dir_open_keeps_everything_in_memory() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    assert!(!engine.has_journal());
}

#[test]
fn a_restarted_engine_still_lists_each_supervisors_tasks_and_marks() {
    let dir = TempDir::new("listing");
    let stamped = |supervisor: &str, id: &str, duration_ms: u64, scheduled: i64| proto::Task {
        supervisor_id: supervisor.into(),
        scheduled_unix_ms: scheduled,
        node: id.into(),
        ..sim_task(id, duration_ms, TaskState::Broken, 1.0)
    };
    run_engine(dir.path(), async |engine| {
        let ack = engine.submit_batch(batch(
            1,
            vec![
                stamped("sup-a", "done", 0, 100),
                stamped("sup-a", "running", 60_000, 300),
                stamped("sup-b", "theirs", 0, 200),
            ],
        ));
        assert!(ack.acks.iter().all(|a| a.accepted));
        // A released result leaves the listing, and the journal; its mark stays.
        let released = engine.submit_batch(batch(2, vec![stamped("sup-a", "gone", 0, 400)]));
        assert!(released.acks[0].accepted);
        engine.query_status(proto::StatusQuery {
            batch_id: 3,
            task_ids: Vec::new(),
            release_ids: vec!["gone".into()],
        });
        engine.flush_journal().await;
    });
    run_engine(dir.path(), async |engine| {
        let list = |supervisor: &str| {
            engine
                .list_tasks(&proto::ListTasksRequest {
                    supervisor_id: supervisor.into(),
                    after_id: String::new(),
                    limit: 0,
                })
                .expect("listed")
        };
        let mine = list("sup-a");
        let ids: Vec<&str> = mine.tasks.iter().map(|t| t.task_id.as_str()).collect();
        assert_eq!(ids, ["done", "running"]);
        let running = &mine.tasks[1];
        assert_eq!(running.state, TaskState::LostInRestart as i32);
        assert_eq!(
            (
                running.relator.as_str(),
                running.node.as_str(),
                running.scheduled_unix_ms
            ),
            ("r", "running", 300),
            "what the task is survives the restart"
        );
        assert!(running.status.is_some());
        assert_eq!(
            mine.marks,
            vec![proto::RelatorMark {
                relator: "r".into(),
                latest_scheduled_unix_ms: 400,
            }]
        );
        let theirs = list("sup-b");
        assert_eq!(theirs.tasks.len(), 1);
        assert_eq!(theirs.marks[0].latest_scheduled_unix_ms, 200);
        // The id is still refused to another supervisor after the restart.
        let refused = engine.submit_batch(batch(4, vec![stamped("sup-b", "done", 0, 100)]));
        assert!(!refused.acks[0].accepted);
    });
}
