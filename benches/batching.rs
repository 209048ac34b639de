//! The hot pure parts of a submission loop: splitting due tasks into batches, encoding a batch of
//! 30 for the wire (and decoding it, as the engine does), copying it (as `send_batch` does) and
//! measuring a packet's size.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use turbomon::bench::bare::acknowledge_all;
use turbomon::bench::bench_tasks;
use turbomon::proto::SubmitBatch;
use turbomon::wire::batch::{packet_bytes, split_into_batches};

fn splitting(c: &mut Criterion) {
    let mut group = c.benchmark_group("split_into_batches");
    for tasks in [300usize, 3_000] {
        let due = bench_tasks(0, tasks);
        group.throughput(Throughput::Elements(tasks as u64));
        group.bench_with_input(BenchmarkId::new("batch_30", tasks), &due, |b, due| {
            b.iter_batched(
                || due.clone(),
                |due| split_into_batches(black_box(due), 30),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let batch = SubmitBatch {
        batch_id: 42,
        tasks: bench_tasks(0, 30),
    };
    // The ack the bare baseline server answers this batch with.
    let ack = acknowledge_all(batch.clone());
    let encoded = batch.encode_to_vec();
    let mut group = c.benchmark_group("submit_batch_of_30");
    group.throughput(Throughput::Elements(30));
    group.bench_function("encode", |b| {
        let mut buffer = Vec::with_capacity(encoded.len());
        b.iter(|| {
            buffer.clear();
            black_box(&batch)
                .encode(&mut buffer)
                .expect("the buffer grows as needed");
            black_box(buffer.len())
        })
    });
    // The supervisor's send_batch keeps a copy of every batch it sends.
    group.bench_function("clone", |b| b.iter(|| black_box(&batch).clone()));
    group.bench_function("decode", |b| {
        b.iter(|| SubmitBatch::decode(black_box(encoded.as_slice())).expect("valid batch"))
    });
    group.bench_function("packet_bytes", |b| {
        b.iter(|| packet_bytes(black_box(&batch), black_box(&ack)))
    });
    group.finish();
}

criterion_group!(benches, splitting, encoding);
criterion_main!(benches);
