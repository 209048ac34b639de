//! The batch-size recommendation: for submission and for status checks, the smallest batch
//! whose loop time is within 5 % of the best, never one whose packets exceed the link's
//! black-hole size or the safe packet cap. [`recommend`] is pure; [`run_cli`] is `turbomon tune`
//! (a sweep of turbo-on loops over one link), and [`recommend_from_rows`] serves
//! `bench --recommend` (from the rows' medians).
//!
//! `tune` decides on a trimmed mean ([`trimmed_mean`]): the slower half of the loops (where
//! retransmission timeouts land: loss only ever adds time, and on `lossy-wan` about one loop in
//! five of 300 tasks meets one) and the fastest tenth are left out and the rest averaged, over
//! 16 loops by default, so lost segments do not move the recommendation the way they moved a
//! 9-loop median. A size counts as within 5 % of the best also when it is over the line by no
//! more than the spread of single loops (one standard deviation of its kept loops plus one of
//! the best's): on a shared machine one run's trimmed means move by about that much from the
//! next run's, more than their standard errors say, so sizes closer than that cannot be told
//! apart, and the smallest of them wins in every run instead of whichever size the noise of one
//! run happened to put under the line. Ties go to the smaller batch.
//!
//! On a simulated link a size also counts as within when the link model
//! ([`bound::turbo_loop_model`]: a round trip per round of batches in flight plus the busier
//! direction's bytes ÷ bandwidth) puts its loop within 5 % of the best's and it measures within
//! [`HOST_TOLERANCE`] (15 %) of the best. The rounds of batches in flight are the only large
//! step in a latency-bound curve; between sizes the link costs the same, what is left is the
//! host's (processing, scheduling, and whether messages that are ready together leave in one
//! HTTP/2 frame, which decides whether the engine can answer the first batch before the last
//! has arrived), and it moved `lossy-wan`'s monitor loops by about 10 % between runs, enough to
//! flip a recommendation made on the 5 % line alone. Where the link charges for small batches
//! (their framing at modem speed) the model says so and the 5 % line decides.
//!
//! Packets are compared whole (request plus reply), which is never smaller than the larger of
//! the two messages: a conservative test against a black hole that stalls on one message. The
//! batches in flight leave together, so the link sees them as one burst: [`burst_in_flight`]
//! gives the most batches in flight whose burst stays under the black hole, and a batch size is
//! measured (and recommended) with that many, `max_inflight_batches` recommended alongside.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::args::TuneArgs;
use super::bound;
use super::error::BenchError;
use super::plan::{BenchPlan, LinkChoice, Measurement, TurboMode};
use super::report::Row;
use super::run::{progress_bar, run_combination};

/// How close to the best loop time a smaller batch must come to be preferred: 5 %.
pub const WITHIN_BEST: f64 = 0.05;

/// Which loop a recommendation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopKind {
    /// Submission loops: `task_submit_batch_size`.
    Submission,
    /// Status checks (monitor loops): `task_info_batch_size`.
    Status,
}

impl LoopKind {
    /// The configuration key the recommendation is for.
    pub fn config_key(self) -> &'static str {
        match self {
            LoopKind::Submission => "task_submit_batch_size",
            LoopKind::Status => "task_info_batch_size",
        }
    }

    fn loop_name(self) -> &'static str {
        match self {
            LoopKind::Submission => "submission loop",
            LoopKind::Status => "monitor loop",
        }
    }
}

/// One measured batch size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Tasks (or ids) per batch.
    pub batch_size: usize,
    /// Loop time at that size (trimmed mean for `tune`, median for `bench --recommend`).
    pub loop_time: Duration,
    /// Largest packet (request plus reply) seen at that size, in bytes.
    pub max_packet_bytes: u64,
    /// Batches in flight it was measured with when fewer than asked, so that the burst of
    /// batches leaving together stays under the link's black hole.
    pub in_flight_cap: Option<usize>,
    /// Standard deviation of the loops `loop_time` averages (zero when unknown): how far apart
    /// two sizes' loop times may be from noise alone.
    pub spread: Duration,
    /// The link's share of the loop at that size, from the link model
    /// ([`bound::turbo_loop_model`]): round trips per round of batches in flight plus bytes ÷
    /// bandwidth. `None` without a simulated link.
    pub link_time: Option<Duration>,
}

/// Standard deviations (the candidate's plus the best's) a candidate may be above the 5 % line
/// and still count as within it.
pub const NOISE_ALLOWANCE: f64 = 1.0;

/// How far above the best a size may measure and still count as as fast when the link model
/// says the link costs it no more than the best (within [`WITHIN_BEST`]): what is left between
/// them is the host's (processing, scheduling, how ready messages share frames and records),
/// which moves from one run to the next by about 10 % on a shared machine.
pub const HOST_TOLERANCE: f64 = 0.15;

/// Fraction of the slowest loops a trimmed mean leaves out.
pub const TRIM_SLOWEST: f64 = 0.5;
/// Fraction of the fastest loops a trimmed mean leaves out.
pub const TRIM_FASTEST: f64 = 0.10;

/// The mean of `durations` without the slowest [`TRIM_SLOWEST`] and the fastest
/// [`TRIM_FASTEST`] (at least one loop is kept).
pub fn trimmed_mean(durations: &[Duration]) -> Duration {
    trimmed(durations).0
}

/// The trimmed mean and the standard deviation of the loops it kept (zero with fewer than two).
pub fn trimmed(durations: &[Duration]) -> (Duration, Duration) {
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    if n == 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let low = (n as f64 * TRIM_FASTEST).floor() as usize;
    let high = n - (n as f64 * TRIM_SLOWEST).floor() as usize;
    let kept = &sorted[low.min(n - 1)..high.max(low + 1).min(n)];
    let mean = kept.iter().sum::<Duration>() / kept.len() as u32;
    if kept.len() < 2 {
        return (mean, Duration::ZERO);
    }
    let m = mean.as_secs_f64();
    let variance = kept
        .iter()
        .map(|d| (d.as_secs_f64() - m).powi(2))
        .sum::<f64>()
        / (kept.len() - 1) as f64;
    (mean, Duration::from_secs_f64(variance.sqrt()))
}

/// The most batches of `packet_bytes` that may be in flight together (out of `asked`, for a
/// loop of `batches`) without their burst going over `blackhole_bytes`; `None` when the loop's
/// burst fits as asked, `Some(0)` when even one packet does not.
pub fn burst_in_flight(
    packet_bytes: u64,
    batches: usize,
    asked: usize,
    blackhole_bytes: Option<u64>,
) -> Option<usize> {
    let limit = blackhole_bytes?;
    let together = asked.min(batches).max(1);
    if packet_bytes.saturating_mul(together as u64) <= limit {
        return None;
    }
    Some(usize::try_from(limit / packet_bytes.max(1)).unwrap_or(usize::MAX))
}

/// The packet limits a recommendation respects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketCaps {
    /// The link's black-hole size, if it has one.
    pub blackhole_bytes: Option<u64>,
    /// The safe cap (`--max-packet-kb`).
    pub safe_packet_bytes: u64,
}

/// Why a batch size cannot be recommended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "cap", rename_all = "snake_case")]
pub enum Refusal {
    /// Its packets exceed the link's black-hole size: they would stall the connection.
    BlackHole {
        /// Packet size, bytes.
        packet_bytes: u64,
        /// The black-hole size, bytes.
        limit_bytes: u64,
    },
    /// Its packets exceed the safe cap.
    SafeCap {
        /// Packet size, bytes.
        packet_bytes: u64,
        /// The cap, bytes.
        limit_bytes: u64,
    },
    /// It was not measured (its other loop's packets are over a cap, or the run failed).
    NotMeasured {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::BlackHole {
                packet_bytes,
                limit_bytes,
            } => write!(
                f,
                "packets of {} over the link's {} black hole",
                kb(*packet_bytes),
                kb(*limit_bytes)
            ),
            Refusal::SafeCap {
                packet_bytes,
                limit_bytes,
            } => write!(
                f,
                "packets of {} over the {} safe cap",
                kb(*packet_bytes),
                kb(*limit_bytes)
            ),
            Refusal::NotMeasured { reason } => write!(f, "not measured: {reason}"),
        }
    }
}

/// A batch size left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusedSize {
    /// The batch size.
    pub batch_size: usize,
    /// Why.
    #[serde(flatten)]
    pub refusal: Refusal,
}

/// What to set, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// Which loop.
    pub kind: LoopKind,
    /// The configuration key to set.
    pub config_key: &'static str,
    /// The recommended batch size.
    pub batch_size: usize,
    /// Its median loop time, seconds.
    pub loop_s: f64,
    /// Its largest packet, bytes.
    pub max_packet_bytes: u64,
    /// The batch size with the shortest loop.
    pub best_batch_size: usize,
    /// That shortest loop, seconds.
    pub best_loop_s: f64,
    /// `max_inflight_batches` to set with it, when the link's black hole needs fewer batches
    /// in flight than asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_inflight_batches: Option<usize>,
    /// Batch sizes refused, and why.
    pub refused: Vec<RefusedSize>,
    /// One or two sentences saying why.
    pub reason: String,
}

/// Why no recommendation could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no {kind} batch size can be recommended: {}", describe_refusals(.refused).unwrap_or_else(|| "none was measured".to_string()))]
pub struct NoCandidate {
    /// Which loop.
    pub kind: &'static str,
    /// Every size left out, and why.
    pub refused: Vec<RefusedSize>,
}

/// Whether a packet of `packet_bytes` is over a cap (the black hole is checked first).
pub fn refusal(packet_bytes: u64, caps: &PacketCaps) -> Option<Refusal> {
    if let Some(limit_bytes) = caps.blackhole_bytes
        && packet_bytes > limit_bytes
    {
        return Some(Refusal::BlackHole {
            packet_bytes,
            limit_bytes,
        });
    }
    (packet_bytes > caps.safe_packet_bytes).then_some(Refusal::SafeCap {
        packet_bytes,
        limit_bytes: caps.safe_packet_bytes,
    })
}

fn kb(bytes: u64) -> String {
    format!("{:.1} KB", bytes as f64 / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn describe_refusals(refused: &[RefusedSize]) -> Option<String> {
    if refused.is_empty() {
        return None;
    }
    Some(
        refused
            .iter()
            .map(|r| format!("{} ({})", r.batch_size, r.refusal))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Recommend a batch size for `kind` from measured `candidates`: refuse those whose packets
/// exceed `caps`, then take the smallest whose loop time is within [`WITHIN_BEST`] of the best
/// remaining one. `already_refused` (sizes never measured) are reported with the rest.
pub fn recommend(
    kind: LoopKind,
    candidates: &[Candidate],
    already_refused: Vec<RefusedSize>,
    caps: &PacketCaps,
) -> Result<Recommendation, NoCandidate> {
    let mut refused = already_refused;
    let mut allowed: Vec<Candidate> = Vec::new();
    for candidate in candidates {
        match refusal(candidate.max_packet_bytes, caps) {
            Some(refusal) => refused.push(RefusedSize {
                batch_size: candidate.batch_size,
                refusal,
            }),
            None => allowed.push(*candidate),
        }
    }
    refused.sort_by_key(|r| r.batch_size);
    allowed.sort_by_key(|c| c.batch_size);
    let Some(best) = allowed
        .iter()
        .min_by(|a, b| {
            a.loop_time
                .cmp(&b.loop_time)
                .then(a.batch_size.cmp(&b.batch_size))
        })
        .copied()
    else {
        return Err(NoCandidate {
            kind: kind.loop_name(),
            refused,
        });
    };
    let measured_within = |c: &Candidate| {
        let noise = NOISE_ALLOWANCE * (best.spread + c.spread).as_secs_f64();
        c.loop_time.as_secs_f64() <= best.loop_time.as_secs_f64() * (1.0 + WITHIN_BEST) + noise
    };
    let chosen = allowed
        .iter()
        .find(|c| measured_within(c) || same_link_cost(c, &best))
        .copied()
        .unwrap_or(best);
    let mut reason = if chosen.batch_size == best.batch_size {
        format!(
            "Batch {} gives the shortest {} ({}) and no smaller batch comes within {}% of it; its packets reach {}.",
            chosen.batch_size,
            kind.loop_name(),
            ms(chosen.loop_time),
            WITHIN_BEST * 100.0,
            kb(chosen.max_packet_bytes)
        )
    } else {
        format!(
            "Batch {} is the smallest whose {} ({}) is within {}% of the best ({} at batch {}), with packets of {} instead of {}.",
            chosen.batch_size,
            kind.loop_name(),
            ms(chosen.loop_time),
            WITHIN_BEST * 100.0,
            ms(best.loop_time),
            best.batch_size,
            kb(chosen.max_packet_bytes),
            kb(best.max_packet_bytes)
        )
    };
    if !measured_within(&chosen) {
        reason.push_str(&format!(
            " The link model costs it within {}% of the best ({} against {}: the same rounds of batches in flight, about the same bytes) and it measures within {}% of the best: what is left between them is the host's, which moves by about as much from one run to the next.",
            WITHIN_BEST * 100.0,
            chosen.link_time.map(ms).unwrap_or_default(),
            best.link_time.map(ms).unwrap_or_default(),
            HOST_TOLERANCE * 100.0
        ));
    } else if chosen.loop_time.as_secs_f64() > best.loop_time.as_secs_f64() * (1.0 + WITHIN_BEST) {
        reason.push_str(&format!(
            " It is over the {}% line by less than the spread of single loops (a standard deviation of each), so the run cannot tell it from the line.",
            WITHIN_BEST * 100.0
        ));
    }
    if let Some(cap) = chosen.in_flight_cap {
        reason.push_str(&format!(
            " Batches in flight leave together: at most {cap} at a time keep the burst under the link's black hole (set max_inflight_batches = {cap})."
        ));
    }
    if let Some(list) = describe_refusals(&refused) {
        reason.push_str(&format!(" Refused: {list}."));
    }
    Ok(Recommendation {
        kind,
        config_key: kind.config_key(),
        batch_size: chosen.batch_size,
        loop_s: chosen.loop_time.as_secs_f64(),
        max_packet_bytes: chosen.max_packet_bytes,
        best_batch_size: best.batch_size,
        best_loop_s: best.loop_time.as_secs_f64(),
        max_inflight_batches: chosen.in_flight_cap,
        refused,
        reason,
    })
}

/// Whether the link model puts `candidate`'s loop within [`WITHIN_BEST`] of `best`'s (so it
/// needs the same rounds of batches in flight and about the same bytes) and it measures within
/// [`HOST_TOLERANCE`] of it. Without a link model, never.
fn same_link_cost(candidate: &Candidate, best: &Candidate) -> bool {
    let (Some(link), Some(best_link)) = (candidate.link_time, best.link_time) else {
        return false;
    };
    link.as_secs_f64() <= best_link.as_secs_f64() * (1.0 + WITHIN_BEST)
        && candidate.loop_time.as_secs_f64()
            <= best.loop_time.as_secs_f64() * (1.0 + HOST_TOLERANCE)
}

/// The link model's share of a loop of `kind` at `batch_size` (`None` without a link).
fn link_time(
    link: &LinkChoice,
    kind: LoopKind,
    items: usize,
    batch_size: usize,
    in_flight: usize,
) -> Option<Duration> {
    let shape = bound::LinkShape::from(link.profile.as_ref()?);
    let messages = match kind {
        LoopKind::Submission => bound::submit_message_bytes,
        LoopKind::Status => bound::status_message_bytes,
    };
    Some(bound::turbo_loop_model(
        &shape, messages, items, batch_size, in_flight,
    ))
}

fn median(durations: &[Duration]) -> Duration {
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() - 1) / 2]
}

fn caps_for(link: &LinkChoice, safe_packet_bytes: u64) -> PacketCaps {
    PacketCaps {
        blackhole_bytes: link
            .profile
            .as_ref()
            .and_then(|p| p.blackhole_bytes)
            .map(|b| b as u64),
        safe_packet_bytes,
    }
}

/// A one-line description of a link for reports.
pub fn describe_link(link: &LinkChoice) -> String {
    match &link.profile {
        None => format!("{} (plain loopback, no simulated link)", link.name),
        Some(p) => {
            let bandwidth = p.bandwidth_bps.map_or_else(
                || "unlimited".to_string(),
                |bps| format!("{}/s", crate::link::format_bandwidth(bps)),
            );
            let mut text = format!(
                "{}: {} one-way, {bandwidth} each way, {}% loss",
                link.name,
                humantime::format_duration(p.latency),
                p.loss * 100.0
            );
            if let Some(bytes) = p.blackhole_bytes {
                text.push_str(&format!(", black hole above {bytes} bytes"));
            }
            text
        }
    }
}

/// The sweep's measurements for one batch size.
#[derive(Debug, Clone, Serialize)]
struct SweepPoint {
    batch_size: usize,
    /// Batches in flight it ran with (fewer than asked under a black hole).
    in_flight: usize,
    /// Trimmed mean: what the recommendation compares.
    submit_loop_s: f64,
    /// Standard deviation of the loops the trimmed mean kept.
    submit_loop_sd_s: f64,
    submit_loop_p50_s: f64,
    submit_packet_max_kb: f64,
    monitor_loop_s: f64,
    monitor_loop_sd_s: f64,
    monitor_loop_p50_s: f64,
    monitor_packet_max_kb: f64,
}

/// What `tune --json` prints.
#[derive(Debug, Serialize)]
struct TuneReport {
    link: String,
    tasks: usize,
    loops: usize,
    sweep: Vec<SweepPoint>,
    task_submit_batch_size: Option<Recommendation>,
    task_info_batch_size: Option<Recommendation>,
    errors: Vec<String>,
}

/// `turbomon tune`: sweep, recommend, print.
pub async fn run_cli(args: TuneArgs) -> Result<(), BenchError> {
    let plan = args.plan()?;
    let Some(link) = plan.combinations.first().map(|c| c.link.clone()) else {
        return Err(BenchError::InvalidArgument {
            flag: "--batch-sizes",
            reason: "give at least one batch size".to_string(),
        });
    };
    let caps = caps_for(&link, plan.safe_packet_bytes);
    let mut submit_refused = Vec::new();
    let mut status_refused = Vec::new();
    let mut to_run = Vec::new();
    for combination in &plan.combinations {
        let b = combination.batch_size;
        let submit = refusal(bound::submit_packet_bytes(b), &caps);
        let status = refusal(bound::status_packet_bytes(b), &caps);
        if submit.is_none() && status.is_none() {
            to_run.push(combination.clone());
            continue;
        }
        let skipped = |own: Option<Refusal>, other: &Option<Refusal>, other_name: &str| {
            own.unwrap_or_else(|| Refusal::NotMeasured {
                reason: format!(
                    "its {other_name} {}",
                    other.as_ref().map(|r| r.to_string()).unwrap_or_default()
                ),
            })
        };
        submit_refused.push(RefusedSize {
            batch_size: b,
            refusal: skipped(submit.clone(), &status, "status"),
        });
        status_refused.push(RefusedSize {
            batch_size: b,
            refusal: skipped(status, &submit, "submission"),
        });
    }
    let progress = progress_bar((to_run.len() * plan.settings.loops * 2) as u64, args.json);
    let deadline = tokio::time::Instant::now() + plan.max_time;
    let mut measured: Vec<(usize, Option<usize>, Measurement)> = Vec::new();
    for (done, combination) in to_run.iter().enumerate() {
        progress.set_message(combination.to_string());
        let b = combination.batch_size;
        let packet = bound::submit_packet_bytes(b).max(bound::status_packet_bytes(b));
        let in_flight_cap = burst_in_flight(
            packet,
            plan.settings.tasks.div_ceil(b),
            plan.settings.max_inflight_batches,
            caps.blackhole_bytes,
        );
        let settings = super::plan::RunSettings {
            max_inflight_batches: in_flight_cap.unwrap_or(plan.settings.max_inflight_batches),
            ..plan.settings.clone()
        };
        let outcome =
            tokio::time::timeout_at(deadline, run_combination(combination, &settings, &progress))
                .await;
        match outcome {
            Ok(Ok(m)) => measured.push((b, in_flight_cap, m)),
            Ok(Err(reason)) => {
                for refused in [&mut submit_refused, &mut status_refused] {
                    refused.push(RefusedSize {
                        batch_size: combination.batch_size,
                        refusal: Refusal::NotMeasured {
                            reason: reason.clone(),
                        },
                    });
                }
            }
            Err(_) => {
                progress.finish_and_clear();
                return Err(BenchError::TimedOut {
                    max_time: plan.max_time,
                    combination: combination.to_string(),
                    done,
                    total: to_run.len(),
                });
            }
        }
    }
    progress.finish_and_clear();

    let candidates = |kind: LoopKind| -> Vec<Candidate> {
        measured
            .iter()
            .map(|(batch_size, in_flight_cap, m)| {
                let (loops, packets) = match kind {
                    LoopKind::Submission => (&m.submit_loops, &m.submit_packets),
                    LoopKind::Status => (&m.monitor_loops, &m.monitor_packets),
                };
                let (loop_time, spread) = trimmed(loops);
                let in_flight = in_flight_cap.unwrap_or(plan.settings.max_inflight_batches);
                Candidate {
                    batch_size: *batch_size,
                    loop_time,
                    max_packet_bytes: packets.iter().copied().max().unwrap_or(0),
                    in_flight_cap: *in_flight_cap,
                    spread,
                    link_time: link_time(&link, kind, plan.settings.tasks, *batch_size, in_flight),
                }
            })
            .collect()
    };
    let submit = recommend(
        LoopKind::Submission,
        &candidates(LoopKind::Submission),
        submit_refused,
        &caps,
    );
    let status = recommend(
        LoopKind::Status,
        &candidates(LoopKind::Status),
        status_refused,
        &caps,
    );
    let sweep: Vec<SweepPoint> = measured
        .iter()
        .map(|(batch_size, in_flight_cap, m)| SweepPoint {
            batch_size: *batch_size,
            in_flight: in_flight_cap.unwrap_or(plan.settings.max_inflight_batches),
            submit_loop_s: trimmed_mean(&m.submit_loops).as_secs_f64(),
            submit_loop_sd_s: trimmed(&m.submit_loops).1.as_secs_f64(),
            submit_loop_p50_s: median(&m.submit_loops).as_secs_f64(),
            submit_packet_max_kb: m.submit_packets.iter().copied().max().unwrap_or(0) as f64
                / 1024.0,
            monitor_loop_s: trimmed_mean(&m.monitor_loops).as_secs_f64(),
            monitor_loop_sd_s: trimmed(&m.monitor_loops).1.as_secs_f64(),
            monitor_loop_p50_s: median(&m.monitor_loops).as_secs_f64(),
            monitor_packet_max_kb: m.monitor_packets.iter().copied().max().unwrap_or(0) as f64
                / 1024.0,
        })
        .collect();
    let errors: Vec<String> = [&submit, &status]
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    if args.json {
        let report = TuneReport {
            link: link.name.clone(),
            tasks: plan.settings.tasks,
            loops: plan.settings.loops,
            sweep,
            task_submit_batch_size: submit.clone().ok(),
            task_info_batch_size: status.clone().ok(),
            errors: errors.clone(),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
        );
    } else {
        println!(
            "tune {}\n{} tasks per loop, {} loops per batch size, turbo on, {} batches in flight; loop times are trimmed means (slower half and fastest tenth left out)\n",
            describe_link(&link),
            plan.settings.tasks,
            plan.settings.loops,
            plan.settings.max_inflight_batches
        );
        println!(
            "{:>6}  {:>9}  {:>10}  {:>6}  {:>13}  {:>11}  {:>6}  {:>14}",
            "batch",
            "in flight",
            "submit ms",
            "± sd",
            "submit max KB",
            "monitor ms",
            "± sd",
            "monitor max KB"
        );
        for p in &sweep {
            println!(
                "{:>6}  {:>9}  {:>10.2}  {:>6.2}  {:>13.2}  {:>11.2}  {:>6.2}  {:>14.2}",
                p.batch_size,
                p.in_flight,
                p.submit_loop_s * 1000.0,
                p.submit_loop_sd_s * 1000.0,
                p.submit_packet_max_kb,
                p.monitor_loop_s * 1000.0,
                p.monitor_loop_sd_s * 1000.0,
                p.monitor_packet_max_kb
            );
        }
        println!();
        for recommendation in [&submit, &status].into_iter().flatten() {
            println!(
                "{} = {}\n  {}",
                recommendation.config_key, recommendation.batch_size, recommendation.reason
            );
        }
    }
    match errors.into_iter().next() {
        Some(first) => Err(BenchError::InvalidArgument {
            flag: "--batch-sizes",
            reason: first,
        }),
        None => Ok(()),
    }
}

/// `bench --recommend`: recommendations per link from the turbo-on rows, as text.
pub fn recommend_from_rows(rows: &[Row], plan: &BenchPlan) -> String {
    let mut by_link: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.turbo == TurboMode::On && !r.auto) {
        by_link.entry(row.link.as_str()).or_default().push(row);
    }
    if by_link.is_empty() {
        return "recommendations: none (they need turbo `on` rows)".to_string();
    }
    let mut out = String::from("recommendations (median loop time, within 5% of the best):\n");
    for (link_name, rows) in by_link {
        let link = plan
            .combinations
            .iter()
            .map(|c| &c.link)
            .find(|l| l.name == link_name)
            .cloned()
            .unwrap_or_else(LinkChoice::none);
        let caps = caps_for(&link, plan.safe_packet_bytes);
        let kb_to_bytes = |kb: f64| (kb * 1024.0).round() as u64;
        let candidates = |kind: LoopKind| -> Vec<Candidate> {
            rows.iter()
                .map(|r| {
                    let (p50, max_kb) = match kind {
                        LoopKind::Submission => (r.submit_loop_s.p50, r.submit_packet_kb.max),
                        LoopKind::Status => (r.monitor_loop_s.p50, r.monitor_packet_kb.max),
                    };
                    Candidate {
                        batch_size: r.batch_size,
                        loop_time: Duration::from_secs_f64(p50.max(0.0)),
                        max_packet_bytes: kb_to_bytes(max_kb),
                        in_flight_cap: None,
                        spread: Duration::ZERO,
                        link_time: link_time(
                            &link,
                            kind,
                            plan.settings.tasks,
                            r.batch_size,
                            plan.settings.max_inflight_batches,
                        ),
                    }
                })
                .collect()
        };
        out.push_str(&format!("{}\n", describe_link(&link)));
        for kind in [LoopKind::Submission, LoopKind::Status] {
            match recommend(kind, &candidates(kind), Vec::new(), &caps) {
                Ok(r) => out.push_str(&format!(
                    "  {} = {}\n    {}\n",
                    r.config_key, r.batch_size, r.reason
                )),
                Err(e) => out.push_str(&format!("  {}: {e}\n", kind.config_key())),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(batch_size: usize, loop_ms: u64, packet_bytes: u64) -> Candidate {
        Candidate {
            batch_size,
            loop_time: Duration::from_millis(loop_ms),
            max_packet_bytes: packet_bytes,
            in_flight_cap: None,
            spread: Duration::ZERO,
            link_time: None,
        }
    }

    #[test]
    fn a_size_the_noise_cannot_tell_from_the_five_percent_line_is_within_it() {
        // 5 is 5.7 % slower than 30, but single loops of both spread by 1 ms.
        let noisy = |batch_size, loop_ms, packet_bytes| Candidate {
            spread: Duration::from_millis(1),
            ..candidate(batch_size, loop_ms, packet_bytes)
        };
        let sweep = [noisy(5, 81, 700), noisy(30, 76, 4_000)];
        let r = recommend(LoopKind::Submission, &sweep, Vec::new(), &NO_HOLE).expect("one");
        assert_eq!(r.batch_size, 5);
        let sure = [candidate(5, 81, 700), candidate(30, 76, 4_000)];
        let r = recommend(LoopKind::Submission, &sure, Vec::new(), &NO_HOLE).expect("one");
        assert_eq!(r.batch_size, 30, "without noise 5.7 % is over the line");
    }

    fn builtin(name: &str) -> LinkChoice {
        LinkChoice {
            name: name.to_string(),
            profile: crate::link::builtin_profiles().get(name).cloned(),
        }
    }

    /// A status candidate on `link` for 300 ids, 64 batches in flight, with its link model and
    /// single loops spread by 2 % of its time.
    fn status_on(link: &LinkChoice, batch_size: usize, loop_us: u64) -> Candidate {
        let loop_time = Duration::from_micros(loop_us);
        Candidate {
            batch_size,
            loop_time,
            max_packet_bytes: bound::status_packet_bytes(batch_size),
            in_flight_cap: None,
            spread: loop_time / 50,
            link_time: link_time(link, LoopKind::Status, 300, batch_size, 64),
        }
    }

    #[test]
    fn sizes_the_link_model_costs_the_same_are_told_apart_only_beyond_the_host_tolerance() {
        // Two runs of the monitor loop on lossy-wan as they came: from 5 up one round of
        // batches in flight, the link model within a few per cent, and the measured times moved
        // by the host between runs (30 and 50 fast in one run, 5 to 30 level in the other).
        let link = builtin("lossy-wan");
        let run = |times: &[(usize, u64)]| -> Vec<Candidate> {
            times
                .iter()
                .map(|&(size, us)| status_on(&link, size, us))
                .collect()
        };
        let first = run(&[
            (1, 289_130),
            (2, 185_040),
            (5, 79_920),
            (10, 81_140),
            (20, 81_540),
            (30, 72_300),
            (50, 71_600),
            (100, 74_420),
        ]);
        let second = run(&[
            (1, 290_490),
            (2, 186_200),
            (5, 81_900),
            (10, 81_250),
            (20, 81_700),
            (30, 82_000),
            (50, 78_100),
            (100, 80_620),
        ]);
        for sweep in [&first, &second] {
            let r = recommend(LoopKind::Status, sweep, Vec::new(), &NO_HOLE).expect("one");
            assert_eq!(r.batch_size, 5, "{}", r.reason);
        }
        let r = recommend(LoopKind::Status, &first, Vec::new(), &NO_HOLE).expect("one");
        assert_eq!(r.best_batch_size, 50);
        assert!(r.reason.contains("link model"), "{}", r.reason);
        // 2 needs three rounds of batches in flight: the model sets it apart whatever it measured.
        let two = first[1].link_time.expect("a link");
        let five = first[2].link_time.expect("a link");
        assert!(two > five * 2, "{two:?} vs {five:?}");
    }

    #[test]
    fn beyond_the_host_tolerance_or_where_the_link_charges_for_small_batches_measured_time_decides()
    {
        // lan: the link model is all but free at any size, but 5 measures 40 % slower than 30.
        let lan = builtin("lan");
        let sweep = [status_on(&lan, 5, 1_400), status_on(&lan, 30, 1_000)];
        let r = recommend(LoopKind::Status, &sweep, Vec::new(), &NO_HOLE).expect("one");
        assert_eq!(r.batch_size, 30, "{}", r.reason);
        // modem: each batch's framing costs serialisation time at 56 kbit/s, so the model puts
        // 300 ids in batches of 5 more than 5 % over batches of 50: 5 must measure within 5 %.
        let modem = builtin("modem");
        let five = status_on(&modem, 5, 0).link_time.expect("a link");
        let fifty = status_on(&modem, 50, 0).link_time.expect("a link");
        assert!(
            five.as_secs_f64() > fifty.as_secs_f64() * (1.0 + WITHIN_BEST),
            "{five:?} vs {fifty:?}"
        );
        let sweep = [
            status_on(&modem, 5, 5_600_000),
            status_on(&modem, 50, 5_000_000),
        ];
        let r = recommend(LoopKind::Status, &sweep, Vec::new(), &NO_HOLE).expect("one");
        assert_eq!(r.batch_size, 50, "{}", r.reason);
        // Without a link model (no simulated link) only the 5 % line counts.
        let bare = [candidate(5, 82, 700), candidate(50, 72, 6_700)];
        let r = recommend(LoopKind::Status, &bare, Vec::new(), &NO_HOLE).expect("one");
        assert_eq!(r.batch_size, 50);
    }

    #[test]
    fn a_trimmed_mean_ignores_a_retransmission_timeout_and_the_luckiest_loop() {
        let ms =
            |v: &[u64]| -> Vec<Duration> { v.iter().map(|&m| Duration::from_millis(m)).collect() };
        // Sixteen loops: five hit a 200 ms retransmission timeout, one was unusually fast.
        let loops = ms(&[
            80, 81, 79, 280, 82, 280, 80, 81, 279, 80, 60, 281, 80, 290, 80, 81,
        ]);
        let mean = trimmed_mean(&loops);
        assert!(
            (Duration::from_millis(79)..=Duration::from_millis(81)).contains(&mean),
            "{mean:?}"
        );
        assert_eq!(trimmed_mean(&ms(&[50])), Duration::from_millis(50));
        assert_eq!(trimmed_mean(&[]), Duration::ZERO);
    }

    #[test]
    fn batches_in_flight_are_cut_so_their_burst_stays_under_the_black_hole() {
        // 300 tasks in batches of 10: 30 batches of 1 KB would leave as one 30 KB burst.
        assert_eq!(burst_in_flight(1024, 30, 64, Some(8 * 1024)), Some(8));
        assert_eq!(burst_in_flight(1024, 30, 64, None), None, "no black hole");
        assert_eq!(
            burst_in_flight(1024, 4, 64, Some(8 * 1024)),
            None,
            "4 KB fits"
        );
        assert_eq!(burst_in_flight(9000, 1, 64, Some(8 * 1024)), Some(0));
    }

    #[test]
    fn a_size_measured_with_fewer_batches_in_flight_says_what_to_set() {
        let mut capped = candidate(10, 100, 1_500);
        capped.in_flight_cap = Some(5);
        let r = recommend(LoopKind::Submission, &[capped], Vec::new(), &NO_HOLE).expect("one");
        assert_eq!(r.max_inflight_batches, Some(5));
        assert!(
            r.reason.contains("max_inflight_batches = 5"),
            "{}",
            r.reason
        );
    }

    const NO_HOLE: PacketCaps = PacketCaps {
        blackhole_bytes: None,
        safe_packet_bytes: 64 * 1024,
    };

    #[test]
    fn the_smallest_batch_within_five_percent_of_the_best_is_recommended() {
        let sweep = [
            candidate(1, 400, 200),
            candidate(10, 110, 1_500),
            candidate(30, 104, 4_000),
            candidate(100, 100, 13_000),
        ];
        let r = recommend(LoopKind::Submission, &sweep, Vec::new(), &NO_HOLE).expect("one");
        assert_eq!(r.batch_size, 30);
        assert_eq!(r.best_batch_size, 100);
        assert_eq!(r.config_key, "task_submit_batch_size");
        assert!(r.reason.contains("Batch 30"), "{}", r.reason);
        assert!(r.reason.contains("100.0 ms at batch 100"), "{}", r.reason);
    }

    #[test]
    fn a_batch_just_over_five_percent_is_not_enough() {
        let sweep = [candidate(10, 106, 1_500), candidate(30, 100, 4_000)];
        let r = recommend(LoopKind::Status, &sweep, Vec::new(), &NO_HOLE).expect("one");
        assert_eq!(r.batch_size, 30);
        assert!(r.reason.contains("shortest"), "{}", r.reason);
    }

    #[test]
    fn sizes_with_packets_over_the_black_hole_or_the_safe_cap_are_refused() {
        let caps = PacketCaps {
            blackhole_bytes: Some(8_000),
            safe_packet_bytes: 64 * 1024,
        };
        // The fastest sizes are over the black hole: 30 is recommended though 100 is faster.
        let sweep = [
            candidate(10, 150, 1_500),
            candidate(30, 120, 4_000),
            candidate(100, 100, 13_000),
            candidate(1000, 90, 130_000),
        ];
        let r = recommend(LoopKind::Submission, &sweep, Vec::new(), &caps).expect("one");
        assert_eq!(r.batch_size, 30);
        assert_eq!(
            r.refused,
            vec![
                RefusedSize {
                    batch_size: 100,
                    refusal: Refusal::BlackHole {
                        packet_bytes: 13_000,
                        limit_bytes: 8_000
                    }
                },
                RefusedSize {
                    batch_size: 1000,
                    refusal: Refusal::BlackHole {
                        packet_bytes: 130_000,
                        limit_bytes: 8_000
                    }
                },
            ]
        );
        assert!(r.reason.contains("black hole"), "{}", r.reason);
        let no_hole = recommend(LoopKind::Submission, &sweep, Vec::new(), &NO_HOLE).expect("one");
        assert_eq!(no_hole.batch_size, 100, "1000 is over the 64 KB safe cap");
        assert!(no_hole.reason.contains("safe cap"), "{}", no_hole.reason);
    }

    #[test]
    fn nothing_under_the_caps_means_no_recommendation() {
        let caps = PacketCaps {
            blackhole_bytes: Some(100),
            safe_packet_bytes: 64 * 1024,
        };
        let error = recommend(
            LoopKind::Submission,
            &[candidate(1, 10, 300)],
            Vec::new(),
            &caps,
        )
        .unwrap_err();
        assert!(error.to_string().contains("black hole"), "{error}");
    }
}
