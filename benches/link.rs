//! Benchmarks of the simulated link's pure shaping arithmetic: the per-chunk cost the byte pumps
//! pay on top of copying, for each built-in profile and typical chunk sizes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use turbomon::link::builtin_profiles;
use turbomon::link::shaping::Shaper;

fn plan_chunks(c: &mut Criterion) {
    let mut group = c.benchmark_group("shaper_plan");
    for (name, profile) in builtin_profiles() {
        // A gRPC batch of 30 tasks (~2.9 KB) and a full 64 KiB read.
        for chunk_bytes in [2_900usize, 64 * 1024] {
            group.throughput(Throughput::Bytes(chunk_bytes as u64));
            group.bench_with_input(
                BenchmarkId::new(name.as_str(), chunk_bytes),
                &chunk_bytes,
                |b, &chunk_bytes| {
                    let mut shaper = Shaper::new(&profile, 7);
                    let mut arrived = Duration::ZERO;
                    b.iter(|| {
                        arrived += Duration::from_micros(100);
                        black_box(shaper.plan(black_box(arrived), black_box(chunk_bytes)))
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, plan_chunks);
criterion_main!(benches);
