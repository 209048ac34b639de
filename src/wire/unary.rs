//! Turbo off: one unary call on its own new connection, closed before the call counts as done.

use std::future::Future;
use std::time::Duration;

use tonic::transport::Channel;

use crate::proto::engine_client::EngineClient;
use crate::transport::{Dialer, InFlight};

/// Why a unary call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum UnaryError {
    /// The connection could not be opened.
    #[error("{0}")]
    Connect(String),
    /// The engine answered with an error status.
    #[error("engine answered {}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    /// No answer in time.
    #[error("no reply within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

/// Open a new connection, make one call on it, and wait until the socket is closed again, so that
/// a caller counting calls in flight also bounds the connections open.
pub(crate) async fn call_on_new_connection<R, F, Fut>(
    dialer: &Dialer,
    timeout: Duration,
    call: F,
) -> Result<R, UnaryError>
where
    F: FnOnce(EngineClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let exchange =
        async {
            let _slot =
                match dialer.sessions() {
                    Some(sessions) => Some(sessions.acquire().await.map_err(|_| {
                        UnaryError::Connect("the supervisor is shutting down".into())
                    })?),
                    None => None,
                };
            let _in_flight = InFlight::enter(&dialer.gauges().in_flight);
            let (client, closed) = dialer
                .connect_tracked()
                .await
                .map_err(|e| UnaryError::Connect(e.to_string()))?;
            // The future owns the client: once it completes, the connection has no user left.
            let reply = call(client).await;
            closed.wait().await;
            reply
                .map(tonic::Response::into_inner)
                .map_err(UnaryError::Refused)
        };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(UnaryError::Timeout(timeout)))
}
