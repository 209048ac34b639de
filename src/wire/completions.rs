//! Push mode: one long-lived `Completions` stream on which the engine sends final statuses as
//! they happen, in batches it numbers in order.

use std::time::Duration;

use crate::proto::{CompletionBatch, CompletionsRequest, TaskStatus};
use crate::transport::Connection;

/// An open completions stream.
pub struct CompletionFeed {
    stream: tonic::Streaming<CompletionBatch>,
    last_batch: u64,
}

/// One batch of final statuses pushed by the engine.
#[derive(Debug)]
pub struct Pushed {
    /// The statuses, each final on the engine.
    pub statuses: Vec<TaskStatus>,
    /// The engine numbered this batch at or below one already received: a restarted engine, or
    /// a reordering the stream should not allow. The statuses are still good.
    pub out_of_order: bool,
}

/// Ask the engine to push completions, gathered for at most `flush_window` before each batch.
/// An engine that cannot push answers `UNIMPLEMENTED`.
pub async fn subscribe(
    connection: &Connection,
    flush_window: Duration,
) -> Result<CompletionFeed, tonic::Status> {
    let request = CompletionsRequest {
        // Zero would mean "engine default" on the wire; the supervisor always names its window.
        flush_window_ms: u64::try_from(flush_window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
        max_batch: 0,
    };
    let stream = connection.client().completions(request).await?.into_inner();
    Ok(CompletionFeed {
        stream,
        last_batch: 0,
    })
}

impl CompletionFeed {
    /// The next batch; `None` once the engine ends the stream or the connection fails (either
    /// way, subscribe again).
    pub async fn next(&mut self) -> Option<Pushed> {
        let batch = self.stream.message().await.ok()??;
        let out_of_order = batch.batch_id <= self.last_batch;
        self.last_batch = batch.batch_id;
        Some(Pushed {
            statuses: batch.statuses,
            out_of_order,
        })
    }
}
