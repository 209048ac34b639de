//! The submission loop on the wire: all the batches that carry the tasks due at one instant to
//! one engine. Turbo: batches of `task_submit_batch_size`, many in flight on one long-lived
//! stream. Off: one unary call per task, each on its own new connection, at most
//! `max_connections` at once. Loop time runs from the first send to the last acknowledgement.
//!
//! Each batch is encoded once when it is sent; its tasks stay here, owned, so that an
//! unacknowledged batch hands them back for a resend without any copy having been made.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::batch::{BatchIds, GRPC_FRAME_HEADER_BYTES, framed_bytes, split_into_batches};
use super::encode;
use super::refusal::{AckMeaning, batch_is_retryable, delivery_of};
use super::stream::SubmitStream;
use super::unary::{UnaryError, call_on_new_connection};
use crate::proto::{SubmitAck, SubmitOneRequest, Task, TaskAck};
use crate::transport::Dialer;

/// What became of one task in a submission loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The engine holds the task (`duplicate`: it already did, and will not run it again).
    Accepted {
        /// The engine had it already.
        duplicate: bool,
    },
    /// The engine refused the task for good (invalid check, malformed batch).
    Rejected {
        /// The engine's reason.
        reason: String,
    },
    /// Refused for an older assignment epoch: another member of this supervisor's cluster runs
    /// the engine now, and this one does not send the task anywhere.
    Stale {
        /// The engine's reason.
        reason: String,
    },
    /// No acknowledgement (stream broken, timeout, engine full or busy): send it again later.
    Retry {
        /// Why it must be sent again.
        reason: String,
        /// Its batch got no answer within the batch timeout (the link may drop large packets),
        /// or was refused as too large; the batch held this many tasks.
        timed_out_batch: Option<usize>,
        /// Its batch ended the stream for being over a message size cap (the engine's, or
        /// ours for the reply): it must go again smaller, not after a backoff.
        oversized: bool,
    },
}

impl Delivery {
    fn retry(reason: impl Into<String>) -> Self {
        Delivery::Retry {
            reason: reason.into(),
            timed_out_batch: None,
            oversized: false,
        }
    }
}

/// The result of one submission loop.
#[derive(Debug)]
pub struct SubmissionOutcome {
    /// When the first batch left (wall clock).
    pub started_at: std::time::SystemTime,
    /// First send to last acknowledgement.
    pub elapsed: Duration,
    /// Size of every packet (batch exchange) that completed, in bytes.
    pub packets_bytes: Vec<u64>,
    /// Every task with what became of it.
    pub deliveries: Vec<(Task, Delivery)>,
    /// Batches split because their encoded size was over the message size cap.
    pub size_splits: u64,
}

impl SubmissionOutcome {
    fn new() -> Self {
        Self {
            started_at: std::time::SystemTime::now(),
            elapsed: Duration::ZERO,
            packets_bytes: Vec::new(),
            deliveries: Vec::new(),
            size_splits: 0,
        }
    }

    /// Whether every task got an answer (accepted or rejected); otherwise the loop failed.
    pub fn completed(&self) -> bool {
        !self
            .deliveries
            .iter()
            .any(|(_, d)| matches!(d, Delivery::Retry { .. }))
    }
}

/// Settings of one loop.
#[derive(Debug, Clone, Copy)]
pub struct LoopLimits {
    /// Items per batch.
    pub batch_size: usize,
    /// Batches (turbo) or connections (off) in flight at once.
    pub in_flight: usize,
    /// How long one batch or call may wait for its reply.
    pub reply_timeout: Duration,
    /// Largest encoded message (gRPC framing included) either side accepts; larger batches are
    /// split by their encoded length before sending.
    pub max_message_bytes: usize,
}

/// Run one turbo submission loop on an open stream.
pub async fn submit_turbo(
    stream: &SubmitStream,
    tasks: Vec<Task>,
    limits: LoopLimits,
    batch_ids: &BatchIds,
) -> SubmissionOutcome {
    let start = Instant::now();
    let mut outcome = SubmissionOutcome::new();
    outcome.deliveries.reserve_exact(tasks.len());
    let mut batches = Vec::new();
    for tasks in split_into_batches(tasks, limits.batch_size) {
        fit_to_message_size(tasks, limits.max_message_bytes, &mut batches, &mut outcome);
    }
    let mut batches = batches.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut stalled = false;
    loop {
        while !stalled && in_flight.len() < limits.in_flight.max(1) {
            let Some(tasks) = batches.next() else { break };
            in_flight.push(send_batch(
                stream,
                batch_ids.next(),
                tasks,
                limits.reply_timeout,
            ));
        }
        let Some(sent) = in_flight.next().await else {
            break;
        };
        match sent.reply {
            Ok(ack) => {
                outcome
                    .packets_bytes
                    .push(sent.request_bytes + framed_bytes(&ack));
                deliveries_from_ack(sent.batch_id, sent.tasks, ack, &mut outcome.deliveries);
            }
            Err(failure) => {
                // An unanswered batch may have stalled the connection: send no more on it.
                stalled |= failure.timed_out;
                let timed_out_batch =
                    (failure.timed_out || failure.oversized).then_some(sent.tasks.len());
                outcome.deliveries.extend(sent.tasks.into_iter().map(|t| {
                    (
                        t,
                        Delivery::Retry {
                            reason: failure.reason.clone(),
                            timed_out_batch,
                            oversized: failure.oversized,
                        },
                    )
                }));
            }
        }
    }
    for tasks in batches {
        outcome.deliveries.extend(tasks.into_iter().map(|t| {
            (
                t,
                Delivery::retry("not sent: an earlier batch of the loop went unanswered"),
            )
        }));
    }
    outcome.elapsed = start.elapsed();
    outcome
}

/// Split `tasks` in halves until every batch encodes (with framing) within `max_message_bytes`,
/// measuring the encoded length rather than estimating it. A task too large on its own is
/// rejected with the sizes named.
fn fit_to_message_size(
    mut tasks: Vec<Task>,
    max_message_bytes: usize,
    batches: &mut Vec<Vec<Task>>,
    outcome: &mut SubmissionOutcome,
) {
    let size = GRPC_FRAME_HEADER_BYTES + encode::submit_batch_len(&tasks) as u64;
    if size <= max_message_bytes as u64 {
        batches.push(tasks);
        return;
    }
    if tasks.len() == 1 {
        let task = tasks.remove(0);
        outcome.deliveries.push((
            task,
            Delivery::Rejected {
                reason: format!(
                    "the task encodes to {size} bytes, over the {max_message_bytes}-byte message size cap"
                ),
            },
        ));
        return;
    }
    outcome.size_splits += 1;
    let second = tasks.split_off(tasks.len() / 2);
    fit_to_message_size(tasks, max_message_bytes, batches, outcome);
    fit_to_message_size(second, max_message_bytes, batches, outcome);
}

/// One batch that went out, with its tasks kept for the answer.
struct SentBatch {
    batch_id: u64,
    tasks: Vec<Task>,
    request_bytes: u64,
    reply: Result<SubmitAck, BatchFailure>,
}

/// Why a batch got no acknowledgement.
struct BatchFailure {
    reason: String,
    timed_out: bool,
    /// The stream ended on a message over a size cap (gRPC OUT_OF_RANGE).
    oversized: bool,
}

async fn send_batch(
    stream: &SubmitStream,
    batch_id: u64,
    tasks: Vec<Task>,
    timeout: Duration,
) -> SentBatch {
    let request = encode::submit_batch(batch_id, &tasks);
    let request_bytes = GRPC_FRAME_HEADER_BYTES + request.len() as u64;
    let reply = match tokio::time::timeout(timeout, stream.call(batch_id, request)).await {
        Ok(Ok(ack)) => Ok(ack),
        Ok(Err(e)) => Err(BatchFailure {
            reason: e.to_string(),
            timed_out: false,
            oversized: e.reply_too_large(),
        }),
        Err(_) => {
            stream.abandon(batch_id);
            Err(BatchFailure {
                reason: format!(
                    "batch {batch_id} not acknowledged within {}",
                    humantime::format_duration(timeout)
                ),
                timed_out: true,
                oversized: false,
            })
        }
    };
    SentBatch {
        batch_id,
        tasks,
        request_bytes,
        reply,
    }
}

/// Match an acknowledgement to its batch's tasks, appending each task with what became of it to
/// `deliveries`. The engine answers in the batch's order, so acks are matched by position; an
/// ack that does not line up (another engine's order, a missing entry) falls back to matching
/// by id.
pub fn deliveries_from_ack(
    batch_id: u64,
    tasks: Vec<Task>,
    ack: SubmitAck,
    deliveries: &mut Vec<(Task, Delivery)>,
) {
    if let Some(error) = ack.error {
        let reason = format!("batch {batch_id} refused: {}", error.message);
        let delivery = if batch_is_retryable(&error) {
            Delivery::retry(reason)
        } else {
            Delivery::Rejected { reason }
        };
        deliveries.extend(tasks.into_iter().map(|t| (t, delivery.clone())));
        return;
    }
    let in_order = ack.acks.len() == tasks.len()
        && ack.acks.iter().zip(&tasks).all(|(a, t)| a.task_id == t.id);
    if in_order {
        deliveries.extend(
            tasks
                .into_iter()
                .zip(ack.acks)
                .map(|(task, a)| (task, delivery_from_task_ack(a))),
        );
        return;
    }
    let mut acks: std::collections::HashMap<String, TaskAck> = ack
        .acks
        .into_iter()
        .map(|a| (a.task_id.clone(), a))
        .collect();
    deliveries.extend(tasks.into_iter().map(|task| {
        let delivery = match acks.remove(&task.id) {
            Some(a) => delivery_from_task_ack(a),
            None => Delivery::retry(format!("batch {batch_id} ack did not mention the task")),
        };
        (task, delivery)
    }));
}

fn delivery_from_task_ack(ack: TaskAck) -> Delivery {
    match delivery_of(&ack) {
        AckMeaning::Held { duplicate } => Delivery::Accepted { duplicate },
        AckMeaning::Later => Delivery::retry(ack.reason),
        AckMeaning::Never => Delivery::Rejected { reason: ack.reason },
        AckMeaning::Stale => Delivery::Stale { reason: ack.reason },
    }
}

/// Run one turbo-off submission loop: one unary call per task on its own new connection, at most
/// `limits.in_flight` connections open at once (a slot is freed only once its socket is closed).
pub async fn submit_unary(
    dialer: &Dialer,
    tasks: Vec<Task>,
    limits: LoopLimits,
) -> SubmissionOutcome {
    let start = Instant::now();
    let mut tasks = tasks.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut outcome = SubmissionOutcome::new();
    loop {
        while in_flight.len() < limits.in_flight.max(1) {
            let Some(task) = tasks.next() else { break };
            in_flight.push(submit_one(dialer, task, limits.reply_timeout));
        }
        let Some((task, packet, delivery)) = in_flight.next().await else {
            break;
        };
        outcome.packets_bytes.extend(packet);
        outcome.deliveries.push((task, delivery));
    }
    outcome.elapsed = start.elapsed();
    outcome
}

async fn submit_one(
    dialer: &Dialer,
    task: Task,
    timeout: Duration,
) -> (Task, Option<u64>, Delivery) {
    // Turbo off copies the one task into its request: its cost is the connection, not this.
    let request = SubmitOneRequest {
        task: Some(task.clone()),
    };
    let request_bytes = framed_bytes(&request);
    let reply = call_on_new_connection(dialer, timeout, |mut client| async move {
        client.submit_one(request).await
    })
    .await;
    match reply {
        Ok(reply) => {
            let packet = request_bytes + framed_bytes(&reply);
            let delivery = match reply.ack {
                Some(ack) => delivery_from_task_ack(ack),
                None => Delivery::retry("the engine sent an empty reply"),
            };
            (task, Some(packet), delivery)
        }
        Err(UnaryError::Refused(status)) if status.code() == tonic::Code::FailedPrecondition => (
            task,
            None,
            Delivery::Stale {
                reason: status.message().to_string(),
            },
        ),
        Err(UnaryError::Refused(status)) if status.code() == tonic::Code::InvalidArgument => (
            task,
            None,
            Delivery::Rejected {
                reason: status.message().to_string(),
            },
        ),
        Err(e) => {
            let timed_out_batch = matches!(e, UnaryError::Timeout(_)).then_some(1);
            (
                task,
                None,
                Delivery::Retry {
                    reason: e.to_string(),
                    timed_out_batch,
                    oversized: false,
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Refusal;
    use crate::wire::refusal::{accepted, refused};

    fn task(id: &str) -> Task {
        Task {
            id: id.to_string(),
            ..Task::default()
        }
    }

    #[test]
    fn acks_are_matched_by_position_and_by_id_when_out_of_order() {
        let tasks = vec![task("a"), task("b"), task("c")];
        let in_order = SubmitAck {
            batch_id: 1,
            acks: vec![
                accepted("a".into(), false),
                refused("b".into(), Refusal::EngineFull, "full".into()),
                refused("c".into(), Refusal::Invalid, "bad".into()),
            ],
            error: None,
        };
        let mut shuffled = in_order.clone();
        shuffled.acks.reverse();
        for ack in [in_order, shuffled] {
            let mut deliveries = Vec::new();
            deliveries_from_ack(1, tasks.clone(), ack, &mut deliveries);
            let by_id: Vec<(&str, &Delivery)> =
                deliveries.iter().map(|(t, d)| (t.id.as_str(), d)).collect();
            assert_eq!(by_id[0], ("a", &Delivery::Accepted { duplicate: false }));
            assert_eq!(by_id[1], ("b", &Delivery::retry("full")));
            assert_eq!(
                by_id[2],
                (
                    "c",
                    &Delivery::Rejected {
                        reason: "bad".into()
                    }
                )
            );
        }
    }

    #[test]
    fn a_task_the_ack_forgot_is_sent_again() {
        let ack = SubmitAck {
            batch_id: 4,
            acks: vec![accepted("a".into(), false)],
            error: None,
        };
        let mut deliveries = Vec::new();
        deliveries_from_ack(4, vec![task("a"), task("b")], ack, &mut deliveries);
        assert!(matches!(deliveries[1].1, Delivery::Retry { .. }));
    }
}
