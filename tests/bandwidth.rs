//! Bandwidth control towards an engine, end to end through a simulated link under paused tokio
//! time (the link counts every byte the engine receives): `max_bandwidth` holds over any 10 s
//! of a 30 s run, pulse mode sends a block and pauses, a daily window sets its own rate, a new
//! policy applies at once (also through a running supervisor's reload), and values that make
//! no sense are refused naming their key.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use turbomon::bench::bench_tasks;
use turbomon::config::{
    Bandwidth, BandwidthWindow, ByteSize, EngineConfig, Pulse, TimeOfDay, parse_supervisor,
};
use turbomon::engine::Engine;
use turbomon::link::{Link, builtin_profiles};
use turbomon::throttle::{BandwidthPolicy, DayClock, Throttle};
use turbomon::transport::Dialer;
use turbomon::wire::batch::BatchIds;
use turbomon::wire::stream::SubmitStream;
use turbomon::wire::submit::{LoopLimits, submit_turbo};

const KB: u64 = 1024;

/// An engine behind a `wan` link, dialled through `throttle`; submission loops of 300 tasks
/// back to back (far more than the budget) for `run`. Returns the bytes the link delivered to
/// the engine in each 100 ms of the run.
async fn saturate(throttle: Throttle, run: Duration) -> Vec<u64> {
    let link = Link::with_seed(builtin_profiles()["wan"].clone(), 3).expect("valid profile");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let engine = Engine::new(EngineConfig {
        listen: address.to_string(),
        metrics_listen: String::new(),
        max_held_tasks: 1_000_000,
        ..EngineConfig::default()
    });
    tokio::spawn(engine.serve(listener, std::future::pending::<()>()));
    let dialer = Dialer::new(&address.to_string(), Some(link.clone()), 4 * 1024 * 1024)
        .expect("dialer")
        .with_throttle(throttle);
    let connection = dialer.connect().await.expect("connect");
    let stream = SubmitStream::open(&connection).await.expect("stream");
    let start = Instant::now();
    let sampler = {
        let link = link.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut last = link.counters().client_to_server_bytes;
            let mut tick = tokio::time::interval_at(
                start + Duration::from_millis(100),
                Duration::from_millis(100),
            );
            while samples.len() < (run.as_millis() / 100) as usize {
                tick.tick().await;
                let now = link.counters().client_to_server_bytes;
                samples.push(now - last);
                last = now;
            }
            samples
        })
    };
    let batch_ids = BatchIds::default();
    let limits = LoopLimits {
        batch_size: 30,
        in_flight: 64,
        reply_timeout: Duration::from_secs(120),
        max_message_bytes: 4 * 1024 * 1024,
    };
    let sender = tokio::spawn(async move {
        for loop_index in 0.. {
            let outcome =
                submit_turbo(&stream, bench_tasks(loop_index, 300), limits, &batch_ids).await;
            assert!(outcome.completed(), "loop {loop_index} incomplete");
        }
    });
    let samples = sampler.await.expect("sampler");
    sender.abort();
    samples
}

/// The most bytes in any `window` tenths of a second.
fn busiest(samples: &[u64], window: usize) -> u64 {
    samples
        .windows(window)
        .map(|w| w.iter().sum())
        .max()
        .unwrap_or(0)
}

fn limited(bytes_per_second: u64) -> BandwidthPolicy {
    BandwidthPolicy {
        max_bytes_per_second: Some(bytes_per_second),
        ..BandwidthPolicy::default()
    }
}

#[tokio::test(start_paused = true)]
async fn max_bandwidth_holds_over_any_ten_seconds_of_a_thirty_second_run() {
    let throttle = Throttle::new(limited(100 * KB), DayClock::starting_at(0));
    let samples = saturate(throttle, Duration::from_secs(30)).await;
    let limit = 100 * KB * 10;
    let busiest = busiest(&samples, 100);
    assert!(
        busiest * 100 <= limit * 105,
        "{busiest} bytes in 10 s, over 105 % of {limit}"
    );
    let total: u64 = samples.iter().sum();
    assert!(
        total >= 100 * KB * 30 * 9 / 10,
        "the budget is used, not starved: {total} bytes in 30 s"
    );
}

#[tokio::test(start_paused = true)]
async fn pulse_mode_sends_one_block_then_waits_before_the_next() {
    let pulsed = BandwidthPolicy {
        pulse: Some(Pulse {
            block: ByteSize { bytes: 4 * KB },
            delay: Duration::from_secs(1),
        }),
        ..BandwidthPolicy::default()
    };
    let samples = saturate(
        Throttle::new(pulsed, DayClock::starting_at(0)),
        Duration::from_secs(10),
    )
    .await;
    // One block per second at most (a block's bytes may land in two neighbouring tenths).
    for (second, chunk) in samples.windows(10).enumerate() {
        let bytes: u64 = chunk.iter().sum();
        assert!(
            bytes <= 2 * 4 * KB,
            "{bytes} bytes in the second from tenth {second}"
        );
    }
    let busy_tenths = samples.iter().filter(|&&b| b > 0).count();
    assert!(
        busy_tenths <= 25,
        "bytes arrive in pulses, not spread out: {samples:?}"
    );
    let total: u64 = samples.iter().sum();
    assert!(
        (8 * 4 * KB..=11 * 4 * KB).contains(&total),
        "about one 4 KB block a second for 10 s: {total}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_sets_its_own_rate_from_its_start_in_local_time() {
    let windowed = BandwidthPolicy {
        max_bytes_per_second: Some(100 * KB),
        windows: vec![BandwidthWindow {
            from: TimeOfDay { minutes: 8 * 60 },
            to: TimeOfDay { minutes: 18 * 60 },
            max_bandwidth: Bandwidth {
                bytes_per_second: 20 * KB,
            },
        }],
        ..BandwidthPolicy::default()
    };
    // The run starts at 07:59:50 local time: 10 s at the engine's own 100 KB/s, then 08:00.
    let throttle = Throttle::new(windowed, DayClock::starting_at(8 * 3600 - 10));
    let samples = saturate(throttle, Duration::from_secs(30)).await;
    let before: u64 = samples[10..90].iter().sum();
    let inside: u64 = samples[110..300].iter().sum();
    assert!(
        before >= 100 * KB * 8 * 9 / 10,
        "before 08:00: {before} in 8 s"
    );
    assert!(
        inside * 100 <= 20 * KB * 19 * 105,
        "inside the window: {inside} in 19 s"
    );
    assert!(
        inside >= 20 * KB * 19 * 9 / 10,
        "inside the window: {inside} in 19 s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_policy_applies_to_the_traffic_at_once() {
    let throttle = Throttle::new(limited(100 * KB), DayClock::starting_at(0));
    let changer = {
        let throttle = throttle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert!(throttle.set_policy(limited(10 * KB)));
        })
    };
    let samples = saturate(throttle, Duration::from_secs(20)).await;
    changer.await.expect("changed");
    let after: u64 = samples[110..200].iter().sum();
    assert!(
        after * 100 <= 10 * KB * 9 * 105,
        "after the change: {after} bytes in 9 s"
    );
}

/// The error for `entry_keys` added to a valid engine entry: its key and message.
fn refused(entry_keys: &str) -> (String, String) {
    let text = format!(
        "[[engines]]\nname = \"far\"\naddress = \"127.0.0.1:7300\"\n{entry_keys}\n\n\
         [[groups]]\nname = \"g\"\nengine = \"far\"\nnodes = [\"a\"]\n"
    );
    match parse_supervisor(&text, Path::new("bw.toml")) {
        Ok(_) => panic!("accepted: {entry_keys}"),
        Err(error) => (error.key.clone().unwrap_or_default(), error.to_string()),
    }
}

#[test]
fn bad_bandwidth_values_are_refused_naming_the_key() {
    for (keys, key, words) in [
        (
            "max_bandwidth = \"fast\"",
            "engines[0].max_bandwidth",
            "rate",
        ),
        (
            "max_bandwidth = \"100KB\"",
            "engines[0].max_bandwidth",
            "per second",
        ),
        ("max_bandwidth = 100", "engines[0].max_bandwidth", "rate"),
        (
            "max_bandwidth = \"0KB/s\"",
            "engines[0].max_bandwidth",
            "more than 0",
        ),
        (
            "pulse = { block = \"0KB\", delay = \"1s\" }",
            "engines[0].pulse.block",
            "at least 1 byte",
        ),
        (
            "pulse = { block = \"4KB\", delay = \"0s\" }",
            "engines[0].pulse.delay",
            "longer than 0",
        ),
        (
            "pulse = { block = \"4KB\" }",
            "engines[0].pulse.delay",
            "delay",
        ),
        (
            "bandwidth_windows = [{ from = \"8:00\", to = \"18:00\", max_bandwidth = \"20KB/s\" }]",
            "engines[0].bandwidth_windows[0].from",
            "HH:MM",
        ),
        (
            "bandwidth_windows = [{ from = \"08:00\", to = \"08:00\", max_bandwidth = \"20KB/s\" }]",
            "engines[0].bandwidth_windows[0].to",
            "empty",
        ),
        (
            "bandwidth_windows = [{ from = \"08:00\", to = \"18:00\", max_bandwidth = \"20KB/s\" }, \
             { from = \"17:00\", to = \"20:00\", max_bandwidth = \"5KB/s\" }]",
            "engines[0].bandwidth_windows[1].from",
            "overlaps",
        ),
    ] {
        let (named, message) = refused(keys);
        assert_eq!(named, key, "{keys}: {message}");
        assert!(message.contains(words), "{keys}: {message}");
    }
}

#[test]
fn good_bandwidth_values_read_back_as_written() {
    let text = "[[engines]]\nname = \"far\"\naddress = \"127.0.0.1:7300\"\n\
                max_bandwidth = \"100KB/s\"\npulse = { block = \"4KB\", delay = \"1s\" }\n\
                bandwidth_windows = [{ from = \"22:00\", to = \"06:00\", max_bandwidth = \"1MB/s\" }]\n\n\
                [[groups]]\nname = \"g\"\nengine = \"far\"\nnodes = [\"a\"]\n";
    let config = parse_supervisor(text, Path::new("bw.toml")).unwrap_or_else(|e| panic!("{e}"));
    let policy = BandwidthPolicy::of(&config.engines[0]);
    assert_eq!(policy.max_bytes_per_second, Some(100 * KB));
    assert_eq!(policy.pulse.map(|p| p.block.bytes), Some(4 * KB));
    assert_eq!(
        policy.rate_at(23 * 3600),
        Some(1024 * KB),
        "inside the night window"
    );
    assert_eq!(
        policy.rate_at(12 * 3600),
        Some(100 * KB),
        "the engine's own outside it"
    );
    let written = toml::to_string(&config).expect("serialises");
    assert!(written.contains("max_bandwidth = \"100KB/s\""), "{written}");
}

#[test]
fn a_supervisor_reload_applies_new_bandwidth_keys_to_its_engine_at_once() {
    let ((), logs) = common::capture_logs(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mock = common::MockEngine::new();
            let engine = common::serve_mock(mock).await;
            let text = common::one_engine_config(
                engine.address,
                &common::node_names(2),
                common::Extra::default(),
            );
            let (supervisor, reload, _done) = common::start_supervisor(common::parse(&text));
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut changed = common::parse(&text);
            changed.engines[0].max_bandwidth = Some(Bandwidth {
                bytes_per_second: 50 * KB,
            });
            changed.engines[0].pulse = Some(Pulse {
                block: ByteSize { bytes: 4 * KB },
                delay: Duration::from_secs(1),
            });
            reload.send_replace(Arc::new(changed));
            // The statistics task watches every reload and applies the keys at once: on this
            // one-thread runtime it runs as soon as the test waits.
            tokio::time::sleep(Duration::from_millis(300)).await;
            supervisor.shutdown().await;
        });
    });
    let line = logs
        .lines()
        .find(|l| l.contains("bandwidth limits changed"))
        .unwrap_or_else(|| panic!("no line saying the limits changed:\n{logs}"));
    assert!(line.contains("engine=e1"), "{line}");
    assert!(line.contains("max_bandwidth=Some(51200)"), "{line}");
    assert!(line.contains("pulse=true"), "{line}");
}
