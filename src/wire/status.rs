//! The monitor loop on the wire: every status-check interval, all of an engine's unfinished tasks
//! are queried in batches of `task_info_batch_size` (turbo) or one call per task on its own
//! connection (off). Loop time runs from the first query sent to the last reply received. Final
//! results the supervisor has recorded ride along as `release_ids` so the engine can forget them.
//!
//! Queries are sized for their replies as well as for themselves: a reply larger than the
//! message size cap would break the stream, so a query holds no more ids than the cap can carry
//! back at the expected size of one status ([`StatusSizing`]).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prost::Message;
use tokio::time::Instant;

use super::batch::{BatchIds, GRPC_FRAME_HEADER_BYTES, framed_bytes};
use super::encode::{self, string_len};
use super::stream::StatusStream;
use super::submit::LoopLimits;
use super::unary::call_on_new_connection;
use crate::proto::{StatusOneRequest, TaskStatus};
use crate::transport::Dialer;

/// A task id shared between the supervisor's ledger and the queries that ask for it.
pub type TaskId = Arc<str>;

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
    pub unanswered: Vec<TaskId>,
    /// Release ids whose query got no answer; sent again next loop.
    pub unreleased: Vec<TaskId>,
    /// Why queries went unanswered, when some did.
    pub failure: Option<String>,
    /// The largest query that got no answer within the batch timeout, in ids.
    pub timed_out_batch: Option<usize>,
    /// The largest query whose reply was over the message size cap, in ids (the stream broke).
    pub too_large_batch: Option<usize>,
    /// The largest status received, less its task id, in encoded bytes (to size the next loop).
    pub largest_status_bytes: usize,
}

impl MonitorOutcome {
    /// Whether every query was answered.
    pub fn completed(&self) -> bool {
        self.failure.is_none()
    }

    fn fail(&mut self, ids: Vec<TaskId>, release: Vec<TaskId>, reason: String) {
        self.unanswered.extend(ids);
        self.unreleased.extend(release);
        self.failure.get_or_insert(reason);
    }
}

/// How large replies are expected to be, so that queries can be sized for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusSizing {
    /// Largest encoded message either way, gRPC framing included.
    pub max_message_bytes: usize,
    /// Expected bytes of one status besides its task id (state, value, times, message).
    pub status_bytes: usize,
}

impl StatusSizing {
    /// What a status of a sim or tcp check takes besides its id, with a short message: the
    /// starting guess before any reply has been measured.
    pub const DEFAULT_STATUS_BYTES: usize = 96;

    /// Sizing with the starting guess.
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            status_bytes: Self::DEFAULT_STATUS_BYTES,
        }
    }

    /// Expected reply bytes for one id.
    fn reply_bytes(&self, id: &str) -> usize {
        // The status is a repeated message: a tag, a length, then its fields.
        3 + string_len(id) + self.status_bytes
    }
}

/// Bytes of a query or reply besides its ids or statuses: framing and the batch id.
const ENVELOPE_BYTES: usize = GRPC_FRAME_HEADER_BYTES as usize + 11;

/// Cut `ids` and `release` into queries: at most `batch_size` of each per query, each query and
/// its expected reply within the message size cap. Release chunk i rides on query i; extra
/// release chunks get queries of their own. When both kinds travel, each gets half of the
/// request cap so that any pairing fits.
pub fn plan_queries(
    ids: Vec<TaskId>,
    release: Vec<TaskId>,
    batch_size: usize,
    sizing: StatusSizing,
) -> Vec<(Vec<TaskId>, Vec<TaskId>)> {
    let cap = sizing.max_message_bytes.saturating_sub(ENVELOPE_BYTES);
    let (id_cap, release_cap) = if release.is_empty() || ids.is_empty() {
        (cap, cap)
    } else {
        (cap / 2, cap / 2)
    };
    let queries = chunk(ids, batch_size, string_len, id_cap, |id| {
        sizing.reply_bytes(id)
    });
    let releases = chunk(release, batch_size, string_len, release_cap, |_| 0);
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

/// Greedy cut by count, request bytes and reply bytes. An id too large on its own still gets a
/// chunk of its own: the engine's answer (or the stream's error) will say what is wrong.
fn chunk(
    items: Vec<TaskId>,
    batch_size: usize,
    request_bytes: impl Fn(&str) -> usize,
    cap: usize,
    reply_bytes: impl Fn(&str) -> usize,
) -> Vec<Vec<TaskId>> {
    let batch_size = batch_size.max(1);
    let mut chunks = Vec::with_capacity(items.len().div_ceil(batch_size));
    let mut current: Vec<TaskId> = Vec::new();
    let (mut request, mut reply) = (0usize, 0usize);
    for item in items {
        let (q, r) = (request_bytes(&item), reply_bytes(&item));
        let full = current.len() >= batch_size || request + q > cap || reply + r > cap;
        if full && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
            (request, reply) = (0, 0);
        }
        request += q;
        reply += r;
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Run one turbo monitor loop on an open status stream, sizing queries for replies of the
/// default size.
pub async fn monitor_turbo(
    stream: &StatusStream,
    ids: Vec<TaskId>,
    release: Vec<TaskId>,
    limits: LoopLimits,
    batch_ids: &BatchIds,
) -> MonitorOutcome {
    let sizing = StatusSizing::new(limits.max_message_bytes);
    monitor_turbo_sized(stream, ids, release, limits, batch_ids, sizing).await
}

/// Run one turbo monitor loop on an open status stream with queries sized by `sizing`. Once a
/// query fails because the stream broke, no more are sent: the rest are asked next loop.
pub async fn monitor_turbo_sized(
    stream: &StatusStream,
    ids: Vec<TaskId>,
    release: Vec<TaskId>,
    limits: LoopLimits,
    batch_ids: &BatchIds,
    sizing: StatusSizing,
) -> MonitorOutcome {
    let start = Instant::now();
    let mut queries = plan_queries(ids, release, limits.batch_size, sizing).into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut outcome = MonitorOutcome::default();
    let mut broken = false;
    loop {
        while !broken && in_flight.len() < limits.in_flight.max(1) {
            let Some((task_ids, release_ids)) = queries.next() else {
                break;
            };
            let batch_id = batch_ids.next();
            let request = encode::status_query(batch_id, &task_ids, &release_ids);
            let request_bytes = GRPC_FRAME_HEADER_BYTES + request.len() as u64;
            in_flight.push(async move {
                let reply =
                    tokio::time::timeout(limits.reply_timeout, stream.call(batch_id, request))
                        .await;
                let reply = match reply {
                    Ok(reply) => reply.map_err(|e| QueryFailure {
                        too_large: e.reply_too_large(),
                        reason: e.to_string(),
                        timed_out: false,
                    }),
                    Err(_) => {
                        stream.abandon(batch_id);
                        Err(QueryFailure {
                            reason: format!(
                                "status batch {batch_id} not answered within {}",
                                humantime::format_duration(limits.reply_timeout)
                            ),
                            timed_out: true,
                            too_large: false,
                        })
                    }
                };
                (batch_id, task_ids, release_ids, request_bytes, reply)
            });
        }
        let Some((batch_id, task_ids, release_ids, request_bytes, reply)) = in_flight.next().await
        else {
            break;
        };
        match reply {
            Ok(batch) => {
                outcome
                    .packets_bytes
                    .push(request_bytes + framed_bytes(&batch));
                if let Some(error) = batch.error {
                    let reason = format!("status batch {batch_id} refused: {}", error.message);
                    outcome.fail(task_ids, release_ids, reason);
                } else {
                    for status in &batch.statuses {
                        let besides_id = status.encoded_len().saturating_sub(status.task_id.len());
                        outcome.largest_status_bytes = outcome.largest_status_bytes.max(besides_id);
                    }
                    outcome.statuses.extend(batch.statuses);
                }
            }
            Err(failure) => {
                let size = task_ids.len().max(release_ids.len());
                if failure.timed_out {
                    // A stalled query may have stalled the connection behind it.
                    broken = true;
                    outcome.timed_out_batch = outcome.timed_out_batch.max(Some(size));
                }
                if failure.too_large {
                    outcome.too_large_batch = outcome.too_large_batch.max(Some(size));
                }
                broken |= stream.is_closed();
                outcome.fail(task_ids, release_ids, failure.reason);
            }
        }
    }
    for (task_ids, release_ids) in queries {
        outcome.fail(
            task_ids,
            release_ids,
            "not sent: an earlier query of the loop failed".to_string(),
        );
    }
    outcome.elapsed = start.elapsed();
    outcome
}

/// Why one query got no reply.
struct QueryFailure {
    reason: String,
    timed_out: bool,
    too_large: bool,
}

/// Run one turbo-off monitor loop: one StatusOne call per task, each on its own new connection,
/// at most `limits.in_flight` at once. Release ids ride along in chunks of `limits.batch_size`.
pub async fn monitor_unary(
    dialer: &Dialer,
    ids: Vec<TaskId>,
    release: Vec<TaskId>,
    limits: LoopLimits,
) -> MonitorOutcome {
    let start = Instant::now();
    let sizing = StatusSizing::new(limits.max_message_bytes);
    let mut calls = plan_queries(ids, release, 1, sizing).into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut outcome = MonitorOutcome::default();
    loop {
        while in_flight.len() < limits.in_flight.max(1) {
            let Some((task_ids, release_ids)) = calls.next() else {
                break;
            };
            // Turbo off converts to the generated types per call: its cost is the connection.
            // A call that only releases asks for the first id it releases (the engine refuses an
            // empty id; the answer is for a task no longer waited for, and ignored).
            let request = StatusOneRequest {
                task_id: task_ids
                    .first()
                    .or(release_ids.first())
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                release_ids: release_ids.iter().map(|id| id.to_string()).collect(),
            };
            in_flight.push(async move {
                let request_bytes = framed_bytes(&request);
                let reply = call_on_new_connection(dialer, limits.reply_timeout, |client| {
                    let mut client = client;
                    async move { client.status_one(request).await }
                })
                .await;
                (task_ids, release_ids, request_bytes, reply)
            });
        }
        let Some((task_ids, release_ids, request_bytes, reply)) = in_flight.next().await else {
            break;
        };
        match reply {
            Ok(reply) => {
                outcome
                    .packets_bytes
                    .push(request_bytes + framed_bytes(&reply));
                outcome.statuses.extend(reply.status);
            }
            Err(e) => outcome.fail(task_ids, release_ids, e.to_string()),
        }
    }
    outcome.elapsed = start.elapsed();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize, prefix: &str) -> Vec<TaskId> {
        (0..n).map(|i| Arc::from(format!("{prefix}{i}"))).collect()
    }

    const ROOMY: StatusSizing = StatusSizing {
        max_message_bytes: 4 << 20,
        status_bytes: StatusSizing::DEFAULT_STATUS_BYTES,
    };

    #[test]
    fn status_batches_never_exceed_info_batch_size() {
        let plan = plan_queries(ids(95, "t"), ids(10, "r"), 30, ROOMY);
        assert_eq!(plan.len(), 4);
        assert!(plan.iter().all(|(q, r)| q.len() <= 30 && r.len() <= 30));
        assert_eq!(plan.iter().map(|(q, _)| q.len()).sum::<usize>(), 95);
        assert_eq!(plan[0].1.len(), 10);
    }

    #[test]
    fn releases_beyond_the_queries_get_batches_of_their_own() {
        let plan = plan_queries(ids(5, "t"), ids(70, "r"), 30, ROOMY);
        let shape: Vec<(usize, usize)> = plan.iter().map(|(q, r)| (q.len(), r.len())).collect();
        assert_eq!(shape, vec![(5, 30), (0, 30), (0, 10)]);
    }

    #[test]
    fn queries_are_sized_so_that_their_replies_fit_the_message_cap() {
        // 60-byte ids and a 1000-byte cap: by count, 30 ids would make a 1.9 KB query and a
        // 4.8 KB reply; the plan cuts them so that both fit.
        let long =
            |n: usize| -> Vec<TaskId> { (0..n).map(|i| Arc::from(format!("{:060}", i))).collect() };
        let sizing = StatusSizing::new(1000);
        let plan = plan_queries(long(45), long(20), 30, sizing);
        assert_eq!(plan.iter().map(|(q, _)| q.len()).sum::<usize>(), 45);
        assert_eq!(plan.iter().map(|(_, r)| r.len()).sum::<usize>(), 20);
        for (query, release) in &plan {
            let request = encode::status_query(u64::MAX, query, release).len() + 5;
            let reply: usize =
                ENVELOPE_BYTES + query.iter().map(|id| sizing.reply_bytes(id)).sum::<usize>();
            assert!(request <= 1000, "request {request} B");
            assert!(reply <= 1000, "expected reply {reply} B");
        }
    }
}
