//! A recording stand-in for a monitoring engine, for supervisor tests: it acknowledges every
//! task, answers status checks from a rule the test chooses, records every batch and its encoded
//! size, and counts the connections open at once.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use turbomon::proto::engine_server::{Engine, EngineServer};
use turbomon::proto::{
    PerfData, StatusBatch, StatusOneReply, StatusOneRequest, StatusQuery, SubmitAck, SubmitBatch,
    SubmitOneReply, SubmitOneRequest, TaskAck, TaskState, TaskStatus,
};

/// Framed size of a message inside a gRPC stream, measured here independently of the crate.
pub fn wire_bytes<M: Message>(m: &M) -> u64 {
    m.encoded_len() as u64 + 5
}

/// What the mock saw.
#[derive(Debug, Default, Clone)]
pub struct MockLog {
    /// Task ids of every submission batch, in arrival order.
    pub submit_batches: Vec<Vec<String>>,
    /// Batch id of every submission batch, in the same order.
    pub submit_batch_ids: Vec<u64>,
    /// (task id, attempt) of every task submitted, in arrival order.
    pub attempts: Vec<(String, u32)>,
    /// Request + reply bytes of every submission batch.
    pub submit_packets: Vec<u64>,
    /// Request bytes alone (framing included) of every submission batch.
    pub submit_request_bytes: Vec<u64>,
    /// Task ids and release ids of every status query.
    pub status_queries: Vec<(Vec<String>, Vec<String>)>,
    /// Request + reply bytes of every status query.
    pub status_packets: Vec<u64>,
    /// Task ids of unary submits.
    pub unary_submits: Vec<String>,
    /// Task ids of unary status checks.
    pub unary_status: Vec<String>,
}

type StateRule = dyn Fn(&str, u32) -> TaskState + Send + Sync;

/// The mock engine service.
#[derive(Clone)]
pub struct MockEngine {
    pub log: Arc<Mutex<MockLog>>,
    state_of: Arc<StateRule>,
    ack_delay: Duration,
    held_attempt: Arc<Mutex<std::collections::HashMap<String, u32>>>,
    /// The message and performance data of every status.
    output: Arc<(String, Vec<PerfData>)>,
}

impl MockEngine {
    /// Every task reports `OK` when asked.
    pub fn new() -> Self {
        Self::with_states(|_| TaskState::Ok)
    }

    /// Status answers come from `state_of(task_id)`.
    pub fn with_states(state_of: impl Fn(&str) -> TaskState + Send + Sync + 'static) -> Self {
        Self::with_attempt_states(move |id, _| state_of(id))
    }

    /// Status answers come from `state_of(task_id, attempt held)`.
    pub fn with_attempt_states(
        state_of: impl Fn(&str, u32) -> TaskState + Send + Sync + 'static,
    ) -> Self {
        Self {
            log: Arc::new(Mutex::new(MockLog::default())),
            state_of: Arc::new(state_of),
            ack_delay: Duration::ZERO,
            held_attempt: Arc::new(Mutex::new(std::collections::HashMap::new())),
            output: Arc::new(("mock".to_string(), Vec::new())),
        }
    }

    /// Every status carries `message` and `perfdata` (by default `mock` and none).
    pub fn with_output(mut self, message: &str, perfdata: Vec<PerfData>) -> Self {
        self.output = Arc::new((message.to_string(), perfdata));
        self
    }

    fn hold(&self, task: &turbomon::proto::Task) {
        self.held_attempt
            .lock()
            .unwrap()
            .insert(task.id.clone(), task.attempt);
        self.log
            .lock()
            .unwrap()
            .attempts
            .push((task.id.clone(), task.attempt));
    }

    /// Every batch is answered after `delay`.
    pub fn with_ack_delay(mut self, delay: Duration) -> Self {
        self.ack_delay = delay;
        self
    }

    pub fn log(&self) -> MockLog {
        self.log.lock().unwrap().clone()
    }

    /// Waits (at most 10 s) until exactly `count` tasks came in submission batches.
    pub async fn wait_submitted(&self, count: usize) {
        super::eventually(
            &format!("{count} tasks submitted"),
            Duration::from_secs(10),
            || {
                self.log()
                    .submit_batches
                    .iter()
                    .map(Vec::len)
                    .sum::<usize>()
                    == count
            },
        )
        .await;
    }

    fn status(&self, id: &str) -> TaskStatus {
        let attempt = self.held_attempt.lock().unwrap().get(id).copied();
        let Some(attempt) = attempt else {
            return TaskStatus {
                task_id: id.to_string(),
                state: TaskState::Unknown as i32,
                ..Default::default()
            };
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        TaskStatus {
            task_id: id.to_string(),
            state: (self.state_of)(id, attempt) as i32,
            value: 1.0,
            message: self.output.0.clone(),
            started_unix_ms: now - 2,
            finished_unix_ms: now - 1,
            attempt,
            perfdata: self.output.1.clone(),
        }
    }
}

#[tonic::async_trait]
impl Engine for MockEngine {
    type SubmitStream = ReceiverStream<Result<SubmitAck, Status>>;
    type StatusStream = ReceiverStream<Result<StatusBatch, Status>>;
    type CompletionsStream = ReceiverStream<Result<turbomon::proto::CompletionBatch, Status>>;

    async fn completions(
        &self,
        _request: Request<turbomon::proto::CompletionsRequest>,
    ) -> Result<Response<Self::CompletionsStream>, Status> {
        Err(Status::unimplemented("the mock engine does not push"))
    }

    async fn list_tasks(
        &self,
        _request: Request<turbomon::proto::ListTasksRequest>,
    ) -> Result<Response<turbomon::proto::ListTasksReply>, Status> {
        Err(Status::unimplemented("the mock engine does not list tasks"))
    }

    async fn submit(
        &self,
        request: Request<Streaming<SubmitBatch>>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                let me = me.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(me.ack_delay).await;
                    for task in &batch.tasks {
                        me.hold(task);
                    }
                    let ack = SubmitAck {
                        batch_id: batch.batch_id,
                        acks: batch
                            .tasks
                            .iter()
                            .map(|t| TaskAck {
                                task_id: t.id.clone(),
                                accepted: true,
                                reason: String::new(),
                                duplicate: false,
                                refusal: 0,
                            })
                            .collect(),
                        error: None,
                    };
                    {
                        let mut log = me.log.lock().unwrap();
                        log.submit_batches
                            .push(batch.tasks.iter().map(|t| t.id.clone()).collect());
                        log.submit_batch_ids.push(batch.batch_id);
                        log.submit_packets
                            .push(wire_bytes(&batch) + wire_bytes(&ack));
                        log.submit_request_bytes.push(wire_bytes(&batch));
                    }
                    let _ = tx.send(Ok(ack)).await;
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        request: Request<Streaming<StatusQuery>>,
    ) -> Result<Response<Self::StatusStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(query)) = inbound.message().await {
                let reply = StatusBatch {
                    batch_id: query.batch_id,
                    statuses: query.task_ids.iter().map(|id| me.status(id)).collect(),
                    error: None,
                };
                {
                    let mut log = me.log.lock().unwrap();
                    log.status_queries
                        .push((query.task_ids.clone(), query.release_ids.clone()));
                    log.status_packets
                        .push(wire_bytes(&query) + wire_bytes(&reply));
                }
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn submit_one(
        &self,
        request: Request<SubmitOneRequest>,
    ) -> Result<Response<SubmitOneReply>, Status> {
        let task = request
            .into_inner()
            .task
            .ok_or_else(|| Status::invalid_argument("no task"))?;
        tokio::time::sleep(self.ack_delay).await;
        self.hold(&task);
        self.log.lock().unwrap().unary_submits.push(task.id.clone());
        Ok(Response::new(SubmitOneReply {
            ack: Some(TaskAck {
                task_id: task.id,
                accepted: true,
                reason: String::new(),
                duplicate: false,
                refusal: 0,
            }),
        }))
    }

    async fn status_one(
        &self,
        request: Request<StatusOneRequest>,
    ) -> Result<Response<StatusOneReply>, Status> {
        let id = request.into_inner().task_id;
        self.log.lock().unwrap().unary_status.push(id.clone());
        Ok(Response::new(StatusOneReply {
            status: Some(self.status(&id)),
        }))
    }
}

/// Connections the mock has accepted, and how many were open at once at most.
#[derive(Debug, Default)]
pub struct ConnectionCount {
    pub accepted: AtomicUsize,
    pub open: AtomicUsize,
    pub max_open: AtomicUsize,
}

/// A socket that counts itself open until dropped.
pub struct Counted {
    stream: TcpStream,
    count: Arc<ConnectionCount>,
}

impl Counted {
    fn new(stream: TcpStream, count: Arc<ConnectionCount>) -> Self {
        count.accepted.fetch_add(1, Ordering::SeqCst);
        let open = count.open.fetch_add(1, Ordering::SeqCst) + 1;
        count.max_open.fetch_max(open, Ordering::SeqCst);
        Self { stream, count }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.count.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A mock engine serving on a listener; dropping it stops the server.
pub struct RunningMock {
    pub address: SocketAddr,
    pub connections: Arc<ConnectionCount>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for RunningMock {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serve `mock` on a fresh loopback port.
pub async fn serve_mock(mock: MockEngine) -> RunningMock {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    serve_mock_on(mock, listener).await
}

/// Serve `mock` on `address`, a loopback port the test reserved earlier (see
/// [`super::closed_address`]).
pub async fn serve_mock_at(mock: MockEngine, address: SocketAddr) -> RunningMock {
    let listener = TcpListener::bind(address)
        .await
        .expect("rebind the reserved port");
    serve_mock_on(mock, listener).await
}

/// Serve `mock` on `listener`.
pub async fn serve_mock_on(mock: MockEngine, listener: TcpListener) -> RunningMock {
    let address = listener.local_addr().expect("local addr");
    let connections = Arc::new(ConnectionCount::default());
    let count = Arc::clone(&connections);
    let incoming = futures::stream::unfold(listener, move |listener| {
        let count = Arc::clone(&count);
        async move {
            let accepted = listener.accept().await.map(|(stream, _)| {
                let _ = stream.set_nodelay(true);
                Counted::new(stream, count)
            });
            Some((accepted, listener))
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<EngineServer<MockEngine>>()
        .await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(EngineServer::new(mock))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    RunningMock {
        address,
        connections,
        stop: Some(stop),
    }
}
