//! The monitoring engine: a gRPC server that receives tasks, runs their checks with bounded
//! concurrency and timeouts, and keeps each task's status and result until the supervisor has
//! collected it (`proto/turbomon/v1/engine.proto`).
//!
//! - Submission: each [`proto::SubmitBatch`] is answered by one [`proto::SubmitAck`] with the
//!   same `batch_id`. A malformed batch (over `max_batch_tasks`, an empty id, an id twice) is
//!   refused as a whole with INVALID_ARGUMENT and nothing of it is taken; the stream stays open.
//!   Otherwise every task gets a [`proto::TaskAck`], in order: accepted, accepted as a duplicate
//!   (the id is already held: not run again), or refused with a [`proto::Refusal`] code and a
//!   reason (`INVALID` for an invalid check, `ENGINE_FULL` when `max_held_tasks` is reached,
//!   `ATTEMPT_RUNNING` for a retry whose earlier attempt still runs, `STALE_EPOCH` for a task
//!   whose `assignment_epoch` is older than the newest seen for its `supervisor_id`: a
//!   supervisor cluster member that lost the engine to another; when nothing of the batch
//!   fits, the whole batch is refused with RESOURCE_EXHAUSTED).
//! - Status: each [`proto::StatusQuery`] is answered by one [`proto::StatusBatch`] with one
//!   status per id in the query's order (UNKNOWN for ids not held); then its `release_ids` are
//!   forgotten, if finished. Results nobody collects are dropped after `result_retention`.
//! - Attempts: a retry is the same task id with a higher `attempt`. It replaces a held result
//!   whose attempt is lower and final (counted in `retries_accepted`); the same or a lower attempt
//!   is a duplicate; a higher attempt while the held one is pending or running is rejected with
//!   the reason "attempt N still running" (UNAVAILABLE for `SubmitOne`). Status always reports
//!   the attempt held.
//! - Execution: at most `max_concurrent_checks` checks run at once; the others wait as PENDING,
//!   HIGH priority before NORMAL before LOW (first come first served within one), and each worker
//!   takes the next waiting check when it finishes one. A `sim` check of zero duration completes
//!   inline when it is accepted.
//! - Listing: `ListTasks` pages through the tasks held for one `supervisor_id` (the id each task
//!   was submitted with), ordered by task id, at most `max_batch_tasks` per page, each task with
//!   its state and attempt, what it is, and its full status once finished; the first page also
//!   carries the supervisor's marks (the latest scheduled instant it sent per relator). A task
//!   id held for one supervisor is refused to another.
//! - Push completions: each `Completions` subscriber receives the final statuses of the tasks
//!   that finish after it subscribed, in batches (see the `completions` module). A subscriber
//!   that does not keep up loses notices (counted), never slows the checks.
//! - Journal: with `state_dir` set, accepted tasks and finished results are recorded in a redb
//!   database ([`JOURNAL_FILE_NAME`]) by a background writer, one transaction per group of
//!   changes; the `Submit` stream and `SubmitOne` acknowledge a task only once it is committed.
//!   [`Engine::open`] takes the journal back: finished results are held again (answered,
//!   acknowledged as duplicates, never re-run), tasks that had not finished become final
//!   `LOST_IN_RESTART` results (counted in `lost_in_restart`), for the supervisor to retry.
//!   Without `state_dir` everything is in memory, and a restart forgets every task.
//!
//! A whole batch is handled under one acquisition of the engine's one lock. Logs go to the
//! `turbomon::engine` target; nothing is logged per task above debug level.

mod completions;
mod counters;
mod journal;
mod service;
mod store;
mod supervisors;
mod task_map;
mod tuning;
mod viewer;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures::FutureExt;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tonic::transport::Server;
use tracing::{debug, error, info, warn};

use crate::check::allow::ExecAllowList;
use crate::check::{self, CheckResult};
use crate::config::{EngineConfig, MAX_SUPERVISOR_ID_BYTES, ReloadDiff};
use crate::metrics::{EngineMetrics, HeldTasks, MetricsError, MetricsServer, RefusalReason};
use crate::proto::engine_server::EngineServer;
use crate::proto::{self, Refusal, TaskState};
use crate::tls::ServerTls;
use crate::tls::incoming::{Accept, plaintext_incoming, tls_incoming};
use crate::transport::KEEPALIVE_TIMEOUT;
use crate::wire::refusal::{accepted, batch_error, refused as refused_task};

pub use completions::{CompletionStream, DEFAULT_FLUSH_WINDOW, MAX_FLUSH_WINDOW};
pub use counters::EngineCounters;
use journal::Journal;
pub use journal::{JOURNAL_FILE_NAME, JournalError};
pub use service::EngineService;
use store::{Admission, BatchCache, Job, Limits, Now, PageRequest, Prepared, Store};
use tuning::LOG_TARGET;
use viewer::Viewer;

/// At shutdown, how long the journal gets to commit its last changes.
const JOURNAL_FLUSH_GRACE: Duration = Duration::from_secs(5);

/// After the checks are done (or abandoned), how long open connections get to close.
const CONNECTION_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// HTTP/2 flow-control windows: room for many batches in flight before the engine reads them.
const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 4 * 1024 * 1024;

/// Longest piece of a client-supplied id quoted back in an error message.
const QUOTE_LIMIT_CHARS: usize = 120;

/// Why the engine cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configured `listen` address cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address from the configuration.
        address: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The listener handed to [`Engine::serve`] has no local address.
    #[error("listener has no local address: {0}")]
    Listener(#[source] std::io::Error),
    /// The gRPC server stopped with an error.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The journal in `state_dir` cannot be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A file of `[tls]` cannot be used.
    #[error("[tls]: {0}")]
    Tls(#[source] crate::tls::TlsFileError),
    /// A pattern of `[exec] allow` cannot be used.
    #[error("[exec] allow: {0}")]
    ExecAllow(#[source] crate::check::allow::AllowError),
    /// The descriptors for gRPC server reflection cannot be read (a build fault).
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The metrics endpoint (`metrics_listen`) cannot be served.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Plaintext on an address other hosts can reach, without `allow_plaintext`.
    #[error(
        "listening on {address}, which is not a loopback address, without [tls]: set [tls] cert, \
         key and client_ca (make them with `turbomon pki`), or allow_plaintext = true"
    )]
    PlaintextNotAllowed {
        /// The address bound.
        address: SocketAddr,
    },
}

/// The gRPC server reflection services (v1 and v1alpha) for the engine's API and the health
/// service, so that grpcurl and grpc_cli can list and call the engine without the .proto files.
fn reflection_services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    EngineError,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// The monitoring engine. Cheap to clone: all clones share one task store.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    /// The configuration and the counters (not the tasks, which may be many).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.shared.config)
            .field("counters", &self.counters())
            .finish()
    }
}

struct Shared {
    /// The configuration the engine started with.
    config: EngineConfig,
    /// The configuration in force: `config` with the live keys of the last reload.
    applied: Mutex<EngineConfig>,
    /// Where a reload (SIGHUP) reads the configuration from; unset: nothing to re-read.
    config_file: Mutex<Option<ConfigFile>>,
    /// Read outside the store's lock (batch shape checks, workers); set by reloads.
    max_batch_tasks: AtomicUsize,
    output_limit_bytes: AtomicUsize,
    store: Mutex<Store>,
    /// With `state_dir`: the journal (dropped last, after the store: it writes what is left).
    journal: Option<Journal>,
    /// Signalled when the last running check finishes and nothing waits.
    idle: Notify,
    /// Set at the end of a shutdown: open streams end.
    closing: watch::Sender<bool>,
    /// What the engine counts for Prometheus.
    metrics: EngineMetrics,
}

impl Engine {
    /// An engine with `config`'s limits, in memory only: `state_dir` is ignored (with a
    /// warning); use [`Engine::open`] to honour it. The configuration is expected to be
    /// validated already; a `max_concurrent_checks` of 0 (which would never run anything) is
    /// treated as 1, with a warning.
    pub fn new(config: EngineConfig) -> Engine {
        if let Some(state_dir) = &config.state_dir {
            warn!(
                target: LOG_TARGET,
                state_dir = %state_dir.display(),
                "Engine::new keeps tasks in memory only; state_dir is ignored (use Engine::open)"
            );
        }
        let exec_allow = ExecAllowList::new(&config.exec.allow).unwrap_or_else(|error| {
            // Validation refuses this; a caller that skipped it gets an engine that runs no
            // program rather than one that runs any.
            warn!(target: LOG_TARGET, %error, "[exec] allow unusable; every exec check is refused");
            ExecAllowList::default()
        });
        Engine::build(config, None, exec_allow)
    }

    /// An engine with `config`'s limits. With `state_dir` set, opens (or creates) the journal
    /// there and takes back what it holds: finished results are held again, tasks that never
    /// finished are reported `LOST_IN_RESTART`. Without it, the same as [`Engine::new`].
    ///
    /// Reading the journal is blocking file I/O, done once at start. Only one engine may have a
    /// state directory open at a time; a second one gets [`JournalError::Open`].
    pub fn open(config: EngineConfig) -> Result<Engine, EngineError> {
        let exec_allow = ExecAllowList::new(&config.exec.allow).map_err(EngineError::ExecAllow)?;
        let Some(state_dir) = config.state_dir.clone() else {
            return Ok(Engine::build(config, None, exec_allow));
        };
        let (journal, recovered) = Journal::open(&state_dir)?;
        let engine = Engine::build(config, Some(journal), exec_allow);
        let records = recovered.statuses.len();
        let unreadable = recovered.unreadable.len();
        let (lost, counters) = {
            let mut store = engine.lock();
            let lost = store.restore(recovered.statuses, recovered.marks, Now::read());
            (lost, store.counters())
        };
        let journal_path = engine
            .shared
            .journal
            .as_ref()
            .map(|journal| journal.path().display().to_string())
            .unwrap_or_default();
        if lost > 0 {
            warn!(
                target: LOG_TARGET,
                journal = %journal_path,
                lost_in_restart = lost,
                "tasks unfinished when the engine last stopped are reported LOST_IN_RESTART"
            );
        }
        info!(
            target: LOG_TARGET,
            journal = %journal_path,
            records,
            unreadable,
            results_restored = counters.results_restored,
            results_expired = counters.results_expired,
            lost_in_restart = lost,
            "journal taken back"
        );
        Ok(engine)
    }

    fn build(config: EngineConfig, journal: Option<Journal>, exec_allow: ExecAllowList) -> Engine {
        if config.max_concurrent_checks == 0 {
            warn!(
                target: LOG_TARGET,
                "max_concurrent_checks is 0; running one check at a time"
            );
        }
        let limits = Limits::from_config(&config);
        let journal_queue = journal.as_ref().map(|journal| Arc::clone(journal.queue()));
        let commit_time = journal_queue
            .as_ref()
            .map(|queue| queue.commit_time().clone());
        Engine {
            shared: Arc::new_cyclic(|shared: &Weak<Shared>| {
                let shared = shared.clone();
                // Read at each scrape; the weak reference lets the engine go when it is done.
                let held = move || shared.upgrade().map(|shared| held_tasks(&shared.store));
                Shared {
                    applied: Mutex::new(config.clone()),
                    config_file: Mutex::new(None),
                    max_batch_tasks: AtomicUsize::new(limits.max_batch_tasks),
                    output_limit_bytes: AtomicUsize::new(config.output_limit_bytes),
                    config,
                    store: Mutex::new(Store::new(limits, journal_queue, exec_allow)),
                    journal,
                    idle: Notify::new(),
                    closing: watch::Sender::new(false),
                    metrics: EngineMetrics::new(commit_time, held),
                }
            }),
        }
    }

    /// Serves `/metrics` on the configured `metrics_listen` until the returned server is
    /// dropped (keep it for as long as [`Engine::serve`] runs); `None` when `metrics_listen` is
    /// empty. [`Engine::serve`] does not serve metrics by itself. Must be called within a tokio
    /// runtime.
    pub fn serve_metrics(&self) -> Result<Option<MetricsServer>, EngineError> {
        Ok(MetricsServer::bind(
            &self.shared.config.metrics_listen,
            Arc::clone(self.shared.metrics.registry()),
        )?)
    }

    /// True when the engine records its tasks in a journal.
    pub fn has_journal(&self) -> bool {
        self.shared.journal.is_some()
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// The configuration in force: the one started with, with the live keys of the last reload.
    pub fn applied_config(&self) -> EngineConfig {
        lock_config(&self.shared.applied).clone()
    }

    /// Applies a newly read configuration (already validated): the keys in
    /// [`crate::config::ENGINE_LIVE_KEYS`] take effect for tasks admitted from now on (a raised
    /// `max_concurrent_checks` starts waiting checks at once); the others are reported as
    /// needing a restart and left as they are. An unusable `[exec] allow` changes nothing.
    pub fn reload(&self, new: &EngineConfig) -> Result<ReloadDiff, EngineError> {
        let mut applied = lock_config(&self.shared.applied);
        let diff = crate::config::engine_reload(&self.shared.config, &applied, new);
        if diff.applied.is_empty() {
            return Ok(diff);
        }
        let exec_allow = ExecAllowList::new(&new.exec.allow).map_err(EngineError::ExecAllow)?;
        *applied = crate::config::engine_live(&applied, new);
        let limits = Limits::from_config(&applied);
        self.shared
            .max_batch_tasks
            .store(limits.max_batch_tasks, Ordering::Relaxed);
        self.shared
            .output_limit_bytes
            .store(applied.output_limit_bytes, Ordering::Relaxed);
        drop(applied);
        let start_now = self.lock().set_limits(limits, exec_allow, Now::read());
        self.start_workers(start_now);
        Ok(diff)
    }

    /// Where a reload (SIGHUP while serving) reads the configuration from. Without it, a SIGHUP
    /// re-reads only the `[tls]` files.
    pub fn set_config_file(&self, file: ConfigFile) {
        *self
            .shared
            .config_file
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(file);
    }

    /// Re-reads the configuration file set with [`Engine::set_config_file`] and applies it.
    /// `None` when no file is set; an unreadable or invalid file changes nothing.
    pub async fn reload_from_file(&self) -> Option<Result<ReloadDiff, String>> {
        let file = self
            .shared
            .config_file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        let text = match tokio::fs::read_to_string(&file.path).await {
            Ok(text) => text,
            Err(error) => return Some(Err(format!("{}: {error}", file.path.display()))),
        };
        let mut new = match crate::config::parse_engine(&text, &file.path) {
            Ok(new) => new,
            Err(error) => return Some(Err(error.to_string())),
        };
        if let Some(listen) = &file.listen_override {
            new.listen.clone_from(listen);
        }
        if let Some(metrics_listen) = &file.metrics_listen_override {
            new.metrics_listen.clone_from(metrics_listen);
        }
        Some(self.reload(&new).map_err(|error| error.to_string()))
    }

    /// The tonic service, with the maximum encoding and decoding message sizes set to
    /// `max_message_bytes`. [`Engine::serve`] uses it; it is public for callers that build their
    /// own server.
    pub fn grpc_service(&self) -> EngineServer<EngineService> {
        let limit = self.shared.config.max_message_bytes;
        EngineServer::new(EngineService::new(self.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    /// Binds the configured `listen` address.
    pub async fn bind(&self) -> Result<TcpListener, EngineError> {
        let address = &self.shared.config.listen;
        TcpListener::bind(address)
            .await
            .map_err(|source| EngineError::Bind {
                address: address.clone(),
                source,
            })
    }

    /// Serves the engine and the standard gRPC health service (`turbomon.v1.Engine` reported
    /// SERVING) on `listener`, with TCP_NODELAY, until `shutdown` resolves.
    ///
    /// Shutdown is graceful: the health status turns NOT_SERVING (the engine's service and the
    /// server as a whole); new tasks are refused with UNAVAILABLE while the checks already taken
    /// in finish (for at most `shutdown_grace`); connections are still accepted and streams keep
    /// answering status queries meanwhile, so a supervisor can collect the last results. Then the
    /// listener is closed. Tasks still unfinished at the end of the grace
    /// become `LOST_IN_RESTART` (journaled, when there is a journal, so the next start reports
    /// them), and the journal's last changes are committed. Then the open streams are ended and
    /// the server returns.
    ///
    /// `/metrics` is served separately, by [`Engine::serve_metrics`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), EngineError> {
        let local_addr: SocketAddr = listener.local_addr().map_err(EngineError::Listener)?;
        let name = local_addr.to_string();
        match &self.shared.config.tls {
            Some(files) => {
                let tls = ServerTls::load(&files.server_files()).map_err(EngineError::Tls)?;
                // Renewed certificate files take effect for new connections within the period,
                // or at once on SIGHUP.
                let watcher = AbortOnDrop(tls.spawn_watcher(crate::tls::RELOAD_PERIOD));
                let hangup = AbortOnDrop(tokio::spawn(on_hangups(self.clone(), Some(tls.clone()))));
                let accept = Accept::new(name, self.shared.config.max_open_connections);
                let incoming = tls_incoming(listener, tls, accept);
                let result = self.serve_on(incoming, local_addr, true, shutdown).await;
                drop((watcher, hangup));
                result
            }
            None => {
                if !local_addr.ip().is_loopback() {
                    if !self.shared.config.allow_plaintext {
                        return Err(EngineError::PlaintextNotAllowed {
                            address: local_addr,
                        });
                    }
                    warn!(
                        target: LOG_TARGET,
                        %local_addr,
                        "serving plaintext beyond loopback (allow_plaintext = true): anyone who \
                         reaches this port can submit checks and read results"
                    );
                }
                let accept = Accept::new(name, self.shared.config.max_open_connections);
                let incoming = plaintext_incoming(listener, accept);
                // SIGHUP must not end the engine (its default action) even with nothing to
                // re-read.
                let hangup = AbortOnDrop(tokio::spawn(on_hangups(self.clone(), None)));
                let result = self.serve_on(incoming, local_addr, false, shutdown).await;
                drop(hangup);
                result
            }
        }
    }

    /// [`Engine::serve`] on connections from `incoming`, TLS or plaintext.
    async fn serve_on<IO>(
        self,
        incoming: impl futures::Stream<Item = Result<IO, std::io::Error>> + Send,
        local_addr: SocketAddr,
        tls: bool,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), EngineError>
    where
        IO: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + tonic::transport::server::Connected
            + Unpin
            + Send
            + 'static,
        IO::ConnectInfo: Clone + Send + Sync + 'static,
    {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<EngineServer<EngineService>>().await;
        let (reflection_v1, reflection_v1alpha) = reflection_services()?;

        let (stop_accepting, stop_accepting_rx) = tokio::sync::oneshot::channel::<()>();
        let server = Server::builder()
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            // Pings find peers that vanished without closing (a pulled cable, a dead NAT entry),
            // so their connections do not stay open for ever.
            .http2_keepalive_interval(Some(self.shared.config.keepalive_interval))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(self.grpc_service())
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_accepting_rx.await;
            });
        let mut server = std::pin::pin!(server);
        let sweeper = AbortOnDrop(tokio::spawn(sweep_periodically(self.clone())));
        info!(target: LOG_TARGET, %local_addr, tls, "engine serving");

        tokio::select! {
            result = &mut server => {
                // The server stopped by itself: only an error does that.
                return result.map_err(EngineError::Serve);
            }
            () = shutdown => {}
        }

        info!(
            target: LOG_TARGET,
            unfinished_checks = self.lock().unfinished_checks(),
            "shutting down: refusing new tasks, waiting for checks to finish"
        );
        self.lock().draining = true;
        // NOT_SERVING first, then keep accepting while draining: a health checker or load
        // balancer sees the engine going away, and a supervisor that reconnects can still
        // collect the last results. New tasks are refused with UNAVAILABLE meanwhile.
        health
            .set_not_serving::<EngineServer<EngineService>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;

        let grace = lock_config(&self.shared.applied).shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        let checks_done = tokio::time::timeout_at(deadline, self.wait_until_idle());
        let mut checks_done = std::pin::pin!(checks_done);
        let mut server_result = None;
        let checks_finished_in_time = loop {
            tokio::select! {
                done = &mut checks_done => break done.is_ok(),
                result = &mut server, if server_result.is_none() => server_result = Some(result),
            }
        };
        if !checks_finished_in_time {
            let counters = self.counters();
            let abandoned = self.lock().abandon_unfinished(Now::read());
            warn!(
                target: LOG_TARGET,
                running = counters.checks_running,
                pending = counters.checks_pending,
                abandoned,
                journaled = self.has_journal(),
                "shutdown grace of {grace:?} is over: unfinished tasks are lost in restart"
            );
        }
        if self.has_journal()
            && tokio::time::timeout(JOURNAL_FLUSH_GRACE, self.flush_journal())
                .await
                .is_err()
        {
            warn!(
                target: LOG_TARGET,
                "journal still writing after {JOURNAL_FLUSH_GRACE:?}; the rest is written on exit"
            );
        }

        self.shared.closing.send_replace(true);
        let _ = stop_accepting.send(());
        let server_result = match server_result {
            Some(result) => result,
            None => match tokio::time::timeout(CONNECTION_CLOSE_GRACE, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    warn!(target: LOG_TARGET, "connections still open after shutdown; leaving them");
                    Ok(())
                }
            },
        };
        drop(sweeper);
        info!(target: LOG_TARGET, %local_addr, "engine stopped");
        server_result.map_err(EngineError::Serve)
    }

    /// `max_batch_tasks` in force.
    fn max_batch_tasks(&self) -> usize {
        self.shared.max_batch_tasks.load(Ordering::Relaxed)
    }

    /// The counters now.
    pub fn counters(&self) -> EngineCounters {
        self.lock().counters()
    }

    /// Handles one submission batch, exactly as the `Submit` stream does, and returns its ack.
    /// Must be called within a tokio runtime (checks that take time run as tasks on it).
    ///
    /// With a journal, the tasks are recorded in the background: the `Submit` stream sends the
    /// ack only once they are committed; a direct caller can wait with
    /// [`Engine::flush_journal`].
    pub fn submit_batch(&self, batch: proto::SubmitBatch) -> proto::SubmitAck {
        let batch = self.prepare_batch(batch);
        self.submit_batch_tracked(batch, &Caller::default()).0
    }

    /// Checks `batch`'s shape and prepares its tasks ([`Prepared`]), without the store's lock:
    /// the `Submit` stream does it in the task that decodes the batches.
    fn prepare_batch(&self, batch: proto::SubmitBatch) -> PreparedBatch {
        let batch_id = batch.batch_id;
        let task_count = batch.tasks.len();
        let tasks = check_batch_shape(batch_id, &batch.tasks, self.max_batch_tasks())
            .map(|()| batch.tasks.into_iter().map(Prepared::new).collect());
        PreparedBatch {
            batch_id,
            task_count,
            tasks,
        }
    }

    /// [`Engine::submit_batch`], plus the journal sequence number that must be committed before
    /// the ack is sent (0 when nothing is to wait for).
    fn submit_batch_tracked(
        &self,
        batch: PreparedBatch,
        caller: &Caller,
    ) -> (proto::SubmitAck, u64) {
        let PreparedBatch {
            batch_id,
            task_count,
            tasks,
        } = batch;
        let tasks = match tasks {
            Ok(tasks) => tasks,
            Err(message) => {
                let refused =
                    self.refuse_batch(batch_id, task_count, tonic::Code::InvalidArgument, message);
                return (refused, 0);
            }
        };

        let now = Now::read();
        let mut acks = Vec::with_capacity(task_count);
        let mut start_now = Vec::new();
        let mut exhausted = 0usize;
        let mut not_allowed = Vec::new();
        let viewer = caller.viewer();
        let journal_seq;
        {
            let mut store = self.lock();
            if let Some(message) = unavailable_reason(&store) {
                store.count_refused_batch(task_count);
                drop(store);
                self.shared
                    .metrics
                    .refused(RefusalReason::Unavailable, task_count as u64);
                return (refused(batch_id, tonic::Code::Unavailable, message), 0);
            }
            store.sweep_if_due(now.instant);
            let mut cache = BatchCache::default();
            for task in tasks {
                let admitted = store.admit_in_batch(task, now, &mut start_now, &viewer, &mut cache);
                count_admission(&self.shared.metrics, &admitted.1);
                let task_ack = match admitted {
                    (task_id, Admission::Accepted | Admission::Retry) => accepted(task_id, false),
                    (task_id, Admission::Duplicate) => accepted(task_id, true),
                    (task_id, Admission::Busy(reason)) => {
                        refused_task(task_id, Refusal::AttemptRunning, reason)
                    }
                    (task_id, Admission::Invalid(reason)) => {
                        refused_task(task_id, Refusal::Invalid, reason)
                    }
                    (task_id, Admission::NotAllowed(reason)) => {
                        not_allowed.push(reason.clone());
                        refused_task(task_id, Refusal::Invalid, reason)
                    }
                    (task_id, Admission::StaleEpoch(reason)) => {
                        refused_task(task_id, Refusal::StaleEpoch, reason)
                    }
                    (task_id, Admission::Exhausted(reason)) => {
                        exhausted += 1;
                        refused_task(task_id, Refusal::EngineFull, reason)
                    }
                };
                acks.push(task_ack);
            }
            store.journal_marks();
            journal_seq = store.journal_seq();
            if exhausted > 0 && acks.iter().all(|ack| !ack.accepted) {
                // Nothing fitted: refuse the batch as a whole (its tasks are already counted as
                // rejected one by one).
                store.count_refused_batch(0);
                let limit = store.limits().max_held_tasks;
                drop(store);
                debug!(target: LOG_TARGET, batch_id, "batch refused: engine full");
                let refused = refused(
                    batch_id,
                    tonic::Code::ResourceExhausted,
                    format!(
                        "engine holds max_held_tasks {limit} tasks: none of the {task_count} tasks of batch {batch_id} fits"
                    ),
                );
                return (refused, 0);
            }
        }
        self.start_workers(start_now);
        log_not_allowed(caller, &not_allowed);
        let ack = proto::SubmitAck {
            batch_id,
            acks,
            error: None,
        };
        (ack, journal_seq)
    }

    /// Handles one task outside a batch (`SubmitOne`): an accepted or duplicate ack, or the
    /// reason it is refused: INVALID_ARGUMENT (an empty id, an invalid check),
    /// RESOURCE_EXHAUSTED (`max_held_tasks` reached) or UNAVAILABLE (shutting down, the journal
    /// cannot be written, or an earlier attempt of the task is still running).
    ///
    /// With a journal, the task is recorded in the background (see [`Engine::submit_batch`]).
    pub fn submit_one(&self, task: proto::Task) -> Result<proto::TaskAck, tonic::Status> {
        self.submit_one_tracked(task, &Caller::default()).0
    }

    /// [`Engine::submit_one`], plus the journal sequence number to wait for before answering.
    fn submit_one_tracked(
        &self,
        task: proto::Task,
        caller: &Caller,
    ) -> (Result<proto::TaskAck, tonic::Status>, u64) {
        if task.id.is_empty() {
            self.lock().count_rejected_task();
            self.shared.metrics.refused(RefusalReason::Invalid, 1);
            return (
                Err(tonic::Status::invalid_argument("task has an empty id")),
                0,
            );
        }
        let now = Now::read();
        let mut start_now = Vec::new();
        let (admitted, journal_seq) = {
            let mut store = self.lock();
            if let Some(message) = unavailable_reason(&store) {
                store.count_rejected_task();
                self.shared.metrics.refused(RefusalReason::Unavailable, 1);
                return (Err(tonic::Status::unavailable(message)), 0);
            }
            store.sweep_if_due(now.instant);
            let admitted = store.admit(task, now, &mut start_now, &caller.viewer());
            count_admission(&self.shared.metrics, &admitted.1);
            store.journal_marks();
            (admitted, store.journal_seq())
        };
        self.start_workers(start_now);
        let answer = match admitted {
            (task_id, Admission::Accepted | Admission::Retry) => Ok(accepted(task_id, false)),
            (task_id, Admission::Duplicate) => Ok(accepted(task_id, true)),
            (_, Admission::Busy(reason)) => Err(tonic::Status::unavailable(reason)),
            (_, Admission::Invalid(reason)) => Err(tonic::Status::invalid_argument(reason)),
            (_, Admission::NotAllowed(reason)) => {
                log_not_allowed(caller, std::slice::from_ref(&reason));
                Err(tonic::Status::invalid_argument(reason))
            }
            (_, Admission::Exhausted(reason)) => Err(tonic::Status::resource_exhausted(reason)),
            (_, Admission::StaleEpoch(reason)) => Err(tonic::Status::failed_precondition(reason)),
        };
        (answer, journal_seq)
    }

    /// Subscribes to push completions (the `Completions` RPC): the returned stream carries the
    /// final statuses of tasks that finish from now on, in batches gathered for the request's
    /// flush window (0: [`DEFAULT_FLUSH_WINDOW`]) of at most `max_batch` statuses (0: as many as
    /// fit in `max_message_bytes`). A flush window over [`MAX_FLUSH_WINDOW`] is refused with
    /// INVALID_ARGUMENT. The stream ends when the engine shuts down. Must be called within a
    /// tokio runtime.
    pub fn subscribe_completions(
        &self,
        request: &proto::CompletionsRequest,
    ) -> Result<CompletionStream, tonic::Status> {
        self.subscribe_completions_as(request, Viewer::Local)
    }

    /// [`Engine::subscribe_completions`] for `viewer`: only completions of its own tasks.
    fn subscribe_completions_as(
        &self,
        request: &proto::CompletionsRequest,
        viewer: Viewer,
    ) -> Result<CompletionStream, tonic::Status> {
        let shape =
            completions::BatchShape::from_request(request, self.shared.config.max_message_bytes)?;
        let (notices, notices_rx) =
            mpsc::channel(self.shared.config.completion_buffer_notices.max(1));
        self.lock().subscribe(notices, viewer);
        Ok(completions::forward(notices_rx, shape, self.closing()))
    }

    /// Resolves when every change made so far is committed to the journal (at once without a
    /// journal). While journal writes fail, it waits until they succeed again.
    pub async fn flush_journal(&self) {
        let seq = self.lock().journal_seq();
        self.journal_committed(seq).await;
    }

    /// Resolves when the journal has committed up to `seq` (at once without a journal or for
    /// 0).
    async fn journal_committed(&self, seq: u64) {
        let Some(journal) = &self.shared.journal else {
            return;
        };
        if seq == 0 {
            return;
        }
        let mut committed = journal.queue().committed();
        // The sender lives as long as the journal, which outlives `self`'s borrow.
        let _ = committed.wait_for(|committed| *committed >= seq).await;
    }

    /// Handles one status query, exactly as the `Status` stream does: statuses in the query's
    /// order, then the releases.
    pub fn query_status(&self, query: proto::StatusQuery) -> proto::StatusBatch {
        self.query_status_as(query, &Viewer::Local)
    }

    /// [`Engine::query_status`] for `viewer`: another supervisor's tasks read as unknown and
    /// are not released.
    fn query_status_as(&self, query: proto::StatusQuery, viewer: &Viewer) -> proto::StatusBatch {
        let batch_id = query.batch_id;
        let max = self.max_batch_tasks();
        if let Err(message) = check_query_shape(batch_id, &query.task_ids, &query.release_ids, max)
        {
            self.lock().count_refused_query();
            debug!(target: LOG_TARGET, batch_id, %message, "status query refused");
            return proto::StatusBatch {
                batch_id,
                statuses: Vec::new(),
                error: Some(batch_error(tonic::Code::InvalidArgument, message)),
            };
        }
        let mut statuses = Vec::with_capacity(query.task_ids.len());
        let now = tokio::time::Instant::now();
        let mut store = self.lock();
        store.sweep_if_due(now);
        for task_id in query.task_ids {
            statuses.push(store.status(task_id, viewer));
        }
        for task_id in &query.release_ids {
            store.release(task_id, viewer);
        }
        drop(store);
        proto::StatusBatch {
            batch_id,
            statuses,
            error: None,
        }
    }

    /// One task's status (`StatusOne`), then the releases.
    pub fn status_one(
        &self,
        task_id: String,
        release_ids: &[String],
    ) -> Result<proto::TaskStatus, tonic::Status> {
        self.status_one_as(task_id, release_ids, &Viewer::Local)
    }

    /// [`Engine::status_one`] for `viewer`.
    fn status_one_as(
        &self,
        task_id: String,
        release_ids: &[String],
        viewer: &Viewer,
    ) -> Result<proto::TaskStatus, tonic::Status> {
        if task_id.is_empty() {
            return Err(tonic::Status::invalid_argument("task_id is empty"));
        }
        let max = self.max_batch_tasks();
        check_query_shape(0, &[], release_ids, max).map_err(tonic::Status::invalid_argument)?;
        let mut store = self.lock();
        store.sweep_if_due(tokio::time::Instant::now());
        let status = store.status(task_id, viewer);
        for id in release_ids {
            store.release(id, viewer);
        }
        Ok(status)
    }

    /// One page of the tasks held for a supervisor (`ListTasks`); see
    /// [`proto::ListTasksRequest`]. Refused with INVALID_ARGUMENT, and a reason, when the
    /// supervisor id is empty or over [`MAX_SUPERVISOR_ID_BYTES`] bytes, the page token is
    /// longer than any task id the engine takes (`max_task_bytes`), or the limit is over
    /// `max_batch_tasks`. Answered while shutting down too.
    pub fn list_tasks(
        &self,
        request: &proto::ListTasksRequest,
    ) -> Result<proto::ListTasksReply, tonic::Status> {
        self.list_tasks_as(request, &Viewer::Local)
    }

    /// [`Engine::list_tasks`] for `viewer`: only the tasks its certificate submitted.
    fn list_tasks_as(
        &self,
        request: &proto::ListTasksRequest,
        viewer: &Viewer,
    ) -> Result<proto::ListTasksReply, tonic::Status> {
        let max_batch_tasks = self.max_batch_tasks();
        let max_id_bytes = lock_config(&self.shared.applied).max_task_bytes;
        let limit =
            check_list_request(request, max_batch_tasks, max_id_bytes).map_err(|reason| {
                self.lock().count_refused_list();
                debug!(target: LOG_TARGET, %reason, "task list refused");
                tonic::Status::invalid_argument(reason)
            })?;
        let page = PageRequest {
            supervisor_id: &request.supervisor_id,
            after_id: &request.after_id,
            limit,
            // Room for the reply's framing and its token beside the tasks.
            byte_budget: self
                .shared
                .config
                .max_message_bytes
                .saturating_sub(2 * max_id_bytes + 1024)
                / 2,
        };
        let mut store = self.lock();
        store.sweep_if_due(tokio::time::Instant::now());
        Ok(store.list(page, viewer))
    }

    fn refuse_batch(
        &self,
        batch_id: u64,
        task_count: usize,
        code: tonic::Code,
        message: String,
    ) -> proto::SubmitAck {
        self.lock().count_refused_batch(task_count);
        self.shared
            .metrics
            .refused(RefusalReason::Invalid, task_count as u64);
        debug!(target: LOG_TARGET, batch_id, ?code, %message, "batch refused");
        refused(batch_id, code, message)
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic elsewhere while holding the lock leaves the store consistent enough to go on:
        // every mutation is a few field updates.
        self.shared
            .store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn start_workers(&self, jobs: Vec<Job>) {
        for job in jobs {
            tokio::spawn(work(self.clone(), job));
        }
    }

    /// Resolves when no check is running or waiting.
    async fn wait_until_idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.lock().unfinished_checks() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A watch that turns true when open streams must end.
    fn closing(&self) -> watch::Receiver<bool> {
        self.shared.closing.subscribe()
    }
}

/// Who sent a request: the name in its client certificate (with TLS) and its address; both
/// unknown for calls made in-process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The certificate's name (its common name, else its first DNS name).
    pub name: Option<Arc<str>>,
    /// The peer's address.
    pub address: Option<SocketAddr>,
}

impl Caller {
    /// Whose results this caller may see: everything in-process, its own over the network.
    fn viewer(&self) -> Viewer {
        match (&self.name, &self.address) {
            (None, None) => Viewer::Local,
            (name, _) => Viewer::Peer(name.clone()),
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.name, &self.address) {
            (Some(name), Some(address)) => write!(f, "{name} ({address})"),
            (Some(name), None) => f.write_str(name),
            (None, Some(address)) => write!(f, "{address} (no certificate)"),
            (None, None) => f.write_str("in-process caller"),
        }
    }
}

/// One warning for the exec checks of a request refused by `[exec] allow`, naming the caller.
fn log_not_allowed(caller: &Caller, reasons: &[String]) {
    /// Distinct reasons quoted in one line; the count covers all.
    const QUOTED: usize = 5;
    if reasons.is_empty() {
        return;
    }
    let mut distinct: Vec<&str> = Vec::new();
    for reason in reasons {
        if distinct.len() < QUOTED && !distinct.contains(&reason.as_str()) {
            distinct.push(reason);
        }
    }
    warn!(
        target: LOG_TARGET,
        %caller,
        refused = reasons.len(),
        reasons = %distinct.join("; "),
        "exec checks refused"
    );
}

/// Logs each SIGHUP (unix) on an engine without `[tls]`: there is nothing to re-read, and the
/// signal's default action would end the process.
async fn on_hangups(engine: Engine, tls: Option<ServerTls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                warn!(target: LOG_TARGET, %error, "cannot listen for SIGHUP; reload needs a restart");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            reload_on_hangup(&engine, tls.as_ref()).await;
        }
    }
    #[cfg(not(unix))]
    drop((engine, tls));
}

/// One SIGHUP: re-read the `[tls]` files and the configuration file, apply what can change live,
/// and log it in one line.
async fn reload_on_hangup(engine: &Engine, tls: Option<&ServerTls>) {
    let (tls_outcome, tls_failed) = match tls.map(ServerTls::reload) {
        None => ("none".to_string(), false),
        Some(Ok(true)) => ("reloaded".to_string(), false),
        Some(Ok(false)) => ("unchanged".to_string(), false),
        Some(Err(error)) => (format!("unusable, previous files kept: {error}"), true),
    };
    match engine.reload_from_file().await {
        None if tls_failed => {
            error!(target: LOG_TARGET, tls = %tls_outcome, "SIGHUP: no configuration file to re-read (built-in defaults)")
        }
        None => {
            info!(target: LOG_TARGET, tls = %tls_outcome, "SIGHUP: no configuration file to re-read (built-in defaults)")
        }
        Some(Err(reason)) => {
            error!(target: LOG_TARGET, tls = %tls_outcome, error = %reason, "SIGHUP: configuration not reloaded; the one in force stays")
        }
        Some(Ok(diff)) if tls_failed || !diff.restart_needed.is_empty() => {
            warn!(target: LOG_TARGET, applied = %diff.applied_list(), restart_needed = %diff.restart_list(), tls = %tls_outcome, "SIGHUP: configuration reloaded; some changes apply only after a restart")
        }
        Some(Ok(diff)) => {
            info!(target: LOG_TARGET, applied = %diff.applied_list(), tls = %tls_outcome, "SIGHUP: configuration reloaded")
        }
    }
}

/// A worker: runs `job` once its admission is journaled, records its result, and goes on with the next waiting check until
/// none is left.
async fn work(engine: Engine, mut job: Job) {
    loop {
        // Not before the task is journaled: a kill in between must not leave a check that ran
        // but that the next start knows nothing of (the supervisor would send it again).
        engine.journal_committed(job.journaled).await;
        let output_limit_bytes = engine.shared.output_limit_bytes.load(Ordering::Relaxed);
        let started = std::time::Instant::now();
        let run = check::run(&job.check, job.timeout, output_limit_bytes);
        let result = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
            Ok(result) => result,
            Err(_) => CheckResult::failed(format!("{} check panicked", job.check.kind_name())),
        };
        engine
            .shared
            .metrics
            .check_ran(job.check.kind_name(), started.elapsed());
        if result.state != TaskState::Ok {
            debug!(target: LOG_TARGET, task_id = %job.id, state = ?result.state, message = %result.message, "check finished");
        }
        let (next, idle) = {
            let mut store = engine.lock();
            let next = store.finish(&job, result, Now::read());
            let idle = next.is_none() && store.unfinished_checks() == 0;
            (next, idle)
        };
        match next {
            Some(next) => job = next,
            None => {
                if idle {
                    engine.shared.idle.notify_waiters();
                }
                return;
            }
        }
    }
}

/// Where an engine's configuration comes from, for reloads.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// The engine file.
    pub path: PathBuf,
    /// `--listen` given on the command line, which replaces the file's `listen` on every read.
    pub listen_override: Option<String>,
    /// `--metrics-listen` given on the command line, likewise for `metrics_listen`.
    pub metrics_listen_override: Option<String>,
}

fn lock_config(config: &Mutex<EngineConfig>) -> MutexGuard<'_, EngineConfig> {
    config.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts what became of one task in the engine's metrics.
fn count_admission(metrics: &EngineMetrics, admission: &Admission) {
    match admission {
        Admission::Accepted | Admission::Retry => metrics.accepted(1),
        Admission::Duplicate => metrics.duplicates(1),
        Admission::Busy(_) => metrics.refused(RefusalReason::AttemptRunning, 1),
        Admission::Invalid(_) | Admission::NotAllowed(_) => {
            metrics.refused(RefusalReason::Invalid, 1)
        }
        Admission::Exhausted(_) => metrics.refused(RefusalReason::EngineFull, 1),
        Admission::StaleEpoch(_) => metrics.refused(RefusalReason::StaleEpoch, 1),
    }
}

/// The tasks `store` holds now, by state.
fn held_tasks(store: &Mutex<Store>) -> HeldTasks {
    let counters = store
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .counters();
    HeldTasks {
        pending: counters.checks_pending,
        running: counters.checks_running,
        finished: counters
            .tasks_held
            .saturating_sub(counters.checks_pending + counters.checks_running),
    }
}

/// Drops expired results every sweep period, so memory stays bounded even when idle.
async fn sweep_periodically(engine: Engine) {
    loop {
        // Read each time: a reload may change result_retention.
        let period = engine.lock().limits().sweep_period();
        tokio::time::sleep(period).await;
        engine.lock().sweep_if_due(tokio::time::Instant::now());
    }
}

/// Aborts a task this module spawned when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A submission batch made ready outside the store's lock by [`Engine::prepare_batch`].
#[derive(Debug)]
struct PreparedBatch {
    batch_id: u64,
    task_count: usize,
    /// Its tasks, or why the batch is refused as a whole (INVALID_ARGUMENT).
    tasks: Result<Vec<Prepared>, String>,
}

/// Refuses a batch that is too big, has an empty id, or has an id twice.
fn check_batch_shape(batch_id: u64, tasks: &[proto::Task], max: usize) -> Result<(), String> {
    if tasks.len() > max {
        return Err(format!(
            "batch of {} tasks exceeds max_batch_tasks {max}",
            tasks.len()
        ));
    }
    if let Some(index) = tasks.iter().position(|task| task.id.is_empty()) {
        return Err(format!("task at index {index} has an empty id"));
    }
    // A batch in id order (as a supervisor's usually is) has no duplicate: no copy to sort.
    let in_order = tasks.windows(2).all(|pair| pair[0].id < pair[1].id);
    if !in_order {
        let mut ids: Vec<&str> = tasks.iter().map(|task| task.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!(
                "task id `{}` appears twice in batch {batch_id}",
                clip(pair[0])
            ));
        }
    }
    Ok(())
}

/// Refuses a status query that is too big or has an empty id.
fn check_query_shape(
    batch_id: u64,
    task_ids: &[String],
    release_ids: &[String],
    max: usize,
) -> Result<(), String> {
    if task_ids.len() > max {
        return Err(format!(
            "status query {batch_id} asks for {} tasks, over max_batch_tasks {max}",
            task_ids.len()
        ));
    }
    if release_ids.len() > max {
        return Err(format!(
            "status query {batch_id} releases {} tasks, over max_batch_tasks {max}",
            release_ids.len()
        ));
    }
    if let Some(index) = task_ids.iter().position(String::is_empty) {
        return Err(format!("task id at index {index} is empty"));
    }
    if let Some(index) = release_ids.iter().position(String::is_empty) {
        return Err(format!("release id at index {index} is empty"));
    }
    Ok(())
}

/// The page size a `ListTasks` request asks for (0: `max_batch_tasks`), or why it is refused.
fn check_list_request(
    request: &proto::ListTasksRequest,
    max_batch_tasks: usize,
    max_id_bytes: usize,
) -> Result<usize, String> {
    let supervisor_id = &request.supervisor_id;
    if supervisor_id.is_empty() {
        return Err("supervisor_id is empty".into());
    }
    if supervisor_id.len() > MAX_SUPERVISOR_ID_BYTES {
        return Err(format!(
            "supervisor_id is {} bytes, over {MAX_SUPERVISOR_ID_BYTES}",
            supervisor_id.len()
        ));
    }
    if request.after_id.len() > max_id_bytes {
        return Err(format!(
            "after_id is {} bytes, longer than any task the engine takes (max_task_bytes {max_id_bytes})",
            request.after_id.len()
        ));
    }
    let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
    if limit > max_batch_tasks {
        return Err(format!(
            "limit {limit} is over max_batch_tasks {max_batch_tasks}"
        ));
    }
    Ok(if limit == 0 {
        max_batch_tasks.max(1)
    } else {
        limit
    })
}

/// Why no task can be taken now, if so: the engine is shutting down, or its journal cannot be
/// written.
fn unavailable_reason(store: &Store) -> Option<String> {
    if store.draining {
        return Some("engine is shutting down".into());
    }
    store
        .journal_failure()
        .map(|failure| format!("engine cannot write its state journal: {failure}"))
}

fn refused(batch_id: u64, code: tonic::Code, message: String) -> proto::SubmitAck {
    proto::SubmitAck {
        batch_id,
        acks: Vec::new(),
        error: Some(batch_error(code, message)),
    }
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(QUOTE_LIMIT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
