//! Running the bench: one combination (link, turbo mode, batch size) at a time, each against a
//! fresh in-process engine on loopback behind a fresh link, driven by the supervisor's own loop
//! functions ([`submit_turbo`], [`monitor_turbo`], [`submit_unary`], [`monitor_unary`]) exactly as
//! its workers call them, so the real pipeline is what gets measured.
//!
//! Per combination: `loops` submission loops of `tasks` new sim tasks (duration 0, ids unique per
//! loop), then `loops` monitor loops, loop i asking for the tasks of submission loop i and
//! releasing the results collected in loop i − 1, as the supervisor does. The link's byte
//! counters are read before and after every submission loop.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::bare;
use super::bound::{self, bench_message_bytes};
use super::error::BenchError;
use super::plan::{
    AUTO_LEARNING_LOOPS, AutoTrace, BenchPlan, Combination, LoopBytes, Measurement, RunSettings,
    TurboMode, bench_tasks,
};
use super::report::{self, Row};
use crate::config::{EngineConfig, defaults};
use crate::engine::Engine;
use crate::link::{Link, LinkCounters};
use crate::pki::ThrowawayPki;
use crate::proto::TaskState;
use crate::supervisor::autosize::{AutoSize, LoopSample};
use crate::throttle::{BandwidthPolicy, DayClock, Throttle};
use crate::tls::ClientTls;
use crate::transport::Dialer;
use crate::wire::batch::BatchIds;
use crate::wire::status::{MonitorOutcome, TaskId, monitor_turbo, monitor_unary};
use crate::wire::stream::{StatusStream, SubmitStream};
use crate::wire::submit::{Delivery, LoopLimits, SubmissionOutcome, submit_turbo, submit_unary};

/// How long a stopping engine may take before it is abandoned.
const ENGINE_STOP_GRACE: Duration = Duration::from_secs(15);

/// Engine settings for a bench combination: caps raised so the bench never hits them.
pub fn bench_engine_config(combination: &Combination, settings: &RunSettings) -> EngineConfig {
    let packet = bound::submit_packet_bytes(combination.largest_batch())
        .max(bound::status_packet_bytes(combination.largest_batch()));
    EngineConfig {
        listen: "127.0.0.1:0".to_string(),
        max_batch_tasks: defaults::max_batch_tasks().max(combination.largest_batch()),
        // Every submission loop runs before the monitor loops release anything.
        max_held_tasks: defaults::max_held_tasks().max(
            settings
                .tasks
                .saturating_mul(combination.loops(settings) + 1),
        ),
        max_message_bytes: bench_message_bytes(packet),
        // In-process: no fixed metrics port.
        metrics_listen: String::new(),
        ..EngineConfig::default()
    }
}

/// An engine served on loopback for one combination; stopped when dropped.
struct RunningEngine {
    address: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl RunningEngine {
    async fn start(config: EngineConfig) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind a loopback port for the engine: {e}"))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("engine listener has no address: {e}"))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = Engine::new(config).serve(listener, async move {
            let _ = stopped.await;
        });
        let server = tokio::spawn(async move {
            if let Err(error) = serve.await {
                tracing::warn!(target: "turbomon::bench", %error, "bench engine stopped with an error");
            }
        });
        Ok(Self {
            address,
            stop: Some(stop),
            server,
        })
    }

    /// Stop gracefully (bounded); the engine is abandoned if it takes too long.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(ENGINE_STOP_GRACE, &mut self.server).await;
    }
}

impl Drop for RunningEngine {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A throw-away CA and certificates for one combination, unless the run is plaintext.
fn bench_pki(settings: &RunSettings) -> Result<Option<ThrowawayPki>, String> {
    if settings.plaintext {
        return Ok(None);
    }
    ThrowawayPki::create()
        .map(Some)
        .map_err(|e| format!("cannot make the throw-away certificates: {e}"))
}

/// Run one combination. Errors say what failed, for the caller to name the combination.
pub async fn run_combination(
    combination: &Combination,
    settings: &RunSettings,
    progress: &ProgressBar,
) -> Result<Measurement, String> {
    if combination.turbo == TurboMode::Bare {
        let pki = bench_pki(settings)?;
        return bare::run_bare(combination.batch_size, settings, pki.as_ref(), progress).await;
    }
    let pki = bench_pki(settings)?;
    let engine = RunningEngine::start(EngineConfig {
        tls: pki.as_ref().map(|pki| pki.engine.clone()),
        ..bench_engine_config(combination, settings)
    })
    .await?;
    let link = match &combination.link.profile {
        None => None,
        Some(profile) => Some(
            match settings.seed {
                Some(seed) => Link::with_seed(profile.clone(), seed),
                None => Link::new(profile.clone()),
            }
            .map_err(|e| e.to_string())?,
        ),
    };
    let message_bytes = bench_message_bytes(
        bound::submit_packet_bytes(combination.largest_batch())
            .max(bound::status_packet_bytes(combination.largest_batch())),
    );
    let mut dialer = Dialer::new(&engine.address.to_string(), link.clone(), message_bytes)
        .map_err(|e| e.to_string())?;
    if let Some(pki) = &pki {
        let tls = ClientTls::load(&pki.supervisor.client_files()).map_err(|e| e.to_string())?;
        dialer = dialer.with_tls(tls, None);
    }
    if let Some(rate) = settings.max_bandwidth {
        let policy = BandwidthPolicy {
            max_bytes_per_second: Some(rate),
            ..BandwidthPolicy::default()
        };
        dialer = dialer.with_throttle(Throttle::new(policy, DayClock::local()));
    }
    let driver = Driver {
        combination,
        settings,
        link: link.as_ref(),
        progress,
    };
    let measured = match combination.turbo {
        TurboMode::On => driver.turbo(&dialer).await,
        _ => driver.unary(&dialer).await,
    };
    drop(dialer);
    engine.stop().await;
    measured
}

struct Driver<'a> {
    combination: &'a Combination,
    settings: &'a RunSettings,
    link: Option<&'a Link>,
    progress: &'a ProgressBar,
}

impl Driver<'_> {
    fn limits(&self) -> LoopLimits {
        let in_flight = match self.combination.turbo {
            TurboMode::Off => self.settings.max_connections,
            TurboMode::On | TurboMode::Bare => self.settings.max_inflight_batches,
        };
        LoopLimits {
            batch_size: self.combination.batch_size,
            in_flight,
            reply_timeout: self.settings.reply_timeout,
            max_message_bytes: crate::config::defaults::max_message_bytes(),
        }
    }

    fn counters(&self) -> Option<LinkCounters> {
        self.link.map(Link::counters)
    }

    /// Record one submission loop; refuse a loop in which a task was not accepted.
    fn record_submission(
        &self,
        measured: &mut Measurement,
        loop_index: usize,
        outcome: SubmissionOutcome,
        before: Option<LinkCounters>,
    ) -> Result<(), String> {
        check_submission(loop_index, &outcome)?;
        measured.submit_loops.push(outcome.elapsed);
        measured.submit_packets.extend(outcome.packets_bytes);
        if let (Some(before), Some(after)) = (before, self.counters()) {
            measured
                .submit_wire
                .get_or_insert_with(Vec::new)
                .push(LoopBytes {
                    client_to_server: after
                        .client_to_server_bytes
                        .saturating_sub(before.client_to_server_bytes),
                    server_to_client: after
                        .server_to_client_bytes
                        .saturating_sub(before.server_to_client_bytes),
                });
        }
        self.progress.inc(1);
        Ok(())
    }

    /// Record one monitor loop and return the ids whose result is final, to release next loop.
    fn record_monitor(
        &self,
        measured: &mut Measurement,
        loop_index: usize,
        asked: usize,
        outcome: MonitorOutcome,
    ) -> Result<Vec<TaskId>, String> {
        if let Some(failure) = &outcome.failure {
            return Err(format!("monitor loop {}: {failure}", loop_index + 1));
        }
        if outcome.statuses.len() != asked {
            return Err(format!(
                "monitor loop {}: {} statuses for {asked} tasks asked",
                loop_index + 1,
                outcome.statuses.len()
            ));
        }
        measured.monitor_loops.push(outcome.elapsed);
        measured.monitor_packets.extend(outcome.packets_bytes);
        self.progress.inc(1);
        Ok(outcome
            .statuses
            .into_iter()
            .filter(|s| is_final(s.state))
            .map(|s| TaskId::from(s.task_id))
            .collect())
    }

    async fn turbo(&self, dialer: &Dialer) -> Result<Measurement, String> {
        let client = dialer.connect().await.map_err(|e| e.to_string())?;
        let submit = SubmitStream::open(&client)
            .await
            .map_err(|e| e.to_string())?;
        let status = StatusStream::open(&client)
            .await
            .map_err(|e| e.to_string())?;
        let batch_ids = BatchIds::default();
        let mut sizes = LoopSizes::new(self.combination, self.limits());
        let loops = self.combination.loops(self.settings);
        let mut measured = Measurement::default();
        let mut asked: Vec<Vec<TaskId>> = Vec::with_capacity(loops);
        for loop_index in 0..loops {
            let tasks = bench_tasks(loop_index, self.settings.tasks);
            asked.push(tasks.iter().map(|t| TaskId::from(t.id.as_str())).collect());
            let before = self.counters();
            let limits = sizes.submission();
            let outcome = submit_turbo(&submit, tasks, limits, &batch_ids).await;
            sizes.observe_submission(limits, &outcome);
            self.record_submission(&mut measured, loop_index, outcome, before)?;
        }
        let mut release = Vec::new();
        for (loop_index, ids) in asked.into_iter().enumerate() {
            let count = ids.len();
            let limits = sizes.monitor();
            let outcome = monitor_turbo(
                &status,
                ids,
                std::mem::take(&mut release),
                limits,
                &batch_ids,
            )
            .await;
            sizes.observe_monitor(limits, count, &outcome);
            release = self.record_monitor(&mut measured, loop_index, count, outcome)?;
        }
        sizes.finish(&mut measured);
        Ok(measured)
    }

    async fn unary(&self, dialer: &Dialer) -> Result<Measurement, String> {
        let limits = self.limits();
        let mut measured = Measurement::default();
        let mut asked: Vec<Vec<TaskId>> = Vec::with_capacity(self.settings.loops);
        for loop_index in 0..self.settings.loops {
            let tasks = bench_tasks(loop_index, self.settings.tasks);
            asked.push(tasks.iter().map(|t| TaskId::from(t.id.as_str())).collect());
            let before = self.counters();
            let outcome = submit_unary(dialer, tasks, limits).await;
            self.record_submission(&mut measured, loop_index, outcome, before)?;
        }
        let mut release = Vec::new();
        for (loop_index, ids) in asked.into_iter().enumerate() {
            let count = ids.len();
            let outcome = monitor_unary(dialer, ids, std::mem::take(&mut release), limits).await;
            release = self.record_monitor(&mut measured, loop_index, count, outcome)?;
        }
        Ok(measured)
    }
}

/// The batch size of each loop of one combination: the combination's own, or the automatic
/// controllers' choice (one for submission, one for monitor loops, as a supervisor has), whose
/// trajectory is kept and whose learning loops are set apart at the end.
struct LoopSizes {
    base: LoopLimits,
    auto: Option<(AutoSize, AutoSize)>,
    trace: AutoTrace,
    /// Packets of the learning loops, submission and monitor.
    learning_packets: (usize, usize),
}

impl LoopSizes {
    fn new(combination: &Combination, base: LoopLimits) -> Self {
        let auto = combination.auto.then(|| {
            let controller = || {
                AutoSize::new(
                    combination.batch_size,
                    defaults::batch_size_min(),
                    combination.largest_batch(),
                    base.in_flight,
                )
            };
            (controller(), controller())
        });
        Self {
            base,
            auto,
            trace: AutoTrace::default(),
            learning_packets: (0, 0),
        }
    }

    fn submission(&mut self) -> LoopLimits {
        match &self.auto {
            Some((submit, _)) => self.chosen(submit),
            None => self.base,
        }
    }

    fn monitor(&mut self) -> LoopLimits {
        match &self.auto {
            Some((_, monitor)) => self.chosen(monitor),
            None => self.base,
        }
    }

    fn chosen(&self, auto: &AutoSize) -> LoopLimits {
        LoopLimits {
            batch_size: auto.size(),
            in_flight: auto.in_flight().min(self.base.in_flight),
            ..self.base
        }
    }

    fn observe_submission(&mut self, limits: LoopLimits, outcome: &SubmissionOutcome) {
        if let Some((submit, _)) = &mut self.auto {
            if self.trace.submit_sizes.len() < AUTO_LEARNING_LOOPS {
                self.learning_packets.0 += outcome.packets_bytes.len();
            }
            self.trace.submit_sizes.push(limits.batch_size);
            submit.observe(&sample(
                limits,
                outcome.deliveries.len(),
                outcome.elapsed,
                &outcome.packets_bytes,
                outcome.completed(),
                outcome.deliveries.iter().any(|(_, d)| {
                    matches!(
                        d,
                        Delivery::Retry {
                            timed_out_batch: Some(_),
                            ..
                        }
                    )
                }),
            ));
        }
    }

    fn observe_monitor(&mut self, limits: LoopLimits, items: usize, outcome: &MonitorOutcome) {
        if let Some((_, monitor)) = &mut self.auto {
            if self.trace.monitor_sizes.len() < AUTO_LEARNING_LOOPS {
                self.learning_packets.1 += outcome.packets_bytes.len();
            }
            self.trace.monitor_sizes.push(limits.batch_size);
            monitor.observe(&sample(
                limits,
                items,
                outcome.elapsed,
                &outcome.packets_bytes,
                outcome.completed(),
                outcome.timed_out_batch.is_some() || outcome.too_large_batch.is_some(),
            ));
        }
    }

    /// Automatic rows: move the learning loops out of the reported ones.
    fn finish(self, measured: &mut Measurement) {
        if self.auto.is_none() {
            return;
        }
        let mut trace = self.trace;
        let learning = AUTO_LEARNING_LOOPS.min(measured.submit_loops.len());
        trace.learning_submit_loops = measured.submit_loops.drain(..learning).collect();
        let learning = AUTO_LEARNING_LOOPS.min(measured.monitor_loops.len());
        trace.learning_monitor_loops = measured.monitor_loops.drain(..learning).collect();
        let (submit_packets, monitor_packets) = self.learning_packets;
        measured
            .submit_packets
            .drain(..submit_packets.min(measured.submit_packets.len()));
        measured
            .monitor_packets
            .drain(..monitor_packets.min(measured.monitor_packets.len()));
        if let Some(wire) = &mut measured.submit_wire {
            wire.drain(..AUTO_LEARNING_LOOPS.min(wire.len()));
        }
        measured.auto = Some(trace);
    }
}

fn sample(
    limits: LoopLimits,
    items: usize,
    elapsed: Duration,
    packets: &[u64],
    completed: bool,
    timed_out: bool,
) -> LoopSample {
    LoopSample {
        items,
        batch_size: limits.batch_size,
        in_flight: limits.in_flight,
        elapsed,
        bytes: packets.iter().sum(),
        completed,
        timed_out,
    }
}

fn is_final(state: i32) -> bool {
    TaskState::try_from(state).is_ok_and(TaskState::is_final)
}

/// A bench loop must have every task accepted once: anything else is a failed measurement.
fn check_submission(loop_index: usize, outcome: &SubmissionOutcome) -> Result<(), String> {
    let mut refused = outcome
        .deliveries
        .iter()
        .filter_map(|(task, delivery)| match delivery {
            Delivery::Accepted { duplicate: false } => None,
            Delivery::Accepted { duplicate: true } => {
                Some(format!("task {} was already held by the engine", task.id))
            }
            Delivery::Rejected { reason }
            | Delivery::Stale { reason }
            | Delivery::Retry { reason, .. } => Some(reason.clone()),
        });
    match refused.next() {
        None => Ok(()),
        Some(first) => Err(format!(
            "submission loop {}: {} of {} tasks not accepted; first: {first}",
            loop_index + 1,
            refused.count() + 1,
            outcome.deliveries.len()
        )),
    }
}

/// A progress bar on stderr, or a hidden one when stderr is not a terminal or `quiet` is set.
pub fn progress_bar(total_steps: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total_steps);
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} loops, eta {eta}  {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Run every combination of `plan` in order, within `plan.max_time`. On a failure, the rows
/// measured so far come back with the error.
pub async fn run_plan(
    plan: &BenchPlan,
    progress: &ProgressBar,
) -> Result<Vec<Row>, (Vec<Row>, BenchError)> {
    let deadline = tokio::time::Instant::now() + plan.max_time;
    let total = plan.combinations.len();
    let mut rows = Vec::with_capacity(total);
    for combination in &plan.combinations {
        progress.set_message(combination.to_string());
        let measured = tokio::time::timeout_at(
            deadline,
            run_combination(combination, &plan.settings, progress),
        )
        .await;
        match measured {
            Ok(Ok(measured)) => rows.push(Row::new(combination, &plan.settings, &measured)),
            Ok(Err(reason)) => {
                return Err((
                    rows,
                    BenchError::Combination {
                        combination: combination.to_string(),
                        reason,
                    },
                ));
            }
            Err(_) => {
                let done = rows.len();
                return Err((
                    rows,
                    BenchError::TimedOut {
                        max_time: plan.max_time,
                        combination: combination.to_string(),
                        done,
                        total,
                    },
                ));
            }
        }
    }
    report::compare_auto_rows(&mut rows);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_with_a_refused_task_is_a_failed_measurement() {
        let tasks = bench_tasks(0, 2);
        let outcome = SubmissionOutcome {
            started_at: std::time::SystemTime::now(),
            size_splits: 0,
            elapsed: Duration::from_millis(1),
            packets_bytes: vec![100],
            deliveries: vec![
                (tasks[0].clone(), Delivery::Accepted { duplicate: false }),
                (
                    tasks[1].clone(),
                    Delivery::Rejected {
                        reason: "no room".to_string(),
                    },
                ),
            ],
        };
        let error = check_submission(2, &outcome).unwrap_err();
        assert!(error.contains("loop 3"), "{error}");
        assert!(
            error.contains("1 of 2") && error.contains("no room"),
            "{error}"
        );
    }
}
