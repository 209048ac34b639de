//! A long-lived bidirectional stream carrying batches, with replies matched to requests by batch
//! id so that many batches can be in flight at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::proto::engine_client::EngineClient;
use crate::proto::{StatusBatch, StatusQuery, SubmitAck, SubmitBatch};

/// A message that carries a batch id.
pub trait Batched {
    /// The batch id.
    fn batch_id(&self) -> u64;
}

macro_rules! batched {
    ($($t:ty),*) => {$(
        impl Batched for $t {
            fn batch_id(&self) -> u64 {
                self.batch_id
            }
        }
    )*};
}
batched!(SubmitBatch, SubmitAck, StatusQuery, StatusBatch);

/// Why a batch got no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// The stream could not be opened.
    #[error("cannot open stream: {0}")]
    Open(String),
    /// The stream ended or failed before the reply arrived.
    #[error("stream closed before the reply to batch {batch_id} arrived{}", .reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed {
        /// The batch left without a reply.
        batch_id: u64,
        /// What ended the stream, when known.
        reason: Option<String>,
    },
}

type Waiters<Resp> = HashMap<u64, oneshot::Sender<Resp>>;

struct Shared<Resp> {
    waiters: Waiters<Resp>,
    closed: Option<String>,
}

/// One open stream of `Req` batches answered by `Resp` batches.
pub struct BatchStream<Req, Resp> {
    outbound: mpsc::Sender<Req>,
    shared: Arc<Mutex<Shared<Resp>>>,
    sessions: Option<Arc<tokio::sync::Semaphore>>,
    ended: tokio::sync::watch::Receiver<bool>,
}

/// The submission stream.
pub type SubmitStream = BatchStream<SubmitBatch, SubmitAck>;
/// The status stream.
pub type StatusStream = BatchStream<StatusQuery, StatusBatch>;

/// A stream that can be opened on an engine connection.
pub trait OpenStream: Sized {
    /// Open one on `client`'s connection (waits for the engine's response headers).
    fn open(
        client: &mut EngineClient<Channel>,
    ) -> impl std::future::Future<Output = Result<Self, StreamError>> + Send;
}

impl OpenStream for SubmitStream {
    async fn open(client: &mut EngineClient<Channel>) -> Result<Self, StreamError> {
        SubmitStream::open(client).await
    }
}

impl OpenStream for StatusStream {
    async fn open(client: &mut EngineClient<Channel>) -> Result<Self, StreamError> {
        StatusStream::open(client).await
    }
}

impl SubmitStream {
    /// Open a submission stream on `client`'s connection.
    pub async fn open(client: &mut EngineClient<Channel>) -> Result<Self, StreamError> {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let inbound = client
            .submit(ReceiverStream::new(rx))
            .await
            .map_err(|s| StreamError::Open(s.to_string()))?
            .into_inner();
        Ok(Self::start(tx, inbound))
    }
}

impl StatusStream {
    /// Open a status stream on `client`'s connection.
    pub async fn open(client: &mut EngineClient<Channel>) -> Result<Self, StreamError> {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let inbound = client
            .status(ReceiverStream::new(rx))
            .await
            .map_err(|s| StreamError::Open(s.to_string()))?
            .into_inner();
        Ok(Self::start(tx, inbound))
    }
}

/// Requests queued for the wire before `call` waits for room.
const OUTBOUND_QUEUE: usize = 256;

impl<Req, Resp> BatchStream<Req, Resp>
where
    Req: Batched + Send + 'static,
    Resp: Batched + Send + 'static,
{
    fn start(outbound: mpsc::Sender<Req>, mut inbound: Streaming<Resp>) -> Self {
        let shared = Arc::new(Mutex::new(Shared {
            waiters: HashMap::new(),
            closed: None,
        }));
        let reader = Arc::clone(&shared);
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let reason = loop {
                match inbound.message().await {
                    Ok(Some(reply)) => {
                        let waiter = lock(&reader).waiters.remove(&reply.batch_id());
                        match waiter {
                            Some(waiter) => {
                                let _ = waiter.send(reply);
                            }
                            None => tracing::warn!(
                                target: "turbomon::supervisor",
                                batch_id = reply.batch_id(),
                                "reply for a batch nobody waits for"
                            ),
                        }
                    }
                    Ok(None) => break "the engine ended the stream".to_string(),
                    Err(status) => break status.to_string(),
                }
            };
            close(&reader, reason);
            ended_tx.send_replace(true);
        });
        Self {
            outbound,
            shared,
            sessions: None,
            ended,
        }
    }

    /// Once `stop` turns true, give batches in flight `grace` to be answered, then fail the
    /// rest (their tasks are handed back to the caller as unacknowledged).
    pub fn close_after_stop(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
        grace: std::time::Duration,
    ) {
        let shared = Arc::clone(&self.shared);
        let mut ended = self.ended.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = ended.wait_for(|e| *e) => {}
                _ = async {
                    let _ = stop.wait_for(|s| *s).await;
                    tokio::time::sleep(grace).await;
                } => close(&shared, "the supervisor is stopping".to_string()),
            }
        });
    }

    /// Take one of `sessions`' slots for every batch in flight.
    pub fn with_sessions(mut self, sessions: Option<Arc<tokio::sync::Semaphore>>) -> Self {
        self.sessions = sessions;
        self
    }

    /// Whether the stream has ended; a closed stream answers every call with an error.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared).closed.is_some() || self.outbound.is_closed()
    }

    /// Send one batch and wait for its reply.
    pub async fn call(&self, request: Req) -> Result<Resp, StreamError> {
        let batch_id = request.batch_id();
        let _slot = match &self.sessions {
            Some(sessions) => Some(sessions.acquire().await.map_err(|_| StreamError::Closed {
                batch_id,
                reason: Some("the supervisor is shutting down".to_string()),
            })?),
            None => None,
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut shared = lock(&self.shared);
            if let Some(reason) = &shared.closed {
                return Err(StreamError::Closed {
                    batch_id,
                    reason: Some(reason.clone()),
                });
            }
            shared.waiters.insert(batch_id, tx);
        }
        if self.outbound.send(request).await.is_err() {
            lock(&self.shared).waiters.remove(&batch_id);
            return Err(self.closed_error(batch_id));
        }
        rx.await.map_err(|_| self.closed_error(batch_id))
    }

    /// Forget a batch whose reply is no longer awaited (e.g. after a timeout).
    pub fn abandon(&self, batch_id: u64) {
        lock(&self.shared).waiters.remove(&batch_id);
    }

    fn closed_error(&self, batch_id: u64) -> StreamError {
        StreamError::Closed {
            batch_id,
            reason: lock(&self.shared).closed.clone(),
        }
    }
}

/// Mark the stream closed and wake every waiter with an error (by dropping its sender).
fn close<Resp>(shared: &Mutex<Shared<Resp>>, reason: String) {
    let mut shared = lock(shared);
    shared.closed.get_or_insert(reason);
    shared.waiters.clear();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
