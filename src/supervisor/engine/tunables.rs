//! The settings one engine's loops run with, read afresh from the (reloadable) configuration at
//! the start of every loop, and the limits of one loop derived from them.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{EngineEntry, SupervisorConfig, Tunables};
use crate::wire::submit::LoopLimits;

/// The engine's tunables as the configuration says now.
#[derive(Clone)]
pub(crate) struct TunablesSource {
    engine: String,
    config: watch::Receiver<Arc<SupervisorConfig>>,
    last: Option<Tunables>,
    /// Whether this copy logs changes: one copy per engine does, so a reload is one line.
    announces: bool,
}

impl TunablesSource {
    /// A source for `engine` that logs changes when `announces`.
    pub(crate) fn new(
        engine: String,
        config: watch::Receiver<Arc<SupervisorConfig>>,
        announces: bool,
    ) -> Self {
        Self {
            engine,
            config,
            last: None,
            announces,
        }
    }

    /// A copy for another loop, which keeps quiet about changes.
    pub(crate) fn quiet(&self) -> Self {
        Self {
            announces: false,
            ..self.clone()
        }
    }

    /// A receiver that is told of every reload (to react at once rather than at the next loop).
    pub(crate) fn changes(&self) -> watch::Receiver<Arc<SupervisorConfig>> {
        self.config.clone()
    }

    /// The whole configuration in force.
    pub(crate) fn config(&self) -> Arc<SupervisorConfig> {
        Arc::clone(&self.config.borrow())
    }

    /// The bandwidth policy the configuration gives this engine now (`None` when the engine
    /// was dropped from the file: it keeps what it had until restart).
    pub(crate) fn bandwidth(&self) -> Option<crate::throttle::BandwidthPolicy> {
        let config = self.config.borrow();
        config
            .engines
            .iter()
            .find(|e| e.name == self.engine)
            .map(crate::throttle::BandwidthPolicy::of)
    }

    /// The tunables in force now.
    pub(crate) fn current(&mut self) -> Tunables {
        let config = Arc::clone(&self.config.borrow_and_update());
        let now = config
            .engines
            .iter()
            .find(|e| e.name == self.engine)
            .map(|e| config.tunables(e));
        if self.announces
            && let (Some(now), Some(last)) = (now, self.last)
            && now != last
        {
            // The reload itself is logged once, with the keys that changed (config::reload).
            tracing::debug!(
                target: "turbomon::supervisor",
                engine = %self.engine,
                turbo = now.turbo_monitoring,
                submit_batch = %now.task_submit_batch_size,
                info_batch = %now.task_info_batch_size,
                status_check_interval = %humantime::format_duration(now.status_check_interval),
                stats_interval = %humantime::format_duration(now.stats_interval),
                "tunables changed; in force from the next loop"
            );
        }
        // An engine dropped from the file keeps its last settings until restart.
        let now = now
            .or(self.last)
            .unwrap_or_else(|| SupervisorConfig::default().tunables(&EngineEntry::default()));
        self.last = Some(now);
        now
    }
}

/// The limits of one loop of `batch_size` under `tunables`: batches in flight (turbo) or
/// connections (off), never more than one engine's share of the supervisor's sessions.
pub(crate) fn loop_limits(
    batch_size: usize,
    tunables: &Tunables,
    config: &SupervisorConfig,
) -> LoopLimits {
    let own = if tunables.turbo_monitoring {
        tunables.max_inflight_batches
    } else {
        tunables.max_connections
    };
    LoopLimits {
        batch_size,
        in_flight: own.min(engine_share(config)),
        reply_timeout: config.batch_timeout,
        max_message_bytes: config.max_message_bytes,
    }
}

/// The most of `max_sessions` one engine may hold: all but the reserved share (at least one), so
/// that one dead engine cannot take every slot.
pub(crate) fn engine_share(config: &SupervisorConfig) -> usize {
    let reserved = config.max_sessions * usize::from(config.reserved_percent.min(100)) / 100;
    (config.max_sessions - reserved).max(1)
}
