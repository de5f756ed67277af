//! TLS for the connection: what the client trusts, the certificate it
//! presents for mutual TLS, and the name it checks the broker's certificate
//! against; and the rule that picks TLS or plaintext from the endpoint.
//!
//! Invariants: an `https://` endpoint always speaks TLS (with the system's
//! roots when nothing else is trusted), an `http://` one never does, and TLS
//! settings with an `http://` endpoint are refused instead of ignored. Every
//! PEM is parsed here before tonic sees it, because tonic skips what it
//! cannot parse: a CA file without a certificate would otherwise fail only
//! at the handshake, as an untrusted broker.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::ClientError;

/// A PEM document, given as bytes or read from a file when the client
/// connects.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pem {
    /// The document itself.
    Bytes(Vec<u8>),
    /// A file holding it, read at each [`crate::Client::connect_with`].
    File(PathBuf),
}

impl Pem {
    /// A PEM document held in memory.
    pub fn from_bytes(pem: impl Into<Vec<u8>>) -> Self {
        Self::Bytes(pem.into())
    }

    /// A PEM document in a file.
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        Self::File(path.into())
    }

    /// Where the document comes from, for error messages.
    fn origin(&self) -> String {
        match self {
            Self::Bytes(_) => "the PEM given in memory".to_owned(),
            Self::File(path) => path.display().to_string(),
        }
    }

    async fn read(&self, what: &str) -> Result<Vec<u8>, ClientError> {
        match self {
            Self::Bytes(bytes) => Ok(bytes.clone()),
            Self::File(path) => tokio::fs::read(path).await.map_err(|error| {
                ClientError::tls(
                    format!("cannot read the {what} from {}", path.display()),
                    Some(Arc::new(error)),
                )
            }),
        }
    }
}

/// The certificate chain and private key the client presents to a broker
/// that asks for one (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsIdentity {
    /// The client's certificate, then any intermediates (PEM).
    pub cert_chain: Pem,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Pem,
}

impl TlsIdentity {
    /// An identity from a certificate chain and its key.
    pub fn new(cert_chain: Pem, key: Pem) -> Self {
        Self { cert_chain, key }
    }
}

/// TLS settings of a connection ([`crate::ClientOptions::tls`]). The
/// default trusts the system's roots, presents no certificate and checks
/// the broker's certificate against the endpoint's host.
///
/// ```no_run
/// # async fn example() -> Result<(), brook_client::ClientError> {
/// use brook_client::{Client, ClientOptions, Pem, TlsIdentity, TlsOptions};
///
/// let tls = TlsOptions::default()
///     .with_ca(Pem::from_file("/etc/brook/ca.pem"))
///     .with_identity(TlsIdentity::new(
///         Pem::from_file("/etc/brook/client.pem"),
///         Pem::from_file("/etc/brook/client.key"),
///     ));
/// let client =
///     Client::connect_with("broker.internal:9420", ClientOptions::default().with_tls(tls))
///         .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// CA certificates (PEM, one or more) to trust; instead of the system's
    /// roots unless [`Self::system_roots`].
    pub ca: Option<Pem>,
    /// Trust the system's roots besides [`Self::ca`]. Without a `ca` the
    /// system's roots are trusted anyway.
    pub system_roots: bool,
    /// The certificate presented to a broker that asks for one.
    pub identity: Option<TlsIdentity>,
    /// The name the broker's certificate must be issued for, instead of the
    /// endpoint's host: for connecting by IP address (or through a tunnel)
    /// to a broker whose certificate names its DNS name.
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// Sets [`Self::ca`].
    #[must_use]
    pub fn with_ca(mut self, ca: Pem) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Sets [`Self::system_roots`].
    #[must_use]
    pub fn with_system_roots(mut self, system_roots: bool) -> Self {
        self.system_roots = system_roots;
        self
    }

    /// Sets [`Self::identity`].
    #[must_use]
    pub fn with_identity(mut self, identity: TlsIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Sets [`Self::server_name`].
    #[must_use]
    pub fn with_server_name(mut self, server_name: impl Into<String>) -> Self {
        self.server_name = Some(server_name.into());
        self
    }

    /// tonic's settings from these, every PEM read and checked.
    pub(crate) async fn client_config(
        &self,
        handshake_timeout: std::time::Duration,
    ) -> Result<ClientTlsConfig, ClientError> {
        let mut config = ClientTlsConfig::new().timeout(handshake_timeout);
        if let Some(ca) = &self.ca {
            let pem = ca.read("CA certificates").await?;
            certificates(&pem, || format!("CA certificates in {}", ca.origin()))?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        if self.ca.is_none() || self.system_roots {
            config = config.with_native_roots();
        }
        if let Some(identity) = &self.identity {
            let chain = identity.cert_chain.read("client certificate").await?;
            certificates(&chain, || {
                format!("client certificate in {}", identity.cert_chain.origin())
            })?;
            let key = identity.key.read("client key").await?;
            PrivateKeyDer::from_pem_slice(&key).map_err(|error| {
                ClientError::tls(
                    format!(
                        "no usable private key (PKCS#8, PKCS#1 or SEC1 PEM) in {}",
                        identity.key.origin()
                    ),
                    Some(Arc::new(error)),
                )
            })?;
            config = config.identity(Identity::from_pem(chain, key));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

/// Checks that `pem` holds at least one certificate and nothing malformed.
fn certificates(pem: &[u8], what: impl Fn() -> String) -> Result<(), ClientError> {
    let mut count = 0_usize;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|error| {
            ClientError::tls(format!("malformed {}", what()), Some(Arc::new(error)))
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(ClientError::tls(format!("no PEM {}", what()), None));
    }
    Ok(())
}

/// The endpoint as a URI with its scheme, and whether it speaks TLS:
/// `https://` does, `http://` does not, and `host:port` does when `tls` is
/// given. TLS settings with an `http://` endpoint are an error, since the
/// connection would silently go unencrypted.
pub(crate) fn resolve_scheme(
    endpoint: String,
    tls: Option<&TlsOptions>,
) -> Result<(String, bool), ClientError> {
    // Schemes are case-insensitive (RFC 3986), and so is the URI parser
    // tonic uses: `HTTP://` must not slip past the check below.
    let scheme = endpoint
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    if scheme.as_deref() == Some("https") {
        Ok((endpoint, true))
    } else if scheme.as_deref() == Some("http") {
        if tls.is_some() {
            return Err(ClientError::tls(
                format!(
                    "TLS settings given for the plaintext endpoint {endpoint}: \
                     use https:// (or host:port) to connect with TLS"
                ),
                None,
            ));
        }
        Ok((endpoint, false))
    } else if endpoint.contains("://") {
        // Not ours to judge: the URI parser names what is wrong with it.
        Ok((endpoint, tls.is_some()))
    } else if tls.is_some() {
        Ok((format!("https://{endpoint}"), true))
    } else {
        Ok((format!("http://{endpoint}"), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> TlsOptions {
        TlsOptions::default()
    }

    #[test]
    fn the_scheme_follows_the_endpoint_and_the_settings() {
        let resolve = |endpoint: &str, tls: Option<&TlsOptions>| {
            resolve_scheme(endpoint.to_owned(), tls).map_err(|error| error.to_string())
        };
        assert_eq!(resolve("b:1", None), Ok(("http://b:1".to_owned(), false)));
        assert_eq!(
            resolve("b:1", Some(&tls())),
            Ok(("https://b:1".to_owned(), true))
        );
        assert_eq!(
            resolve("https://b:1", None),
            Ok(("https://b:1".to_owned(), true))
        );
        assert_eq!(
            resolve("https://b:1", Some(&tls())),
            Ok(("https://b:1".to_owned(), true))
        );
        assert_eq!(
            resolve("http://b:1", None),
            Ok(("http://b:1".to_owned(), false))
        );
    }

    #[test]
    fn tls_settings_with_a_plaintext_endpoint_are_refused() {
        let error = resolve_scheme("http://b:1".to_owned(), Some(&tls())).unwrap_err();
        assert!(matches!(error, ClientError::Tls { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("http://b:1"), "{message}");
        assert!(message.contains("https://"), "{message}");
        assert!(!error.is_retryable());
        // Schemes are case-insensitive: an upper-case one is no way around.
        let error = resolve_scheme("HTTP://b:1".to_owned(), Some(&tls())).unwrap_err();
        assert!(matches!(error, ClientError::Tls { .. }), "{error:?}");
        let (_, tls) = resolve_scheme("HTTPS://b:1".to_owned(), None).unwrap();
        assert!(tls);
    }

    async fn config_error(options: TlsOptions) -> String {
        let error = options
            .client_config(std::time::Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::Tls { .. }), "{error:?}");
        assert_eq!(error.kind(), crate::ErrorKind::InvalidArgument);
        assert!(!error.is_retryable());
        format!("{:#}", anyhow::Error::new(error))
    }

    #[tokio::test]
    async fn a_ca_file_that_cannot_be_read_is_named() {
        let message =
            config_error(tls().with_ca(Pem::from_file("/nonexistent/brook-ca.pem"))).await;
        assert!(message.contains("/nonexistent/brook-ca.pem"), "{message}");
    }

    #[tokio::test]
    async fn a_ca_without_certificates_is_refused() {
        let message = config_error(tls().with_ca(Pem::from_bytes("not a certificate"))).await;
        assert!(message.contains("no PEM CA certificates"), "{message}");
    }

    #[tokio::test]
    async fn a_malformed_certificate_is_refused() {
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let message = config_error(tls().with_ca(Pem::from_bytes(broken))).await;
        assert!(message.contains("malformed CA certificates"), "{message}");
    }

    #[tokio::test]
    async fn a_client_key_that_does_not_parse_is_refused() {
        let generated = rcgen::generate_simple_self_signed(vec!["client".to_owned()])
            .expect("a self-signed certificate");
        let identity = TlsIdentity::new(
            Pem::from_bytes(generated.cert.pem()),
            Pem::from_bytes(generated.cert.pem()),
        );
        let message = config_error(tls().with_identity(identity)).await;
        assert!(message.contains("no usable private key"), "{message}");
    }

    #[tokio::test]
    async fn valid_settings_make_a_config() {
        let generated = rcgen::generate_simple_self_signed(vec!["client".to_owned()])
            .expect("a self-signed certificate");
        let options = tls()
            .with_ca(Pem::from_bytes(generated.cert.pem()))
            .with_identity(TlsIdentity::new(
                Pem::from_bytes(generated.cert.pem()),
                Pem::from_bytes(generated.signing_key.serialize_pem()),
            ))
            .with_server_name("broker.internal");
        options
            .client_config(std::time::Duration::from_secs(1))
            .await
            .expect("valid settings");
    }
}
