//! Requests encoded once, straight from borrowed data. A batch is encoded when it is sent; the
//! bytes go on the wire, their length is the packet's request size, and the tasks or ids stay
//! with the caller for a resend, so nothing is cloned to keep it. The bytes are exactly what
//! prost would produce for the same message (tested below).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{self, WireType};

use crate::proto::Task;

/// Field numbers of `SubmitBatch` and `StatusQuery` in `engine.proto`.
const BATCH_ID_FIELD: u32 = 1;
const TASKS_FIELD: u32 = 2;
const TASK_IDS_FIELD: u32 = 2;
const RELEASE_IDS_FIELD: u32 = 3;

/// Bytes the largest batch id can take, for sizing a batch before its id is known.
const MAX_BATCH_ID_BYTES: usize = 1 + 10;

/// `SubmitBatch { batch_id, tasks }`, encoded.
pub(crate) fn submit_batch(batch_id: u64, tasks: &[Task]) -> Bytes {
    let mut buf = BytesMut::with_capacity(submit_batch_len(tasks));
    if batch_id != 0 {
        encoding::uint64::encode(BATCH_ID_FIELD, &batch_id, &mut buf);
    }
    for task in tasks {
        encoding::message::encode(TASKS_FIELD, task, &mut buf);
    }
    buf.freeze()
}

/// The most bytes `SubmitBatch` with these tasks can take, whatever its batch id.
pub(crate) fn submit_batch_len(tasks: &[Task]) -> usize {
    MAX_BATCH_ID_BYTES + encoding::message::encoded_len_repeated(TASKS_FIELD, tasks)
}

/// `StatusQuery { batch_id, task_ids, release_ids }`, encoded.
pub(crate) fn status_query(
    batch_id: u64,
    task_ids: &[Arc<str>],
    release_ids: &[Arc<str>],
) -> Bytes {
    let len = MAX_BATCH_ID_BYTES + strings_len(task_ids) + strings_len(release_ids);
    let mut buf = BytesMut::with_capacity(len);
    if batch_id != 0 {
        encoding::uint64::encode(BATCH_ID_FIELD, &batch_id, &mut buf);
    }
    put_strings(TASK_IDS_FIELD, task_ids, &mut buf);
    put_strings(RELEASE_IDS_FIELD, release_ids, &mut buf);
    buf.freeze()
}

/// Bytes one string takes as an element of a repeated string field (numbers below 16).
pub(crate) fn string_len(value: &str) -> usize {
    1 + encoding::encoded_len_varint(value.len() as u64) + value.len()
}

fn strings_len(values: &[Arc<str>]) -> usize {
    values.iter().map(|v| string_len(v)).sum()
}

fn put_strings(field: u32, values: &[Arc<str>], buf: &mut BytesMut) {
    for value in values {
        encoding::encode_key(field, WireType::LengthDelimited, buf);
        encoding::encode_varint(value.len() as u64, buf);
        buf.put_slice(value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::{StatusQuery, SubmitBatch};

    fn task(i: usize) -> Task {
        Task {
            id: format!("relator/rule/node-{i}/1700000000000"),
            relator: "relator".into(),
            rule: "rule".into(),
            node: format!("node-{i}"),
            scheduled_unix_ms: 1_700_000_000_000,
            attempt: 1,
            timeout_ms: 10_000,
            ..Task::default()
        }
    }

    #[test]
    fn a_submit_batch_encodes_exactly_as_prost_does() {
        let tasks: Vec<Task> = (0..30).map(task).collect();
        for batch_id in [0, 1, 300, u64::MAX] {
            let ours = submit_batch(batch_id, &tasks);
            let prost = SubmitBatch {
                batch_id,
                tasks: tasks.clone(),
            }
            .encode_to_vec();
            assert_eq!(ours.as_ref(), prost.as_slice());
            assert!(ours.len() <= submit_batch_len(&tasks));
        }
        let largest = SubmitBatch {
            batch_id: u64::MAX,
            tasks: tasks.clone(),
        };
        assert_eq!(submit_batch_len(&tasks), largest.encoded_len());
    }

    #[test]
    fn a_status_query_encodes_exactly_as_prost_does() {
        let ids: Vec<Arc<str>> = (0..30).map(|i| Arc::from(task(i).id)).collect();
        let release: Vec<Arc<str>> = (30..35).map(|i| Arc::from(task(i).id)).collect();
        let ours = status_query(7, &ids, &release);
        let prost = StatusQuery {
            batch_id: 7,
            task_ids: ids.iter().map(|s| s.to_string()).collect(),
            release_ids: release.iter().map(|s| s.to_string()).collect(),
        }
        .encode_to_vec();
        assert_eq!(ours.as_ref(), prost.as_slice());
    }
}
