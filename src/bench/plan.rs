//! What a bench run is made of, shared by every bench file: the combinations it runs
//! ([`Combination`]: a [`LinkChoice`], a [`TurboMode`] and a batch size), the settings they share
//! ([`RunSettings`]), the validated run as a whole ([`BenchPlan`]), the tasks each loop sends
//! ([`bench_tasks`]) and what one combination measures ([`Measurement`], with its per-loop
//! [`LoopBytes`]). Plain data: this file imports no other bench file.

use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::link::LinkProfile;
use crate::proto::{Check, Priority, SimCheck, Task, TaskState, check::Kind};
use crate::supervisor::schedule::plan::task_id;

/// The link name that means "no simulated link": plain loopback.
pub const NO_LINK: &str = "none";

/// How tasks travel in one combination.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TurboMode {
    /// Batches over one long-lived stream (the supervisor's turbo loops).
    On,
    /// One unary call per task, each on its own new connection (the supervisor's turbo-off loops).
    Off,
    /// Baseline: the same batches over a plain tonic stream to a server that acknowledges without
    /// storing anything; no supervisor code, no statistics, no link.
    Bare,
}

impl TurboMode {
    /// `on`, `off` or `bare`, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TurboMode::On => "on",
            TurboMode::Off => "off",
            TurboMode::Bare => "bare",
        }
    }
}

impl std::fmt::Display for TurboMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A link to run over: a named profile, or `none` (plain loopback, no shaping, no counters).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkChoice {
    /// The name given on the command line.
    pub name: String,
    /// The profile; `None` for `none`.
    pub profile: Option<LinkProfile>,
}

impl LinkChoice {
    /// Plain loopback.
    pub fn none() -> Self {
        Self {
            name: NO_LINK.to_string(),
            profile: None,
        }
    }
}

/// Loops an automatic row runs before the ones it reports: the "within 20 loops".
pub const AUTO_LEARNING_LOOPS: usize = 20;

/// One row's worth of work: a link, a turbo mode and a batch size.
#[derive(Debug, Clone, PartialEq)]
pub struct Combination {
    /// The link between supervisor and engine.
    pub link: LinkChoice,
    /// How tasks travel.
    pub turbo: TurboMode,
    /// Tasks per batch (1 for turbo off); with `auto`, where the controller starts.
    pub batch_size: usize,
    /// The batch size is chosen per loop by the supervisor's automatic controller: the row runs
    /// [`AUTO_LEARNING_LOOPS`] more loops first and reports the loops after them.
    pub auto: bool,
}

impl Combination {
    /// Submission loops (and as many monitor loops) this combination runs.
    pub fn loops(&self, settings: &RunSettings) -> usize {
        if self.auto {
            settings.loops + AUTO_LEARNING_LOOPS
        } else {
            settings.loops
        }
    }

    /// The largest batch this combination may send (what the engine and message caps allow for).
    pub fn largest_batch(&self) -> usize {
        if self.auto {
            self.batch_size
                .max(crate::config::defaults::batch_size_max())
        } else {
            self.batch_size
        }
    }
}

impl std::fmt::Display for Combination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.auto {
            write!(f, "link {} turbo {} batch auto", self.link.name, self.turbo)
        } else {
            write!(
                f,
                "link {} turbo {} batch {}",
                self.link.name, self.turbo, self.batch_size
            )
        }
    }
}

/// Settings shared by every combination of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// Tasks per loop.
    pub tasks: usize,
    /// Submission loops, then as many monitor loops.
    pub loops: usize,
    /// Turbo off: connections at once.
    pub max_connections: usize,
    /// Turbo on and bare: batches in flight at once.
    pub max_inflight_batches: usize,
    /// How long one batch or call may wait for its reply.
    pub reply_timeout: Duration,
    /// Seed for the link's jitter and loss; random when `None`.
    pub seed: Option<u64>,
    /// Plaintext connections; otherwise every combination (the bare baseline too) speaks mutual
    /// TLS with a throw-away CA, as a real site does.
    pub plaintext: bool,
    /// `--max-bandwidth`: bytes per second the supervisor side may send to the engine (its
    /// throttle, as an engine entry's `max_bandwidth`); `None`: no limit.
    pub max_bandwidth: Option<u64>,
}

/// What one combination measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurement {
    /// Duration of each submission loop.
    pub submit_loops: Vec<Duration>,
    /// Duration of each monitor loop.
    pub monitor_loops: Vec<Duration>,
    /// Bytes of every submission packet (request plus reply, gRPC framing included).
    pub submit_packets: Vec<u64>,
    /// Bytes of every monitor packet.
    pub monitor_packets: Vec<u64>,
    /// Bytes the link carried during each submission loop; `None` without a link.
    pub submit_wire: Option<Vec<LoopBytes>>,
    /// Automatic rows: the learning loops and the sizes chosen (the fields above hold the loops
    /// after the learning ones).
    pub auto: Option<AutoTrace>,
}

/// What an automatic row chose, loop by loop.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AutoTrace {
    /// Batch size of every submission loop, learning loops first.
    pub submit_sizes: Vec<usize>,
    /// Batch size of every monitor loop, learning loops first.
    pub monitor_sizes: Vec<usize>,
    /// Duration of the learning submission loops.
    pub learning_submit_loops: Vec<Duration>,
    /// Duration of the learning monitor loops.
    pub learning_monitor_loops: Vec<Duration>,
}

/// Bytes a link carried during one loop, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopBytes {
    /// Supervisor to engine.
    pub client_to_server: u64,
    /// Engine to supervisor.
    pub server_to_client: u64,
}

impl LoopBytes {
    /// Both directions together.
    pub fn total(&self) -> u64 {
        self.client_to_server + self.server_to_client
    }

    /// The busier direction.
    pub fn busier(&self) -> u64 {
        self.client_to_server.max(self.server_to_client)
    }
}

/// A validated run: the combinations in order, the loop settings and the time bound.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// Every combination to run, in order.
    pub combinations: Vec<Combination>,
    /// Tasks, loops and limits shared by every combination.
    pub settings: RunSettings,
    /// The run is refused above this estimate and stopped past it.
    pub max_time: Duration,
    /// What the run is estimated to take.
    pub estimated: Duration,
    /// Packet cap for recommendations, in bytes.
    pub safe_packet_bytes: u64,
    /// Things the user should know about the plan (skipped or merged combinations).
    pub notes: Vec<String>,
}

impl BenchPlan {
    /// Loops (submission plus monitor) the whole plan runs: the progress bar's length.
    pub fn total_loops(&self) -> u64 {
        let loops: usize = self
            .combinations
            .iter()
            .map(|c| c.loops(&self.settings))
            .sum();
        (loops * 2) as u64
    }
}

/// Scheduled instant of the first bench loop, ms since the epoch; each loop is one second later,
/// so every loop's task ids are new.
const FIRST_LOOP_UNIX_MS: i64 = 1_700_000_000_000;

/// The sim tasks of loop `loop_index`: `count` tasks of duration 0 with ids unique per loop,
/// shaped like a supervisor's (`relator/rule/node/scheduled-ms`).
pub fn bench_tasks(loop_index: usize, count: usize) -> Vec<Task> {
    let scheduled_unix_ms = FIRST_LOOP_UNIX_MS + 1000 * i64::try_from(loop_index).unwrap_or(0);
    (0..count)
        .map(|i| {
            let node = format!("node-{i:05}");
            Task {
                id: task_id("bench", "sim", &node, scheduled_unix_ms),
                relator: "bench".to_string(),
                rule: "sim".to_string(),
                node,
                scheduled_unix_ms,
                attempt: 1,
                timeout_ms: 10_000,
                check: Some(Check {
                    kind: Some(Kind::Sim(SimCheck {
                        duration_ms: 0,
                        outcome: TaskState::Ok as i32,
                        value: 1.0,
                    })),
                }),
                priority: Priority::Normal as i32,
                // As a supervisor stamps its own: the engine indexes them the same way.
                supervisor_id: "bench".to_string(),
                assignment_epoch: 0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_task_ids_are_unique_within_and_across_loops() {
        let mut ids: Vec<String> = (0..3)
            .flat_map(|l| bench_tasks(l, 50))
            .map(|t| t.id)
            .collect();
        let all = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all);
        assert_eq!(all, 150);
    }
}
