//! Certificates for TLS tests, made with rcgen: a CA and leaves signed by it, valid, expired or
//! for the wrong name, written as PEM files into a scratch directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    date_time_ymd,
};
use turbomon::tls::{ClientTlsFiles, ServerTlsFiles};

/// A test CA whose files live in `dir`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM file).
    pub cert: PathBuf,
    dir: PathBuf,
}

/// A leaf's files.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Certificate (PEM file).
    pub cert: PathBuf,
    /// Private key (PEM file).
    pub key: PathBuf,
}

/// How a leaf is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Valid from 2020 to 2100.
    Valid,
    /// Expired at the start of 2021.
    Expired,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/NAME-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem()).expect("write CA");
        Self {
            issuer: Issuer::new(params, key),
            cert: path,
            dir: dir.to_path_buf(),
        }
    }

    /// A leaf with common name `name` and `sans` (DNS names or IP literals), for both server and
    /// client use, written to `dir/NAME.pem` and `dir/NAME.key`.
    pub fn leaf(&self, name: &str, sans: &[&str], validity: Validity) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        match validity {
            Validity::Valid => {
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2100, 1, 1);
            }
            Validity::Expired => {
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2021, 1, 1);
            }
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        let leaf = Leaf {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }

    /// The engine's `[tls]` files: `leaf` as its certificate, this CA for clients.
    pub fn server_files(&self, leaf: &Leaf) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: leaf.cert.clone(),
            key: leaf.key.clone(),
            client_ca: self.cert.clone(),
        }
    }

    /// The supervisor's `[tls]` files: `leaf` as its certificate, this CA for engines.
    pub fn client_files(&self, leaf: &Leaf) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: self.cert.clone(),
            cert: leaf.cert.clone(),
            key: leaf.key.clone(),
        }
    }
}
