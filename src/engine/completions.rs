//! Push completions (the `Completions` RPC): each subscriber gets the final status of every task
//! that finishes after it subscribed, gathered into [`proto::CompletionBatch`]es.
//!
//! The store hands each final status to every subscriber's bounded buffer with `try_send`, under
//! its lock, so a slow subscriber never slows a check down: when its buffer is full, its notices
//! are dropped and counted (the supervisor's monitor loop reconciles what a notice missed). Per
//! subscriber, a forwarding task gathers the notices for the flush window (or until `max_batch`
//! statuses, or until the batch would outgrow the message size limit) and sends them as one
//! batch, with batch ids 1, 2, 3...

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::proto;

use super::tuning::{LOG_TARGET, STREAM_BUFFER_MESSAGES};
use super::viewer::Viewer;

/// The flush window when the request says 0.
pub const DEFAULT_FLUSH_WINDOW: Duration = Duration::from_millis(5);

/// The longest flush window a subscriber may ask for.
pub const MAX_FLUSH_WINDOW: Duration = Duration::from_secs(60);

/// Room left in a message for the batch's own fields and gRPC framing.
const MESSAGE_OVERHEAD_BYTES: usize = 64;

/// The stream of completion batches one subscriber receives.
pub type CompletionStream = ReceiverStream<Result<proto::CompletionBatch, Status>>;

/// One subscriber as the store sees it: where its notices go.
#[derive(Debug)]
pub(crate) struct Subscriber {
    notices: mpsc::Sender<proto::TaskStatus>,
    /// Whose completions it may see.
    viewer: Viewer,
    /// Notices dropped since the buffer last had room (for one log line per overflow).
    dropping: u64,
}

/// What became of one notice handed to the subscribers.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Delivery {
    /// Notices put into a subscriber's buffer.
    pub(crate) queued: u64,
    /// Notices dropped because a subscriber's buffer was full.
    pub(crate) dropped: u64,
}

/// The subscribers of one engine.
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    list: Vec<Subscriber>,
}

impl Subscribers {
    /// True when nobody listens (the common case: nothing to do).
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many listen now.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Adds a subscriber whose notices go to `notices`.
    pub(crate) fn add(&mut self, notices: mpsc::Sender<proto::TaskStatus>, viewer: Viewer) {
        self.list.push(Subscriber {
            notices,
            viewer,
            dropping: 0,
        });
    }

    /// Hands `status` (of a task owned by `owner`) to every subscriber allowed to see it,
    /// without waiting; forgets subscribers that are gone.
    pub(crate) fn deliver(
        &mut self,
        status: &proto::TaskStatus,
        owner: Option<&Arc<str>>,
    ) -> Delivery {
        let mut delivery = Delivery::default();
        self.list.retain_mut(|subscriber| {
            if !subscriber.viewer.may_see(owner) {
                return !subscriber.notices.is_closed();
            }
            match subscriber.notices.try_send(status.clone()) {
                Ok(()) => {
                    delivery.queued += 1;
                    if subscriber.dropping > 0 {
                        info!(
                            target: LOG_TARGET,
                            dropped = subscriber.dropping,
                            "completion subscriber caught up; its dropped notices are left to the monitor loop"
                        );
                        subscriber.dropping = 0;
                    }
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    delivery.dropped += 1;
                    if subscriber.dropping == 0 {
                        warn!(
                            target: LOG_TARGET,
                            buffer = subscriber.notices.max_capacity(),
                            "completion subscriber too slow: dropping its notices until it catches up"
                        );
                    }
                    subscriber.dropping += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    debug!(target: LOG_TARGET, "completion subscriber gone");
                    false
                }
            }
        });
        delivery
    }
}

/// How one subscriber's notices are gathered into batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchShape {
    /// How long notices are gathered after the first one of a batch.
    pub(crate) flush_window: Duration,
    /// Most statuses per batch.
    pub(crate) max_statuses: usize,
    /// Most encoded bytes of statuses per batch.
    pub(crate) max_bytes: usize,
}

impl BatchShape {
    /// The shape a [`proto::CompletionsRequest`] asks for, within `max_message_bytes`; an absurd
    /// flush window is refused with INVALID_ARGUMENT.
    pub(crate) fn from_request(
        request: &proto::CompletionsRequest,
        max_message_bytes: usize,
    ) -> Result<Self, Status> {
        let flush_window = match request.flush_window_ms {
            0 => DEFAULT_FLUSH_WINDOW,
            ms if ms > MAX_FLUSH_WINDOW.as_millis() as u64 => {
                return Err(Status::invalid_argument(format!(
                    "flush_window_ms {ms} exceeds {} ms",
                    MAX_FLUSH_WINDOW.as_millis()
                )));
            }
            ms => Duration::from_millis(ms),
        };
        let max_statuses = match request.max_batch {
            0 => usize::MAX,
            n => n as usize,
        };
        Ok(Self {
            flush_window,
            max_statuses,
            max_bytes: max_message_bytes
                .saturating_sub(MESSAGE_OVERHEAD_BYTES)
                .max(1),
        })
    }
}

/// Encoded bytes `status` adds to a batch (field tag, length and body).
fn status_bytes(status: &proto::TaskStatus) -> usize {
    let body = status.encoded_len();
    1 + prost::encoding::length_delimiter_len(body) + body
}

/// Spawns the task that turns `notices` into batches on the returned stream; it ends when the
/// stream's reader goes away or `closing` turns true (after sending what it has gathered).
pub(crate) fn forward(
    mut notices: mpsc::Receiver<proto::TaskStatus>,
    shape: BatchShape,
    mut closing: watch::Receiver<bool>,
) -> CompletionStream {
    let (batches, batches_rx) = mpsc::channel(STREAM_BUFFER_MESSAGES);
    tokio::spawn(async move {
        let mut next_batch_id = 1u64;
        let mut carried: Option<proto::TaskStatus> = None;
        let mut closed = *closing.borrow();
        while !closed {
            let first = match carried.take() {
                Some(status) => status,
                None => tokio::select! {
                    notice = notices.recv() => match notice {
                        Some(status) => status,
                        None => break,
                    },
                    () = batches.closed() => break,
                    _ = closing.wait_for(|closing| *closing) => break,
                },
            };
            let mut bytes = status_bytes(&first);
            let mut statuses = vec![first];
            let deadline = Instant::now() + shape.flush_window;
            while statuses.len() < shape.max_statuses {
                let notice = tokio::select! {
                    notice = notices.recv() => notice,
                    () = tokio::time::sleep_until(deadline) => break,
                    _ = closing.wait_for(|closing| *closing) => {
                        closed = true;
                        break;
                    }
                };
                let Some(status) = notice else { break };
                let size = status_bytes(&status);
                if bytes + size > shape.max_bytes {
                    carried = Some(status);
                    break;
                }
                bytes += size;
                statuses.push(status);
            }
            let batch = proto::CompletionBatch {
                batch_id: next_batch_id,
                statuses,
            };
            next_batch_id += 1;
            if batches.send(Ok(batch)).await.is_err() {
                break;
            }
        }
        debug!(target: LOG_TARGET, "completion stream ended");
    });
    ReceiverStream::new(batches_rx)
}
