//! The supervisor's side of mutual TLS: the CA an engine's certificate must chain to, the
//! supervisor's own certificate, and the handshake of one new connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use super::files::{ALPN_H2, TlsFileError, load_certs, load_key, load_roots, provider};
use super::reason::{HandshakeError, Side};
use super::reload::{Reloadable, reload_on_hangup, spawn_watcher};
use super::server::HANDSHAKE_TIMEOUT;

/// The supervisor's `[tls]` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The CA (PEM) an engine's certificate must chain to. No system roots are trusted.
    pub ca: PathBuf,
    /// The supervisor's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// The supervisor's TLS configuration, reloaded when its files change. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Reloadable<ClientConfig>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Read the files and build the configuration.
    pub fn load(files: &ClientTlsFiles) -> Result<Self, TlsFileError> {
        let paths = vec![files.ca.clone(), files.cert.clone(), files.key.clone()];
        Ok(Self {
            config: Arc::new(Reloadable::load("supervisor", paths, build)?),
        })
    }

    /// Rebuild from the files if one changed; `Ok(true)` when new ones are in force. On an error
    /// the previous configuration stays.
    pub fn reload(&self) -> Result<bool, TlsFileError> {
        self.config.reload()
    }

    /// [`ClientTls::reload`], logging the outcome (for SIGHUP).
    pub fn reload_logged(&self) {
        self.config.reload_logged();
    }

    /// Check the files every `period` and reload them when they change.
    pub fn spawn_watcher(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        spawn_watcher(&self.config, period)
    }

    /// Re-read the files at every SIGHUP (unix), for as long as the returned future runs and
    /// this configuration is in use.
    pub fn reload_on_hangup(&self) -> impl Future<Output = ()> + Send + 'static {
        reload_on_hangup(Arc::downgrade(&self.config))
    }

    /// Complete the handshake over `io` with the configuration in force now; the engine's
    /// certificate must be valid for `server_name` (a DNS name or an IP literal).
    pub async fn connect<IO>(
        &self,
        io: IO,
        server_name: &str,
    ) -> Result<TlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let bare = server_name.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_string()).map_err(|_| {
            HandshakeError::new(format!(
                "`{server_name}` is neither a DNS name nor an IP address to check the engine \
                 certificate against"
            ))
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.config.current());
        tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, io))
            .await
            .map_err(|_| HandshakeError::timed_out(HANDSHAKE_TIMEOUT))?
            .map_err(|error| HandshakeError::explain(&error, Side::Supervisor))
    }
}

fn build(paths: &[PathBuf]) -> Result<ClientConfig, TlsFileError> {
    let [ca, cert, key] = paths else {
        unreachable!("ClientTls::load passes three paths")
    };
    let roots = load_roots(ca)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError::Unusable {
            path: ca.clone(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| TlsFileError::Unusable {
            path: key.clone(),
            reason: format!("does not go with {}: {e}", cert.display()),
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}
