//! A real in-process engine served on a fresh loopback port, a gRPC client for it, and both
//! directions of its submission and status streams.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use turbomon::config::EngineConfig;
use turbomon::engine::{Engine, EngineCounters, EngineError};
use turbomon::metrics::MetricsServer;
use turbomon::proto::engine_client::EngineClient;
use turbomon::proto::{self, TaskState};

/// Default engine settings, listening on `127.0.0.1:0`, metrics (when served, see
/// [`RunningEngine::serve_metrics`]) on a free loopback port too.
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        listen: "127.0.0.1:0".into(),
        metrics_listen: "127.0.0.1:0".into(),
        ..EngineConfig::default()
    }
}

/// Serves `engine` on a fresh loopback port until `shutdown` resolves; returns the address and
/// the serve task.
pub async fn serve_until(
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (SocketAddr, JoinHandle<Result<(), EngineError>>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local addr");
    (address, tokio::spawn(engine.serve(listener, shutdown)))
}

/// An engine serving on a loopback port until [`RunningEngine::shutdown`] or drop.
pub struct RunningEngine {
    pub engine: Engine,
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<Result<(), EngineError>>,
    metrics: Option<MetricsServer>,
}

impl RunningEngine {
    /// A memory-only engine with `config`'s limits.
    pub async fn start(config: EngineConfig) -> Self {
        Self::serve(Engine::new(config)).await
    }

    /// Serves `engine` (a clone of it; the caller may keep its own).
    pub async fn serve(engine: Engine) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (address, served) = serve_until(engine.clone(), async {
            let _ = stopped.await;
        })
        .await;
        Self {
            engine,
            address,
            stop: Some(stop),
            served,
            metrics: None,
        }
    }

    /// Serves `/metrics` on the engine's `metrics_listen` (which must not be a fixed port: use
    /// [`engine_config`]) until the engine is dropped; returns the address bound.
    pub fn serve_metrics(&mut self) -> SocketAddr {
        assert_ne!(
            self.engine.config().metrics_listen,
            turbomon::config::defaults::engine_metrics_listen(),
            "tests never bind the fixed default metrics port"
        );
        let server = self
            .engine
            .serve_metrics()
            .expect("metrics endpoint binds")
            .expect("metrics_listen is set");
        let address = server.addr();
        self.metrics = Some(server);
        address
    }

    pub async fn client(&self) -> EngineClient<Channel> {
        engine_client(self.address).await
    }

    /// Asks the engine to shut down without waiting for it.
    pub fn request_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Asks the engine to shut down and returns the serve result (within 20 s).
    pub async fn shutdown(mut self) -> Result<(), EngineError> {
        self.request_shutdown();
        tokio::time::timeout(Duration::from_secs(20), &mut self.served)
            .await
            .expect("serve returned within its grace")
            .expect("serve task")
    }

    /// Shuts the engine down, however serve ends.
    pub async fn stop(self) {
        let _ = self.shutdown().await;
    }
}

/// A real engine (default settings, no journal) on `127.0.0.1:0`.
pub async fn serve_engine() -> RunningEngine {
    RunningEngine::start(EngineConfig::default()).await
}

/// A gRPC client of the engine at `address`.
pub async fn engine_client(address: SocketAddr) -> EngineClient<Channel> {
    EngineClient::connect(format!("http://{address}"))
        .await
        .expect("connect to the engine")
}

/// Both directions of a bidirectional stream.
pub struct Stream<Req, Resp> {
    pub requests: mpsc::Sender<Req>,
    pub responses: tonic::Streaming<Resp>,
}

impl<Req, Resp> Stream<Req, Resp> {
    /// Sends `request` and waits (at most 10 s) for the next answer.
    pub async fn exchange(&mut self, request: Req) -> Resp {
        self.requests.send(request).await.ok().unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.responses.message())
            .await
            .expect("answer within 10 s")
            .unwrap()
            .expect("stream still open")
    }
}

/// Opens a stream with `call` (a client's `submit` or `status`).
async fn open_stream<Req, Resp, Opened>(
    call: impl FnOnce(ReceiverStream<Req>) -> Opened,
) -> Stream<Req, Resp>
where
    Opened: Future<Output = Result<tonic::Response<tonic::Streaming<Resp>>, tonic::Status>>,
{
    let (requests, rx) = mpsc::channel(16);
    let responses = call(ReceiverStream::new(rx)).await.unwrap().into_inner();
    Stream {
        requests,
        responses,
    }
}

pub async fn submit_stream(
    client: &mut EngineClient<Channel>,
) -> Stream<proto::SubmitBatch, proto::SubmitAck> {
    open_stream(|rx| client.submit(rx)).await
}

pub async fn status_stream(
    client: &mut EngineClient<Channel>,
) -> Stream<proto::StatusQuery, proto::StatusBatch> {
    open_stream(|rx| client.status(rx)).await
}

/// What `engine` answers for `id` (nothing released).
pub fn status_of(engine: &Engine, id: &str) -> proto::TaskStatus {
    engine.status_one(id.to_string(), &[]).unwrap()
}

pub fn state_of(engine: &Engine, id: &str) -> TaskState {
    TaskState::try_from(status_of(engine, id).state).unwrap()
}

/// Asserts every task received was accepted, a duplicate, or rejected.
pub fn assert_tasks_add_up(counters: &EngineCounters) {
    assert_eq!(
        counters.tasks_received,
        counters.tasks_accepted + counters.duplicates + counters.tasks_rejected,
        "{counters:?}"
    );
}
