//! A long-lived bidirectional stream carrying batches, with replies matched to requests by batch
//! id so that many batches can be in flight at once. Requests travel as bytes encoded once by
//! [`super::encode`]; replies are decoded by prost.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

use crate::proto::{StatusBatch, StatusQuery, SubmitAck, SubmitBatch};
use crate::transport::{Connection, InFlight};

/// A message that names its batch: requests carry it, replies name the batch they answer.
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
    #[error("stream closed before the reply to batch {batch_id} arrived{}", .ended.as_ref().map(|e| format!(": {}", e.reason)).unwrap_or_default())]
    Closed {
        /// The batch left without a reply.
        batch_id: u64,
        /// What ended the stream, when known.
        ended: Option<StreamEnd>,
    },
}

impl StreamError {
    /// Whether the stream broke on a reply larger than the connection's message size cap.
    pub fn reply_too_large(&self) -> bool {
        matches!(self, StreamError::Closed { ended: Some(end), .. } if end.code == Some(tonic::Code::OutOfRange))
    }
}

/// What ended a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEnd {
    /// The gRPC status code, when the stream failed with one (none: it ended or was closed).
    pub code: Option<tonic::Code>,
    /// A sentence for the log saying why the stream ended.
    pub reason: String,
}

type Waiters<Resp> = HashMap<u64, oneshot::Sender<Resp>>;

struct Shared<Resp> {
    waiters: Waiters<Resp>,
    closed: Option<StreamEnd>,
}

/// One open stream of encoded batches answered by `Resp` batches.
pub struct BatchStream<Resp> {
    outbound: mpsc::Sender<Bytes>,
    shared: Arc<Mutex<Shared<Resp>>>,
    sessions: Option<Arc<tokio::sync::Semaphore>>,
    ended: tokio::sync::watch::Receiver<bool>,
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

/// The submission stream: encoded `SubmitBatch`es answered by `SubmitAck`s.
pub type SubmitStream = BatchStream<SubmitAck>;
/// The status stream: encoded `StatusQuery`s answered by `StatusBatch`es.
pub type StatusStream = BatchStream<StatusBatch>;

/// The RPC a stream of this reply type is opened on.
pub trait StreamMethod {
    /// `/package.Service/Method`.
    const PATH: &'static str;
}

impl StreamMethod for SubmitAck {
    const PATH: &'static str = "/turbomon.v1.Engine/Submit";
}

impl StreamMethod for StatusBatch {
    const PATH: &'static str = "/turbomon.v1.Engine/Status";
}

/// Requests queued for the wire before `call` waits for room.
const OUTBOUND_QUEUE: usize = 256;

impl<Resp> BatchStream<Resp>
where
    Resp: Batched + StreamMethod + prost::Message + Default + Send + 'static,
{
    /// Open a stream on `connection` (waits for the engine's response headers).
    pub async fn open(connection: &Connection) -> Result<Self, StreamError> {
        let max = connection.max_message_bytes();
        let mut grpc = tonic::client::Grpc::new(connection.channel())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        grpc.ready()
            .await
            .map_err(|e| StreamError::Open(e.to_string()))?;
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let inbound = grpc
            .streaming(
                tonic::Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static(Resp::PATH),
                PreEncoded::<Resp>(PhantomData),
            )
            .await
            .map_err(|s| StreamError::Open(s.to_string()))?
            .into_inner();
        Ok(Self::start(tx, inbound, connection.in_flight().clone()))
    }

    fn start(
        outbound: mpsc::Sender<Bytes>,
        mut inbound: Streaming<Resp>,
        in_flight: prometheus_client::metrics::gauge::Gauge,
    ) -> Self {
        let shared = Arc::new(Mutex::new(Shared {
            waiters: HashMap::new(),
            closed: None,
        }));
        let reader = Arc::clone(&shared);
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let end = loop {
                match inbound.message().await {
                    Ok(Some(reply)) => {
                        let waiter = lock(&reader).waiters.remove(&reply.batch_id());
                        match waiter {
                            Some(waiter) => {
                                let _ = waiter.send(reply);
                            }
                            // Its caller gave up (timeout) and was told so; nothing to do.
                            None => tracing::debug!(
                                target: "turbomon::supervisor",
                                batch_id = reply.batch_id(),
                                "reply for a batch nobody waits for"
                            ),
                        }
                    }
                    Ok(None) => {
                        break StreamEnd {
                            code: None,
                            reason: "the engine ended the stream".to_string(),
                        };
                    }
                    Err(status) => {
                        break StreamEnd {
                            code: Some(status.code()),
                            reason: status.to_string(),
                        };
                    }
                }
            };
            close(&reader, end);
            ended_tx.send_replace(true);
        });
        Self {
            outbound,
            shared,
            sessions: None,
            ended,
            in_flight,
        }
    }
}

impl<Resp: Send + 'static> BatchStream<Resp> {
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
                } => close(&shared, StreamEnd { code: None, reason: "the supervisor is stopping".to_string() }),
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

    /// Send one encoded batch and wait for its reply.
    pub async fn call(&self, batch_id: u64, request: Bytes) -> Result<Resp, StreamError> {
        let _slot = match &self.sessions {
            Some(sessions) => Some(sessions.acquire().await.map_err(|_| StreamError::Closed {
                batch_id,
                ended: Some(StreamEnd {
                    code: None,
                    reason: "the supervisor is shutting down".to_string(),
                }),
            })?),
            None => None,
        };
        let _in_flight = InFlight::enter(&self.in_flight);
        let (tx, rx) = oneshot::channel();
        {
            let mut shared = lock(&self.shared);
            if let Some(end) = &shared.closed {
                return Err(StreamError::Closed {
                    batch_id,
                    ended: Some(end.clone()),
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
            ended: lock(&self.shared).closed.clone(),
        }
    }
}

/// Mark the stream closed and wake every waiter with an error (by dropping its sender).
fn close<Resp>(shared: &Mutex<Shared<Resp>>, end: StreamEnd) {
    let mut shared = lock(shared);
    shared.closed.get_or_insert(end);
    shared.waiters.clear();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A codec whose requests are already-encoded bytes and whose replies are prost messages.
struct PreEncoded<Resp>(PhantomData<Resp>);

impl<Resp: prost::Message + Default + Send + 'static> Codec for PreEncoded<Resp> {
    type Encode = Bytes;
    type Decode = Resp;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<Resp>;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// Writes the bytes as they are: they were encoded once, when the batch was made.
struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }

    /// Every batch leaves as its own HTTP/2 DATA frame. tonic's default packs every message
    /// ready when it is polled into one chunk of up to 32 KB: whether two batches shared a frame
    /// (which the engine can decode only once its last byte is in) was a race between worker
    /// threads, and moved loop times over slow links by a quarter from one loop to the next.
    /// It also keeps each stream's encode buffer near 8 KB rather than growing to 32 KB.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(8 * 1024, 1)
    }
}
