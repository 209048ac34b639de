//! The automatic batch size over the in-process simulated link, under paused tokio time (the
//! link's timings are exact and nothing here depends on the machine's speed): on wan, satellite
//! and modem, starting from 1 and from 1,000, the size chosen reaches a loop time within 10 % of
//! the best fixed size of the same sweep within 20 loops, and on a link that black-holes large
//! packets it never settles on a packet larger than the black hole.

use std::time::Duration;

use prost::Message;
use tokio::net::TcpListener;
use turbomon::bench::run::run_combination;
use turbomon::bench::{Combination, LinkChoice, Measurement, RunSettings, TurboMode, bench_tasks};
use turbomon::config::EngineConfig;
use turbomon::engine::Engine;
use turbomon::link::{Link, builtin_profiles};
use turbomon::proto::SubmitBatch;
use turbomon::supervisor::autosize::{AutoSize, LoopSample};
use turbomon::transport::Dialer;
use turbomon::wire::batch::{BatchIds, GRPC_FRAME_HEADER_BYTES};
use turbomon::wire::stream::SubmitStream;
use turbomon::wire::submit::{Delivery, LoopLimits, submit_turbo};

/// Tasks per loop, as a supervisor firing 300 nodes at once sends them.
const TASKS: usize = 300;
/// Loops measured after the 20 learning loops of an automatic row.
const MEASURED_LOOPS: usize = 5;
/// The fixed sizes the automatic one is compared with.
const SWEEP: [usize; 9] = [1, 3, 10, 20, 30, 60, 100, 300, 1000];

fn settings() -> RunSettings {
    RunSettings {
        tasks: TASKS,
        loops: MEASURED_LOOPS,
        max_connections: 10,
        max_inflight_batches: 64,
        reply_timeout: Duration::from_secs(30),
        seed: Some(7),
        plaintext: true,
        max_bandwidth: None,
    }
}

fn link(name: &str) -> LinkChoice {
    LinkChoice {
        name: name.to_string(),
        profile: builtin_profiles().get(name).cloned(),
    }
}

async fn measure(link: &LinkChoice, batch_size: usize, auto: bool) -> Measurement {
    let combination = Combination {
        link: link.clone(),
        turbo: TurboMode::On,
        batch_size,
        auto,
    };
    run_combination(&combination, &settings(), &indicatif::ProgressBar::hidden())
        .await
        .unwrap_or_else(|e| panic!("{combination}: {e}"))
}

fn median(loops: &[Duration]) -> Duration {
    let mut sorted = loops.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// Runs the sweep and both automatic rows on `name`; asserts the automatic rows' loops after
/// the 20 learning ones are within 10 % of the best fixed size's median, for submission and
/// monitor loops alike.
async fn auto_reaches_the_best_fixed_size(name: &str) {
    let link = link(name);
    let mut best_submit = Duration::MAX;
    let mut best_monitor = Duration::MAX;
    for size in SWEEP {
        let fixed = measure(&link, size, false).await;
        best_submit = best_submit.min(median(&fixed.submit_loops));
        best_monitor = best_monitor.min(median(&fixed.monitor_loops));
    }
    for start in [1, 1000] {
        let auto = measure(&link, start, true).await;
        let trace = auto
            .auto
            .as_ref()
            .expect("an automatic row keeps its sizes");
        let submit = median(&auto.submit_loops);
        let monitor = median(&auto.monitor_loops);
        assert!(
            submit.as_secs_f64() <= best_submit.as_secs_f64() * 1.10,
            "{name} from {start}: submission {submit:?} vs best fixed {best_submit:?}; sizes {:?}",
            trace.submit_sizes
        );
        assert!(
            monitor.as_secs_f64() <= best_monitor.as_secs_f64() * 1.10,
            "{name} from {start}: monitor {monitor:?} vs best fixed {best_monitor:?}; sizes {:?}",
            trace.monitor_sizes
        );
    }
}

#[tokio::test(start_paused = true)]
async fn on_wan_auto_is_within_ten_percent_of_the_best_fixed_size_within_20_loops() {
    auto_reaches_the_best_fixed_size("wan").await;
}

#[tokio::test(start_paused = true)]
async fn on_satellite_auto_is_within_ten_percent_of_the_best_fixed_size_within_20_loops() {
    auto_reaches_the_best_fixed_size("satellite").await;
}

#[tokio::test(start_paused = true)]
async fn on_modem_auto_is_within_ten_percent_of_the_best_fixed_size_within_20_loops() {
    auto_reaches_the_best_fixed_size("modem").await;
}

/// A wan whose path drops any burst over 8 KB: from 1,000 the controller backs off after the
/// first stalled loop and never settles on a packet the link would swallow.
#[tokio::test(start_paused = true)]
async fn behind_a_black_hole_auto_never_settles_on_a_packet_larger_than_it() {
    const BLACKHOLE_BYTES: usize = 8 * 1024;
    let mut profile = builtin_profiles()
        .get("wan")
        .cloned()
        .expect("wan is built in");
    profile.blackhole_bytes = Some(BLACKHOLE_BYTES);
    let link = Link::with_seed(profile, 11).expect("valid profile");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let engine = Engine::new(EngineConfig {
        listen: address.to_string(),
        metrics_listen: String::new(),
        max_held_tasks: 1_000_000,
        ..EngineConfig::default()
    });
    tokio::spawn(engine.serve(listener, std::future::pending::<()>()));
    let dialer =
        Dialer::new(&address.to_string(), Some(link.clone()), 4 * 1024 * 1024).expect("dialer");
    let batch_ids = BatchIds::default();
    let mut auto = AutoSize::new(1000, 1, 1000, 64);
    let mut stream: Option<SubmitStream> = None;
    let mut settled_requests = Vec::new();
    let mut sizes = Vec::new();
    let mut timeouts = 0;
    for loop_index in 0..40 {
        if stream.is_none() {
            let connection = dialer.connect().await.expect("connect");
            stream = Some(SubmitStream::open(&connection).await.expect("stream"));
        }
        let limits = LoopLimits {
            batch_size: auto.size(),
            in_flight: auto.in_flight(),
            reply_timeout: Duration::from_secs(5),
            max_message_bytes: 4 * 1024 * 1024,
        };
        let tasks = bench_tasks(loop_index, TASKS);
        sizes.push((limits.batch_size, limits.in_flight));
        // The request of the loop's largest batch as it goes on the wire (with gRPC's header):
        // what the link's black hole measures (a reply travels the other way).
        let largest_request = GRPC_FRAME_HEADER_BYTES
            + SubmitBatch {
                batch_id: u64::MAX,
                tasks: tasks[..limits.batch_size.min(TASKS)].to_vec(),
            }
            .encoded_len() as u64;
        let outcome = submit_turbo(stream.as_ref().expect("open"), tasks, limits, &batch_ids).await;
        let timed_out = outcome.deliveries.iter().any(|(_, d)| {
            matches!(
                d,
                Delivery::Retry {
                    timed_out_batch: Some(_),
                    ..
                }
            )
        });
        if timed_out {
            timeouts += 1;
            // The connection is stalled behind the swallowed burst: a fresh one, as the
            // supervisor does.
            stream = None;
        }
        if loop_index >= 20 {
            assert!(!timed_out, "loop {loop_index} still timed out: {limits:?}");
            settled_requests.push(largest_request);
        }
        auto.observe(&LoopSample {
            items: TASKS,
            batch_size: limits.batch_size,
            in_flight: limits.in_flight,
            elapsed: outcome.elapsed,
            bytes: outcome.packets_bytes.iter().sum(),
            completed: outcome.completed(),
            timed_out,
        });
    }
    assert!(
        timeouts >= 1,
        "from 1,000 the first loop must hit the black hole: {sizes:?}"
    );
    let largest = settled_requests.iter().copied().max().unwrap_or(0);
    assert!(
        largest <= BLACKHOLE_BYTES as u64,
        "settled on requests of {largest} bytes, over the {BLACKHOLE_BYTES}-byte black hole: {sizes:?}"
    );
}
