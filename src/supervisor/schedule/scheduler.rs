//! The scheduler task: fires relators on their intervals, holds every task until its splayed
//! start instant and hands each engine what is due within one batch window together (high
//! priority first). It also takes retries (due after the retry period), chained runs (sent at
//! once) and, when an engine comes back after missed firings, applies the relators' catch-up
//! policy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::plan::{RelatorPlan, priority_rank};
use super::splay::Timeline;
use crate::config::CatchUp;
use crate::proto::Task;
use crate::supervisor::counters::{Bump, DeliveryCounters};

/// Missed firings remembered per relator while its engine is down; older ones are only counted.
const MAX_MISSED_FIRINGS: usize = 1000;

/// What the engine workers tell the scheduler.
#[derive(Debug)]
pub(crate) enum ScheduleEvent {
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
pub(crate) struct EngineOutlet {
    /// Its name (for logs).
    pub(crate) name: String,
    /// Where its due tasks go.
    pub(crate) due: mpsc::UnboundedSender<Vec<Task>>,
    /// Its counters (firings missed, caught up, failovers).
    pub(crate) counters: Arc<DeliveryCounters>,
    /// Engine index taking its new tasks while it is unreachable.
    pub(crate) backup: Option<usize>,
    /// How long it must be unreachable before that.
    pub(crate) failover_after: Duration,
}

/// Where each engine's tasks go now: itself, its backup, or nowhere (missed).
#[derive(Debug)]
struct Routes {
    reachable: Vec<bool>,
    down_since: Vec<Option<Instant>>,
    failed_over: Vec<bool>,
}

impl Routes {
    fn new(engines: usize) -> Self {
        Self {
            reachable: vec![true; engines],
            down_since: vec![None; engines],
            failed_over: vec![false; engines],
        }
    }

    /// The engine that should run `engine`'s tasks now, if any can.
    fn target(&self, engine: usize, outlets: &[EngineOutlet]) -> Option<usize> {
        if self.reachable[engine] {
            return Some(engine);
        }
        match outlets[engine].backup {
            Some(backup) if self.failed_over[engine] && self.reachable[backup] => Some(backup),
            _ => None,
        }
    }

    /// The next instant an engine is due to fail over.
    fn next_failover(&self, outlets: &[EngineOutlet]) -> Option<Instant> {
        (0..outlets.len())
            .filter(|&e| outlets[e].backup.is_some() && !self.failed_over[e])
            .filter_map(|e| self.down_since[e].map(|since| since + outlets[e].failover_after))
            .min()
    }

    /// Fail over every engine down for long enough.
    fn fail_over(&mut self, now: Instant, outlets: &[EngineOutlet]) {
        for (e, outlet) in outlets.iter().enumerate() {
            let Some(backup) = outlet.backup else {
                continue;
            };
            if !self.failed_over[e]
                && self.down_since[e].is_some_and(|since| now >= since + outlet.failover_after)
            {
                self.failed_over[e] = true;
                outlet.counters.failovers.bump(1);
                tracing::warn!(target: "turbomon::supervisor", engine = %outlet.name, backup = %outlets[backup].name, after = ?outlet.failover_after, "engine unreachable: its new tasks go to the backup until it answers again");
            }
        }
    }
}

/// Everything the scheduler runs with.
pub(crate) struct Scheduler {
    pub(crate) plans: Arc<Vec<RelatorPlan>>,
    /// Engine index of each plan.
    pub(crate) plan_engine: Vec<usize>,
    pub(crate) engines: Vec<EngineOutlet>,
    pub(crate) batch_window: Duration,
    pub(crate) events: mpsc::UnboundedReceiver<ScheduleEvent>,
    pub(crate) stop: watch::Receiver<bool>,
}

impl Scheduler {
    /// Run until stopped.
    pub(crate) async fn run(mut self) {
        let start = Instant::now();
        let start_wall = SystemTime::now();
        let wall = |at: Instant| start_wall + (at - start);
        let mut next_firing: Vec<Option<Instant>> = self
            .plans
            .iter()
            .map(|p| p.interval.map(|_| start))
            .collect();
        let mut routes = Routes::new(self.engines.len());
        let mut missed: Vec<Vec<SystemTime>> = vec![Vec::new(); self.plans.len()];
        let mut timeline: Timeline<(usize, Task)> = Timeline::default();
        let replay_spacing = (self.batch_window * 10).max(Duration::from_millis(100));
        loop {
            let wake = next_firing
                .iter()
                .flatten()
                .copied()
                .chain(timeline.next_due())
                .chain(routes.next_failover(&self.engines))
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
                    Some(ScheduleEvent::EngineDown(engine)) => {
                        routes.reachable[engine] = false;
                        routes.down_since[engine].get_or_insert_with(Instant::now);
                    }
                    Some(ScheduleEvent::EngineUp(engine)) => {
                        routes.reachable[engine] = true;
                        routes.down_since[engine] = None;
                        if std::mem::take(&mut routes.failed_over[engine]) {
                            self.engines[engine].counters.failbacks.bump(1);
                            tracing::info!(target: "turbomon::supervisor", engine = %self.engines[engine].name, "engine answers again: its tasks return to it");
                        }
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
            routes.fail_over(now, &self.engines);
            for (r, plan) in self.plans.iter().enumerate() {
                let (Some(at), Some(interval)) = (next_firing[r], plan.interval) else {
                    continue;
                };
                if at > now {
                    continue;
                }
                let engine = self.plan_engine[r];
                if let Some(target) = routes.target(engine, &self.engines) {
                    for due in plan.tasks_at(wall(at)) {
                        timeline.insert(at + due.due_after_firing, (target, due.task));
                    }
                } else {
                    remember_missed(&mut missed[r], wall(at), &self.engines[engine].counters);
                }
                // Firings this process slept through (a stall) are skipped and counted.
                let mut next = at + interval;
                while next <= now {
                    self.engines[engine].counters.skipped_firings.bump(1);
                    next += interval;
                }
                next_firing[r] = Some(next);
            }
            let mut due: HashMap<usize, Vec<Task>> = HashMap::new();
            for (engine, task) in timeline.take_due(now, self.batch_window) {
                // A task queued for an engine that has since failed over goes to the backup.
                let target = routes.target(engine, &self.engines).unwrap_or(engine);
                due.entry(target).or_default().push(task);
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
            counters.skipped_firings.bump(count - caught_up);
            counters.caught_up_firings.bump(caught_up);
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

fn remember_missed(missed: &mut Vec<SystemTime>, fired: SystemTime, counters: &DeliveryCounters) {
    counters.missed_firings.bump(1);
    if missed.len() >= MAX_MISSED_FIRINGS {
        missed.remove(0);
        counters.skipped_firings.bump(1);
    }
    missed.push(fired);
}
