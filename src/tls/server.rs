//! The engine's side of mutual TLS: its certificate, the CA its supervisors' certificates must
//! chain to, and the handshake of one accepted connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::files::{ALPN_H2, TlsFileError, load_certs, load_key, load_roots, provider};
use super::reason::{HandshakeError, Side, plaintext_peer};
use super::reload::{Reloadable, spawn_watcher};

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How long a client may take to complete the handshake (a silent client is dropped then).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The engine's `[tls]` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The engine's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA (PEM) a supervisor's certificate must chain to.
    pub client_ca: PathBuf,
}

/// The engine's TLS configuration, reloaded when its files change. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloadable<ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// Read the files and build the configuration: client certificates are required.
    pub fn load(files: &ServerTlsFiles) -> Result<Self, TlsFileError> {
        let paths = vec![
            files.cert.clone(),
            files.key.clone(),
            files.client_ca.clone(),
        ];
        Ok(Self {
            config: Arc::new(Reloadable::load("engine", paths, build)?),
        })
    }

    /// Rebuild from the files if one changed; `Ok(true)` when new ones are in force. On an error
    /// the previous configuration stays.
    pub fn reload(&self) -> Result<bool, TlsFileError> {
        self.config.reload()
    }

    /// [`ServerTls::reload`], logging the outcome (for SIGHUP).
    pub fn reload_logged(&self) {
        self.config.reload_logged();
    }

    /// Check the files every `period` and reload them when they change, for as long as this
    /// configuration is in use.
    pub fn spawn_watcher(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        spawn_watcher(&self.config, period)
    }

    /// Complete the handshake on an accepted connection with the configuration in force now.
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let config = self.config.current();
        let handshake = async {
            // Look at the first byte before rustls does: a plaintext client gets a sentence
            // saying so instead of a parse error.
            let mut first = [0u8; 1];
            match tcp.peek(&mut first).await {
                Ok(0) => return Err(HandshakeError::closed_silently()),
                Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => {
                    return Err(HandshakeError::new(plaintext_peer(Side::Engine)));
                }
                Ok(_) => {}
                Err(error) => return Err(HandshakeError::explain(&error, Side::Engine)),
            }
            tokio_rustls::TlsAcceptor::from(config)
                .accept(tcp)
                .await
                .map_err(|error| HandshakeError::explain(&error, Side::Engine))
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .unwrap_or(Err(HandshakeError::timed_out(HANDSHAKE_TIMEOUT)))
    }
}

fn build(paths: &[PathBuf]) -> Result<ServerConfig, TlsFileError> {
    let [cert, key, client_ca] = paths else {
        unreachable!("ServerTls::load passes three paths")
    };
    let roots = load_roots(client_ca)?;
    let unusable = |path: &PathBuf, reason: String| TlsFileError::Unusable {
        path: path.clone(),
        reason,
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| unusable(client_ca, e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(cert, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| unusable(key, format!("does not go with {}: {e}", cert.display())))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}
