//! The engine's side of a loop and the supervisor's matching of its answer: admitting batches of
//! 30 into the task store (against the bare baseline's acknowledge-everything server), answering
//! status queries that release the previous results, and matching an ack to its batch.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use turbomon::bench::bare::acknowledge_all;
use turbomon::bench::bench_tasks;
use turbomon::config::EngineConfig;
use turbomon::engine::Engine;
use turbomon::proto::{StatusQuery, SubmitBatch};
use turbomon::wire::submit::deliveries_from_ack;

/// Tasks admitted per measured iteration: one bench loop's worth.
const TASKS: usize = 30_000;
const BATCH: usize = 30;

fn batches(loop_index: usize) -> Vec<SubmitBatch> {
    let mut tasks = bench_tasks(loop_index, TASKS).into_iter();
    (0..TASKS / BATCH)
        .map(|i| SubmitBatch {
            batch_id: i as u64 + 1,
            tasks: tasks.by_ref().take(BATCH).collect(),
        })
        .collect()
}

fn engine() -> Engine {
    Engine::new(EngineConfig {
        listen: "127.0.0.1:0".to_string(),
        metrics_listen: String::new(),
        max_held_tasks: 4 * TASKS,
        ..EngineConfig::default()
    })
}

fn store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("engine_30000_tasks_in_batches_of_30");
    group.throughput(Throughput::Elements(TASKS as u64));
    group.sample_size(20);
    group.bench_function("bare_acknowledge_all", |b| {
        b.iter_batched(
            || batches(0),
            |batches| {
                for batch in batches {
                    black_box(acknowledge_all(batch));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("store_insert", |b| {
        b.iter_batched(
            || (engine(), batches(0)),
            |(engine, batches)| {
                for batch in batches {
                    black_box(engine.submit_batch(batch));
                }
                engine
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("status_and_release", |b| {
        b.iter_batched(
            || {
                let engine = engine();
                for batch in batches(0) {
                    engine.submit_batch(batch);
                }
                let queries: Vec<StatusQuery> = batches(0)
                    .into_iter()
                    .map(|batch| {
                        let ids: Vec<String> = batch.tasks.into_iter().map(|t| t.id).collect();
                        StatusQuery {
                            batch_id: batch.batch_id,
                            task_ids: ids.clone(),
                            release_ids: ids,
                        }
                    })
                    .collect();
                (engine, queries)
            },
            |(engine, queries)| {
                for query in queries {
                    black_box(engine.query_status(query));
                }
                engine
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn ack_matching(c: &mut Criterion) {
    let batch = SubmitBatch {
        batch_id: 7,
        tasks: bench_tasks(0, BATCH),
    };
    let ack = acknowledge_all(batch.clone());
    let mut group = c.benchmark_group("supervisor_ack_of_30");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("match_by_position", |b| {
        b.iter_batched(
            || (batch.tasks.clone(), ack.clone()),
            |(tasks, ack)| {
                let mut deliveries = Vec::with_capacity(BATCH);
                deliveries_from_ack(7, tasks, ack, &mut deliveries);
                deliveries
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, store, ack_matching);
criterion_main!(benches);
