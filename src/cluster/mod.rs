//! Supervisors that stand in for each other through etcd (`[cluster]` in `supervisor.toml`).
//!
//! Every member of a cluster has the same configuration (engines, relators) and the same
//! `supervisor_id`, which owns the tasks on the engines cluster-wide; each has its own member
//! `name`. A member holds an etcd lease and a key `PREFIX SUPERVISOR_ID/members/NAME` attached
//! to it; the members alive are the keys present. Each engine is run by one member, chosen by
//! rendezvous hashing over the members' names, and its tasks carry the epoch of the membership
//! view they were sent under (an etcd revision); engines refuse tasks of an older epoch than the
//! newest they have seen for that `supervisor_id`.
//!
//! - [`etcd`]: the typed etcd v3 client (KV and Lease, from `proto/etcd/etcd.proto`).
//! - [`rendezvous`]: which member owns which engine.
//! - [`handover`]: when a member starts and stops running an engine (pure).
//! - `member`: the task holding the lease, reading the membership and fencing.

pub mod etcd;
pub mod handover;
mod member;
pub mod rendezvous;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::ClusterConfig;

pub use etcd::{EtcdClient, EtcdError};

/// Per engine, its epoch while this member runs it (none: another member's).
pub type Ownership = watch::Receiver<Option<u64>>;

/// The key prefix under which the members of the cluster of `supervisor_id` register.
pub fn members_prefix(config: &ClusterConfig, supervisor_id: &str) -> String {
    format!("{}{supervisor_id}/members/", config.prefix)
}

/// The running membership of this supervisor.
pub struct Member {
    name: String,
    client: Arc<EtcdClient>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Option<i64>>,
}

impl Member {
    /// Join the cluster: start the member task. Returns, per engine (in `engines` order), the
    /// receiver of its epoch while this member runs it (none: another member's). Nothing runs
    /// until the first membership view says so.
    pub fn start(
        config: &ClusterConfig,
        supervisor_id: &str,
        engines: Vec<String>,
    ) -> Result<(Self, Vec<Ownership>), EtcdError> {
        let timing = member::Timing::of(config.lease_ttl);
        let client = Arc::new(EtcdClient::new(&config.endpoints, timing.tick)?);
        let (owners, receivers): (Vec<_>, Vec<_>) =
            engines.iter().map(|_| watch::channel(None)).unzip();
        let (stop, stop_rx) = watch::channel(false);
        let setup = member::MemberSetup {
            client: Arc::clone(&client),
            name: config.name.clone(),
            members_prefix: members_prefix(config, supervisor_id),
            lease_ttl: config.lease_ttl,
            owners,
            handover: handover::Handover::new(config.name.clone(), engines, timing.handover_delay),
        };
        tracing::info!(target: "turbomon::cluster", member = %config.name, supervisor_id, endpoints = %config.endpoints.join(","), lease_ttl = %humantime::format_duration(config.lease_ttl), "joining the cluster");
        let task = tokio::spawn(member::run(setup, stop_rx));
        Ok((
            Self {
                name: config.name.clone(),
                client,
                stop,
                task,
            },
            receivers,
        ))
    }

    /// Leave the cluster once this member's loops have ended: its lease is revoked, so the
    /// others take its engines over at once instead of after the lease's expiry.
    pub async fn leave(self) {
        self.stop.send_replace(true);
        let lease = self.task.await.ok().flatten();
        if let Some(lease) = lease {
            match self.client.revoke(lease).await {
                Ok(()) => {
                    tracing::info!(target: "turbomon::cluster", member = %self.name, "left the cluster: lease revoked")
                }
                Err(error) => {
                    tracing::warn!(target: "turbomon::cluster", member = %self.name, %error, "could not revoke the lease: the others take over when it expires")
                }
            }
        }
    }
}

/// How long after a member stops renewing its lease it stops running engines: two thirds of
/// `lease_ttl`.
pub fn fence_after(lease_ttl: Duration) -> Duration {
    member::Timing::of(lease_ttl).fence_after
}
