//! The principal a client certificate names: its subject's common name,
//! else its first DNS subject alternative name (service certificates often
//! carry only that).
//!
//! The certificate was verified in the TLS handshake; this only reads it.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::{Credential, Principal};

/// The principal of a DER certificate, `None` if it cannot be parsed or
/// names no one.
pub(crate) fn certificate_principal(der: &[u8]) -> Option<Principal> {
    let (_rest, cert) = match X509Certificate::from_der(der) {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::debug!(error = %e, "cannot parse the client certificate");
            return None;
        }
    };
    let common_name = cert
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty());
    let name = common_name.or_else(|| first_dns_name(&cert))?;
    Some(Principal::new(name, Credential::Certificate))
}

fn first_dns_name<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a str> {
    let names = cert.subject_alternative_name().ok().flatten()?;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::DNSName(dns) if !dns.is_empty() => Some(*dns),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn der(names: &[&str], common_name: Option<&str>) -> Vec<u8> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("valid names");
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = common_name {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().expect("a key");
        params
            .self_signed(&key)
            .expect("a certificate")
            .der()
            .to_vec()
    }

    #[test]
    fn the_common_name_names_the_client() {
        let principal = certificate_principal(&der(&["alice.example"], Some("alice")));
        assert_eq!(principal.as_ref().map(Principal::name), Some("alice"));
    }

    #[test]
    fn without_a_common_name_the_first_dns_name_does() {
        let principal = certificate_principal(&der(&["svc.ns", "other"], None));
        assert_eq!(principal.as_ref().map(Principal::name), Some("svc.ns"));
    }

    #[test]
    fn a_certificate_naming_no_one_and_garbage_name_no_principal() {
        assert_eq!(certificate_principal(&der(&[], None)), None);
        assert_eq!(certificate_principal(b"not a certificate"), None);
    }
}
