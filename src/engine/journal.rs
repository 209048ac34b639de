//! The engine's journal: with `state_dir` set, every accepted task and every finished result is
//! recorded in an embedded, crash-safe redb database (`engine-journal.redb` in the state
//! directory), so that a restarted engine neither forgets a result nor runs a finished task
//! again, and reports the tasks that were unfinished when it stopped as lost in restart.
//!
//! One table maps a task id to its latest [`proto::TaskStatus`], protobuf-encoded: PENDING or
//! RUNNING when accepted, the final status when finished. A released (or expired) result is
//! deleted. A task submitted with a `supervisor_id` has its origin (supervisor, relator, rule,
//! node, scheduled instant) appended to the record as fields numbered far above the status's
//! ([`OriginFields`]), so every record still decodes as a plain status. A second table keeps
//! each supervisor's marks (the latest scheduled instant it sent per relator).
//!
//! The hot path never touches the disk: the store pushes [`JournalOp`]s onto an in-memory queue
//! (under its own lock, in the order the store changed), and one writer thread drains the queue
//! and writes everything it found in one redb write transaction, committed durably. Each op has a
//! sequence number; [`Journal::committed`] tells how far the writer has committed, which is what
//! the submission stream waits for before acknowledging a batch. A failing write is retried with
//! a backoff; meanwhile [`Journal::failure`] says why, and the engine refuses new tasks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::metrics::AtomicHistogram;
use crate::proto;

use super::supervisors::Origin;
use super::tuning::LOG_TARGET;

/// The journal's file inside `state_dir`.
pub const JOURNAL_FILE_NAME: &str = "engine-journal.redb";

/// Task id → protobuf-encoded [`proto::TaskStatus`], then its [`OriginFields`].
const TASKS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("tasks");

/// (supervisor id, relator) → the latest scheduled instant sent, ms since the Unix epoch.
const MARKS: TableDefinition<'static, (&str, &str), i64> = TableDefinition::new("marks");

/// The origin of a task, appended to its status record. The numbers are reserved in
/// `TaskStatus` (`engine.proto`), so the record decodes as a status too, and a status record
/// written before origins existed decodes here as an empty origin.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct OriginFields {
    #[prost(string, tag = "1001")]
    pub(crate) supervisor_id: String,
    #[prost(string, tag = "1002")]
    pub(crate) relator: String,
    #[prost(string, tag = "1003")]
    pub(crate) rule: String,
    #[prost(string, tag = "1004")]
    pub(crate) node: String,
    #[prost(int64, tag = "1005")]
    pub(crate) scheduled_unix_ms: i64,
}

/// After a failed write, the first wait before trying again...
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
/// ...doubling up to this.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);
/// At close, a failing write is tried this many times before its ops are given up (logged).
const CLOSING_WRITE_ATTEMPTS: u32 = 3;

/// Why the journal cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory does not exist and cannot be created.
    #[error("cannot create state_dir `{path}`: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The journal file cannot be opened or created (another engine may hold it).
    #[error("cannot open journal `{path}`: {source}")]
    Open {
        /// The journal file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: redb::Error,
    },
    /// The journal file opened but its records cannot be read.
    #[error("cannot read journal `{path}`: {source}")]
    Read {
        /// The journal file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: redb::Error,
    },
    /// The writer thread cannot be started.
    #[error("cannot start the journal writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// One change to record.
#[derive(Debug)]
pub(crate) enum JournalOp {
    /// Record (or replace) the status of `status.task_id`, with its origin when it has one.
    Put(proto::TaskStatus, Option<Arc<Origin>>),
    /// Forget a task id.
    Delete(String),
    /// Record a supervisor's mark for a relator.
    Mark {
        supervisor: Arc<str>,
        relator: Box<str>,
        scheduled_unix_ms: i64,
    },
}

/// The queue between the store and the writer thread.
#[derive(Debug, Default)]
struct Queue {
    ops: Vec<JournalOp>,
    /// Ops pushed since the journal opened: the sequence number of the last one.
    pushed: u64,
    /// The engine is going away: write what is left and stop.
    closing: bool,
    /// Why the last write failed, until one succeeds.
    failure: Option<String>,
}

/// What the store and the writer thread share.
#[derive(Debug)]
pub(crate) struct JournalQueue {
    queue: Mutex<Queue>,
    /// Wakes the writer when ops arrive in an empty queue, or at close.
    wake: Condvar,
    /// The sequence number of the last op committed.
    committed: watch::Sender<u64>,
    commits: AtomicU64,
    write_errors: AtomicU64,
    /// How long each committed write transaction took (the engine's metrics serve it).
    commit_time: AtomicHistogram,
}

impl JournalQueue {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `op` after every op queued before; returns its sequence number.
    pub(crate) fn push(&self, op: JournalOp) -> u64 {
        let mut queue = self.lock();
        let was_empty = queue.ops.is_empty();
        queue.ops.push(op);
        queue.pushed += 1;
        let seq = queue.pushed;
        drop(queue);
        if was_empty {
            self.wake.notify_one();
        }
        seq
    }

    /// The sequence number of the last op queued.
    pub(crate) fn pushed(&self) -> u64 {
        self.lock().pushed
    }

    /// Why writing fails, while it does.
    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// Write transactions committed since the journal opened.
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Write transactions that failed since the journal opened.
    pub(crate) fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// A watch of the sequence number of the last op committed.
    pub(crate) fn committed(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// The seconds each committed write transaction took, from begin to durable commit.
    pub(crate) fn commit_time(&self) -> &AtomicHistogram {
        &self.commit_time
    }
}

/// An open journal and its writer thread. Dropping it writes what is queued and closes the file.
#[derive(Debug)]
pub(crate) struct Journal {
    queue: Arc<JournalQueue>,
    writer: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

/// What an opened journal held.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// The status of every task recorded, the id in `task_id`, with its origin when it has
    /// one.
    pub(crate) statuses: Vec<(proto::TaskStatus, Option<OriginFields>)>,
    /// Ids whose record could not be decoded (deleted from the journal).
    pub(crate) unreadable: Vec<String>,
    /// Every mark: (supervisor id, relator, latest scheduled instant).
    pub(crate) marks: Vec<(String, String, i64)>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `state_dir`, reads what it holds and starts the
    /// writer thread.
    pub(crate) fn open(state_dir: &Path) -> Result<(Journal, Recovered), JournalError> {
        std::fs::create_dir_all(state_dir).map_err(|source| JournalError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(JOURNAL_FILE_NAME);
        let database = Database::create(&path).map_err(|source| JournalError::Open {
            path: path.clone(),
            source: source.into(),
        })?;
        let recovered = read_all(&database).map_err(|source| JournalError::Read {
            path: path.clone(),
            source,
        })?;
        let queue = Arc::new(JournalQueue {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            committed: watch::Sender::new(0),
            commits: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            commit_time: AtomicHistogram::seconds(),
        });
        for id in &recovered.unreadable {
            queue.push(JournalOp::Delete(id.clone()));
        }
        let writer_queue = Arc::clone(&queue);
        let writer = std::thread::Builder::new()
            .name("turbomon-journal".into())
            .spawn(move || write_until_closed(database, &writer_queue))
            .map_err(JournalError::Thread)?;
        info!(
            target: LOG_TARGET,
            path = %path.display(),
            records = recovered.statuses.len(),
            "journal opened"
        );
        Ok((
            Journal {
                queue,
                writer: Some(writer),
                path,
            },
            recovered,
        ))
    }

    /// The queue the store pushes onto.
    pub(crate) fn queue(&self) -> &Arc<JournalQueue> {
        &self.queue
    }

    /// The journal file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.queue.lock().closing = true;
        self.queue.wake.notify_one();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            error!(target: LOG_TARGET, "journal writer thread panicked");
        }
    }
}

/// Every record of the journal (creating its table on first use).
fn read_all(database: &Database) -> Result<Recovered, redb::Error> {
    let transaction = database.begin_write()?;
    transaction.open_table(TASKS)?;
    transaction.open_table(MARKS)?;
    transaction.commit()?;

    let transaction = database.begin_read()?;
    let table = transaction.open_table(TASKS)?;
    let mut recovered = Recovered::default();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let task_id = key.value().to_string();
        let record = value.value();
        let decoded = proto::TaskStatus::decode(record)
            .and_then(|status| Ok((status, OriginFields::decode(record)?)));
        match decoded {
            Ok((mut status, origin)) => {
                status.task_id = task_id;
                let origin = (!origin.supervisor_id.is_empty()).then_some(origin);
                recovered.statuses.push((status, origin));
            }
            Err(error) => {
                warn!(
                    target: LOG_TARGET,
                    task_id = %task_id,
                    %error,
                    "journal record cannot be decoded; forgetting it"
                );
                recovered.unreadable.push(task_id);
            }
        }
    }
    let marks = transaction.open_table(MARKS)?;
    for entry in marks.iter()? {
        let (key, value) = entry?;
        let (supervisor, relator) = key.value();
        recovered
            .marks
            .push((supervisor.to_string(), relator.to_string(), value.value()));
    }
    Ok(recovered)
}

/// The writer thread: drains the queue into one write transaction at a time until closed.
fn write_until_closed(database: Database, queue: &JournalQueue) {
    let mut retained: Vec<JournalOp> = Vec::new();
    let mut retry_delay = FIRST_RETRY_DELAY;
    let mut closing_attempts = 0u32;
    loop {
        let (ops, upto, closing) = {
            let mut guard = queue.lock();
            while guard.ops.is_empty() && !guard.closing && retained.is_empty() {
                guard = queue
                    .wake
                    .wait(guard)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let mut ops = std::mem::take(&mut retained);
            ops.append(&mut guard.ops);
            (ops, guard.pushed, guard.closing)
        };
        if ops.is_empty() {
            if closing {
                return;
            }
            continue;
        }
        let started = std::time::Instant::now();
        match write(&database, &ops) {
            Ok(()) => {
                queue.commit_time.observe(started.elapsed().as_secs_f64());
                queue.commits.fetch_add(1, Ordering::Relaxed);
                let recovered_from = queue.lock().failure.take();
                if let Some(failure) = recovered_from {
                    info!(target: LOG_TARGET, %failure, "journal writes succeed again");
                }
                retry_delay = FIRST_RETRY_DELAY;
                queue.committed.send_replace(upto);
            }
            Err(write_error) => {
                queue.write_errors.fetch_add(1, Ordering::Relaxed);
                let message = write_error.to_string();
                error!(
                    target: LOG_TARGET,
                    error = %message,
                    ops = ops.len(),
                    "journal write failed; refusing new tasks and retrying"
                );
                queue.lock().failure = Some(message);
                if closing {
                    closing_attempts += 1;
                    if closing_attempts >= CLOSING_WRITE_ATTEMPTS {
                        error!(
                            target: LOG_TARGET,
                            ops = ops.len(),
                            "journal closing: giving up on changes that cannot be written"
                        );
                        queue.committed.send_replace(upto);
                        return;
                    }
                }
                retained = ops;
                std::thread::sleep(retry_delay);
                retry_delay = (retry_delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

/// A status record: the status, then its origin's fields when it has one.
fn encode_record(status: &proto::TaskStatus, origin: Option<&Origin>) -> Vec<u8> {
    let mut encoded = status.encode_to_vec();
    if let Some(origin) = origin {
        let fields = OriginFields {
            supervisor_id: origin.supervisor.to_string(),
            relator: origin.relator.to_string(),
            rule: origin.rule.to_string(),
            node: origin.node.to_string(),
            scheduled_unix_ms: origin.scheduled_unix_ms,
        };
        encoded.extend(fields.encode_to_vec());
    }
    encoded
}

/// Writes `ops` in one durable transaction.
fn write(database: &Database, ops: &[JournalOp]) -> Result<(), redb::Error> {
    let transaction = database.begin_write()?;
    {
        let mut table = transaction.open_table(TASKS)?;
        let mut marks = transaction.open_table(MARKS)?;
        for op in ops {
            match op {
                JournalOp::Put(status, origin) => {
                    let encoded = encode_record(status, origin.as_deref());
                    table.insert(status.task_id.as_str(), encoded.as_slice())?;
                }
                JournalOp::Delete(task_id) => {
                    table.remove(task_id.as_str())?;
                }
                JournalOp::Mark {
                    supervisor,
                    relator,
                    scheduled_unix_ms,
                } => {
                    marks.insert((&**supervisor, &**relator), *scheduled_unix_ms)?;
                }
            }
        }
    }
    transaction.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_an_origin_still_decodes_as_a_status_and_an_old_one_as_no_origin() {
        let status = proto::TaskStatus {
            task_id: "r/u/n/5".into(),
            state: proto::TaskState::Ok as i32,
            attempt: 2,
            message: "fine".into(),
            ..Default::default()
        };
        let origin = Origin {
            supervisor: Arc::from("sup-1"),
            relator: "r".into(),
            rule: "u".into(),
            node: "n".into(),
            scheduled_unix_ms: 5,
        };
        let record = encode_record(&status, Some(&origin));
        assert_eq!(
            proto::TaskStatus::decode(record.as_slice()).unwrap(),
            status
        );
        let fields = OriginFields::decode(record.as_slice()).unwrap();
        assert_eq!(
            (
                fields.supervisor_id.as_str(),
                fields.node.as_str(),
                fields.scheduled_unix_ms
            ),
            ("sup-1", "n", 5)
        );
        let old = encode_record(&status, None);
        assert!(
            OriginFields::decode(old.as_slice())
                .unwrap()
                .supervisor_id
                .is_empty()
        );
    }
}
