//! Pure batching arithmetic: splitting due tasks into batches, batch ids, and the size of a packet
//! (one batch exchange on the wire).

use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;

/// Bytes gRPC adds in front of every message: a compressed flag and a 4-byte length.
pub const GRPC_FRAME_HEADER_BYTES: u64 = 5;

/// Split `items` into batches of at most `batch_size` (at least 1), keeping their order.
pub fn split_into_batches<T>(items: Vec<T>, batch_size: usize) -> Vec<Vec<T>> {
    let batch_size = batch_size.max(1);
    let mut batches = Vec::with_capacity(items.len().div_ceil(batch_size));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        batches.push(items.by_ref().take(batch_size).collect());
    }
    batches
}

/// Bytes one message occupies on the wire inside a gRPC stream: encoded length plus framing.
pub fn framed_bytes<M: Message>(message: &M) -> u64 {
    message.encoded_len() as u64 + GRPC_FRAME_HEADER_BYTES
}

/// The size of one packet: the framed request plus its framed reply.
pub fn packet_bytes<Q: Message, R: Message>(request: &Q, reply: &R) -> u64 {
    framed_bytes(request) + framed_bytes(reply)
}

/// Hands out batch ids, unique for the life of the process.
#[derive(Debug, Default)]
pub struct BatchIds(AtomicU64);

impl BatchIds {
    /// The next batch id (starting at 1).
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_tasks_at_thirty_make_two_batches_and_sixty_one_make_three() {
        let sizes = |n: usize| -> Vec<usize> {
            split_into_batches((0..n).collect(), 30)
                .iter()
                .map(Vec::len)
                .collect()
        };
        assert_eq!(sizes(60), vec![30, 30]);
        assert_eq!(sizes(61), vec![30, 30, 1]);
        assert_eq!(sizes(0), Vec::<usize>::new());
    }

    #[test]
    fn batches_keep_task_order() {
        let batches = split_into_batches((0..7).collect::<Vec<_>>(), 3);
        assert_eq!(batches, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    }
}
