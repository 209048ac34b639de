//! Why a TLS handshake failed, in words a person can act on: rustls's errors, the alerts a peer
//! sends, and a peer that speaks plaintext, turned into one sentence.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use rustls::{AlertDescription, CertificateError};

/// Which end of the connection we are: it decides whose certificate a failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The engine, accepting a supervisor.
    Engine,
    /// The supervisor (or bench), dialling an engine.
    Supervisor,
}

impl Side {
    fn peer(self) -> &'static str {
        match self {
            Side::Engine => "client",
            Side::Supervisor => "engine",
        }
    }

    fn trusted_ca_key(self) -> &'static str {
        match self {
            Side::Engine => "client_ca",
            Side::Supervisor => "ca",
        }
    }
}

/// A failed TLS handshake, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct HandshakeError {
    /// The sentence saying why.
    pub reason: String,
    /// The peer connected and closed without sending a byte: what a TCP port check does
    /// (`check_tcp`, a load balancer's probe), not worth a warning.
    pub closed_silently: bool,
}

impl HandshakeError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            closed_silently: false,
        }
    }

    pub(crate) fn closed_silently() -> Self {
        Self {
            closed_silently: true,
            ..Self::new("the client closed the connection before the TLS handshake")
        }
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        Self::new(format!(
            "the TLS handshake did not finish within {}",
            humantime::format_duration(after)
        ))
    }

    /// The reason for `error` (an I/O error from tokio-rustls, or anything with one in its
    /// source chain), seen from `side`.
    pub fn explain(error: &(dyn StdError + 'static), side: Side) -> Self {
        Self::new(explain(error, side))
    }
}

/// The reason for the first rustls or I/O error found in `error`'s source chain.
pub fn explain(error: &(dyn StdError + 'static), side: Side) -> String {
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    let mut io_kind = None;
    while let Some(current) = next {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return explain_rustls(tls, side);
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return explain_rustls(tls, side);
            }
            io_kind.get_or_insert(io.kind());
        }
        next = current.source();
    }
    match io_kind {
        Some(
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe,
        ) => format!(
            "the {} closed the connection during the TLS handshake (it may have refused our \
             certificate, or it does not speak TLS)",
            side.peer()
        ),
        _ => error.to_string(),
    }
}

fn explain_rustls(error: &rustls::Error, side: Side) -> String {
    let peer = side.peer();
    match error {
        rustls::Error::NoCertificatesPresented => format!(
            "the {peer} presented no certificate (set cert and key under [tls] on the {peer})"
        ),
        rustls::Error::InvalidCertificate(certificate) => explain_certificate(certificate, side),
        rustls::Error::AlertReceived(alert) => explain_alert(*alert, side),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            plaintext_peer(side)
        }
        rustls::Error::NoApplicationProtocol => {
            format!("the {peer} does not offer HTTP/2 (ALPN h2) over TLS")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

/// What to say when the peer's first bytes are not TLS.
pub fn plaintext_peer(side: Side) -> String {
    match side {
        Side::Engine => "the client spoke plaintext, not TLS (is the supervisor missing its [tls] \
                         section?)"
            .to_string(),
        Side::Supervisor => "the engine answered in plaintext, not TLS (is the engine missing its \
                             [tls] section?)"
            .to_string(),
    }
}

fn explain_certificate(error: &CertificateError, side: Side) -> String {
    let peer = side.peer();
    match error {
        CertificateError::Expired => format!("the {peer} certificate has expired"),
        CertificateError::ExpiredContext { not_after, .. } => format!(
            "the {peer} certificate expired on {}",
            rfc3339(not_after.as_secs())
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("the {peer} certificate is not valid yet (check both clocks)")
        }
        CertificateError::UnknownIssuer => format!(
            "the {peer} certificate is not signed by the CA in `{}` under [tls]",
            side.trusted_ca_key()
        ),
        CertificateError::NotValidForName => format!(
            "the {peer} certificate is not valid for the name dialled (set server_name for the \
             engine, or issue the certificate for that name)"
        ),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "the {peer} certificate is not valid for {} (it names: {}); set server_name for the \
             engine, or issue the certificate for that name",
            expected.to_str(),
            if presented.is_empty() {
                "nothing".to_string()
            } else {
                presented.join(", ")
            }
        ),
        CertificateError::BadSignature => {
            format!("the {peer} certificate has a bad signature")
        }
        other => format!("the {peer} certificate was refused: {other}"),
    }
}

fn explain_alert(alert: AlertDescription, side: Side) -> String {
    let peer = side.peer();
    let why = match alert {
        AlertDescription::UnknownCA => "our certificate is not signed by a CA it trusts",
        AlertDescription::CertificateExpired => "our certificate has expired",
        AlertDescription::CertificateRequired => {
            "it requires a certificate and we sent none (set cert and key under [tls])"
        }
        AlertDescription::BadCertificate | AlertDescription::CertificateUnknown => {
            "it does not accept our certificate"
        }
        AlertDescription::NoApplicationProtocol => "we do not agree on HTTP/2 (ALPN h2)",
        AlertDescription::HandshakeFailure | AlertDescription::ProtocolVersion => {
            "no TLS version or cipher suite in common"
        }
        _ => "",
    };
    if why.is_empty() {
        format!("the {peer} refused the TLS handshake ({alert:?})")
    } else {
        format!("the {peer} refused the TLS handshake: {why}")
    }
}

fn rfc3339(unix_seconds: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(unix_seconds))
        .to_string()
}
