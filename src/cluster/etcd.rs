//! A small typed client for the part of etcd v3 the cluster uses (`proto/etcd/etcd.proto`):
//! key ranges, a put only if the key is absent, deletes, and leases (grant, keep-alive on one
//! long-lived stream, revoke). Every call is bounded by the request timeout; a failed call drops
//! the connection, and the next call dials the endpoints again starting with the next one, so a
//! cluster of etcd servers is used as long as one of them answers. Plaintext only (`http://`).

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

/// The generated etcd v3 messages and clients (package `etcdserverpb`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;

/// What can go wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// An endpoint is not a usable address.
    #[error("etcd endpoint `{endpoint}`: {reason}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No endpoint could be connected to.
    #[error("no etcd endpoint answers ({endpoints}): {reason}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The last connection error.
        reason: String,
    },
    /// The server answered a call with an error.
    #[error("etcd {call}: {status}")]
    Call {
        /// The call.
        call: &'static str,
        /// The server's answer.
        status: Box<tonic::Status>,
    },
    /// No answer within the request timeout.
    #[error("etcd {call}: no answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The call.
        call: &'static str,
        /// The request timeout.
        timeout: Duration,
    },
    /// The lease expired or was revoked.
    #[error("etcd lease {0:x} is gone (expired or revoked)")]
    LeaseGone(i64),
    /// The server refused to grant a lease.
    #[error("etcd refused a lease: {0}")]
    LeaseRefused(String),
}

/// One key and its value as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// The keys under a prefix, read at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The store's revision the read saw.
    pub revision: i64,
    /// The keys, in key order.
    pub kvs: Vec<KeyValue>,
}

/// A connected (or reconnecting) etcd client.
pub struct EtcdClient {
    endpoints: Vec<Endpoint>,
    names: String,
    timeout: Duration,
    /// The channel in use and the index of its endpoint.
    channel: Mutex<Option<(usize, Channel)>>,
    /// The next endpoint to dial first.
    next: Mutex<usize>,
    /// The keep-alive stream: requests in, responses out.
    keepalive: tokio::sync::Mutex<Option<KeepAliveStream>>,
}

struct KeepAliveStream {
    requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    responses: tonic::Streaming<pb::LeaseKeepAliveResponse>,
}

/// `http://host:port` for `host:port` or `http://host:port`; `https://` is refused.
pub fn endpoint_url(endpoint: &str) -> Result<String, String> {
    let endpoint = endpoint.trim();
    if endpoint.starts_with("https://") {
        return Err(
            "https is not supported: give a plaintext client URL (http://host:port)".into(),
        );
    }
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    let rest = rest.trim_end_matches('/');
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err("expected host:port or http://host:port".into());
    };
    if host.is_empty() || host.contains('/') || port.parse::<u16>().is_err() {
        return Err("expected host:port or http://host:port".into());
    }
    Ok(format!("http://{rest}"))
}

impl EtcdClient {
    /// A client of `endpoints` (`host:port` or `http://host:port`), each call bounded by
    /// `timeout`. Nothing is dialled before the first call.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, EtcdError> {
        let mut parsed = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let error = |reason: String| EtcdError::Endpoint {
                endpoint: endpoint.clone(),
                reason,
            };
            let url = endpoint_url(endpoint).map_err(error)?;
            let parsed_endpoint = Endpoint::from_shared(url)
                .map_err(|e| error(e.to_string()))?
                .connect_timeout(timeout);
            parsed.push(parsed_endpoint);
        }
        if parsed.is_empty() {
            return Err(EtcdError::Endpoint {
                endpoint: String::new(),
                reason: "no endpoint given".into(),
            });
        }
        Ok(Self {
            endpoints: parsed,
            names: endpoints.join(", "),
            timeout,
            channel: Mutex::new(None),
            next: Mutex::new(0),
            keepalive: tokio::sync::Mutex::new(None),
        })
    }

    /// The channel in use, or one to the first endpoint that accepts a connection.
    async fn channel(&self) -> Result<Channel, EtcdError> {
        if let Some((_, channel)) = lock(&self.channel).as_ref() {
            return Ok(channel.clone());
        }
        let first = *lock(&self.next);
        let mut last_error = String::new();
        for k in 0..self.endpoints.len() {
            let index = (first + k) % self.endpoints.len();
            match self.endpoints[index].connect().await {
                Ok(channel) => {
                    *lock(&self.channel) = Some((index, channel.clone()));
                    return Ok(channel);
                }
                Err(e) => last_error = error_chain(&e),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: self.names.clone(),
            reason: last_error,
        })
    }

    /// Forget the connection after a failure: the next call dials the next endpoint first.
    fn failed(&self) {
        if let Some((index, _)) = lock(&self.channel).take() {
            *lock(&self.next) = (index + 1) % self.endpoints.len();
        }
    }

    /// Run one unary call with the timeout; a failure drops the connection.
    async fn call<T>(
        &self,
        call: &'static str,
        run: impl AsyncFnOnce(Channel) -> Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, EtcdError> {
        let attempt = async {
            let channel = self.channel().await?;
            run(channel).await.map_err(|status| EtcdError::Call {
                call,
                status: Box::new(status),
            })
        };
        let outcome = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(EtcdError::Timeout {
                call,
                timeout: self.timeout,
            }),
        };
        match outcome {
            Ok(response) => Ok(response.into_inner()),
            Err(error) => {
                self.failed();
                Err(error)
            }
        }
    }

    /// Every key starting with `prefix`, at the current revision.
    pub async fn list(&self, prefix: &str) -> Result<Listing, EtcdError> {
        let request = pb::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        };
        let response = self
            .call("Range", async |channel| {
                KvClient::new(channel).range(request).await
            })
            .await?;
        Ok(Listing {
            revision: response.header.map_or(0, |h| h.revision),
            kvs: response
                .kvs
                .into_iter()
                .map(|kv| KeyValue {
                    key: kv.key,
                    value: kv.value,
                    lease: kv.lease,
                })
                .collect(),
        })
    }

    /// Write `key` = `value` attached to `lease`, only if the key does not exist. False when
    /// it does (another holder has it); the store's revision after the write otherwise.
    pub async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
    ) -> Result<Option<i64>, EtcdError> {
        let request = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: pb::compare::CompareResult::Equal as i32,
                target: pb::compare::CompareTarget::Create as i32,
                key: key.as_bytes().to_vec(),
                target_union: Some(pb::compare::TargetUnion::CreateRevision(0)),
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.to_vec(),
                    lease,
                })),
            }],
            failure: Vec::new(),
        };
        let response = self
            .call("Txn", async |channel| {
                KvClient::new(channel).txn(request).await
            })
            .await?;
        Ok(response
            .succeeded
            .then(|| response.header.map_or(0, |h| h.revision)))
    }

    /// Delete `key`.
    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        let request = pb::DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: Vec::new(),
        };
        self.call("DeleteRange", async |channel| {
            KvClient::new(channel).delete_range(request).await
        })
        .await
        .map(drop)
    }

    /// A new lease of `ttl` (whole seconds, at least 1): its id and the TTL granted.
    pub async fn grant(&self, ttl: Duration) -> Result<(i64, Duration), EtcdError> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let request = pb::LeaseGrantRequest {
            ttl: seconds,
            id: 0,
        };
        let response = self
            .call("LeaseGrant", async |channel| {
                LeaseClient::new(channel).lease_grant(request).await
            })
            .await?;
        if !response.error.is_empty() {
            return Err(EtcdError::LeaseRefused(response.error));
        }
        let granted = u64::try_from(response.ttl).unwrap_or(0);
        Ok((response.id, Duration::from_secs(granted)))
    }

    /// Renew `lease` once, on the long-lived keep-alive stream (opened on first use and after
    /// a failure): the TTL it has again.
    pub async fn keep_alive(&self, lease: i64) -> Result<Duration, EtcdError> {
        let mut stream = self.keepalive.lock().await;
        let attempt = async {
            let closed = || EtcdError::Call {
                call: "LeaseKeepAlive",
                status: Box::new(tonic::Status::unavailable("keep-alive stream closed")),
            };
            let request = pb::LeaseKeepAliveRequest { id: lease };
            let open = match stream.as_mut() {
                Some(open) => {
                    open.requests.send(request).await.map_err(|_| closed())?;
                    open
                }
                None => {
                    // The server answers the stream's headers with its first renewal: the first
                    // request must be in the stream before the call is awaited.
                    let channel = self.channel().await?;
                    let (requests, inbox) = mpsc::channel(4);
                    requests.send(request).await.map_err(|_| closed())?;
                    let responses = LeaseClient::new(channel)
                        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(inbox))
                        .await
                        .map_err(|status| EtcdError::Call {
                            call: "LeaseKeepAlive",
                            status: Box::new(status),
                        })?
                        .into_inner();
                    stream.insert(KeepAliveStream {
                        requests,
                        responses,
                    })
                }
            };
            let response = open
                .responses
                .message()
                .await
                .map_err(|status| EtcdError::Call {
                    call: "LeaseKeepAlive",
                    status: Box::new(status),
                })?
                .ok_or_else(closed)?;
            if response.ttl <= 0 {
                return Err(EtcdError::LeaseGone(lease));
            }
            Ok(Duration::from_secs(
                u64::try_from(response.ttl).unwrap_or(0),
            ))
        };
        let outcome = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(EtcdError::Timeout {
                call: "LeaseKeepAlive",
                timeout: self.timeout,
            }),
        };
        match outcome {
            Err(EtcdError::LeaseGone(id)) => Err(EtcdError::LeaseGone(id)),
            Err(error) => {
                *stream = None;
                self.failed();
                Err(error)
            }
            ok => ok,
        }
    }

    /// Revoke `lease`: its keys are deleted at once.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        let request = pb::LeaseRevokeRequest { id: lease };
        self.call("LeaseRevoke", async |channel| {
            LeaseClient::new(channel).lease_revoke(request).await
        })
        .await
        .map(drop)
    }
}

/// The end of the range holding every key that starts with `prefix`: the prefix with its last
/// byte below 0xff raised by one (what etcd's clients call "prefix end").
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): everything from the prefix on.
    vec![0]
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_end_covers_exactly_the_keys_under_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn endpoints_are_plain_host_and_port_or_http_urls() {
        assert_eq!(
            endpoint_url("127.0.0.1:2379").as_deref(),
            Ok("http://127.0.0.1:2379")
        );
        assert_eq!(
            endpoint_url("http://etcd-1:2379/").as_deref(),
            Ok("http://etcd-1:2379")
        );
        assert!(endpoint_url("https://etcd:2379").is_err());
        assert!(endpoint_url("etcd").is_err());
        assert!(endpoint_url("etcd:port").is_err());
        assert!(endpoint_url(":2379").is_err());
    }
}
