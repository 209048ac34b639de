//! The `--turbo bare` baseline: the same batches over a plain tonic bidirectional stream, with
//! nothing of ours on either side. The server ([`BareEngine`]) acknowledges every task at once
//! ([`acknowledge_all`]) and keeps nothing; the client sends the batches with the same number in
//! flight and counts the replies. No scheduler, no statistics, no link shaping: the ceiling our
//! pipeline is compared to.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::ProgressBar;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

use super::bound::{self, bench_message_bytes};
use super::plan::{Measurement, RunSettings, bench_tasks};
use crate::config::{EngineTls, SupervisorTls};
use crate::pki::ThrowawayPki;
use crate::proto::engine_client::EngineClient;
use crate::proto::engine_server::{Engine, EngineServer};
use crate::proto::{
    CompletionBatch, CompletionsRequest, StatusBatch, StatusOneReply, StatusOneRequest,
    StatusQuery, SubmitAck, SubmitBatch, SubmitOneReply, SubmitOneRequest, TaskState, TaskStatus,
};
use crate::tls::incoming::{Accept, tls_incoming};
use crate::tls::{ClientTls, ServerTls};
use crate::wire::batch::{framed_bytes, split_into_batches};
use crate::wire::refusal::accepted;
use crate::wire::stream::Batched;

/// Replies queued on the server side of one stream.
const REPLY_QUEUE: usize = 256;

/// The reply of a server that accepts everything: one ack per task of `batch`, each accepted
/// and not a duplicate, under the batch's id and without an error. [`BareEngine`] answers every
/// submission batch with it.
pub fn acknowledge_all(batch: SubmitBatch) -> SubmitAck {
    SubmitAck {
        batch_id: batch.batch_id,
        acks: batch
            .tasks
            .into_iter()
            .map(|task| accepted(task.id, false))
            .collect(),
        error: None,
    }
}

/// A server that acknowledges every task and answers every status query as `OK` immediately,
/// holding nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct BareEngine;

#[tonic::async_trait]
impl Engine for BareEngine {
    type SubmitStream = ReceiverStream<Result<SubmitAck, Status>>;
    type StatusStream = ReceiverStream<Result<StatusBatch, Status>>;
    type CompletionsStream = ReceiverStream<Result<CompletionBatch, Status>>;

    async fn submit(
        &self,
        request: Request<Streaming<SubmitBatch>>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                if tx.send(Ok(acknowledge_all(batch))).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        request: Request<Streaming<StatusQuery>>,
    ) -> Result<Response<Self::StatusStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        tokio::spawn(async move {
            while let Ok(Some(query)) = inbound.message().await {
                let reply = StatusBatch {
                    batch_id: query.batch_id,
                    statuses: query
                        .task_ids
                        .into_iter()
                        .map(|task_id| TaskStatus {
                            task_id,
                            state: TaskState::Ok as i32,
                            ..TaskStatus::default()
                        })
                        .collect(),
                    error: None,
                };
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn submit_one(
        &self,
        _request: Request<SubmitOneRequest>,
    ) -> Result<Response<SubmitOneReply>, Status> {
        Err(Status::unimplemented(
            "the bare baseline answers batches on streams only",
        ))
    }

    async fn status_one(
        &self,
        _request: Request<StatusOneRequest>,
    ) -> Result<Response<StatusOneReply>, Status> {
        Err(Status::unimplemented(
            "the bare baseline answers batches on streams only",
        ))
    }

    async fn completions(
        &self,
        _request: Request<CompletionsRequest>,
    ) -> Result<Response<Self::CompletionsStream>, Status> {
        Err(Status::unimplemented(
            "the bare baseline holds nothing, so nothing completes later",
        ))
    }

    async fn list_tasks(
        &self,
        _request: Request<crate::proto::ListTasksRequest>,
    ) -> Result<Response<crate::proto::ListTasksReply>, Status> {
        Err(Status::unimplemented(
            "the bare baseline holds nothing, so there is nothing to list",
        ))
    }
}

/// A bare server on a loopback port; stopped when dropped.
pub struct BareServer {
    /// Where it listens.
    pub address: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl BareServer {
    /// Serve [`BareEngine`] on `127.0.0.1:0` with messages up to `max_message_bytes`, plaintext.
    pub async fn start(max_message_bytes: usize) -> Result<Self, String> {
        Self::start_with(max_message_bytes, None).await
    }

    /// [`BareServer::start`], speaking mutual TLS with `tls` when given, as the engine does.
    pub async fn start_with(
        max_message_bytes: usize,
        tls: Option<&EngineTls>,
    ) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind a loopback port for the bare server: {e}"))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("bare server listener has no address: {e}"))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let service = EngineServer::new(BareEngine)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let mut builder = Server::builder();
        let router = builder.add_service(service);
        let server = match tls {
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
            }
            Some(files) => {
                let tls = ServerTls::load(&files.server_files())
                    .map_err(|e| format!("bare server TLS: {e}"))?;
                let incoming = tls_incoming(listener, tls, Accept::new("bare", 1024));
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
            }
        };
        Ok(Self {
            address,
            stop: Some(stop),
            server,
        })
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}

/// One loop's exchange on a stream: how long, and each request with its reply.
struct Exchanged<Resp> {
    elapsed: Duration,
    replies: Vec<Resp>,
}

/// Send `requests` on a stream, at most `in_flight` unanswered at once, and wait for every reply.
async fn exchange<Req, Resp>(
    outbound: &mpsc::Sender<Req>,
    inbound: &mut Streaming<Resp>,
    requests: Vec<Req>,
    in_flight: usize,
    reply_timeout: Duration,
) -> Result<Exchanged<Resp>, String> {
    let expected = requests.len();
    let mut requests = requests.into_iter();
    let mut replies = Vec::with_capacity(expected);
    let start = Instant::now();
    let mut outstanding = 0usize;
    loop {
        while outstanding < in_flight.max(1) {
            let Some(request) = requests.next() else {
                break;
            };
            outbound
                .send(request)
                .await
                .map_err(|_| "the bare stream closed".to_string())?;
            outstanding += 1;
        }
        if outstanding == 0 {
            break;
        }
        let reply = tokio::time::timeout(reply_timeout, inbound.message())
            .await
            .map_err(|_| {
                format!(
                    "no reply within {}",
                    humantime::format_duration(reply_timeout)
                )
            })?
            .map_err(|status| status.to_string())?
            .ok_or_else(|| "the bare server ended the stream".to_string())?;
        replies.push(reply);
        outstanding -= 1;
    }
    Ok(Exchanged {
        elapsed: start.elapsed(),
        replies,
    })
}

/// Framed bytes of each request, by batch id (computed before timing starts).
fn request_bytes<Req: Message + Batched>(requests: &[Req]) -> HashMap<u64, u64> {
    requests
        .iter()
        .map(|r| (r.batch_id(), framed_bytes(r)))
        .collect()
}

/// Packet sizes: each reply with the request it answers.
fn packets<Resp: Message + Batched>(sent: &HashMap<u64, u64>, replies: &[Resp]) -> Vec<u64> {
    replies
        .iter()
        .map(|r| sent.get(&r.batch_id()).copied().unwrap_or(0) + framed_bytes(r))
        .collect()
}

async fn connect(
    address: std::net::SocketAddr,
    max_message_bytes: usize,
    tls: Option<&SupervisorTls>,
) -> Result<EngineClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true);
    let channel = match tls {
        None => endpoint.connect().await,
        Some(files) => {
            let tls = ClientTls::load(&files.client_files())
                .map_err(|e| format!("bare client TLS: {e}"))?;
            endpoint
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let tls = tls.clone();
                    async move {
                        let tcp = tokio::net::TcpStream::connect(address).await?;
                        tcp.set_nodelay(true)?;
                        let stream = tls
                            .connect(tcp, &address.ip().to_string())
                            .await
                            .map_err(std::io::Error::other)?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
        }
    }
    .map_err(|e| format!("cannot connect to the bare server: {e}"))?;
    Ok(EngineClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes))
}

/// Run the bare baseline for one batch size: `loops` submission loops of the bench's tasks, then
/// `loops` status loops (asking for loop i's tasks, releasing loop i − 1's).
pub async fn run_bare(
    batch_size: usize,
    settings: &RunSettings,
    tls: Option<&ThrowawayPki>,
    progress: &ProgressBar,
) -> Result<Measurement, String> {
    let message_bytes = bench_message_bytes(
        bound::submit_packet_bytes(batch_size).max(bound::status_packet_bytes(batch_size)),
    );
    let server = BareServer::start_with(message_bytes, tls.map(|pki| &pki.engine)).await?;
    let mut client = connect(
        server.address,
        message_bytes,
        tls.map(|pki| &pki.supervisor),
    )
    .await?;
    let in_flight = settings.max_inflight_batches;
    let (submit_tx, submit_rx) = mpsc::channel::<SubmitBatch>(in_flight.max(1));
    let mut acks = client
        .submit(ReceiverStream::new(submit_rx))
        .await
        .map_err(|s| format!("cannot open the bare submission stream: {s}"))?
        .into_inner();
    let (status_tx, status_rx) = mpsc::channel::<StatusQuery>(in_flight.max(1));
    let mut statuses = client
        .status(ReceiverStream::new(status_rx))
        .await
        .map_err(|s| format!("cannot open the bare status stream: {s}"))?
        .into_inner();

    let mut measured = Measurement::default();
    let mut next_batch_id = 0u64;
    let mut batch_id = || {
        next_batch_id += 1;
        next_batch_id
    };
    let mut asked: Vec<Vec<String>> = Vec::with_capacity(settings.loops);
    for loop_index in 0..settings.loops {
        let tasks = bench_tasks(loop_index, settings.tasks);
        asked.push(tasks.iter().map(|t| t.id.clone()).collect());
        let batches: Vec<SubmitBatch> = split_into_batches(tasks, batch_size)
            .into_iter()
            .map(|tasks| SubmitBatch {
                batch_id: batch_id(),
                tasks,
            })
            .collect();
        let sent = request_bytes(&batches);
        let done = exchange(
            &submit_tx,
            &mut acks,
            batches,
            in_flight,
            settings.reply_timeout,
        )
        .await
        .map_err(|e| format!("bare submission loop {}: {e}", loop_index + 1))?;
        let acknowledged: usize = done.replies.iter().map(|a| a.acks.len()).sum();
        if acknowledged != settings.tasks {
            return Err(format!(
                "bare submission loop {}: {acknowledged} of {} tasks acknowledged",
                loop_index + 1,
                settings.tasks
            ));
        }
        measured.submit_loops.push(done.elapsed);
        measured
            .submit_packets
            .extend(packets(&sent, &done.replies));
        progress.inc(1);
    }
    let mut release: Vec<String> = Vec::new();
    for (loop_index, ids) in asked.into_iter().enumerate() {
        let count = ids.len();
        let mut id_batches = split_into_batches(ids.clone(), batch_size).into_iter();
        let mut release_batches =
            split_into_batches(std::mem::take(&mut release), batch_size).into_iter();
        let mut queries = Vec::new();
        loop {
            let (task_ids, release_ids) = (id_batches.next(), release_batches.next());
            if task_ids.is_none() && release_ids.is_none() {
                break;
            }
            queries.push(StatusQuery {
                batch_id: batch_id(),
                task_ids: task_ids.unwrap_or_default(),
                release_ids: release_ids.unwrap_or_default(),
            });
        }
        let sent = request_bytes(&queries);
        let done = exchange(
            &status_tx,
            &mut statuses,
            queries,
            in_flight,
            settings.reply_timeout,
        )
        .await
        .map_err(|e| format!("bare monitor loop {}: {e}", loop_index + 1))?;
        let answered: usize = done.replies.iter().map(|r| r.statuses.len()).sum();
        if answered != count {
            return Err(format!(
                "bare monitor loop {}: {answered} statuses for {count} tasks asked",
                loop_index + 1
            ));
        }
        measured.monitor_loops.push(done.elapsed);
        measured
            .monitor_packets
            .extend(packets(&sent, &done.replies));
        progress.inc(1);
        release = ids;
    }
    drop(submit_tx);
    drop(status_tx);
    drop(server);
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_of_a_batch_is_acknowledged_as_accepted() {
        let tasks = bench_tasks(0, 3);
        let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let ack = acknowledge_all(SubmitBatch { batch_id: 7, tasks });
        assert_eq!(ack.batch_id, 7);
        assert_eq!(ack.error, None);
        assert_eq!(
            ack.acks
                .iter()
                .map(|a| a.task_id.clone())
                .collect::<Vec<_>>(),
            ids
        );
        assert!(
            ack.acks
                .iter()
                .all(|a| a.accepted && !a.duplicate && a.reason.is_empty())
        );
    }
}
