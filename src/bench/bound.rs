//! Pure arithmetic: the physical bound of a loop (what the link alone forces), the packet sizes
//! a batch size will produce, the largest message a run must accept, and the estimate of how
//! long a run takes.
//!
//! The bound of a turbo-on loop is two one-way latencies (the first batch out, the last ack back)
//! plus the loop's bytes on the busier direction ÷ the bandwidth. Turbo off opens one connection
//! per task, `max_connections` at a time: each wave of connections pays a connect round trip and
//! the two one-way latencies of its call, and the waves' bytes add up to the loop's bytes, so the
//! bound is `waves × (round trip + 2 × latency) + busier bytes ÷ bandwidth`. With TLS each new
//! connection pays one more round trip (a TLS 1.3 handshake) before its call; its bytes are in the
//! measured loop bytes already. Loss is left out: it is random, and the bound is what every loop
//! must pay.

use std::time::Duration;

use prost::Message;

use super::plan::{Combination, LoopBytes, RunSettings, TurboMode, bench_tasks};
use crate::config::defaults;
use crate::link::LinkProfile;
use crate::proto::{
    StatusBatch, StatusQuery, SubmitAck, SubmitBatch, SubmitOneReply, SubmitOneRequest, Task,
    TaskAck, TaskState, TaskStatus,
};
use crate::wire::batch::{GRPC_FRAME_HEADER_BYTES, framed_bytes};

/// The two numbers of a link the bound depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkShape {
    /// One-way latency.
    pub latency: Duration,
    /// Bandwidth of each direction in bits per second; `None` is unlimited.
    pub bandwidth_bps: Option<u64>,
}

impl From<&LinkProfile> for LinkShape {
    fn from(profile: &LinkProfile) -> Self {
        Self {
            latency: profile.latency,
            bandwidth_bps: profile.bandwidth_bps,
        }
    }
}

impl LinkShape {
    /// Twice the one-way latency.
    pub fn round_trip(&self) -> Duration {
        self.latency.saturating_mul(2)
    }

    /// How long `bytes` take to leave at this link's bandwidth (zero when unlimited).
    pub fn transfer_time(&self, bytes: u64) -> Duration {
        match self.bandwidth_bps {
            None | Some(0) => Duration::ZERO,
            Some(bps) => {
                let nanos = u128::from(bytes) * 8 * 1_000_000_000 / u128::from(bps);
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
        }
    }
}

/// The bound of one turbo-on loop: two one-way latencies plus the busier direction's bytes ÷
/// bandwidth.
pub fn turbo_loop_bound(link: &LinkShape, bytes: LoopBytes) -> Duration {
    link.round_trip() + link.transfer_time(bytes.busier())
}

/// The bound of one turbo-off loop of `calls` calls, `max_connections` connections at a time:
/// per wave a connect round trip (two with `tls`) plus two one-way latencies, plus the busier
/// direction's bytes ÷ bandwidth.
pub fn unary_loop_bound(
    link: &LinkShape,
    bytes: LoopBytes,
    calls: usize,
    max_connections: usize,
    tls: bool,
) -> Duration {
    let waves = calls.div_ceil(max_connections.max(1));
    let handshakes = if tls { 2 } else { 1 };
    let per_wave = link.round_trip() * (handshakes + 1);
    per_wave.saturating_mul(u32::try_from(waves).unwrap_or(u32::MAX))
        + link.transfer_time(bytes.busier())
}

/// The bound of one submission loop in `mode` over `link`, or `None` where there is no link to
/// bound it (`bare` runs without one).
pub fn loop_bound(
    link: &LinkShape,
    mode: TurboMode,
    bytes: LoopBytes,
    tasks: usize,
    max_connections: usize,
    tls: bool,
) -> Option<Duration> {
    match mode {
        TurboMode::On => Some(turbo_loop_bound(link, bytes)),
        TurboMode::Off => Some(unary_loop_bound(link, bytes, tasks, max_connections, tls)),
        TurboMode::Bare => None,
    }
}

/// Bytes of one submission packet (framed batch plus framed ack) of `batch_size` bench tasks.
pub fn submit_packet_bytes(batch_size: usize) -> u64 {
    let (request, reply) = submit_message_bytes(batch_size);
    request + reply
}

/// Framed bytes of one submission batch of `batch_size` bench tasks, and of its ack.
pub fn submit_message_bytes(batch_size: usize) -> (u64, u64) {
    let tasks = bench_tasks(0, batch_size);
    let ack = SubmitAck {
        batch_id: u64::MAX,
        acks: tasks.iter().map(accepted).collect(),
        error: None,
    };
    (
        framed_bytes(&SubmitBatch {
            batch_id: u64::MAX,
            tasks,
        }),
        framed_bytes(&ack),
    )
}

/// Bytes of one status packet of `batch_size` ids (and as many release ids, as a steady monitor
/// loop carries) with its reply. The engine's status messages are not known in advance, so this
/// counts them empty: a lower estimate.
pub fn status_packet_bytes(batch_size: usize) -> u64 {
    let (request, reply) = status_message_bytes(batch_size);
    request + reply
}

/// Framed bytes of one status query of `batch_size` ids (and as many release ids), and of its
/// reply (finished statuses without messages or perfdata).
pub fn status_message_bytes(batch_size: usize) -> (u64, u64) {
    let ids: Vec<String> = bench_tasks(0, batch_size)
        .into_iter()
        .map(|t| t.id)
        .collect();
    let reply = StatusBatch {
        batch_id: u64::MAX,
        statuses: ids.iter().map(|id| finished_status(id)).collect(),
        error: None,
    };
    (
        framed_bytes(&StatusQuery {
            batch_id: u64::MAX,
            task_ids: ids.clone(),
            release_ids: ids,
        }),
        framed_bytes(&reply),
    )
}

/// What one message costs on the wire besides its gRPC frame, counted as if each message went
/// in its own HTTP/2 DATA frame and its own TLS record: the frame header (9 bytes) and the
/// record's header, content type and tag (22 bytes).
pub const MESSAGE_OVERHEAD_BYTES: u64 = HTTP2_FRAME_HEADER_BYTES + TLS_RECORD_OVERHEAD_BYTES;

/// TLS 1.3 record header (5), inner content type (1) and AEAD tag (16).
const TLS_RECORD_OVERHEAD_BYTES: u64 = 22;

/// The link's share of one turbo-on loop of `items` in batches of `batch_size`, at most
/// `in_flight` batches at a time: a round trip per round of batches in flight, plus the busier
/// direction's bytes ÷ bandwidth, the bytes being each message as `message_bytes` sizes it
/// (request, reply) plus [`MESSAGE_OVERHEAD_BYTES`]. Processing on either side is left out: it
/// is what the link alone makes the loop cost, and what two batch sizes differ by on this link.
pub fn turbo_loop_model(
    link: &LinkShape,
    message_bytes: impl Fn(usize) -> (u64, u64),
    items: usize,
    batch_size: usize,
    in_flight: usize,
) -> Duration {
    let batch_size = batch_size.clamp(1, items.max(1));
    let full = items / batch_size;
    let rest = items % batch_size;
    let (mut requests, mut replies) = (0u64, 0u64);
    let mut add = |size: usize, count: usize| {
        let (request, reply) = message_bytes(size);
        let count = count as u64;
        requests += (request + MESSAGE_OVERHEAD_BYTES) * count;
        replies += (reply + MESSAGE_OVERHEAD_BYTES) * count;
    };
    add(batch_size, full);
    if rest > 0 {
        add(rest, 1);
    }
    let batches = items.div_ceil(batch_size).max(1);
    let rounds = batches.div_ceil(in_flight.max(1));
    link.round_trip()
        .saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX))
        + link.transfer_time(requests.max(replies))
}

fn accepted(task: &Task) -> TaskAck {
    crate::wire::refusal::accepted(task.id.clone(), false)
}

fn finished_status(id: &str) -> TaskStatus {
    TaskStatus {
        task_id: id.to_string(),
        state: TaskState::Ok as i32,
        value: 1.0,
        message: String::new(),
        started_unix_ms: 1_700_000_000_000,
        finished_unix_ms: 1_700_000_000_000,
        attempt: 1,
        perfdata: Vec::new(),
    }
}

/// Largest message either side accepts: the default, or room for the largest packet.
pub(super) fn bench_message_bytes(largest_packet_bytes: u64) -> usize {
    let needed = usize::try_from(largest_packet_bytes.saturating_mul(2)).unwrap_or(usize::MAX);
    defaults::max_message_bytes().max(needed)
}

/// Processing time allowed per task in the run-time estimate (both sides, debug builds included).
const ESTIMATE_CPU_PER_TASK: Duration = Duration::from_micros(40);
/// Processing time allowed per batch or call message.
const ESTIMATE_CPU_PER_MESSAGE: Duration = Duration::from_micros(100);
/// Processing time allowed per new connection (turbo off).
const ESTIMATE_CPU_PER_CONNECTION: Duration = Duration::from_micros(400);
/// Setting up one combination: engine start, connection, streams, shutdown.
const ESTIMATE_SETUP: Duration = Duration::from_millis(100);
/// HTTP/2 bytes a new connection and one unary call add around the message (preface, settings,
/// headers, trailers), per direction, for the estimate only.
const ESTIMATE_UNARY_OVERHEAD_BYTES: u64 = 400;
/// HTTP/2 DATA frame header per message.
const HTTP2_FRAME_HEADER_BYTES: u64 = 9;

/// Estimated bytes of one loop in `mode` on the busier direction.
fn estimated_loop_bytes(mode: TurboMode, batch_size: usize, tasks: usize) -> u64 {
    let sample = bench_tasks(0, 1);
    let task_bytes = sample.first().map_or(100, |t| t.encoded_len() as u64 + 2);
    let per_message = GRPC_FRAME_HEADER_BYTES + HTTP2_FRAME_HEADER_BYTES + 8;
    match mode {
        TurboMode::Off => {
            let call = sample.into_iter().next().map_or(100, |task| {
                framed_bytes(&SubmitOneRequest { task: Some(task) })
            });
            let reply = framed_bytes(&SubmitOneReply { ack: None }) + 60;
            (call.max(reply) + ESTIMATE_UNARY_OVERHEAD_BYTES) * tasks as u64
        }
        TurboMode::On | TurboMode::Bare => {
            let batches = tasks.div_ceil(batch_size.max(1)) as u64;
            task_bytes * tasks as u64 + per_message * batches
        }
    }
}

/// Estimated duration of one loop (submission or monitor; they have the same shape).
fn estimate_loop(combination: &Combination, settings: &RunSettings) -> Duration {
    let tasks = settings.tasks;
    let cpu = |per_task: Duration, messages: usize| {
        per_task.saturating_mul(tasks as u32)
            + ESTIMATE_CPU_PER_MESSAGE.saturating_mul(u32::try_from(messages).unwrap_or(u32::MAX))
    };
    let bytes = estimated_loop_bytes(combination.turbo, combination.batch_size, tasks);
    let link = combination.link.profile.as_ref().map(LinkShape::from);
    match combination.turbo {
        TurboMode::Off => {
            let connections = ESTIMATE_CPU_PER_CONNECTION
                .saturating_mul(u32::try_from(tasks).unwrap_or(u32::MAX))
                / u32::try_from(settings.max_connections.clamp(1, 4)).unwrap_or(1);
            let shaped = link.map_or(Duration::ZERO, |l| {
                unary_loop_bound(
                    &l,
                    LoopBytes {
                        client_to_server: bytes,
                        server_to_client: 0,
                    },
                    tasks,
                    settings.max_connections,
                    !settings.plaintext,
                )
            });
            shaped + connections + cpu(ESTIMATE_CPU_PER_TASK, tasks)
        }
        TurboMode::On | TurboMode::Bare => {
            let batches = tasks.div_ceil(combination.batch_size.max(1));
            let rounds = batches.div_ceil(settings.max_inflight_batches.max(1));
            let shaped = link.map_or(Duration::ZERO, |l| {
                l.round_trip()
                    .saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX))
                    + l.transfer_time(bytes)
            });
            shaped + cpu(ESTIMATE_CPU_PER_TASK, batches)
        }
    }
}

/// Estimated duration of one combination: setup plus its submission and monitor loops.
pub fn estimate_combination(combination: &Combination, settings: &RunSettings) -> Duration {
    let setup = ESTIMATE_SETUP
        + combination
            .link
            .profile
            .as_ref()
            .map_or(Duration::ZERO, |p| LinkShape::from(p).round_trip() * 3);
    setup
        + estimate_loop(combination, settings)
            .saturating_mul(u32::try_from(combination.loops(settings) * 2).unwrap_or(u32::MAX))
}

/// Estimated duration of a whole run.
pub fn estimate_plan(combinations: &[Combination], settings: &RunSettings) -> Duration {
    combinations
        .iter()
        .map(|c| estimate_combination(c, settings))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wan() -> LinkShape {
        LinkShape {
            latency: Duration::from_millis(25),
            bandwidth_bps: Some(10_000_000),
        }
    }

    #[test]
    fn turbo_bound_on_wan_is_two_latencies_plus_the_busier_direction_at_ten_megabit() {
        // 31,250 bytes at 10 Mbit/s take exactly 25 ms; the quieter direction does not count.
        let bytes = LoopBytes {
            client_to_server: 31_250,
            server_to_client: 5_000,
        };
        assert_eq!(turbo_loop_bound(&wan(), bytes), Duration::from_millis(75));
        let reversed = LoopBytes {
            client_to_server: 5_000,
            server_to_client: 31_250,
        };
        assert_eq!(
            turbo_loop_bound(&wan(), reversed),
            Duration::from_millis(75)
        );
    }

    #[test]
    fn turbo_off_bound_pays_a_connect_round_trip_and_a_call_per_wave() {
        // 300 calls, 10 connections at a time: 30 waves of 100 ms, plus 12,500 bytes = 10 ms.
        let bytes = LoopBytes {
            client_to_server: 12_500,
            server_to_client: 100,
        };
        assert_eq!(
            unary_loop_bound(&wan(), bytes, 300, 10, false),
            Duration::from_millis(3_010)
        );
        // TLS: one more round trip per wave for the handshake.
        assert_eq!(
            unary_loop_bound(&wan(), bytes, 300, 10, true),
            Duration::from_millis(4_510)
        );
        // A partial last wave is still a wave.
        assert_eq!(
            unary_loop_bound(&wan(), LoopBytes::default(), 301, 10, false),
            Duration::from_millis(3_100)
        );
    }

    #[test]
    fn unlimited_bandwidth_costs_no_transfer_time_and_bare_has_no_bound() {
        let lan_unlimited = LinkShape {
            latency: Duration::from_micros(100),
            bandwidth_bps: None,
        };
        let bytes = LoopBytes {
            client_to_server: 1 << 30,
            server_to_client: 0,
        };
        assert_eq!(
            turbo_loop_bound(&lan_unlimited, bytes),
            Duration::from_micros(200)
        );
        assert_eq!(
            loop_bound(&wan(), TurboMode::Bare, bytes, 300, 10, true),
            None
        );
    }

    #[test]
    fn the_loop_model_counts_a_round_trip_per_round_and_the_busier_direction() {
        // Two messages of 1,000 and 200 bytes per batch: 10 batches, 4 in flight, 3 rounds.
        let messages = |size: usize| (100 * size as u64, 20 * size as u64);
        let link = wan();
        let requests = 10 * (1_000 + MESSAGE_OVERHEAD_BYTES);
        assert_eq!(
            turbo_loop_model(&link, messages, 100, 10, 4),
            Duration::from_millis(150) + link.transfer_time(requests)
        );
        // A last, partial batch is counted at its own size.
        let partial = 9 * (900 + MESSAGE_OVERHEAD_BYTES) + (100 + MESSAGE_OVERHEAD_BYTES);
        assert_eq!(
            turbo_loop_model(&link, messages, 82, 9, 64),
            Duration::from_millis(50) + link.transfer_time(partial)
        );
    }

    #[test]
    fn packets_grow_with_the_batch_size() {
        let one = submit_packet_bytes(1);
        let thirty = submit_packet_bytes(30);
        assert!(thirty > 20 * one, "30 tasks {thirty} B vs 1 task {one} B");
        assert!(status_packet_bytes(30) > status_packet_bytes(10));
    }
}
