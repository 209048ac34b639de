//! The scheduler task: fires relators on their intervals, holds every task until its splayed
//! start instant and hands each engine what is due within one batch window together (high
//! priority first). It also takes retries (due after the retry period), chained runs (sent at
//! once) and, when an engine comes back after missed firings, applies the relators' catch-up
//! policy.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::EngineCounters;
use super::plan::{RelatorPlan, priority_rank};
use super::schedule::Timeline;
use crate::config::CatchUp;
use crate::proto::Task;

/// Missed firings remembered per relator while its engine is down; older ones are only counted.
const MAX_MISSED_FIRINGS: usize = 1000;

/// What the engine workers tell the scheduler.
#[derive(Debug)]
pub(super) enum ScheduleEvent {
    /// Run `task` (a retry) on `engine` at `due`.
    Retry {
        /// Engine index.
        engine: usize,
        /// The task with its new attempt number.
        task: Task,
        /// When.
        due: Instant,
    },
    /// Run relator `relator` on `node` now (a chain).
    Chain {
        /// Engine index of the task that finished.
        engine: usize,
        /// Plan index of the chained relator.
        relator: usize,
        /// The node.
        node: String,
    },
    /// The engine answers again.
    EngineUp(usize),
    /// The engine stopped answering.
    EngineDown(usize),
}

/// One engine as the scheduler sees it.
pub(super) struct EngineOutlet {
    /// Where its due tasks go.
    pub(super) due: mpsc::UnboundedSender<Vec<Task>>,
    /// Its counters (firings missed, caught up).
    pub(super) counters: Arc<EngineCounters>,
}

/// Everything the scheduler runs with.
pub(super) struct Scheduler {
    pub(super) plans: Arc<Vec<RelatorPlan>>,
    /// Engine index of each plan.
    pub(super) plan_engine: Vec<usize>,
    pub(super) engines: Vec<EngineOutlet>,
    pub(super) batch_window: Duration,
    pub(super) events: mpsc::UnboundedReceiver<ScheduleEvent>,
    pub(super) stop: watch::Receiver<bool>,
}

impl Scheduler {
    /// Run until stopped.
    pub(super) async fn run(mut self) {
        let start = Instant::now();
        let start_wall = SystemTime::now();
        let wall = |at: Instant| start_wall + (at - start);
        let mut next_firing: Vec<Option<Instant>> = self
            .plans
            .iter()
            .map(|p| p.interval.map(|_| start))
            .collect();
        let mut reachable = vec![true; self.engines.len()];
        let mut missed: Vec<Vec<SystemTime>> = vec![Vec::new(); self.plans.len()];
        let mut timeline: Timeline<(usize, Task)> = Timeline::default();
        let replay_spacing = (self.batch_window * 10).max(Duration::from_millis(100));
        loop {
            let wake = next_firing
                .iter()
                .flatten()
                .copied()
                .chain(timeline.next_due())
                .min();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.stop.changed() => {}
                () = sleep => {}
                event = self.events.recv() => match event {
                    None => {}
                    Some(ScheduleEvent::Retry { engine, task, due }) => timeline.insert(due, (engine, task)),
                    Some(ScheduleEvent::Chain { engine, relator, node }) => {
                        let tasks = self.plans[relator].chained_tasks(&node, SystemTime::now());
                        self.send(engine, tasks);
                    }
                    Some(ScheduleEvent::EngineDown(engine)) => reachable[engine] = false,
                    Some(ScheduleEvent::EngineUp(engine)) => {
                        reachable[engine] = true;
                        self.catch_up(engine, &mut missed, &mut timeline, replay_spacing);
                    }
                },
            }
            if *self.stop.borrow() {
                if !timeline.is_empty() {
                    tracing::info!(target: "turbomon::supervisor", tasks = timeline.len(), "stopping: tasks not yet due are not sent");
                }
                return;
            }
            let now = Instant::now();
            for (r, plan) in self.plans.iter().enumerate() {
                let (Some(at), Some(interval)) = (next_firing[r], plan.interval) else {
                    continue;
                };
                if at > now {
                    continue;
                }
                let engine = self.plan_engine[r];
                if reachable[engine] {
                    for due in plan.tasks_at(wall(at)) {
                        timeline.insert(at + due.due_after_firing, (engine, due.task));
                    }
                } else {
                    remember_missed(&mut missed[r], wall(at), &self.engines[engine].counters);
                }
                // Firings this process slept through (a stall) are skipped and counted.
                let mut next = at + interval;
                while next <= now {
                    self.engines[engine]
                        .counters
                        .skipped_firings
                        .fetch_add(1, Ordering::Relaxed);
                    next += interval;
                }
                next_firing[r] = Some(next);
            }
            let mut due: HashMap<usize, Vec<Task>> = HashMap::new();
            for (engine, task) in timeline.take_due(now, self.batch_window) {
                due.entry(engine).or_default().push(task);
            }
            for (engine, tasks) in due {
                self.send(engine, tasks);
            }
        }
    }

    fn send(&self, engine: usize, mut tasks: Vec<Task>) {
        if tasks.is_empty() {
            return;
        }
        tasks.sort_by_key(|t| priority_rank(t.priority));
        let _ = self.engines[engine].due.send(tasks);
    }

    /// An engine came back: apply each of its relators' catch-up policy to what was missed.
    fn catch_up(
        &self,
        engine: usize,
        missed: &mut [Vec<SystemTime>],
        timeline: &mut Timeline<(usize, Task)>,
        replay_spacing: Duration,
    ) {
        let now = Instant::now();
        let counters = &self.engines[engine].counters;
        for (r, plan) in self.plans.iter().enumerate() {
            if self.plan_engine[r] != engine || missed[r].is_empty() {
                continue;
            }
            let instants = std::mem::take(&mut missed[r]);
            let count = instants.len() as u64;
            let run: Vec<SystemTime> = match plan.catch_up {
                CatchUp::Skip => Vec::new(),
                CatchUp::Latest => instants.last().copied().into_iter().collect(),
                CatchUp::Replay => instants,
            };
            let caught_up = run.len() as u64;
            counters
                .skipped_firings
                .fetch_add(count - caught_up, Ordering::Relaxed);
            counters
                .caught_up_firings
                .fetch_add(caught_up, Ordering::Relaxed);
            tracing::info!(target: "turbomon::supervisor", relator = %plan.name, policy = ?plan.catch_up, missed = count, running = caught_up, "engine back: catching up missed firings");
            // Replayed firings are spaced out: never a burst of every missed run at once.
            for (k, fired) in run.into_iter().enumerate() {
                let due = now + replay_spacing * u32::try_from(k).unwrap_or(u32::MAX);
                for task in plan.tasks_at(fired) {
                    timeline.insert(due, (engine, task.task));
                }
            }
        }
    }
}

fn remember_missed(missed: &mut Vec<SystemTime>, fired: SystemTime, counters: &EngineCounters) {
    counters.missed_firings.fetch_add(1, Ordering::Relaxed);
    if missed.len() >= MAX_MISSED_FIRINGS {
        missed.remove(0);
        counters.skipped_firings.fetch_add(1, Ordering::Relaxed);
    }
    missed.push(fired);
}
