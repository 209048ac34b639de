//! The scheduler task: fires relators on their intervals, at instants anchored to the wall clock
//! (see [`super::anchor`]), holds every task until its splayed start instant and hands each
//! engine what is due within one batch window together (high priority first). It also takes
//! retries (due after the retry period), chained runs (sent at once) and, when an engine comes
//! back after missed firings, applies the relators' catch-up policy. At start, the tasks of the
//! current firing that were already due wait for the first reconcile with their engine, whose
//! marks say what the previous run of this supervisor had sent ([`super::anchor::decide_start`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::anchor::{Firing, decide_start, firing_index, firing_instant};
use super::outgoing::Outgoing;
use super::plan::{RelatorPlan, unix_ms};
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
        task: Box<Task>,
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
    /// The supervisor reconciled with the engine: `marks` holds, per relator, the latest
    /// scheduled instant the engine was sent by this supervisor (ms since the Unix epoch).
    Reconciled {
        engine: usize,
        marks: HashMap<String, i64>,
    },
    /// Cluster: this member runs the engine from now on (a takeover). Its relators resume like
    /// at a start: the firing in progress waits for the reconciliation that follows.
    Taken(usize),
    /// Cluster: another member runs the engine now: its relators stop firing here and what was
    /// queued for it is dropped.
    Released(usize),
}

/// One engine as the scheduler sees it.
pub(crate) struct EngineOutlet {
    /// Its name (for logs).
    pub(crate) name: String,
    /// Where its due tasks go.
    pub(crate) due: mpsc::UnboundedSender<Vec<Outgoing>>,
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

/// A firing whose tasks are handed out as they fall due: the next one is its relator's
/// template at `next` in start order.
#[derive(Debug, Clone, Copy)]
struct FiringCursor {
    relator: usize,
    /// The engine (or backup) the firing went to.
    engine: usize,
    /// The firing, on both clocks.
    at: Instant,
    fired: SystemTime,
    /// Position in the relator's start order of the next task.
    next: usize,
}

/// What the scheduler keeps between two wake-ups.
struct State {
    /// The process's start, on both clocks: firings are anchored to the wall clock read at
    /// start and waited for on the monotonic clock from there.
    start: Instant,
    start_wall: SystemTime,
    /// Number of the next firing of each relator (none: only chained).
    next_firing: Vec<Option<i64>>,
    /// Per relator, the number of the firing in progress at start, until the first reconcile
    /// with the relator's engine decides what becomes of it.
    pending_start: Vec<Option<i64>>,
    routes: Routes,
    /// Firings missed per relator while its engine was down, for the catch-up policy.
    missed: Vec<Vec<SystemTime>>,
    /// Tasks waiting for their splayed start, with the engine they go to: retries, catch-up
    /// and replayed firings.
    timeline: Timeline<(usize, Task)>,
    /// Firings whose tasks are not all due yet, each at the instant its next task is: a task is
    /// built only when it is due, so a firing of a million tasks costs a cursor, not a million
    /// tasks waiting.
    firings: Timeline<FiringCursor>,
    /// Per relator, its templates in the order they start after a firing.
    start_orders: Vec<Vec<u32>>,
    /// Replayed firings are spaced out: never a burst of every missed run at once.
    replay_spacing: Duration,
    /// Per engine: whether this supervisor runs it (always without a cluster).
    running: Vec<bool>,
}

impl State {
    /// The schedule at start: each relator's firing in progress waits for the first reconcile
    /// with its engine; the next one is anchored.
    fn new(scheduler: &Scheduler) -> Self {
        let start = Instant::now();
        let start_wall = scheduler.start_wall;
        let count = scheduler.plans.len();
        let mut state = Self {
            start,
            start_wall,
            next_firing: vec![None; count],
            pending_start: vec![None; count],
            routes: Routes::new(scheduler.engines.len()),
            missed: vec![Vec::new(); count],
            timeline: Timeline::default(),
            firings: Timeline::default(),
            start_orders: scheduler.plans.iter().map(|p| p.start_order()).collect(),
            replay_spacing: (scheduler.batch_window * 10).max(Duration::from_millis(100)),
            running: vec![!scheduler.clustered; scheduler.engines.len()],
        };
        for (r, plan) in scheduler.plans.iter().enumerate() {
            if state.running[scheduler.plan_engine[r]] {
                state.resume(r, plan, start_wall);
            }
        }
        state
    }

    /// Relator `r` resumes at `now_wall`: its firing in progress waits for the next
    /// reconciliation with its engine; the next one is anchored.
    fn resume(&mut self, r: usize, plan: &RelatorPlan, now_wall: SystemTime) {
        let Some(interval) = plan.interval else {
            return;
        };
        let index = firing_index(unix_ms(now_wall), interval);
        self.next_firing[r] = Some(index + 1);
        self.pending_start[r] = Some(index);
    }

    /// Relator `r`'s firing at `at` (`fired` on the wall clock) to `engine`: its tasks are
    /// handed out as they fall due.
    fn start_firing(
        &mut self,
        r: usize,
        plan: &RelatorPlan,
        engine: usize,
        at: Instant,
        fired: SystemTime,
    ) {
        if let Some(&first) = self.start_orders[r].first() {
            let cursor = FiringCursor {
                relator: r,
                engine,
                at,
                fired,
                next: 0,
            };
            self.firings
                .insert(at + plan.offset_of(first as usize), cursor);
        }
    }

    /// Tasks of firings in progress not handed out yet.
    fn firings_waiting(&self) -> usize {
        self.firings
            .iter()
            .map(|c| self.start_orders[c.relator].len().saturating_sub(c.next))
            .sum()
    }

    /// The wall-clock instant of monotonic instant `at`.
    fn wall(&self, at: Instant) -> SystemTime {
        self.start_wall + at.saturating_duration_since(self.start)
    }

    /// The monotonic instant of wall-clock instant `wall` (the start, for anything before it).
    fn instant(&self, wall: SystemTime) -> Instant {
        self.start + wall.duration_since(self.start_wall).unwrap_or_default()
    }

    /// When relator `r` fires next, on both clocks.
    fn next_firing_at(&self, r: usize, plan: &RelatorPlan) -> Option<(Instant, SystemTime)> {
        let wall = firing_instant(self.next_firing[r]?, plan.interval?);
        Some((self.instant(wall), wall))
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
    /// The wall-clock reading the schedule is anchored to (now, except in tests).
    pub(crate) start_wall: SystemTime,
    /// A cluster member: no engine runs here until [`ScheduleEvent::Taken`].
    pub(crate) clustered: bool,
}

impl Scheduler {
    /// Run until stopped.
    pub(crate) async fn run(mut self) {
        let mut state = State::new(&self);
        loop {
            let wake = (0..self.plans.len())
                .filter_map(|r| state.next_firing_at(r, &self.plans[r]).map(|(at, _)| at))
                .chain(state.timeline.next_due())
                .chain(state.firings.next_due())
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
                let waiting = state.timeline.len() + state.firings_waiting();
                if waiting > 0 {
                    tracing::info!(target: "turbomon::supervisor", tasks = waiting, "stopping: tasks not yet due are not sent (the next start schedules those still ahead, on the same timeline)");
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
                state.timeline.insert(due, (engine, *task))
            }
            // A chain runs at once: it was caused by an outcome, not by the clock.
            ScheduleEvent::Chain {
                engine,
                relator,
                node,
            } => {
                let tasks = self.plans[relator].chained_tasks(&node, state.wall(Instant::now()));
                self.send(&state.running, engine, whole(tasks));
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
            ScheduleEvent::Reconciled { engine, marks } => {
                self.decide_start(engine, &marks, state);
            }
            ScheduleEvent::Taken(engine) => {
                state.running[engine] = true;
                let now_wall = state.wall(Instant::now());
                for (r, plan) in self.plans.iter().enumerate() {
                    if self.plan_engine[r] == engine {
                        state.resume(r, plan, now_wall);
                    }
                }
            }
            ScheduleEvent::Released(engine) => {
                state.running[engine] = false;
                for r in 0..self.plans.len() {
                    if self.plan_engine[r] == engine {
                        state.next_firing[r] = None;
                        state.pending_start[r] = None;
                        state.missed[r].clear();
                    }
                }
                let mut dropped = state.timeline.remove_where(|(target, _)| *target == engine);
                let orders = &state.start_orders;
                state.firings.remove_where(|cursor| {
                    let here = cursor.engine == engine;
                    if here {
                        dropped += orders[cursor.relator].len().saturating_sub(cursor.next);
                    }
                    here
                });
                if dropped > 0 {
                    self.engines[engine]
                        .counters
                        .handed_over
                        .bump(dropped as u64);
                }
            }
        }
    }

    /// The first reconcile with `engine`: decide what becomes of its relators' firings in
    /// progress at start, now that its marks say how far the previous run had got.
    fn decide_start(&self, engine: usize, marks: &HashMap<String, i64>, state: &mut State) {
        let now = Instant::now();
        let now_wall = state.wall(now);
        let counters = &self.engines[engine].counters;
        for (r, plan) in self.plans.iter().enumerate() {
            if self.plan_engine[r] != engine {
                continue;
            }
            let (Some(index), Some(interval)) = (state.pending_start[r].take(), plan.interval)
            else {
                continue;
            };
            let mark = marks.get(&plan.name).copied();
            let fired_since = state.next_firing[r] != Some(index + 1);
            let decision = decide_start(
                plan,
                interval,
                index,
                mark,
                now_wall,
                fired_since,
                MAX_MISSED_FIRINGS,
            );
            if let Some(next) = decision.next_index {
                state.next_firing[r] = Some(next);
            }
            for (due, task) in decision.ahead {
                state.timeline.insert(state.instant(due), (engine, task));
            }
            if let Some(fired) = decision.fire_now {
                state.start_firing(r, plan, engine, state.instant(fired), fired);
            }
            counters.missed_firings.bump(decision.missed);
            counters.skipped_firings.bump(decision.skipped);
            counters.caught_up_firings.bump(decision.caught_up);
            if decision.missed > 0 {
                tracing::info!(target: "turbomon::supervisor", relator = %plan.name, policy = ?plan.catch_up, missed = decision.missed, running = decision.caught_up, "start: firings missed while the supervisor was down");
            } else {
                tracing::debug!(target: "turbomon::supervisor", relator = %plan.name, first = mark.is_none(), "start: nothing missed");
            }
            let target = state.routes.target(engine, &self.engines).unwrap_or(engine);
            for (k, firing) in decision.run.into_iter().enumerate() {
                let tasks = match firing {
                    Firing::Tasks(tasks) => tasks,
                    Firing::Whole(fired) => plan
                        .tasks_at(fired)
                        .into_iter()
                        .map(|due| due.task)
                        .collect(),
                };
                if k == 0 {
                    self.send(&state.running, target, whole(tasks));
                } else {
                    let due = now + state.replay_spacing * u32::try_from(k).unwrap_or(u32::MAX);
                    for task in tasks {
                        state.timeline.insert(due, (engine, task));
                    }
                }
            }
        }
    }

    /// Expand every relator whose firing is due into the timeline, or remember the firing as
    /// missed when neither its engine nor a backup can take it.
    fn fire_relators(&self, state: &mut State, now: Instant) {
        for (r, plan) in self.plans.iter().enumerate() {
            let Some((at, fired)) = state.next_firing_at(r, plan) else {
                continue;
            };
            if at > now {
                continue;
            }
            let engine = self.plan_engine[r];
            if let Some(target) = state.routes.target(engine, &self.engines) {
                state.start_firing(r, plan, target, at, fired);
            } else {
                remember_missed(&mut state.missed[r], fired, &self.engines[engine].counters);
            }
            // Firings this process slept through (a stall) are skipped and counted.
            let Some((fired_index, interval)) = state.next_firing[r].zip(plan.interval) else {
                continue;
            };
            let now_index = firing_index(unix_ms(state.wall(now)), interval);
            let next = (fired_index + 1).max(now_index + 1);
            self.engines[engine]
                .counters
                .skipped_firings
                .bump(u64::try_from(next - fired_index - 1).unwrap_or(0));
            state.next_firing[r] = Some(next);
        }
    }

    /// Hand each engine what is due now (and within one batch window), together: when
    /// anything is due, everything due before `now + batch_window` goes with it.
    fn dispatch_due(&self, state: &mut State, now: Instant) {
        let next = state
            .timeline
            .next_due()
            .into_iter()
            .chain(state.firings.next_due())
            .min();
        if next.is_none_or(|due| due > now) {
            return;
        }
        let horizon = now + self.batch_window;
        let mut due: HashMap<usize, Vec<Outgoing>> = HashMap::new();
        for (engine, task) in state.timeline.take_before(horizon) {
            // A task queued for an engine that has since failed over goes to the backup.
            let target = state.routes.target(engine, &self.engines).unwrap_or(engine);
            due.entry(target).or_default().push(Outgoing::whole(task));
        }
        for mut cursor in state.firings.take_before(horizon) {
            let plan = &self.plans[cursor.relator];
            let order = &state.start_orders[cursor.relator];
            let target = state
                .routes
                .target(cursor.engine, &self.engines)
                .unwrap_or(cursor.engine);
            let tasks = due.entry(target).or_default();
            while let Some(&template) = order.get(cursor.next) {
                if cursor.at + plan.offset_of(template as usize) >= horizon {
                    break;
                }
                // Built whole only when its submission loop sends it.
                tasks.push(Outgoing::planned(cursor.relator, template, cursor.fired));
                cursor.next += 1;
            }
            if let Some(&template) = order.get(cursor.next) {
                let next_due = cursor.at + plan.offset_of(template as usize);
                state.firings.insert(next_due, cursor);
            }
        }
        for (engine, tasks) in due {
            self.send(&state.running, engine, tasks);
        }
    }

    /// Hand `tasks` to `engine`'s submission loop, unless another cluster member runs it.
    fn send(&self, running: &[bool], engine: usize, mut tasks: Vec<Outgoing>) {
        if tasks.is_empty() {
            return;
        }
        if !running[engine] {
            self.engines[engine]
                .counters
                .handed_over
                .bump(tasks.len() as u64);
            return;
        }
        tasks.sort_by_key(|t| t.priority_rank(&self.plans));
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

/// Whole tasks, to hand out.
fn whole(tasks: Vec<Task>) -> Vec<Outgoing> {
    tasks.into_iter().map(Outgoing::whole).collect()
}

fn remember_missed(missed: &mut Vec<SystemTime>, fired: SystemTime, counters: &DeliveryCounters) {
    counters.missed_firings.bump(1);
    if missed.len() >= MAX_MISSED_FIRINGS {
        missed.remove(0);
        counters.skipped_firings.bump(1);
    }
    missed.push(fired);
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::config::SupervisorConfig;
    use crate::supervisor::schedule::outgoing::build;
    use crate::supervisor::schedule::plan::plan_relators;

    /// A whole ten seconds: firings of a 10 s relator fall on it.
    const T0_MS: u64 = 1_700_000_000_000;

    fn plans() -> Arc<Vec<RelatorPlan>> {
        let nodes: Vec<String> = (0..40).map(|i| format!("\"n{i}\"")).collect();
        let config: SupervisorConfig = toml::from_str(&format!(
            r#"
            supervisor_id = "s"
            [[engines]]
            name = "e"
            address = "127.0.0.1:1"
            [[groups]]
            name = "g"
            engine = "e"
            nodes = [{}]
            [[rules]]
            name = "u"
            kind = "sim"
            [[relators]]
            name = "r"
            group = "g"
            rules = ["u"]
            interval = "10s"
            randomize = 50
            "#,
            nodes.join(", ")
        ))
        .expect("test config parses");
        Arc::new(plan_relators(&config).expect("plans"))
    }

    /// Runs a scheduler anchored at `start_wall` for `limit` of (paused) time, its first
    /// reconcile reporting `marks`; returns every task it sent, with when (since its start).
    async fn run(
        start_wall: SystemTime,
        marks: HashMap<String, i64>,
        limit: Duration,
    ) -> (Vec<(Duration, Task)>, crate::supervisor::CountersSnapshot) {
        let (due_tx, mut due_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let counters = Arc::new(DeliveryCounters::default());
        let plans = plans();
        let scheduler = Scheduler {
            plans: Arc::clone(&plans),
            plan_engine: vec![0],
            engines: vec![EngineOutlet {
                name: "e".into(),
                due: due_tx,
                counters: Arc::clone(&counters),
                backup: None,
                failover_after: Duration::from_secs(30),
            }],
            batch_window: Duration::from_millis(100),
            events: events_rx,
            stop: stop_rx,
            start_wall,
            clustered: false,
        };
        let started = Instant::now();
        let running = tokio::spawn(scheduler.run());
        events_tx
            .send(ScheduleEvent::Reconciled { engine: 0, marks })
            .expect("scheduler listens");
        let mut sent = Vec::new();
        while let Ok(Some(tasks)) = tokio::time::timeout_at(started + limit, due_rx.recv()).await {
            let at = started.elapsed();
            let tasks = build(tasks, &plans);
            sent.extend(tasks.into_iter().map(|task| (at, task)));
        }
        stop_tx.send_replace(true);
        running.await.expect("scheduler ends");
        (sent, counters.snapshot())
    }

    fn ids<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> HashSet<String> {
        tasks.into_iter().map(|t| t.id.clone()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_mid_firing_continues_the_same_timeline_with_the_same_ids() {
        // The first run starts 1 s into a firing, its engine marked up to the firing before.
        let first_start = UNIX_EPOCH + Duration::from_millis(T0_MS + 1_000);
        let marks = HashMap::from([("r".to_string(), T0_MS as i64 - 1)]);
        let (first, _) = run(first_start, marks, Duration::from_secs(25)).await;
        let firing = |sent: &[(Duration, Task)], at_ms: u64| -> Vec<Task> {
            sent.iter()
                .map(|(_, t)| t.clone())
                .filter(|t| (t.scheduled_unix_ms as u64 / 10_000) * 10_000 == at_ms)
                .collect()
        };
        let current = firing(&first, T0_MS);
        let next = firing(&first, T0_MS + 10_000);
        assert_eq!(next.len(), 40, "the next firing is whole, on the boundary");
        assert!(
            !current.is_empty() && current.len() < 40,
            "started mid-firing"
        );
        for (at, task) in &first {
            // Sent on time (within the batch window; ids carry whole milliseconds).
            let due = Duration::from_millis(task.scheduled_unix_ms as u64 - (T0_MS + 1_000));
            let early = *at + Duration::from_millis(100) >= due;
            assert!(
                early && *at <= due + Duration::from_millis(1),
                "{}",
                task.id
            );
        }

        // Killed 3 s in: what it had sent by then is its mark on the engine.
        let cut = Duration::from_secs(3);
        let before: Vec<&Task> = first
            .iter()
            .filter(|(at, _)| *at < cut)
            .map(|(_, t)| t)
            .collect();
        let mark = before
            .iter()
            .map(|t| t.scheduled_unix_ms)
            .max()
            .expect("some sent");
        let marks = HashMap::from([("r".to_string(), mark)]);
        let (second, counters) = run(first_start + cut, marks, Duration::from_secs(22)).await;
        let after: HashSet<String> = first
            .iter()
            .filter(|(at, _)| *at >= cut)
            .map(|(_, t)| t.id.clone())
            .collect();
        assert_eq!(
            ids(second.iter().map(|(_, t)| t)),
            after,
            "the restarted run sends exactly what the first would have sent after the kill"
        );
        assert!(ids(before).is_disjoint(&after), "nothing is sent twice");
        assert_eq!(counters.missed_firings, 0, "nothing was missed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_supervisor_fires_at_once_then_on_the_boundaries() {
        // 2 s into a firing: the first firing is now, the next boundary 8 s away (over half
        // an interval), then every 10 s.
        let start = UNIX_EPOCH + Duration::from_millis(T0_MS + 2_000);
        let (sent, _) = run(start, HashMap::new(), Duration::from_secs(30)).await;
        let mut instants: Vec<u64> = sent
            .iter()
            .map(|(_, t)| t.scheduled_unix_ms as u64)
            .collect();
        instants.sort_unstable();
        let first: Vec<u64> = instants
            .iter()
            .copied()
            .filter(|&ms| ms < T0_MS + 10_000)
            .collect();
        assert_eq!(first.len(), 40, "the first firing: one task per node");
        assert!(
            first.iter().all(|&ms| ms >= T0_MS + 2_000),
            "from the start instant"
        );
        for boundary in [T0_MS + 10_000, T0_MS + 20_000] {
            let of_it = instants
                .iter()
                .filter(|&&ms| (boundary..boundary + 10_000).contains(&ms))
                .count();
            assert_eq!(of_it, 40, "the firing at {boundary}");
        }

        // 7 s into a firing: the boundary 3 s away is too close; the next is 13 s away.
        let start = UNIX_EPOCH + Duration::from_millis(T0_MS + 7_000);
        let (sent, _) = run(start, HashMap::new(), Duration::from_secs(12)).await;
        assert_eq!(sent.len(), 40, "no firing half an interval after the first");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cluster_member_fires_only_while_it_runs_the_engine_and_continues_from_the_marks() {
        let (due_tx, mut due_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let counters = Arc::new(DeliveryCounters::default());
        let start_wall = UNIX_EPOCH + Duration::from_millis(T0_MS + 1_000);
        let plans = plans();
        let scheduler = Scheduler {
            plans: Arc::clone(&plans),
            plan_engine: vec![0],
            engines: vec![EngineOutlet {
                name: "e".into(),
                due: due_tx,
                counters: Arc::clone(&counters),
                backup: None,
                failover_after: Duration::from_secs(30),
            }],
            batch_window: Duration::from_millis(100),
            events: events_rx,
            stop: stop_rx,
            start_wall,
            clustered: true,
        };
        let running = tokio::spawn(scheduler.run());
        // Not this member's engine: nothing fires for 20 s.
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(
            due_rx.try_recv().is_err(),
            "nothing sent before the engine is taken"
        );
        // Taken 20 s in (T0 + 21 s, while the firing of T0 + 20 s spreads its starts over 5 s),
        // the member before having sent that firing up to T0 + 20.3 s.
        let mark = T0_MS as i64 + 20_300;
        events_tx
            .send(ScheduleEvent::Taken(0))
            .expect("scheduler listens");
        events_tx
            .send(ScheduleEvent::Reconciled {
                engine: 0,
                marks: HashMap::from([("r".to_string(), mark)]),
            })
            .expect("scheduler listens");
        let taken_at = Instant::now();
        let mut sent = Vec::new();
        while let Ok(Some(tasks)) =
            tokio::time::timeout_at(taken_at + Duration::from_secs(15), due_rx.recv()).await
        {
            sent.extend(build(tasks, &plans));
        }
        let firing_20: Vec<&Task> = sent
            .iter()
            .filter(|t| (t.scheduled_unix_ms as u64 / 10_000) * 10_000 == T0_MS + 20_000)
            .collect();
        assert!(
            !firing_20.is_empty(),
            "the rest of the firing in progress goes"
        );
        assert!(
            firing_20.iter().all(|t| t.scheduled_unix_ms > mark),
            "nothing at or before the mark is sent again"
        );
        let next: Vec<&Task> = sent
            .iter()
            .filter(|t| (t.scheduled_unix_ms as u64 / 10_000) * 10_000 == T0_MS + 30_000)
            .collect();
        assert_eq!(
            next.len(),
            40,
            "the next firing is whole, on the anchored timeline"
        );
        // Another member's now: the relator stops firing here.
        events_tx
            .send(ScheduleEvent::Released(0))
            .expect("scheduler listens");
        tokio::time::sleep(Duration::from_millis(10)).await;
        while due_rx.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            due_rx.try_recv().is_err(),
            "nothing sent after the handover"
        );
        stop_tx.send_replace(true);
        running.await.expect("scheduler ends");
    }
}
