//! A quick throughput check of the engine's submission path over loopback gRPC: one stream,
//! batches of 30 instant sim tasks, 8 batches in flight. Ignored by default (it measures, it does
//! not assert much); run it in release mode:
//!
//! ```text
//! cargo test --release --test engine_throughput -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use turbomon::config::EngineConfig;
use turbomon::engine::Engine;
use turbomon::proto::engine_client::EngineClient;
use turbomon::proto::{self, TaskState};

const BATCH_TASKS: usize = 30;
const BATCHES_IN_FLIGHT: usize = 8;
const TASKS: usize = 300_000;

fn instant_task(id: String) -> proto::Task {
    proto::Task {
        id,
        relator: "relator".into(),
        rule: "rule".into(),
        node: "node-0001".into(),
        scheduled_unix_ms: 1_700_000_000_000,
        attempt: 1,
        timeout_ms: 10_000,
        check: Some(proto::Check {
            kind: Some(proto::check::Kind::Sim(proto::SimCheck {
                duration_ms: 0,
                outcome: TaskState::Ok as i32,
                value: 1.0,
            })),
        }),
        ..Default::default()
    }
}

/// Submits [`TASKS`] tasks to `engine` over one stream; returns tasks acknowledged per second.
async fn measure(engine: Engine) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(engine.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    let mut client = EngineClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let batches: Vec<proto::SubmitBatch> = (0..TASKS / BATCH_TASKS)
        .map(|b| proto::SubmitBatch {
            batch_id: b as u64,
            tasks: (0..BATCH_TASKS)
                .map(|t| instant_task(format!("relator/rule/node-{b:06}-{t:02}/1700000000000")))
                .collect(),
        })
        .collect();
    let total_batches = batches.len();
    let (requests, rx) = mpsc::channel(BATCHES_IN_FLIGHT);
    let mut acks = client
        .submit(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    let mut batches = batches.into_iter();
    for batch in batches.by_ref().take(BATCHES_IN_FLIGHT) {
        requests.send(batch).await.unwrap();
    }
    let mut acked_tasks = 0usize;
    for _ in 0..total_batches {
        let ack = acks.message().await.unwrap().unwrap();
        assert!(ack.error.is_none(), "{:?}", ack.error);
        acked_tasks += ack.acks.len();
        if let Some(batch) = batches.next() {
            requests.send(batch).await.unwrap();
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(acked_tasks, TASKS);
    drop(requests);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), served).await;
    TASKS as f64 / elapsed.as_secs_f64()
}

fn config() -> EngineConfig {
    EngineConfig {
        listen: "127.0.0.1:0".into(),
        max_held_tasks: TASKS * 2,
        ..EngineConfig::default()
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
    let state_dir = std::env::temp_dir().join(format!(
        "turbomon-throughput-journal-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let engine = Engine::open(EngineConfig {
        state_dir: Some(state_dir.clone()),
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
    let _ = std::fs::remove_dir_all(&state_dir);
}
