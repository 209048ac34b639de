//! The batch size one kind of loop of one engine runs with: the configured number, or, with
//! `"auto"`, what its [`AutoSize`] controller chose from the loops before. Every change of the
//! automatic choice is logged at debug with its reason; the size in force goes to the statistics
//! window (and through it to the metrics) before each loop.

use crate::config::{BatchSize, SupervisorConfig, Tunables};
use crate::stats::LoopStats;
use crate::supervisor::autosize::{AutoSize, Change, LoopSample, start_size};
use crate::wire::submit::LoopLimits;

use super::tunables::loop_limits;

/// Which loop a [`LoopSizer`] sizes, for its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoopKind {
    Submission,
    Monitor,
}

impl LoopKind {
    fn key(self) -> &'static str {
        match self {
            LoopKind::Submission => "task_submit_batch_size",
            LoopKind::Monitor => "task_info_batch_size",
        }
    }
}

/// The sizing state one loop keeps between its loops.
#[derive(Debug)]
pub(crate) struct LoopSizer {
    kind: LoopKind,
    auto: Option<AutoSize>,
}

impl LoopSizer {
    /// A sizer for `kind`; the controller starts with the first automatic loop.
    pub(crate) fn new(kind: LoopKind) -> Self {
        Self { kind, auto: None }
    }

    /// The limits of the next loop (before any shrink after timeouts), and the size recorded in
    /// `stats`.
    pub(crate) fn limits(
        &mut self,
        engine: &str,
        tunables: &Tunables,
        config: &SupervisorConfig,
        stats: &mut LoopStats,
    ) -> LoopLimits {
        let configured = match self.kind {
            LoopKind::Submission => tunables.task_submit_batch_size,
            LoopKind::Monitor => tunables.task_info_batch_size,
        };
        let limits = match configured {
            BatchSize::Fixed(size) => {
                // Back to a fixed size: what was learnt is dropped, a later "auto" starts anew.
                self.auto = None;
                loop_limits(size, tunables, config)
            }
            BatchSize::Auto => {
                let base = loop_limits(0, tunables, config);
                let (min, max) = (tunables.batch_size_min, tunables.batch_size_max);
                let auto = self.auto.get_or_insert_with(|| {
                    AutoSize::new(start_size(min, max), min, max, base.in_flight)
                });
                if let Some(change) = auto.set_bounds(min, max, base.in_flight) {
                    log(self.kind, engine, &change);
                }
                LoopLimits {
                    batch_size: auto.size(),
                    in_flight: auto.in_flight().min(base.in_flight),
                    ..base
                }
            }
        };
        if tunables.turbo_monitoring {
            stats.record_batch_size(limits.batch_size);
        }
        limits
    }

    /// What a loop measured, for the controller (nothing happens with a fixed size).
    pub(crate) fn observe(&mut self, engine: &str, sample: LoopSample) {
        let Some(auto) = self.auto.as_mut() else {
            return;
        };
        if let Some(change) = auto.observe(&sample) {
            log(self.kind, engine, &change);
        }
    }
}

fn log(kind: LoopKind, engine: &str, change: &Change) {
    tracing::debug!(
        target: "turbomon::supervisor",
        engine,
        key = kind.key(),
        from = change.from_size,
        to = change.to_size,
        in_flight_from = change.from_in_flight,
        in_flight_to = change.to_in_flight,
        reason = %change.reason,
        "automatic batch size changed"
    );
}
