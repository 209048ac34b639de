//! Who is on the other end: the name in a peer's certificate.

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The name of the leaf certificate's subject: its common name, else its first DNS name.
pub fn peer_name(certs: &[CertificateDer<'_>]) -> Option<String> {
    let (_, leaf) = X509Certificate::from_der(certs.first()?.as_ref()).ok()?;
    if let Some(cn) = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(cn.to_string());
    }
    leaf.subject_alternative_name()
        .ok()
        .flatten()?
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_string()),
            _ => None,
        })
}
