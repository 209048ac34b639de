//! The engine's journal: with `state_dir` set, every accepted task and every finished result is
//! recorded in an embedded, crash-safe redb database (`engine-journal.redb` in the state
//! directory), so that a restarted engine neither forgets a result nor runs a finished task
//! again, and reports the tasks that were unfinished when it stopped as lost in restart.
//!
//! One table maps a task id to its latest [`proto::TaskStatus`], protobuf-encoded: PENDING or
//! RUNNING when accepted, the final status when finished. A released (or expired) result is
//! deleted.
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

use super::tuning::LOG_TARGET;

/// The journal's file inside `state_dir`.
pub const JOURNAL_FILE_NAME: &str = "engine-journal.redb";

/// Task id → protobuf-encoded [`proto::TaskStatus`].
const TASKS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("tasks");

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
    /// Record (or replace) the status of `status.task_id`.
    Put(proto::TaskStatus),
    /// Forget a task id.
    Delete(String),
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
    /// The status of every task recorded, the id in `task_id`.
    pub(crate) statuses: Vec<proto::TaskStatus>,
    /// Ids whose record could not be decoded (deleted from the journal).
    pub(crate) unreadable: Vec<String>,
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
    transaction.commit()?;

    let transaction = database.begin_read()?;
    let table = transaction.open_table(TASKS)?;
    let mut recovered = Recovered::default();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let task_id = key.value().to_string();
        match proto::TaskStatus::decode(value.value()) {
            Ok(mut status) => {
                status.task_id = task_id;
                recovered.statuses.push(status);
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

/// Writes `ops` in one durable transaction.
fn write(database: &Database, ops: &[JournalOp]) -> Result<(), redb::Error> {
    let transaction = database.begin_write()?;
    {
        let mut table = transaction.open_table(TASKS)?;
        for op in ops {
            match op {
                JournalOp::Put(status) => {
                    let encoded = status.encode_to_vec();
                    table.insert(status.task_id.as_str(), encoded.as_slice())?;
                }
                JournalOp::Delete(task_id) => {
                    table.remove(task_id.as_str())?;
                }
            }
        }
    }
    transaction.commit()?;
    Ok(())
}
