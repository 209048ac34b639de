//! The monitor loop: every status-check interval, all of an engine's unfinished tasks are queried
//! in batches of `task_info_batch_size` (turbo) or one call per task on its own connection (off).
//! Loop time runs from the first query sent to the last reply received. Final results the
//! supervisor has recorded ride along as `release_ids` so the engine can forget them.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::batch::{BatchIds, framed_bytes, packet_bytes, split_into_batches};
use super::stream::StatusStream;
use super::submit::LoopLimits;
use super::unary::call_on_new_connection;
use crate::proto::{StatusOneRequest, StatusQuery, TaskStatus};
use crate::transport::Dialer;

/// The result of one monitor loop.
#[derive(Debug, Default)]
pub struct MonitorOutcome {
    /// First query to last reply.
    pub elapsed: Duration,
    /// Size of every packet (query plus reply) that completed, in bytes.
    pub packets_bytes: Vec<u64>,
    /// Statuses received.
    pub statuses: Vec<TaskStatus>,
    /// Task ids whose query got no answer; asked again next loop.
    pub unanswered: Vec<String>,
    /// Release ids whose query got no answer; sent again next loop.
    pub unreleased: Vec<String>,
    /// Why queries went unanswered, when some did.
    pub failure: Option<String>,
    /// The largest query that got no answer within the batch timeout, in task ids.
    pub timed_out_batch: Option<usize>,
}

impl MonitorOutcome {
    /// Whether every query was answered.
    pub fn completed(&self) -> bool {
        self.failure.is_none()
    }

    fn fail(&mut self, ids: Vec<String>, release: Vec<String>, reason: String) {
        self.unanswered.extend(ids);
        self.unreleased.extend(release);
        self.failure.get_or_insert(reason);
    }
}

/// Pair query batches with release batches: release chunk i rides on query i; extra release
/// chunks get queries of their own.
fn plan_queries(
    ids: Vec<String>,
    release: Vec<String>,
    batch_size: usize,
) -> Vec<(Vec<String>, Vec<String>)> {
    let queries = split_into_batches(ids, batch_size);
    let releases = split_into_batches(release, batch_size);
    let n = queries.len().max(releases.len());
    let mut queries = queries.into_iter();
    let mut releases = releases.into_iter();
    (0..n)
        .map(|_| {
            (
                queries.next().unwrap_or_default(),
                releases.next().unwrap_or_default(),
            )
        })
        .collect()
}

/// Run one turbo monitor loop on an open status stream.
pub async fn monitor_turbo(
    stream: &StatusStream,
    ids: Vec<String>,
    release: Vec<String>,
    limits: LoopLimits,
    batch_ids: &BatchIds,
) -> MonitorOutcome {
    let start = Instant::now();
    let mut queries = plan_queries(ids, release, limits.batch_size).into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut outcome = MonitorOutcome::default();
    loop {
        while in_flight.len() < limits.in_flight.max(1) {
            let Some((task_ids, release_ids)) = queries.next() else {
                break;
            };
            let query = StatusQuery {
                batch_id: batch_ids.next(),
                task_ids,
                release_ids,
            };
            in_flight.push(async move {
                let batch_id = query.batch_id;
                let reply =
                    match tokio::time::timeout(limits.reply_timeout, stream.call(query.clone()))
                        .await
                    {
                        Ok(reply) => reply.map_err(|e| (e.to_string(), false)),
                        Err(_) => {
                            stream.abandon(batch_id);
                            Err((
                                format!(
                                    "status batch {batch_id} not answered within {}",
                                    humantime::format_duration(limits.reply_timeout)
                                ),
                                true,
                            ))
                        }
                    };
                (query, reply)
            });
        }
        let Some((query, reply)) = in_flight.next().await else {
            break;
        };
        match reply {
            Ok(batch) => {
                outcome.packets_bytes.push(packet_bytes(&query, &batch));
                if let Some(error) = batch.error {
                    let reason =
                        format!("status batch {} refused: {}", query.batch_id, error.message);
                    outcome.fail(query.task_ids, query.release_ids, reason);
                } else {
                    outcome.statuses.extend(batch.statuses);
                }
            }
            Err((reason, timed_out)) => {
                if timed_out {
                    let size = query.task_ids.len().max(query.release_ids.len());
                    outcome.timed_out_batch = outcome.timed_out_batch.max(Some(size));
                }
                outcome.fail(query.task_ids, query.release_ids, reason);
            }
        }
    }
    outcome.elapsed = start.elapsed();
    outcome
}

/// Run one turbo-off monitor loop: one StatusOne call per task, each on its own new connection,
/// at most `limits.in_flight` at once. Release ids ride along in chunks of `limits.batch_size`.
pub async fn monitor_unary(
    dialer: &Dialer,
    ids: Vec<String>,
    release: Vec<String>,
    limits: LoopLimits,
) -> MonitorOutcome {
    let start = Instant::now();
    let mut calls = plan_queries(ids, release, 1).into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut outcome = MonitorOutcome::default();
    loop {
        while in_flight.len() < limits.in_flight.max(1) {
            let Some((mut task_ids, release_ids)) = calls.next() else {
                break;
            };
            let request = StatusOneRequest {
                task_id: task_ids.pop().unwrap_or_default(),
                release_ids,
            };
            in_flight.push(async move {
                let reply = call_on_new_connection(dialer, limits.reply_timeout, |mut client| {
                    let request = request.clone();
                    async move { client.status_one(request).await }
                })
                .await;
                (request, reply)
            });
        }
        let Some((request, reply)) = in_flight.next().await else {
            break;
        };
        match reply {
            Ok(reply) => {
                outcome
                    .packets_bytes
                    .push(framed_bytes(&request) + framed_bytes(&reply));
                outcome.statuses.extend(reply.status);
            }
            Err(e) => {
                let ids = if request.task_id.is_empty() {
                    Vec::new()
                } else {
                    vec![request.task_id]
                };
                outcome.fail(ids, request.release_ids, e.to_string());
            }
        }
    }
    outcome.elapsed = start.elapsed();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize, prefix: &str) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn status_batches_never_exceed_info_batch_size() {
        let plan = plan_queries(ids(95, "t"), ids(10, "r"), 30);
        assert_eq!(plan.len(), 4);
        assert!(plan.iter().all(|(q, r)| q.len() <= 30 && r.len() <= 30));
        assert_eq!(plan.iter().map(|(q, _)| q.len()).sum::<usize>(), 95);
        assert_eq!(plan[0].1.len(), 10);
    }

    #[test]
    fn releases_beyond_the_queries_get_batches_of_their_own() {
        let plan = plan_queries(ids(5, "t"), ids(70, "r"), 30);
        let shape: Vec<(usize, usize)> = plan.iter().map(|(q, r)| (q.len(), r.len())).collect();
        assert_eq!(shape, vec![(5, 30), (0, 30), (0, 10)]);
    }
}
