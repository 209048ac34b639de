//! Loopback addresses and a tiny HTTP server for tests, plain or over TLS.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::Leaf;

/// A loopback address nothing listens on: a port bound on `127.0.0.1:0`, then closed, so a test
/// can bring a server up there later.
pub async fn closed_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    listener.local_addr().expect("local addr")
}

/// Serves HTTP/1 on a fresh loopback port, answering every request with `handler`, until the
/// test's runtime ends.
pub async fn serve_http<F, R>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> R + Clone + Send + Sync + 'static,
    R: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve(None, handler).await
}

/// [`serve_http`] over TLS with `leaf` as the server's certificate (no client certificate asked
/// for).
pub async fn serve_https<F, R>(leaf: &Leaf, handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> R + Clone + Send + Sync + 'static,
    R: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let chain = turbomon::tls::files::load_certs(&leaf.cert).expect("leaf certificate");
    let key = turbomon::tls::files::load_key(&leaf.key).expect("leaf key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server configuration");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    serve(Some(TlsAcceptor::from(Arc::new(config))), handler).await
}

async fn serve<F, R>(tls: Option<TlsAcceptor>, handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> R + Clone + Send + Sync + 'static,
    R: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let answer = handler(request);
                    async move { Ok::<_, std::convert::Infallible>(answer.await) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(tls) => {
                        // A client that refuses the certificate ends the handshake here.
                        if let Ok(stream) = tls.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                }
            });
        }
    });
    address
}
