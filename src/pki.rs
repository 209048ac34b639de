//! `turbomon pki`: a small certificate authority for mutual TLS between a supervisor and its
//! engines, made with rcgen. `init` creates the CA, `issue` signs a leaf for an engine or a
//! supervisor, `show` prints what a certificate file holds. [`ThrowawayPki`] makes a complete
//! set in a temporary directory for `demo`, `chaos` and `bench`.
//!
//! Files: `ca.pem` and `ca.key` in the CA directory; `NAME.pem`, `NAME.key` and a copy of
//! `ca.pem` in a leaf's output directory, so that directory is all a host needs. Keys are
//! written mode 0600 and never overwritten.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::{EngineTls, SupervisorTls};

/// Validity of a new CA unless told otherwise.
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Validity of a new leaf unless told otherwise.
pub const DEFAULT_LEAF_DAYS: u32 = 825;
/// The CA certificate's file name.
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file name.
pub const CA_KEY: &str = "ca.key";

/// What went wrong making or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A key file is there already; it is never overwritten.
    #[error("{0} exists already; remove it first to make a new one (keys are never overwritten)")]
    Exists(PathBuf),
    /// rcgen refused the parameters or a file.
    #[error("{what}: {reason}")]
    Certificate {
        /// What was being made or read.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A name that cannot go into a certificate.
    #[error("`{0}` is not a usable name: use letters, digits, `-`, `_` and `.`")]
    BadName(String),
    /// `show` found no certificate.
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
}

/// A leaf to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRequest {
    /// Common name, and the files' base name.
    pub name: String,
    /// DNS names it is valid for (default: `name`, when it is a DNS name).
    pub dns: Vec<String>,
    /// IP addresses it is valid for.
    pub ips: Vec<IpAddr>,
    /// Days of validity from now.
    pub days: u32,
}

/// The files of one issued leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedLeaf {
    /// Its certificate.
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
    /// The CA certificate beside it.
    pub ca: PathBuf,
}

/// Creates a CA in `dir` (made if missing): `ca.pem` and `ca.key`, valid `days` from now.
pub fn init(dir: &Path, name: &str, days: u32) -> Result<PathBuf, PkiError> {
    check_name(name)?;
    std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
    let key_path = dir.join(CA_KEY);
    if key_path.exists() {
        return Err(PkiError::Exists(key_path));
    }
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error(name))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, days);
    let key = KeyPair::generate().map_err(cert_error(name))?;
    let cert = params.self_signed(&key).map_err(cert_error(name))?;
    write_secret(&key_path, &key.serialize_pem())?;
    let cert_path = dir.join(CA_CERT);
    write_public(&cert_path, &cert.pem())?;
    Ok(cert_path)
}

/// Issues a leaf signed by the CA in `ca_dir`, for server and client use, into `out` (made if
/// missing): `NAME.pem`, `NAME.key` and a copy of `ca.pem`.
pub fn issue(ca_dir: &Path, request: &LeafRequest, out: &Path) -> Result<IssuedLeaf, PkiError> {
    check_name(&request.name)?;
    let ca_cert_path = ca_dir.join(CA_CERT);
    let ca_cert = read(&ca_cert_path)?;
    let ca_key = KeyPair::from_pem(&read(&ca_dir.join(CA_KEY))?)
        .map_err(cert_error(&ca_dir.join(CA_KEY).display().to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key)
        .map_err(cert_error(&ca_cert_path.display().to_string()))?;

    let mut dns = request.dns.clone();
    if dns.is_empty() && request.ips.is_empty() {
        dns.push(request.name.clone());
    }
    let mut params = CertificateParams::new(dns).map_err(cert_error(&request.name))?;
    params
        .subject_alt_names
        .extend(request.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params
        .distinguished_name
        .push(DnType::CommonName, request.name.as_str());
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    set_validity(&mut params, request.days);

    std::fs::create_dir_all(out).map_err(|source| io(out, source))?;
    let key_path = out.join(format!("{}.key", request.name));
    if key_path.exists() {
        return Err(PkiError::Exists(key_path));
    }
    let key = KeyPair::generate().map_err(cert_error(&request.name))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(cert_error(&request.name))?;
    write_secret(&key_path, &key.serialize_pem())?;
    let cert_path = out.join(format!("{}.pem", request.name));
    write_public(&cert_path, &cert.pem())?;
    let ca_copy = out.join(CA_CERT);
    if ca_copy != ca_cert_path {
        write_public(&ca_copy, &ca_cert)?;
    }
    Ok(IssuedLeaf {
        cert: cert_path,
        key: key_path,
        ca: ca_copy,
    })
}

/// What `show` prints for each certificate in `path`: subject, issuer, names, validity and
/// how long it has left (or that it expired).
pub fn show(path: &Path) -> Result<String, PkiError> {
    let pem = read(path)?;
    let mut text = String::new();
    let mut found = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| PkiError::Certificate {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let (_, cert) =
            X509Certificate::from_der(&block.contents).map_err(|e| PkiError::Certificate {
                what: path.display().to_string(),
                reason: e.to_string(),
            })?;
        found += 1;
        describe(&cert, &mut text);
    }
    if found == 0 {
        return Err(PkiError::NoCertificate(path.to_path_buf()));
    }
    Ok(text)
}

fn describe(cert: &X509Certificate<'_>, text: &mut String) {
    use std::fmt::Write as _;
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(format!("DNS:{dns}")),
                    GeneralName::IPAddress(bytes) => ip_from(bytes).map(|ip| format!("IP:{ip}")),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let validity = cert.validity();
    let left = validity.time_to_expiration();
    let _ = writeln!(text, "subject:    {}", cert.subject());
    let _ = writeln!(text, "issuer:     {}", cert.issuer());
    let _ = writeln!(
        text,
        "names:      {}",
        if names.is_empty() {
            "(none)".to_string()
        } else {
            names.join(", ")
        }
    );
    let _ = writeln!(
        text,
        "CA:         {}",
        if cert.is_ca() { "yes" } else { "no" }
    );
    let _ = writeln!(text, "not before: {}", validity.not_before);
    let _ = writeln!(text, "not after:  {}", validity.not_after);
    let _ = match left {
        Some(left) => writeln!(
            text,
            "expires:    in {} days",
            left.whole_seconds().max(0) / 86_400
        ),
        None => writeln!(text, "expires:    EXPIRED (or not yet valid)"),
    };
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// A complete throw-away set, for `demo`, `chaos` and `bench`: a CA valid for two days, an
/// engine certificate for `localhost`, `127.0.0.1` and `::1`, and a supervisor certificate, in a
/// fresh temporary directory that is removed when this is dropped.
#[derive(Debug)]
pub struct ThrowawayPki {
    dir: PathBuf,
    /// The engine's `[tls]`.
    pub engine: EngineTls,
    /// The supervisor's `[tls]`.
    pub supervisor: SupervisorTls,
}

impl ThrowawayPki {
    /// Makes the set in a new directory under the system's temporary directory.
    pub fn create() -> Result<Self, PkiError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let unique = format!(
            "turbomon-pki-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let dir = std::env::temp_dir().join(unique);
        match Self::create_in(&dir) {
            Ok((engine, supervisor)) => Ok(Self {
                dir,
                engine,
                supervisor,
            }),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(error)
            }
        }
    }

    fn create_in(dir: &Path) -> Result<(EngineTls, SupervisorTls), PkiError> {
        let ca_dir = dir.join("ca");
        init(&ca_dir, "turbomon throw-away CA", 2)?;
        let leaf = |name: &str, dns: &[&str], ips: &[IpAddr]| {
            issue(
                &ca_dir,
                &LeafRequest {
                    name: name.to_string(),
                    dns: dns.iter().map(|d| d.to_string()).collect(),
                    ips: ips.to_vec(),
                    days: 2,
                },
                &dir.join(name),
            )
        };
        let loopback = [
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ];
        let engine = leaf("engine", &["localhost"], &loopback)?;
        let supervisor = leaf("supervisor", &["supervisor"], &[])?;
        Ok((
            EngineTls {
                cert: engine.cert,
                key: engine.key,
                client_ca: engine.ca,
            },
            SupervisorTls {
                ca: supervisor.ca,
                cert: supervisor.cert,
                key: supervisor.key,
            },
        ))
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ThrowawayPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that run behind.
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + Duration::from_secs(u64::from(days.max(1)) * 86_400);
}

fn check_name(name: &str) -> Result<(), PkiError> {
    let usable = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        && !name.starts_with('.')
        && !name.contains("..");
    if usable {
        Ok(())
    } else {
        Err(PkiError::BadName(name.to_string()))
    }
}

fn cert_error(what: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |error| PkiError::Certificate {
        what: what.to_string(),
        reason: error.to_string(),
    }
}

fn io(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| io(path, source))
}

/// A key file: created new (never over another), readable by its owner only.
fn write_secret(path: &Path, text: &str) -> Result<(), PkiError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => PkiError::Exists(path.to_path_buf()),
        _ => io(path, source),
    })?;
    file.write_all(text.as_bytes())
        .map_err(|source| io(path, source))
}

fn write_public(path: &Path, text: &str) -> Result<(), PkiError> {
    std::fs::write(path, text).map_err(|source| io(path, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throwaway_set_is_complete_and_removed_when_dropped() {
        let pki = ThrowawayPki::create().unwrap();
        let dir = pki.dir().to_path_buf();
        let shown = show(&pki.engine.cert).unwrap();
        assert!(
            shown.contains("DNS:localhost") && shown.contains("IP:127.0.0.1"),
            "{shown}"
        );
        assert!(
            show(&pki.supervisor.ca)
                .unwrap()
                .contains("CA:         yes")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&pki.engine.key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(pki);
        assert!(!dir.exists());
    }

    #[test]
    fn names_that_would_escape_the_directory_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden", "a..b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("engine1.branch.example.net").unwrap();
    }
}
