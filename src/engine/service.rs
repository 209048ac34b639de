//! The tonic service: the `turbomon.v1.Engine` RPCs mapped onto [`Engine`]'s batch handlers.
//!
//! Each bidirectional stream follows tonic's pattern, in two spawned tasks: one reads (decodes)
//! the inbound stream, the other handles each message in order and puts the answer into a
//! bounded channel, which the handler returns as the response stream. An inbound error (a
//! client gone, a message over the size limit) ends that stream only; the tasks it already
//! submitted stay held and run.
//!
//! With a journal, an acknowledgement of accepted tasks leaves only once the tasks are committed
//! to it, so a supervisor never holds an ack for a task a crash could forget.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::tuning::{LOG_TARGET, STREAM_BUFFER_MESSAGES};
use super::{Caller, Engine};
use crate::proto;

/// The gRPC face of an [`Engine`]; build it with [`Engine::grpc_service`].
#[derive(Debug, Clone)]
pub struct EngineService {
    engine: Engine,
}

impl EngineService {
    pub(super) fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

/// Who sent `request`: its client certificate's name (with TLS) and its address.
fn caller<T>(request: &Request<T>) -> Caller {
    Caller {
        name: request
            .peer_certs()
            .and_then(|certs| crate::tls::peer_name(&certs))
            .map(Arc::from),
        address: request.remote_addr(),
    }
}

/// Answers every message of `inbound` with `handle`, in order, on the returned stream, until the
/// client ends its side, the client goes away, or the engine closes its streams at shutdown.
fn answer_each<Req, Resp>(
    engine: Engine,
    inbound: Streaming<Req>,
    handle: impl Fn(&Engine, Req) -> Resp + Send + 'static,
) -> ReceiverStream<Result<Resp, Status>>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let (answers, answers_rx) = mpsc::channel(STREAM_BUFFER_MESSAGES);
    read_each(engine, inbound, answers, |_, request| request, handle);
    ReceiverStream::new(answers_rx)
}

/// Spawns the tasks that handle every message of `inbound` with `handle` and put the outcome (or
/// the inbound error that ended the stream) into `out`. Decoding (inside `inbound.message()`)
/// and `prepare` run in one task, handling (under the store's lock) in another, joined by a
/// bounded queue, so that the next batch is decoded and prepared while one is handled, on the
/// other core when there is one; the order of the answers is the order of the messages.
fn read_each<Req, Prep, Out>(
    engine: Engine,
    mut inbound: Streaming<Req>,
    out: mpsc::Sender<Result<Out, Status>>,
    prepare: impl Fn(&Engine, Req) -> Prep + Send + 'static,
    handle: impl Fn(&Engine, Prep) -> Out + Send + 'static,
) where
    Req: Send + 'static,
    Prep: Send + 'static,
    Out: Send + 'static,
{
    let (decoded, mut decoded_rx) = mpsc::channel::<Result<Prep, Status>>(STREAM_BUFFER_MESSAGES);
    let mut closing = engine.closing();
    let reader = engine.clone();
    tokio::spawn(async move {
        let closed = async move {
            let _ = closing.wait_for(|closing| *closing).await;
        };
        let mut closed = std::pin::pin!(closed);
        loop {
            let message = tokio::select! {
                biased;
                message = inbound.message() => message,
                () = &mut closed => break,
            };
            match message {
                Ok(Some(request)) => {
                    if decoded.send(Ok(prepare(&reader, request))).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    debug!(target: LOG_TARGET, %status, "inbound stream ended with an error");
                    let _ = decoded.send(Err(status)).await;
                    break;
                }
            }
        }
    });
    tokio::spawn(async move {
        // Ends once the reader has stopped and every message it decoded is answered, or when
        // the client stops reading the answers.
        while let Some(message) = decoded_rx.recv().await {
            let answer = message.map(|request| handle(&engine, request));
            let ended = answer.is_err();
            if out.send(answer).await.is_err() || ended {
                break;
            }
        }
    });
}

/// The `Submit` stream. With a journal, each ack waits (in order, without holding up the
/// batches behind it) until the batch's tasks are committed; a stream still waiting when the
/// engine closes its streams ends without the ack (the supervisor resends, and gets duplicates).
fn answer_submissions(
    engine: Engine,
    inbound: Streaming<proto::SubmitBatch>,
    caller: Caller,
) -> ReceiverStream<Result<proto::SubmitAck, Status>> {
    if !engine.has_journal() {
        let (answers, answers_rx) = mpsc::channel(STREAM_BUFFER_MESSAGES);
        read_each(
            engine,
            inbound,
            answers,
            Engine::prepare_batch,
            move |engine, batch| engine.submit_batch_tracked(batch, &caller).0,
        );
        return ReceiverStream::new(answers_rx);
    }
    let (answers, answers_rx) = mpsc::channel(STREAM_BUFFER_MESSAGES);
    let (handled, mut handled_rx) = mpsc::channel(STREAM_BUFFER_MESSAGES);
    read_each(
        engine.clone(),
        inbound,
        handled,
        Engine::prepare_batch,
        move |engine, batch| engine.submit_batch_tracked(batch, &caller),
    );
    tokio::spawn(async move {
        while let Some(handled) = handled_rx.recv().await {
            let answer = match handled {
                Ok((ack, journal_seq)) => {
                    if !committed_before_closing(&engine, journal_seq).await {
                        break;
                    }
                    Ok(ack)
                }
                Err(status) => Err(status),
            };
            if answers.send(answer).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(answers_rx)
}

/// Waits until the journal has committed `journal_seq`; false if the engine closed its streams
/// first.
async fn committed_before_closing(engine: &Engine, journal_seq: u64) -> bool {
    let mut closing = engine.closing();
    tokio::select! {
        biased;
        () = engine.journal_committed(journal_seq) => true,
        _ = closing.wait_for(|closing| *closing) => false,
    }
}

#[tonic::async_trait]
impl proto::engine_server::Engine for EngineService {
    type SubmitStream = ReceiverStream<Result<proto::SubmitAck, Status>>;
    type StatusStream = ReceiverStream<Result<proto::StatusBatch, Status>>;
    type CompletionsStream = ReceiverStream<Result<proto::CompletionBatch, Status>>;

    async fn completions(
        &self,
        request: Request<proto::CompletionsRequest>,
    ) -> Result<Response<Self::CompletionsStream>, Status> {
        let viewer = caller(&request).viewer();
        let stream = self
            .engine
            .subscribe_completions_as(request.get_ref(), viewer)?;
        Ok(Response::new(stream))
    }

    async fn submit(
        &self,
        request: Request<Streaming<proto::SubmitBatch>>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        let caller = caller(&request);
        Ok(Response::new(answer_submissions(
            self.engine.clone(),
            request.into_inner(),
            caller,
        )))
    }

    async fn status(
        &self,
        request: Request<Streaming<proto::StatusQuery>>,
    ) -> Result<Response<Self::StatusStream>, Status> {
        let viewer = caller(&request).viewer();
        Ok(Response::new(answer_each(
            self.engine.clone(),
            request.into_inner(),
            move |engine, query| engine.query_status_as(query, &viewer),
        )))
    }

    async fn submit_one(
        &self,
        request: Request<proto::SubmitOneRequest>,
    ) -> Result<Response<proto::SubmitOneReply>, Status> {
        let caller = caller(&request);
        let task = request
            .into_inner()
            .task
            .ok_or_else(|| Status::invalid_argument("request has no task"))?;
        let (answer, journal_seq) = self.engine.submit_one_tracked(task, &caller);
        let ack = answer?;
        if !committed_before_closing(&self.engine, journal_seq).await {
            return Err(Status::unavailable(
                "engine shut down before the task was journaled",
            ));
        }
        Ok(Response::new(proto::SubmitOneReply { ack: Some(ack) }))
    }

    async fn list_tasks(
        &self,
        request: Request<proto::ListTasksRequest>,
    ) -> Result<Response<proto::ListTasksReply>, Status> {
        let viewer = caller(&request).viewer();
        let reply = self.engine.list_tasks_as(request.get_ref(), &viewer)?;
        Ok(Response::new(reply))
    }

    async fn status_one(
        &self,
        request: Request<proto::StatusOneRequest>,
    ) -> Result<Response<proto::StatusOneReply>, Status> {
        let viewer = caller(&request).viewer();
        let request = request.into_inner();
        let status = self
            .engine
            .status_one_as(request.task_id, &request.release_ids, &viewer)?;
        Ok(Response::new(proto::StatusOneReply {
            status: Some(status),
        }))
    }
}
