//! What the supervisor has done with one engine's tasks, counted. The list below is the only
//! place a counter is named: it generates the live atomics the loops bump, the plain
//! [`CountersSnapshot`] that tests, `chaos`, `bench` and the JSON statistics read, and the
//! names and help texts of the Prometheus counters read from that snapshot at every scrape.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])+ $name:ident, )+) => {
        /// Live counters of one engine, bumped by the supervisor's loops.
        #[derive(Debug, Default)]
        pub(crate) struct DeliveryCounters {
            $( $(#[doc = $doc])+ pub(crate) $name: AtomicU64, )+
        }

        /// A copy of one engine's counters at one instant.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct CountersSnapshot {
            $( $(#[doc = $doc])+ pub $name: u64, )+
        }

        impl std::fmt::Display for CountersSnapshot {
            /// `submitted=N accepted=N ...`: every counter as a key=value pair (logfmt), for
            /// log lines.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut separator = "";
                $(
                    write!(f, "{separator}{}={}", stringify!($name), self.$name)?;
                    separator = " ";
                )+
                let _ = separator;
                Ok(())
            }
        }

        impl DeliveryCounters {
            /// A plain copy of the counters now.
            pub(crate) fn snapshot(&self) -> CountersSnapshot {
                CountersSnapshot { $( $name: self.$name.load(Ordering::Relaxed), )+ }
            }
        }

        impl CountersSnapshot {
            /// Every counter as (name, description, value), in the order they are declared.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![ $( (stringify!($name), concat!($($doc),+), self.$name), )+ ]
            }
        }
    };
}

counters! {
    /// Tasks sent in submission loops (a resend counts again).
    submitted,
    /// Tasks the engine acknowledged.
    accepted,
    /// Acknowledgements saying the engine already held the task.
    duplicates,
    /// Tasks the engine refused for good.
    rejected,
    /// Tasks sent again after a missing acknowledgement.
    retried,
    /// Tasks whose final outcome is known.
    completed,
    /// Of those, broken.
    broken,
    /// Notifications sent (problems, recoveries and reminders), each to all of its relator's
    /// alert actions.
    alerts,
    /// Of those, recoveries.
    recoveries,
    /// Of those, reminders.
    reminders,
    /// Bad results held as soft states (fewer in a row than `max_check_attempts`): not
    /// notified.
    soft_states,
    /// Acknowledged tasks the engine later forgot, submitted again.
    resubmitted,
    /// Tasks shed (low priority first) because the engine was down too long (logged).
    shed,
    /// Tasks still waiting for an acknowledgement when the supervisor stopped (logged).
    unsent_at_shutdown,
    /// Failed or timed-out tasks scheduled for another attempt.
    retries,
    /// Failed tasks not retried because the next attempt would start past the start window
    /// (logged; their failure is final).
    retries_past_window,
    /// Batches split in half after going unanswered within the batch timeout, or because their
    /// reply was over the message size cap.
    splits,
    /// Tasks failed because even alone they got no acknowledgement.
    failed_unanswered,
    /// Tasks failed because even alone their status was over the message size cap (logged).
    failed_unreadable,
    /// Completion notices pushed by the engine.
    pushed,
    /// Tasks the engine reported lost in a restart (retried under the retry policy).
    lost_in_restart,
    /// Chained relator runs started.
    chained,
    /// Times this engine's tasks went to its backup.
    failovers,
    /// Times they came back.
    failbacks,
    /// Firings that came while the engine was unreachable.
    missed_firings,
    /// Missed firings not run (catch-up `skip`, or older than the memory of missed firings).
    skipped_firings,
    /// Missed firings run when the engine came back (`latest`, `replay`).
    caught_up_firings,
    /// Reconciliations completed: at start and after every reconnect, the tasks the engine
    /// holds for this supervisor listed and taken in.
    reconciles,
    /// Tasks found on the engine at a reconciliation that the supervisor was not waiting for
    /// (sent before a restart, or acknowledged on a connection that broke): adopted, their
    /// results collected.
    adopted,
    /// Cluster: tasks the engine refused for an older assignment epoch (another member runs the
    /// engine now).
    stale_epoch,
    /// Cluster: tasks this member stopped waiting for or sending when the engine went to another
    /// member (that member collects or sends them).
    handed_over,
    /// Cluster: times this member started running the engine.
    takeovers,
}

/// Adding to a counter, without spelling the memory ordering at every call.
pub(crate) trait Bump {
    /// Add `n`.
    fn bump(&self, n: u64);
}

impl Bump for AtomicU64 {
    fn bump(&self, n: u64) {
        // Counters are read for reports only: no ordering with other memory is needed.
        self.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_reads_every_counter_by_its_name() {
        let counters = DeliveryCounters::default();
        counters.accepted.bump(3);
        counters.caught_up_firings.bump(2);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.accepted, 3);
        assert_eq!(snapshot.caught_up_firings, 2);
        let json = serde_json::to_value(snapshot).expect("json");
        assert_eq!(json["accepted"], 3);
        assert_eq!(json["retries_past_window"], 0);
        let fields = snapshot.fields();
        assert_eq!(fields.len(), json.as_object().map_or(0, |o| o.len()));
        for (name, description, value) in fields {
            assert_eq!(json[name], value, "{name}");
            assert!(!description.trim().is_empty(), "{name} has a description");
        }
    }
}
