//! Cost of recording into the statistics histograms, and of closing a window.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use turbomon::stats::{EngineStats, LoopStats, Mode};

/// Loop times spread over 1 ms .. 2 s, and packet sizes over 100 B .. 300 KB.
fn samples() -> (Vec<Duration>, Vec<u64>) {
    let loop_times = (0..1024u64)
        .map(|i| Duration::from_micros(1_000 + (i * 7_919) % 2_000_000))
        .collect();
    let packet_sizes = (0..1024u64).map(|i| 100 + (i * 3_001) % 300_000).collect();
    (loop_times, packet_sizes)
}

fn recording(c: &mut Criterion) {
    let (loop_times, packet_sizes) = samples();

    let mut stats = LoopStats::new();
    let mut i = 0usize;
    c.bench_function("stats/record_loop", |b| {
        b.iter(|| {
            stats.record_loop(black_box(loop_times[i % loop_times.len()]));
            i = i.wrapping_add(1);
        })
    });

    let mut stats = LoopStats::new();
    let mut i = 0usize;
    c.bench_function("stats/record_packet", |b| {
        b.iter(|| {
            stats.record_packet(black_box(packet_sizes[i % packet_sizes.len()]));
            i = i.wrapping_add(1);
        })
    });

    c.bench_function("stats/take_window_after_10000_loops", |b| {
        b.iter_batched(
            || {
                let mut stats = EngineStats::new("bench", SystemTime::UNIX_EPOCH);
                for (n, loop_time) in loop_times.iter().cycle().take(10_000).enumerate() {
                    stats.submission.record_loop(*loop_time);
                    stats.monitor.record_loop(*loop_time);
                    stats
                        .submission
                        .record_packet(packet_sizes[n % packet_sizes.len()]);
                    stats
                        .monitor
                        .record_packet(packet_sizes[n % packet_sizes.len()]);
                }
                stats
            },
            |mut stats| {
                let report = stats.take_window(Mode::Turbo(30), Mode::Turbo(30), SystemTime::now());
                black_box(report.lines())
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, recording);
criterion_main!(benches);
