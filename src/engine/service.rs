//! The tonic service: the `turbomon.v1.Engine` RPCs mapped onto [`Engine`]'s batch handlers.
//!
//! Each bidirectional stream follows tonic's pattern: a spawned task reads the inbound stream,
//! handles each message as it comes and puts the answer into a bounded channel, which the handler
//! returns as the response stream. An inbound error (a client gone, a message over the size
//! limit) ends that stream only; the tasks it already submitted stay held and run.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::{Engine, LOG_TARGET, STREAM_BUFFER_MESSAGES};
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

/// Answers every message of `inbound` with `handle`, in order, on the returned stream, until the
/// client ends its side, the client goes away, or the engine closes its streams at shutdown.
fn answer_each<Req, Resp>(
    engine: Engine,
    mut inbound: Streaming<Req>,
    handle: fn(&Engine, Req) -> Resp,
) -> ReceiverStream<Result<Resp, Status>>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let (answers, answers_rx) = mpsc::channel(STREAM_BUFFER_MESSAGES);
    let mut closing = engine.closing();
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
                    let answer = handle(&engine, request);
                    if answers.send(Ok(answer)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    debug!(target: LOG_TARGET, %status, "inbound stream ended with an error");
                    let _ = answers.send(Err(status)).await;
                    break;
                }
            }
        }
    });
    ReceiverStream::new(answers_rx)
}

#[tonic::async_trait]
impl proto::engine_server::Engine for EngineService {
    type SubmitStream = ReceiverStream<Result<proto::SubmitAck, Status>>;
    type StatusStream = ReceiverStream<Result<proto::StatusBatch, Status>>;
    type CompletionsStream = ReceiverStream<Result<proto::CompletionBatch, Status>>;

    async fn completions(
        &self,
        _request: Request<proto::CompletionsRequest>,
    ) -> Result<Response<Self::CompletionsStream>, Status> {
        Err(Status::unimplemented("push completions are not served yet"))
    }

    async fn submit(
        &self,
        request: Request<Streaming<proto::SubmitBatch>>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        Ok(Response::new(answer_each(
            self.engine.clone(),
            request.into_inner(),
            Engine::submit_batch,
        )))
    }

    async fn status(
        &self,
        request: Request<Streaming<proto::StatusQuery>>,
    ) -> Result<Response<Self::StatusStream>, Status> {
        Ok(Response::new(answer_each(
            self.engine.clone(),
            request.into_inner(),
            Engine::query_status,
        )))
    }

    async fn submit_one(
        &self,
        request: Request<proto::SubmitOneRequest>,
    ) -> Result<Response<proto::SubmitOneReply>, Status> {
        let task = request
            .into_inner()
            .task
            .ok_or_else(|| Status::invalid_argument("request has no task"))?;
        let ack = self.engine.submit_one(task)?;
        Ok(Response::new(proto::SubmitOneReply { ack: Some(ack) }))
    }

    async fn status_one(
        &self,
        request: Request<proto::StatusOneRequest>,
    ) -> Result<Response<proto::StatusOneReply>, Status> {
        let request = request.into_inner();
        let status = self
            .engine
            .status_one(request.task_id, &request.release_ids)?;
        Ok(Response::new(proto::StatusOneReply {
            status: Some(status),
        }))
    }
}
