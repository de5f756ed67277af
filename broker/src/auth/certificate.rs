//! The principal a client certificate names, as `mtls_principal` says:
//! its subject's common name, else its first DNS subject alternative name
//! (service certificates often carry only that); or only the first DNS
//! name; or the first URI name (a SPIFFE id); or the whole subject as an
//! RFC 4514 string.
//!
//! The certificate was verified in the TLS handshake; this only reads it.
//! A certificate without what the mapping asks for names no one: there is
//! no fallback from one mapping to another, so a name never changes its
//! meaning with the certificate's contents.

use std::fmt::Write as _;

use x509_parser::asn1_rs::{Any, Tag, ToDer as _};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{self as oids, Oid};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use super::{Credential, Principal};
use brook_engine::config::CertificatePrincipal;

/// The principal of a DER certificate, `None` if it cannot be parsed or
/// names no one the way `mapping` asks.
pub(crate) fn certificate_principal(
    der: &[u8],
    mapping: CertificatePrincipal,
) -> Option<Principal> {
    let (_rest, cert) = match X509Certificate::from_der(der) {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::debug!(error = %e, "cannot parse the client certificate");
            return None;
        }
    };
    let name = match mapping {
        CertificatePrincipal::DnsName => first_dns_name(&cert).map(str::to_owned),
        CertificatePrincipal::Uri => first_uri(&cert).map(str::to_owned),
        CertificatePrincipal::Subject => rfc4514(cert.subject()),
        // The default, and what a mapping added later falls back to.
        _ => common_name(&cert)
            .or_else(|| first_dns_name(&cert))
            .map(str::to_owned),
    }?;
    Some(Principal::new(name, Credential::Certificate))
}

fn common_name<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a str> {
    cert.subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
}

fn first_dns_name<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a str> {
    first_alternative_name(cert, |name| match name {
        GeneralName::DNSName(dns) => Some(dns),
        _ => None,
    })
}

fn first_uri<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a str> {
    first_alternative_name(cert, |name| match name {
        GeneralName::URI(uri) => Some(uri),
        _ => None,
    })
}

fn first_alternative_name<'a>(
    cert: &'a X509Certificate<'_>,
    pick: impl Fn(&GeneralName<'a>) -> Option<&'a str>,
) -> Option<&'a str> {
    let names = cert.subject_alternative_name().ok().flatten()?;
    names
        .value
        .general_names
        .iter()
        .filter_map(pick)
        .find(|name| !name.is_empty())
}

/// The subject as RFC 4514 writes a distinguished name: the last RDN
/// first, RDNs joined by `,`, the attributes of a multi-valued RDN by `+`,
/// well-known attribute types by their short names and others as dotted
/// OIDs, string values escaped, and other values as `#` and the hex of
/// their DER. `None` for an empty subject.
fn rfc4514(subject: &X509Name<'_>) -> Option<String> {
    let rdns: Vec<_> = subject.iter().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.into_iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attribute) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            write_attribute(&mut out, attribute);
        }
    }
    (!out.is_empty()).then_some(out)
}

fn write_attribute(out: &mut String, attribute: &AttributeTypeAndValue<'_>) {
    let oid = attribute.attr_type();
    match short_name(oid) {
        Some(name) => out.push_str(name),
        None => out.push_str(&oid.to_id_string()),
    }
    out.push('=');
    let value = attribute.attr_value();
    match string_value(value) {
        Some(text) if short_name(oid).is_some() => escape(out, text),
        // RFC 4514 2.4: a type given as a dotted OID takes its value as
        // hex DER, as does a value that is not a string.
        _ => {
            out.push('#');
            for byte in value.to_der_vec().unwrap_or_default() {
                let _ = write!(out, "{byte:02X}");
            }
        }
    }
}

/// The attribute types RFC 4514 section 3 names.
fn short_name(oid: &Oid<'_>) -> Option<&'static str> {
    [
        (oids::OID_X509_COMMON_NAME, "CN"),
        (oids::OID_X509_LOCALITY_NAME, "L"),
        (oids::OID_X509_STATE_OR_PROVINCE_NAME, "ST"),
        (oids::OID_X509_ORGANIZATION_NAME, "O"),
        (oids::OID_X509_ORGANIZATIONAL_UNIT, "OU"),
        (oids::OID_X509_COUNTRY_NAME, "C"),
        (oids::OID_X509_STREET_ADDRESS, "STREET"),
        (oids::OID_DOMAIN_COMPONENT, "DC"),
        (oids::OID_USERID, "UID"),
    ]
    .into_iter()
    .find_map(|(known, name)| (known == *oid).then_some(name))
}

fn string_value<'a>(value: &'a Any<'_>) -> Option<&'a str> {
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::T61String
        | Tag::VisibleString => std::str::from_utf8(value.data).ok(),
        _ => None,
    }
}

/// Escapes a value as RFC 4514 section 2.4 asks.
fn escape(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
        } else {
            if special {
                out.push('\\');
            }
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn der(names: &[&str], subject: &[(DnType, &str)], uris: &[&str]) -> Vec<u8> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("valid names");
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().expect("an IA5 string")));
        }
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let key = KeyPair::generate().expect("a key");
        params
            .self_signed(&key)
            .expect("a certificate")
            .der()
            .to_vec()
    }

    fn name(der: &[u8], mapping: CertificatePrincipal) -> Option<String> {
        certificate_principal(der, mapping).map(|p| p.name().to_owned())
    }

    const SPIFFE: &str = "spiffe://cluster.local/ns/shop/sa/orders";

    #[test]
    fn the_common_name_names_the_client() {
        let cert = der(&["alice.example"], &[(DnType::CommonName, "alice")], &[]);
        assert_eq!(
            name(&cert, CertificatePrincipal::CommonName).as_deref(),
            Some("alice")
        );
    }

    #[test]
    fn without_a_common_name_the_first_dns_name_does() {
        let cert = der(&["svc.ns", "other"], &[], &[]);
        assert_eq!(
            name(&cert, CertificatePrincipal::CommonName).as_deref(),
            Some("svc.ns")
        );
    }

    #[test]
    fn a_certificate_naming_no_one_and_garbage_name_no_principal() {
        for mapping in [
            CertificatePrincipal::CommonName,
            CertificatePrincipal::DnsName,
            CertificatePrincipal::Uri,
            CertificatePrincipal::Subject,
        ] {
            assert_eq!(name(&der(&[], &[], &[]), mapping), None, "{mapping}");
            assert_eq!(name(b"not a certificate", mapping), None, "{mapping}");
        }
    }

    #[test]
    fn each_mapping_reads_its_own_field_and_never_another() {
        let cert = der(
            &["orders.shop.svc"],
            &[
                (DnType::OrganizationName, "Shop"),
                (DnType::CommonName, "orders"),
            ],
            &[SPIFFE],
        );
        assert_eq!(
            name(&cert, CertificatePrincipal::CommonName).as_deref(),
            Some("orders")
        );
        assert_eq!(
            name(&cert, CertificatePrincipal::DnsName).as_deref(),
            Some("orders.shop.svc")
        );
        assert_eq!(
            name(&cert, CertificatePrincipal::Uri).as_deref(),
            Some(SPIFFE)
        );
        assert_eq!(
            name(&cert, CertificatePrincipal::Subject).as_deref(),
            Some("CN=orders,O=Shop")
        );
        // No URI name: `uri` names no one rather than taking the CN.
        let without_uri = der(&["a.svc"], &[(DnType::CommonName, "a")], &[]);
        assert_eq!(name(&without_uri, CertificatePrincipal::Uri), None);
        let without_dns = der(&[], &[(DnType::CommonName, "a")], &[SPIFFE]);
        assert_eq!(name(&without_dns, CertificatePrincipal::DnsName), None);
    }

    #[test]
    fn the_subject_is_written_as_rfc_4514_says() {
        let cert = der(
            &[],
            &[
                (DnType::CountryName, "DE"),
                (DnType::OrganizationName, "Shop, Inc."),
                (DnType::OrganizationalUnitName, "#payments "),
                (DnType::CommonName, "a+b<c>;\"d\\"),
            ],
            &[],
        );
        assert_eq!(
            name(&cert, CertificatePrincipal::Subject).as_deref(),
            Some(r#"CN=a\+b\<c\>\;\"d\\,OU=\#payments\ ,O=Shop\, Inc.,C=DE"#)
        );
    }
}
