//! A quick throughput check of the engine's submission path over loopback gRPC: one stream,
//! batches of 30 instant sim tasks, 8 batches in flight. Ignored by default (it measures, it does
//! not assert much); run it in release mode:
//!
//! ```text
//! cargo test --release --test engine_throughput -- --ignored --nocapture
//! ```

mod common;

use std::time::Instant;

use common::{RunningEngine, TempDir, engine_config, ok_task, submit_stream};
use turbomon::config::EngineConfig;
use turbomon::engine::Engine;
use turbomon::proto;

const BATCH_TASKS: usize = 30;
const BATCHES_IN_FLIGHT: usize = 8;
const TASKS: usize = 300_000;

/// An instant sim task that reports OK, with names of a realistic length.
fn instant_task(id: String) -> proto::Task {
    proto::Task {
        relator: "relator".into(),
        rule: "rule".into(),
        node: "node-0001".into(),
        scheduled_unix_ms: 1_700_000_000_000,
        timeout_ms: 10_000,
        ..ok_task(&id, 0)
    }
}

/// Submits [`TASKS`] tasks to `engine` over one stream; returns tasks acknowledged per second.
async fn measure(engine: Engine) -> f64 {
    let running = RunningEngine::serve(engine).await;
    let mut client = running.client().await;
    let batches: Vec<proto::SubmitBatch> = (0..TASKS / BATCH_TASKS)
        .map(|b| proto::SubmitBatch {
            batch_id: b as u64,
            tasks: (0..BATCH_TASKS)
                .map(|t| instant_task(format!("relator/rule/node-{b:06}-{t:02}/1700000000000")))
                .collect(),
        })
        .collect();
    let total_batches = batches.len();
    let mut stream = submit_stream(&mut client).await;
    let started = Instant::now();
    let mut batches = batches.into_iter();
    for batch in batches.by_ref().take(BATCHES_IN_FLIGHT) {
        stream.requests.send(batch).await.unwrap();
    }
    let mut acked_tasks = 0usize;
    for _ in 0..total_batches {
        let ack = stream.responses.message().await.unwrap().unwrap();
        assert!(ack.error.is_none(), "{:?}", ack.error);
        acked_tasks += ack.acks.len();
        if let Some(batch) = batches.next() {
            stream.requests.send(batch).await.unwrap();
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(acked_tasks, TASKS);
    drop(stream);
    running.stop().await;
    TASKS as f64 / elapsed.as_secs_f64()
}

fn config() -> EngineConfig {
    EngineConfig {
        max_held_tasks: TASKS * 2,
        ..engine_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run in release with --ignored --nocapture"]
async fn submission_throughput_memory_only() {
    let rate = measure(Engine::new(config())).await;
    println!("memory only: {rate:.0} tasks/s (1 stream, batch {BATCH_TASKS})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run in release with --ignored --nocapture"]
async fn submission_throughput_with_journal() {
    let state_dir = TempDir::new("throughput-journal");
    let engine = Engine::open(EngineConfig {
        state_dir: Some(state_dir.path().to_path_buf()),
        ..config()
    })
    .unwrap();
    let rate = measure(engine.clone()).await;
    let counters = engine.counters();
    println!(
        "with journal: {rate:.0} tasks/s (1 stream, batch {BATCH_TASKS}; {} commits, {:.0} tasks per commit)",
        counters.journal_commits,
        TASKS as f64 / counters.journal_commits.max(1) as f64
    );
    drop(engine);
}
