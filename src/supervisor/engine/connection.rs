//! How one engine is reached: the long-lived connection (dialled on first use, dropped when it
//! may be stalled), whether the engine answers (told to the scheduler when that changes, and
//! probed on a short period of its own while it does not), the reconnect backoff, and the batch
//! cap that shrinks when batches go unanswered.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::SupervisorConfig;
use crate::supervisor::schedule::scheduler::ScheduleEvent;
use crate::transport::{Connection, Dialer};
use crate::wire::stream::{BatchStream, Batched, StreamError, StreamMethod};
use crate::wire::submit::LoopLimits;

/// After the supervisor is told to stop, batches in flight get this long to be answered; the
/// tasks of the rest are handed back (logged as never acknowledged).
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often an engine that does not answer is asked for its health. Short and independent of
/// the submission backoff, so that tasks return to an engine (from its backup, or from waiting)
/// as soon as it answers again.
pub(crate) const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// One engine's connection and reachability, shared by its loops.
pub(crate) struct Contact {
    name: String,
    index: usize,
    dialer: Dialer,
    connection: tokio::sync::Mutex<Option<Connection>>,
    reachable: watch::Sender<bool>,
    /// Counts (re)connections: a fresh connection dialled, or the engine answering again after
    /// it did not. Each change calls for a reconciliation.
    generation: watch::Sender<u64>,
    events: mpsc::UnboundedSender<ScheduleEvent>,
    config: watch::Receiver<Arc<SupervisorConfig>>,
    stop: watch::Receiver<bool>,
}

impl Contact {
    /// Contact with engine number `index`, reachable until shown otherwise.
    pub(crate) fn new(
        name: String,
        index: usize,
        dialer: Dialer,
        events: mpsc::UnboundedSender<ScheduleEvent>,
        config: watch::Receiver<Arc<SupervisorConfig>>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            name,
            index,
            dialer,
            connection: tokio::sync::Mutex::new(None),
            reachable: watch::channel(true).0,
            generation: watch::channel(0).0,
            events,
            config,
            stop,
        }
    }

    /// The engine's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// How the engine is dialled (turbo off dials per call).
    pub(crate) fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// The engine's long-lived connection, dialled on first use.
    pub(crate) async fn connection(&self) -> Result<Connection, String> {
        let mut cached = self.connection.lock().await;
        if let Some(connection) = cached.as_ref() {
            return Ok(connection.clone());
        }
        let fresh = self.dialer.connect().await.map_err(|e| e.to_string())?;
        *cached = Some(fresh.clone());
        self.generation.send_modify(|generation| *generation += 1);
        Ok(fresh)
    }

    /// Watch the (re)connections: the value changes at each.
    pub(crate) fn watch_generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Drop the connection: the next use dials a fresh one (the old one may be stalled).
    pub(crate) async fn forget_connection(&self) {
        *self.connection.lock().await = None;
    }

    /// Whether the engine answered last time it was asked.
    pub(crate) fn is_reachable(&self) -> bool {
        *self.reachable.borrow()
    }

    /// Watch reachability change.
    pub(crate) fn watch_reachable(&self) -> watch::Receiver<bool> {
        self.reachable.subscribe()
    }

    /// Record whether the engine answers; tell the scheduler when that changes.
    pub(crate) fn set_reachable(&self, up: bool) {
        if self.reachable.send_replace(up) != up {
            let event = if up {
                tracing::info!(target: "turbomon::supervisor", engine = %self.name, "engine answers again");
                self.generation.send_modify(|generation| *generation += 1);
                ScheduleEvent::EngineUp(self.index)
            } else {
                ScheduleEvent::EngineDown(self.index)
            };
            let _ = self.events.send(event);
        }
    }

    /// The stream in `stream`, opened on the engine's connection if it is missing or closed.
    /// Opening waits for the engine's response headers, within the batch timeout, so that a
    /// stalled link cannot hang it.
    pub(crate) async fn open_stream<'a, Resp>(
        &self,
        stream: &'a mut Option<BatchStream<Resp>>,
    ) -> Result<&'a BatchStream<Resp>, String>
    where
        Resp: Batched + StreamMethod + prost::Message + Default + Send + 'static,
    {
        if let Some(open) = stream.take_if(|s| !s.is_closed()) {
            return Ok(stream.insert(open));
        }
        let connection = self.connection().await?;
        let limit = Arc::clone(&self.config.borrow()).batch_timeout;
        let opened = tokio::time::timeout(limit, BatchStream::<Resp>::open(&connection))
            .await
            .unwrap_or_else(|_| {
                Err(StreamError::Open(format!(
                    "no answer within {}",
                    humantime::format_duration(limit)
                )))
            });
        match opened {
            Ok(open) => {
                open.close_after_stop(self.stop.clone(), SHUTDOWN_GRACE);
                Ok(stream.insert(open.with_sessions(self.dialer.sessions().cloned())))
            }
            Err(e) => {
                self.forget_connection().await;
                Err(e.to_string())
            }
        }
    }
}

/// While the engine does not answer, ask its health service every [`PROBE_PERIOD`] and mark it
/// reachable as soon as it reports serving. Runs until the supervisor stops.
pub(crate) async fn probe_while_unreachable(
    contact: Arc<Contact>,
    mut stop: watch::Receiver<bool>,
) {
    let mut reachable = contact.watch_reachable();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = reachable.wait_for(|up| !*up) => if changed.is_err() { return },
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(PROBE_PERIOD) => {}
        }
        // Boxed: the prober of every engine holds only its idle state while the engine answers.
        if !contact.is_reachable() && Box::pin(contact.dialer.health_check()).await.is_ok() {
            contact.set_reachable(true);
        }
    }
}

/// Exponential backoff with full jitter, capped: engines that failed together do not all come
/// back in the same second.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(200);
    const CAP: Duration = Duration::from_secs(30);

    /// One more failure: the delay until the next attempt.
    pub(crate) fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = Self::BASE
            .saturating_mul(1u32 << self.failures.min(16))
            .min(Self::CAP);
        let delay = rand::rng().random_range(Duration::ZERO..=ceiling);
        self.retry_at = Some(Instant::now() + delay);
        delay
    }

    /// It worked: the next failure starts from the base delay again.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// When the next attempt is due, if one is waiting.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }
}

/// Batches that go unanswered within the batch timeout (or whose replies are over the message
/// size cap) are sent again split in half, one at a time, down to single tasks: a link that
/// drops large packets — a black hole — still carries small ones. Each fully answered loop
/// doubles the cap back towards the configured size.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Shrink {
    batch_cap: Option<usize>,
}

impl Shrink {
    /// `limits` under the current cap.
    pub(crate) fn apply(&self, limits: LoopLimits) -> LoopLimits {
        match self.batch_cap {
            Some(cap) => LoopLimits {
                batch_size: limits.batch_size.min(cap),
                in_flight: 1,
                ..limits
            },
            None => limits,
        }
    }

    /// Whether single items are already being sent alone.
    pub(crate) fn at_floor(&self) -> bool {
        self.batch_cap == Some(1)
    }

    /// The cap in force, if any.
    pub(crate) fn cap(&self) -> Option<usize> {
        self.batch_cap
    }

    /// A batch of `size` went unanswered: halve.
    pub(crate) fn timed_out(&mut self, size: usize) {
        let cap = (size / 2).max(1);
        self.batch_cap = Some(self.batch_cap.map_or(cap, |c| c.min(cap)));
    }

    /// A loop was fully answered: grow back.
    pub(crate) fn answered(&mut self, configured: usize) {
        if let Some(cap) = self.batch_cap {
            let next = cap.saturating_mul(2);
            self.batch_cap = (next < configured).then_some(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_coming_back_together_do_not_reconnect_in_the_same_second() {
        // 100 engines that each failed five times in a row: full jitter spreads their retries.
        let mut per_second = [0usize; 32];
        for _ in 0..100 {
            let mut backoff = Backoff::default();
            let delay = (0..5).map(|_| backoff.failed()).last().unwrap_or_default();
            assert!(delay <= Backoff::CAP);
            per_second[delay.as_secs() as usize] += 1;
        }
        let crowded = per_second.iter().copied().max().unwrap_or(0);
        assert!(
            crowded <= 40,
            "{crowded} of 100 reconnects in one second: {per_second:?}"
        );
    }

    #[test]
    fn backoff_is_capped_and_resets_after_success() {
        let mut backoff = Backoff::default();
        for _ in 0..40 {
            assert!(backoff.failed() <= Backoff::CAP);
        }
        backoff.succeeded();
        assert!(backoff.retry_at().is_none());
        assert!(backoff.failed() <= Backoff::BASE * 2);
    }

    #[test]
    fn unanswered_batches_halve_down_to_one_and_grow_back() {
        let mut shrink = Shrink::default();
        shrink.timed_out(30);
        assert_eq!(shrink.cap(), Some(15));
        shrink.timed_out(15);
        shrink.timed_out(7);
        shrink.timed_out(3);
        assert!(shrink.at_floor());
        for _ in 0..4 {
            shrink.answered(30);
        }
        assert_eq!(shrink.cap(), Some(16));
        shrink.answered(30);
        assert_eq!(shrink.cap(), None, "back to the configured size");
    }
}
