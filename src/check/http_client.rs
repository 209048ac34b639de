//! One HTTP/1.1 request over a fresh connection, `http://` or `https://` (rustls, SNI the URL's
//! host), shared by the http check (GET) and the supervisor's webhook alerts (POST).
//!
//! Certificates are checked against a [`Trust`]: the system's roots (read once, at the first
//! https connection, with rustls-native-certs), the CA certificates of a PEM text, or nothing at
//! all when explicitly asked. The connection is driven inside the returned future, never in a
//! spawned task, so dropping the future (a timeout) closes everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::files::provider;

/// What the client says it is.
const USER_AGENT: &str = concat!("turbomon/", env!("CARGO_PKG_VERSION"));

/// A URL that is not one this client can request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// A scheme other than `http` and `https`.
    #[error("not an http:// or https:// URL")]
    UnsupportedScheme,
    /// Not a URL with a host.
    #[error("{0}")]
    Invalid(String),
}

/// Why a [`Trust`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// A PEM section that does not decode.
    #[error("malformed PEM: {0}")]
    MalformedPem(String),
    /// No certificate at all.
    #[error("no PEM certificate in it")]
    NoCertificate,
    /// A certificate rustls cannot use as a trust anchor.
    #[error("not a usable CA certificate: {0}")]
    Unusable(String),
    /// A CA and no verification at all, both asked for.
    #[error("a CA and insecure_skip_verify together make no sense")]
    CaWithInsecure,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The TCP connection failed.
    #[error("connect to {target}: {source}")]
    Connect {
        /// `host[:port]`.
        target: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (a certificate refused, most often).
    #[error("TLS handshake with {host}: {reason}")]
    Tls {
        /// The server's host.
        host: String,
        /// Why, in words.
        reason: String,
    },
    /// The server broke the HTTP exchange (closed early, answered garbage).
    #[error("{0}")]
    Http(String),
}

/// An `http://` or `https://` URL, taken apart for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    https: bool,
    /// The host to connect to (an IPv6 literal without brackets).
    host: String,
    port: u16,
    /// `host[:port]` as the `Host` header carries it (brackets kept, no user info).
    host_header: String,
    path_and_query: String,
}

impl Url {
    /// Parses `text`, which must be `http://` or `https://` with a host.
    pub fn parse(text: &str) -> Result<Url, UrlError> {
        let uri: Uri = text
            .parse()
            .map_err(|error: hyper::http::uri::InvalidUri| UrlError::Invalid(error.to_string()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err(UrlError::UnsupportedScheme),
            None => {
                return Err(UrlError::Invalid(
                    "no scheme (expected http:// or https://)".into(),
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| UrlError::Invalid("no host".into()))?;
        let bracketed = authority.host();
        let host = bracketed
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(bracketed);
        if host.is_empty() {
            return Err(UrlError::Invalid("no host".into()));
        }
        let host_header = match authority.port() {
            Some(port) => format!("{bracketed}:{port}"),
            None => bracketed.to_string(),
        };
        Ok(Url {
            https,
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host_header,
            path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        })
    }

    /// Whether it is an `https://` URL.
    pub fn is_https(&self) -> bool {
        self.https
    }

    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// Where a redirect's `Location` leads from here: absolute, scheme-relative (`//host/x`),
    /// absolute-path (`/x`), query (`?q`) or relative-path (`x`, `../x`) references are
    /// resolved as RFC 3986 says; a fragment is dropped.
    pub fn join(&self, location: &str) -> Result<Url, UrlError> {
        let location = location.split('#').next().unwrap_or_default();
        let has_scheme = location
            .split_once(':')
            .is_some_and(|(scheme, _)| is_scheme(scheme));
        if has_scheme {
            return Url::parse(location);
        }
        if location.starts_with("//") {
            return Url::parse(&format!("{}:{location}", self.scheme()));
        }
        let base_path = self
            .path_and_query
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string();
        let reference = if location.is_empty() {
            self.path_and_query.clone()
        } else if location.starts_with('/') {
            location.to_string()
        } else if location.starts_with('?') {
            format!("{base_path}{location}")
        } else {
            let directory = &base_path[..base_path.rfind('/').map_or(0, |at| at + 1)];
            format!("{directory}{location}")
        };
        let (path, query) = match reference.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (reference.as_str(), None),
        };
        let mut resolved = remove_dot_segments(path);
        if let Some(query) = query {
            resolved.push('?');
            resolved.push_str(query);
        }
        Url::parse(&format!(
            "{}://{}{resolved}",
            self.scheme(),
            self.host_header
        ))
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme(),
            self.host_header,
            self.path_and_query
        )
    }
}

/// A URI scheme: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `path` without `.` and `..` segments (RFC 3986, 5.2.4); always starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    let mut kept: Vec<&str> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "" if i == 0 => {}
            "." => {
                if last {
                    kept.push("");
                }
            }
            ".." => {
                kept.pop();
                if last {
                    kept.push("");
                }
            }
            other => kept.push(other),
        }
    }
    format!("/{}", kept.join("/"))
}

/// How an `https://` server's certificate is checked.
#[derive(Clone)]
pub enum Trust {
    /// Against the system's roots, read once at the first https connection.
    System,
    /// Against the CA certificates of a PEM text only.
    Ca(Arc<CaRoots>),
    /// Not at all (asked for explicitly): any certificate, the handshake's signatures still
    /// checked.
    Insecure,
}

/// The CA certificates of a [`Trust::Ca`] and the configuration built on them.
pub struct CaRoots {
    certificates: Vec<CertificateDer<'static>>,
    config: Arc<ClientConfig>,
}

/// Distinct CA texts whose configurations are kept for reuse.
pub const CACHED_CAS: usize = 64;

impl CaRoots {
    fn parse(pem: &str) -> Result<Self, TrustError> {
        let mut certificates = Vec::new();
        for parsed in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            certificates.push(parsed.map_err(|error| TrustError::MalformedPem(error.to_string()))?);
        }
        if certificates.is_empty() {
            return Err(TrustError::NoCertificate);
        }
        let mut roots = RootCertStore::empty();
        for certificate in &certificates {
            roots
                .add(certificate.clone())
                .map_err(|error| TrustError::Unusable(error.to_string()))?;
        }
        let config = config_with_roots(roots).map_err(TrustError::Unusable)?;
        Ok(Self {
            certificates,
            config: Arc::new(config),
        })
    }
}

impl PartialEq for Trust {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Trust::System, Trust::System) | (Trust::Insecure, Trust::Insecure) => true,
            (Trust::Ca(a), Trust::Ca(b)) => a.certificates == b.certificates,
            _ => false,
        }
    }
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::System => f.write_str("System"),
            Trust::Ca(roots) => write!(f, "Ca({} certificates)", roots.certificates.len()),
            Trust::Insecure => f.write_str("Insecure"),
        }
    }
}

impl Trust {
    /// The CA certificates in `pem` (at least one, each usable as a trust anchor). Tasks of one
    /// rule carry the same text, so the last [`CACHED_CAS`] built are shared, not rebuilt.
    pub fn from_pem(pem: &str) -> Result<Trust, TrustError> {
        static CACHE: OnceLock<Mutex<HashMap<String, Arc<CaRoots>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Mutex::default);
        let lock = || cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(roots) = lock().get(pem) {
            return Ok(Trust::Ca(Arc::clone(roots)));
        }
        let roots = Arc::new(CaRoots::parse(pem)?);
        let mut cached = lock();
        if cached.len() >= CACHED_CAS {
            cached.clear();
        }
        cached.insert(pem.to_string(), Arc::clone(&roots));
        Ok(Trust::Ca(roots))
    }

    /// The trust a rule or an alert asks for: `ca_pem` (empty: none), or no verification at
    /// all, or the system's roots. Both at once is refused.
    pub fn from_options(ca_pem: &str, insecure_skip_verify: bool) -> Result<Trust, TrustError> {
        match (ca_pem.is_empty(), insecure_skip_verify) {
            (true, false) => Ok(Trust::System),
            (true, true) => Ok(Trust::Insecure),
            (false, false) => Trust::from_pem(ca_pem),
            (false, true) => Err(TrustError::CaWithInsecure),
        }
    }

    /// Whether certificates are checked at all.
    pub fn verifies(&self) -> bool {
        !matches!(self, Trust::Insecure)
    }

    fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        static SYSTEM: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
        static INSECURE: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
        match self {
            Trust::System => SYSTEM.get_or_init(system_config).clone(),
            Trust::Ca(roots) => Ok(Arc::clone(&roots.config)),
            Trust::Insecure => INSECURE.get_or_init(insecure_config).clone(),
        }
    }
}

/// A client configuration trusting `roots`, speaking HTTP/1.1.
fn config_with_roots(roots: RootCertStore) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn system_config() -> Result<Arc<ClientConfig>, String> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        tracing::warn!(
            target: "turbomon::check",
            errors = ?loaded.errors,
            "no system CA certificates found: https without a CA of its own will fail verification"
        );
    }
    config_with_roots(roots).map(Arc::new)
}

fn insecure_config() -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any certificate, but still checks that the server holds its key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Location` header, if any (and readable as text).
    pub location: Option<String>,
    /// The first bytes of the body, when asked for.
    pub body: Vec<u8>,
    /// The body went on beyond what was kept.
    pub body_cut: bool,
}

/// GETs `url`, keeping the first `read_body` bytes of the body (0: the body is not read).
pub async fn get(url: &Url, trust: &Trust, read_body: usize) -> Result<Response, RequestError> {
    send(hyper::Method::GET, url, trust, None, read_body).await
}

/// POSTs `body` as `content_type` to `url`; the response body is not read.
pub async fn post(
    url: &Url,
    trust: &Trust,
    content_type: &'static str,
    body: Bytes,
) -> Result<Response, RequestError> {
    send(
        hyper::Method::POST,
        url,
        trust,
        Some((content_type, body)),
        0,
    )
    .await
}

async fn send(
    method: hyper::Method,
    url: &Url,
    trust: &Trust,
    body: Option<(&'static str, Bytes)>,
    read_body: usize,
) -> Result<Response, RequestError> {
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(url.path_and_query.as_str())
        .header(header::HOST, url.host_header.as_str())
        .header(header::USER_AGENT, USER_AGENT);
    let content = match body {
        Some((content_type, bytes)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            bytes
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(content))
        .map_err(|error| RequestError::Http(error.to_string()))?;
    let stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|source| RequestError::Connect {
            target: url.host_header.clone(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    if !url.https {
        return exchange(TokioIo::new(stream), request, read_body).await;
    }
    let tls_error = |reason: String| RequestError::Tls {
        host: url.host.clone(),
        reason,
    };
    let name = ServerName::try_from(url.host.clone())
        .map_err(|_| tls_error("not a name a certificate can be checked against".into()))?;
    let stream = TlsConnector::from(trust.client_config().map_err(tls_error)?)
        .connect(name, stream)
        .await
        .map_err(|error| tls_error(handshake_failure(&error, &url.host)))?;
    exchange(TokioIo::new(stream), request, read_body).await
}

/// Sends `request` over `io` and waits for the response (and the first `read_body` bytes of its
/// body), driving the connection meanwhile.
async fn exchange<IO>(
    io: IO,
    request: hyper::Request<Full<Bytes>>,
    read_body: usize,
) -> Result<Response, RequestError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = http1::handshake::<_, Full<Bytes>>(io)
        .await
        .map_err(|error| RequestError::Http(error.to_string()))?;
    let mut connection = std::pin::pin!(connection);
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| RequestError::Http(error.to_string()))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let (body, body_cut) = if read_body > 0 {
            read_limited(response.into_body(), read_body).await?
        } else {
            (Vec::new(), false)
        };
        Ok(Response {
            status,
            location,
            body,
            body_cut,
        })
    };
    let mut answer = std::pin::pin!(answer);
    tokio::select! {
        biased;
        answered = &mut answer => answered,
        ended = &mut connection => {
            // What the connection delivered before it ended is still read.
            match (answer.await, ended) {
                (Ok(response), _) => Ok(response),
                (Err(_), Err(error)) => Err(RequestError::Http(error.to_string())),
                (Err(error), Ok(())) => Err(error),
            }
        }
    }
}

/// The first `limit` bytes of `body`, and whether it went on beyond them.
async fn read_limited(mut body: Incoming, limit: usize) -> Result<(Vec<u8>, bool), RequestError> {
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|error| RequestError::Http(format!("reading the body: {error}")))?;
        if let Ok(data) = frame.into_data() {
            let room = limit - kept.len();
            if data.len() > room {
                kept.extend_from_slice(&data[..room]);
                return Ok((kept, true));
            }
            kept.extend_from_slice(&data);
        }
    }
    Ok((kept, false))
}

/// Why the TLS handshake with `host` failed, in words.
fn handshake_failure(error: &std::io::Error, host: &str) -> String {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(certificate)) => match certificate {
            CertificateError::UnknownIssuer => {
                "its certificate is not signed by a trusted CA (give the rule a `ca`)".to_string()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("its certificate is not valid for {host}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "its certificate has expired".to_string()
            }
            other => format!("its certificate was refused: {other}"),
        },
        Some(other) => other.to_string(),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        let plain = url("http://h:8080/health?x=1");
        assert_eq!((plain.is_https(), plain.port), (false, 8080));
        assert_eq!(plain.to_string(), "http://h:8080/health?x=1");
        let secure = url("https://[::1]/");
        assert_eq!((secure.host.as_str(), secure.port), ("::1", 443));
        assert_eq!(secure.host_header, "[::1]");
        let with_user = url("https://user:secret@example.com/x");
        assert_eq!(
            with_user.host_header, "example.com",
            "no credentials in Host"
        );
        assert_eq!(Url::parse("ftp://x/"), Err(UrlError::UnsupportedScheme));
        assert!(matches!(
            Url::parse("example.com/x"),
            Err(UrlError::Invalid(_))
        ));
        assert!(matches!(Url::parse("http:///x"), Err(UrlError::Invalid(_))));
    }

    #[test]
    fn redirect_locations_resolve_against_the_url() {
        let base = url("https://h:8443/a/b/c?q=1");
        let cases = [
            ("http://other/x", "http://other/x"),
            ("//other:81/y", "https://other:81/y"),
            ("/root", "https://h:8443/root"),
            ("?z=2", "https://h:8443/a/b/c?z=2"),
            ("d", "https://h:8443/a/b/d"),
            ("../d?k#frag", "https://h:8443/a/d?k"),
            ("./", "https://h:8443/a/b/"),
            ("../../../..", "https://h:8443/"),
            ("", "https://h:8443/a/b/c?q=1"),
        ];
        for (location, expected) in cases {
            assert_eq!(
                base.join(location).map(|u| u.to_string()),
                Ok(expected.to_string()),
                "{location}"
            );
        }
        assert_eq!(base.join("ftp://x/"), Err(UrlError::UnsupportedScheme));
        assert!(base.join("/a b").is_err());
    }

    #[test]
    fn trust_options() {
        assert_eq!(Trust::from_options("", false), Ok(Trust::System));
        assert_eq!(Trust::from_options("", true), Ok(Trust::Insecure));
        assert_eq!(
            Trust::from_options("x", true).err(),
            Some(TrustError::CaWithInsecure)
        );
        assert_eq!(
            Trust::from_pem("not pem").err(),
            Some(TrustError::NoCertificate)
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            Trust::from_pem(garbage),
            Err(TrustError::Unusable(_))
        ));
        assert!(!Trust::Insecure.verifies() && Trust::System.verifies());
    }

    #[test]
    fn tasks_with_the_same_ca_share_one_configuration() {
        let pem = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()])
            .unwrap()
            .cert
            .pem();
        let (Ok(Trust::Ca(first)), Ok(Trust::Ca(second))) =
            (Trust::from_pem(&pem), Trust::from_pem(&pem))
        else {
            panic!("a self-signed certificate is a usable root")
        };
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.certificates.len(), 1);
    }
}
