//! The member task: holds this supervisor's lease and its key under the cluster's prefix,
//! reads the membership every tick, and publishes which engines this member runs (with their
//! epoch) to each engine's loops.
//!
//! Every tick (a fifth of `lease_ttl`) it renews the lease (registering first when it holds
//! none: a new lease, then its key written only if absent) and then lists the members. A round
//! in which both succeeded refreshes the fence: when no round has succeeded for two thirds of
//! `lease_ttl`, counted from the instant the last successful round sent its renewal, every
//! engine is stopped, a third of a lease before etcd can expire the lease and let another member
//! take the engines over. The fence runs on its own timer, never behind a call to etcd that
//! hangs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::etcd::{EtcdClient, EtcdError};
use super::handover::{Handover, Start, View};

const T: &str = "turbomon::cluster";

/// What the member task runs with.
pub(crate) struct MemberSetup {
    pub(crate) client: Arc<EtcdClient>,
    /// This member's name.
    pub(crate) name: String,
    /// The key prefix of this cluster's members (ends with `/`).
    pub(crate) members_prefix: String,
    pub(crate) lease_ttl: Duration,
    /// Per engine: its epoch while this member runs it.
    pub(crate) owners: Vec<watch::Sender<Option<u64>>>,
    pub(crate) handover: Handover,
}

/// The timing the lease TTL implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// Between two rounds (renewal and membership read); also each etcd call's timeout.
    pub(crate) tick: Duration,
    /// No successful round for this long: every engine stops.
    pub(crate) fence_after: Duration,
    /// An engine won from a member that may still run it waits this long.
    pub(crate) handover_delay: Duration,
}

impl Timing {
    /// The timing for `lease_ttl`.
    pub(crate) fn of(lease_ttl: Duration) -> Self {
        let tick = (lease_ttl / 5).max(Duration::from_millis(100));
        let fence_after = lease_ttl * 2 / 3;
        Self {
            tick,
            fence_after,
            handover_delay: fence_after + tick,
        }
    }
}

/// Run until `stop`; returns the lease held then (to revoke once the loops have ended).
pub(crate) async fn run(mut setup: MemberSetup, mut stop: watch::Receiver<bool>) -> Option<i64> {
    let timing = Timing::of(setup.lease_ttl);
    let key = format!("{}{}", setup.members_prefix, setup.name);
    let mut lease: Option<i64> = None;
    // When the last successful round sent its renewal; none: nothing runs.
    let mut last_ok: Option<Instant> = None;
    let mut said_error = false;
    loop {
        let round_started = Instant::now();
        let fence_at = last_ok.map(|at| at + timing.fence_after);
        let round = tokio::select! {
            round = round(&setup, &key, &mut lease, setup.lease_ttl) => Some(round),
            () = sleep_until(fence_at) => None,
            _ = stop.wait_for(|stop| *stop) => return lease,
        };
        match round {
            None => {
                fence(&mut setup, &mut last_ok, timing);
                continue;
            }
            Some(Ok(view)) => {
                if said_error {
                    tracing::info!(target: T, member = %setup.name, "etcd answers again");
                    said_error = false;
                }
                last_ok = Some(round_started);
                let (started, epochs) = setup.handover.view(&view, Instant::now());
                log_started(&setup, &started, view.revision);
                publish(&setup.owners, &epochs);
            }
            Some(Err(error)) => {
                if matches!(error, RoundError::Etcd(EtcdError::LeaseGone(_))) {
                    lease = None;
                }
                if !said_error {
                    tracing::warn!(target: T, member = %setup.name, %error, "cluster round failed; trying again every tick");
                    said_error = true;
                }
            }
        }
        // Until the next round: wake engines whose handover delay ends, fence when due.
        let next_round = round_started + timing.tick;
        loop {
            let fence_at = last_ok.map(|at| at + timing.fence_after);
            let wake_at = setup.handover.next_wake();
            tokio::select! {
                () = tokio::time::sleep_until(next_round) => break,
                () = sleep_until(fence_at) => fence(&mut setup, &mut last_ok, timing),
                () = sleep_until(wake_at) => {
                    let started = setup.handover.wake(Instant::now());
                    let revision = setup.handover.epochs().into_iter().flatten().max().unwrap_or(0);
                    log_started(&setup, &started, revision);
                    publish(&setup.owners, &setup.handover.epochs());
                }
                _ = stop.wait_for(|stop| *stop) => return lease,
            }
        }
    }
}

/// Why a round did not give a view.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(
        "member name is registered by another process (or by this member before a restart, until \
         its lease expires)"
    )]
    NameTaken,
}

/// Renew the lease (or register), then read the members.
async fn round(
    setup: &MemberSetup,
    key: &str,
    lease: &mut Option<i64>,
    ttl: Duration,
) -> Result<View, RoundError> {
    match *lease {
        Some(id) => {
            setup.client.keep_alive(id).await?;
        }
        None => {
            let (id, granted) = setup.client.grant(ttl).await?;
            match setup
                .client
                .put_if_absent(key, setup.name.as_bytes(), id)
                .await
            {
                Ok(Some(revision)) => {
                    *lease = Some(id);
                    tracing::info!(target: T, member = %setup.name, key, lease = %format!("{id:x}"), ttl = %humantime::format_duration(granted), revision, "registered in the cluster");
                }
                Ok(None) => {
                    let _ = setup.client.revoke(id).await;
                    return Err(RoundError::NameTaken);
                }
                Err(error) => {
                    let _ = setup.client.revoke(id).await;
                    return Err(error.into());
                }
            }
        }
    }
    let listing = setup.client.list(&setup.members_prefix).await?;
    let mut members: Vec<String> = listing
        .kvs
        .iter()
        .filter_map(|kv| {
            let key = std::str::from_utf8(&kv.key).ok()?;
            key.strip_prefix(setup.members_prefix.as_str())
                .map(str::to_string)
        })
        .collect();
    members.sort();
    if !members.contains(&setup.name) {
        // Our key is gone although the renewal went through: the lease was revoked or replaced.
        *lease = None;
        return Err(EtcdError::LeaseGone(0).into());
    }
    Ok(View {
        revision: listing.revision,
        members,
    })
}

/// Stop every engine: no round succeeded within the fence period.
fn fence(setup: &mut MemberSetup, last_ok: &mut Option<Instant>, timing: Timing) {
    let running = setup
        .handover
        .epochs()
        .iter()
        .filter(|e| e.is_some())
        .count();
    setup.handover.fence();
    publish(&setup.owners, &setup.handover.epochs());
    *last_ok = None;
    tracing::warn!(target: T, member = %setup.name, engines = running, after = %humantime::format_duration(timing.fence_after), "lease not renewed in time: fenced, every engine stopped before the lease can expire");
}

fn log_started(setup: &MemberSetup, started: &[(usize, Start)], revision: i64) {
    for (e, why) in started {
        let engine = &setup.handover.engines()[*e];
        match why {
            Start::TakenOver { from } => {
                tracing::info!(target: T, member = %setup.name, engine = %engine, from = %from, epoch = revision, "taking over the engine of a member gone");
            }
            Start::AfterDelay => {
                tracing::info!(target: T, member = %setup.name, engine = %engine, epoch = revision, "running the engine");
            }
        }
    }
}

/// Each engine's loops see its epoch (none: not this member's).
fn publish(owners: &[watch::Sender<Option<u64>>], epochs: &[Option<i64>]) {
    for (owner, epoch) in owners.iter().zip(epochs) {
        let epoch = epoch.map(|e| u64::try_from(e).unwrap_or(0).max(1));
        owner.send_if_modified(|current| {
            let changed = *current != epoch;
            *current = epoch;
            changed
        });
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_comes_a_third_of_a_lease_before_expiry_and_the_delay_after_it() {
        let timing = Timing::of(Duration::from_secs(10));
        assert_eq!(timing.tick, Duration::from_secs(2));
        assert!(timing.fence_after < Duration::from_secs(7));
        assert!(timing.fence_after > Duration::from_secs(6));
        assert_eq!(timing.handover_delay, timing.fence_after + timing.tick);
    }
}
