//! Reconciliation on the wire: every task an engine holds for one supervisor, page by page
//! (`ListTasks`), with the supervisor's marks from the first page. Pages follow each other by
//! the token the engine returns; a token that does not move forward ends the listing as an
//! error, so a faulty engine cannot keep a supervisor listing for ever. In turbo mode the pages
//! travel on the engine's long-lived connection; with turbo off each is one call on its own new
//! connection, like every other call then.

use std::time::Duration;

use tokio::time::Instant;

use super::batch::framed_bytes;
use super::unary::{UnaryError, call_on_new_connection};
use crate::proto::engine_client::EngineClient;
use crate::proto::{ListTasksReply, ListTasksRequest, ListedTask, RelatorMark};
use crate::transport::{Connection, Dialer, InFlight};

/// A listing longer than this many tasks is cut off as an error: far beyond what an engine
/// holds (`max_held_tasks`), so only a faulty engine gets there.
pub const MAX_LISTED_TASKS: usize = 10_000_000;

/// Why a listing could not be completed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ListError {
    /// The engine does not know the call (an engine older than it).
    #[error("the engine cannot list its tasks (an older version): {0}")]
    Unsupported(String),
    /// The engine refused the request as malformed.
    #[error("the engine refused the task list: {0}")]
    Refused(String),
    /// The call failed: the engine is unreachable, went away, or is unavailable.
    #[error("task list failed: {0}")]
    Failed(String),
    /// No page within the timeout.
    #[error("no task list page within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The engine answered nonsense: a token that does not move forward, or too many tasks.
    #[error("the engine's task list is faulty: {0}")]
    Faulty(String),
}

impl ListError {
    /// Whether trying again later can help (otherwise the engine cannot list at all).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ListError::Failed(_) | ListError::Timeout(_))
    }
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct ListedPage {
    /// Its tasks, in id order.
    pub tasks: Vec<ListedTask>,
    /// The supervisor's marks (first page only).
    pub marks: Vec<RelatorMark>,
    /// The request and reply, in bytes (gRPC framing included).
    pub packet_bytes: u64,
}

/// How the pages travel.
enum Route<'a> {
    /// On a long-lived connection.
    Connection {
        client: EngineClient<tonic::transport::Channel>,
        in_flight: prometheus_client::metrics::gauge::Gauge,
    },
    /// One call per page on its own new connection (turbo off).
    NewConnections(&'a Dialer),
}

/// The pages of one listing, asked one after the other.
pub struct TaskLister<'a> {
    route: Route<'a>,
    supervisor_id: String,
    after_id: Option<String>,
    page_timeout: Duration,
    listed: usize,
    started: Instant,
}

impl<'a> TaskLister<'a> {
    /// A listing of the tasks `connection`'s engine holds for `supervisor_id`, each page within
    /// `page_timeout`, as many tasks per page as the engine allows.
    pub fn new(connection: &Connection, supervisor_id: &str, page_timeout: Duration) -> Self {
        let route = Route::Connection {
            client: connection.client(),
            in_flight: connection.in_flight().clone(),
        };
        Self::on(route, supervisor_id, page_timeout)
    }

    /// [`TaskLister::new`] with each page one call on its own new connection from `dialer`.
    pub fn on_new_connections(
        dialer: &'a Dialer,
        supervisor_id: &str,
        page_timeout: Duration,
    ) -> Self {
        Self::on(Route::NewConnections(dialer), supervisor_id, page_timeout)
    }

    fn on(route: Route<'a>, supervisor_id: &str, page_timeout: Duration) -> Self {
        Self {
            route,
            supervisor_id: supervisor_id.to_string(),
            after_id: Some(String::new()),
            page_timeout,
            listed: 0,
            started: Instant::now(),
        }
    }

    /// The next page; `Ok(None)` once the last page has been returned.
    pub async fn next_page(&mut self) -> Result<Option<ListedPage>, ListError> {
        let Some(after_id) = self.after_id.take() else {
            return Ok(None);
        };
        let request = ListTasksRequest {
            supervisor_id: self.supervisor_id.clone(),
            after_id: after_id.clone(),
            limit: 0,
        };
        let request_bytes = framed_bytes(&request);
        let reply: ListTasksReply = match &mut self.route {
            Route::Connection { client, in_flight } => {
                let _in_flight = InFlight::enter(in_flight);
                match tokio::time::timeout(self.page_timeout, client.list_tasks(request)).await {
                    Err(_) => return Err(ListError::Timeout(self.page_timeout)),
                    Ok(Err(status)) => return Err(classify(status)),
                    Ok(Ok(reply)) => reply.into_inner(),
                }
            }
            Route::NewConnections(dialer) => {
                let call =
                    call_on_new_connection(dialer, self.page_timeout, |mut client| async move {
                        client.list_tasks(request).await
                    });
                match call.await {
                    Ok(reply) => reply,
                    Err(UnaryError::Refused(status)) => return Err(classify(status)),
                    Err(UnaryError::Timeout(limit)) => return Err(ListError::Timeout(limit)),
                    Err(UnaryError::Connect(reason)) => return Err(ListError::Failed(reason)),
                }
            }
        };
        let packet_bytes = request_bytes + framed_bytes(&reply);
        self.listed += reply.tasks.len();
        if self.listed > MAX_LISTED_TASKS {
            return Err(ListError::Faulty(format!(
                "over {MAX_LISTED_TASKS} tasks listed"
            )));
        }
        if !reply.next_after_id.is_empty() {
            if reply.next_after_id <= after_id {
                return Err(ListError::Faulty(format!(
                    "page token `{}` does not move past `{after_id}`",
                    clip(&reply.next_after_id)
                )));
            }
            self.after_id = Some(reply.next_after_id);
        }
        Ok(Some(ListedPage {
            tasks: reply.tasks,
            marks: reply.marks,
            packet_bytes,
        }))
    }

    /// Tasks listed so far.
    pub fn listed(&self) -> usize {
        self.listed
    }

    /// Time since the listing began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

fn classify(status: tonic::Status) -> ListError {
    let text = format!("{}: {}", status.code(), status.message());
    match status.code() {
        tonic::Code::Unimplemented => ListError::Unsupported(text),
        tonic::Code::InvalidArgument | tonic::Code::PermissionDenied => ListError::Refused(text),
        _ => ListError::Failed(text),
    }
}

fn clip(text: &str) -> String {
    const SHOWN: usize = 80;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
