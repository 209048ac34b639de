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
    /// Run `task` (a retry, its attempt number already raised) on engine number `engine` at
    /// `due`.
    Retry {
        engine: usize,
        task: Task,
        due: Instant,
    },
    /// Run relator number `relator` on `node` now (a chain after a task on engine `engine`
    /// finished: the chained run goes where that task ran).
    Chain {
        engine: usize,
        relator: usize,
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
                tracing::warn!(target: "turbomon::supervisor", engine = %outlet.name, backup = %outlets[backup].name, after = %humantime::format_duration(outlet.failover_after), "engine unreachable: its new tasks go to the backup until it answers again");
            }
        }
    }
}

/// What the scheduler keeps between two wake-ups.
struct State {
    /// The process's start, on both clocks: firings are planned on the monotonic clock and
    /// stamped on tasks in wall-clock time.
    start: Instant,
    start_wall: SystemTime,
    /// Next firing of each relator (none: only chained).
    next_firing: Vec<Option<Instant>>,
    routes: Routes,
    /// Firings missed per relator while its engine was down, for the catch-up policy.
    missed: Vec<Vec<SystemTime>>,
    /// Tasks waiting for their splayed start, with the engine they go to.
    timeline: Timeline<(usize, Task)>,
    /// Replayed firings are spaced out: never a burst of every missed run at once.
    replay_spacing: Duration,
}

impl State {
    fn new(scheduler: &Scheduler) -> Self {
        let start = Instant::now();
        Self {
            start,
            start_wall: SystemTime::now(),
            next_firing: scheduler
                .plans
                .iter()
                .map(|p| p.interval.map(|_| start))
                .collect(),
            routes: Routes::new(scheduler.engines.len()),
            missed: vec![Vec::new(); scheduler.plans.len()],
            timeline: Timeline::default(),
            replay_spacing: (scheduler.batch_window * 10).max(Duration::from_millis(100)),
        }
    }

    /// The wall-clock instant of monotonic instant `at`.
    fn wall(&self, at: Instant) -> SystemTime {
        self.start_wall + (at - self.start)
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
        let mut state = State::new(&self);
        loop {
            let wake = state
                .next_firing
                .iter()
                .flatten()
                .copied()
                .chain(state.timeline.next_due())
                .chain(state.routes.next_failover(&self.engines))
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
                event = self.events.recv() => if let Some(event) = event {
                    self.on_event(event, &mut state);
                },
            }
            if *self.stop.borrow() {
                if !state.timeline.is_empty() {
                    tracing::info!(target: "turbomon::supervisor", tasks = state.timeline.len(), "stopping: tasks not yet due are not sent");
                }
                return;
            }
            let now = Instant::now();
            state.routes.fail_over(now, &self.engines);
            self.fire_relators(&mut state, now);
            self.dispatch_due(&mut state, now);
        }
    }

    fn on_event(&self, event: ScheduleEvent, state: &mut State) {
        match event {
            ScheduleEvent::Retry { engine, task, due } => {
                state.timeline.insert(due, (engine, task))
            }
            // A chain runs at once: it was caused by an outcome, not by the clock.
            ScheduleEvent::Chain {
                engine,
                relator,
                node,
            } => {
                let tasks = self.plans[relator].chained_tasks(&node, SystemTime::now());
                self.send(engine, tasks);
            }
            ScheduleEvent::EngineDown(engine) => {
                state.routes.reachable[engine] = false;
                state.routes.down_since[engine].get_or_insert_with(Instant::now);
            }
            ScheduleEvent::EngineUp(engine) => {
                state.routes.reachable[engine] = true;
                state.routes.down_since[engine] = None;
                if std::mem::take(&mut state.routes.failed_over[engine]) {
                    self.engines[engine].counters.failbacks.bump(1);
                    tracing::info!(target: "turbomon::supervisor", engine = %self.engines[engine].name, "engine answers again: its tasks return to it");
                }
                self.catch_up(
                    engine,
                    &mut state.missed,
                    &mut state.timeline,
                    state.replay_spacing,
                );
            }
        }
    }

    /// Expand every relator whose firing is due into the timeline, or remember the firing as
    /// missed when neither its engine nor a backup can take it.
    fn fire_relators(&self, state: &mut State, now: Instant) {
        for (r, plan) in self.plans.iter().enumerate() {
            let (Some(at), Some(interval)) = (state.next_firing[r], plan.interval) else {
                continue;
            };
            if at > now {
                continue;
            }
            let engine = self.plan_engine[r];
            let fired = state.wall(at);
            if let Some(target) = state.routes.target(engine, &self.engines) {
                for due in plan.tasks_at(fired) {
                    state
                        .timeline
                        .insert(at + due.due_after_firing, (target, due.task));
                }
            } else {
                remember_missed(&mut state.missed[r], fired, &self.engines[engine].counters);
            }
            // Firings this process slept through (a stall) are skipped and counted.
            let mut next = at + interval;
            while next <= now {
                self.engines[engine].counters.skipped_firings.bump(1);
                next += interval;
            }
            state.next_firing[r] = Some(next);
        }
    }

    /// Hand each engine what is due now (and within one batch window), together.
    fn dispatch_due(&self, state: &mut State, now: Instant) {
        let mut due: HashMap<usize, Vec<Task>> = HashMap::new();
        for (engine, task) in state.timeline.take_due(now, self.batch_window) {
            // A task queued for an engine that has since failed over goes to the backup.
            let target = state.routes.target(engine, &self.engines).unwrap_or(engine);
            due.entry(target).or_default().push(task);
        }
        for (engine, tasks) in due {
            self.send(engine, tasks);
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
