//! TLS for the gRPC port: the rustls configuration built from the
//! broker's PEM files, and its reload when they change.
//!
//! cert-manager and other tools rotate certificates by rewriting the files
//! of a mounted Secret in place. [`ServerTls`] keeps the current
//! `ServerConfig` and rebuilds it when a file's size or modification time
//! changes (checked every `reload_interval`): new connections get the new
//! certificate, open ones keep theirs. A reload that fails (a file caught
//! half written, a key that does not match) keeps the previous
//! configuration and is logged; the next check tries again.
//!
//! Only TLS 1.2 and 1.3 are offered (rustls has nothing older), with the
//! `ring` provider. ALPN offers `h2` alone on the gRPC port, as gRPC
//! needs, and `http/1.1` on the HTTP port (when it serves TLS too).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::file_watch::{Stamp, spawn_periodic_check, stamp};
use brook_engine::config::CertificatePrincipal;
use brook_engine::{ClientAuth, TlsConfig};

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS {what} {}: {source}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS {what} {} holds no certificate", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("TLS client authentication `{mode}` needs a client CA bundle (tls_client_ca)")]
    NoClientCa { mode: ClientAuth },
    #[error("TLS client CA bundle {}: {source}", path.display())]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The gRPC port's TLS configuration, reloaded when its files change.
#[derive(Debug)]
pub struct ServerTls {
    settings: TlsConfig,
    current: RwLock<Configs>,
    /// The files' stamps when `current` was built.
    loaded: Mutex<Vec<Stamp>>,
}

/// The configurations of both ports, built from the same files.
#[derive(Debug, Clone)]
struct Configs {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
}

impl Configs {
    fn build(settings: &TlsConfig) -> Result<Self, TlsError> {
        let mut grpc = server_config(settings, settings.client_auth)?;
        // The HTTP port does not ask for client certificates: probes and
        // scrapers rarely have one.
        let mut http = server_config(settings, ClientAuth::None)?;
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            grpc: Arc::new(grpc),
            http: Arc::new(http),
        })
    }
}

impl ServerTls {
    /// Builds the configuration from the files; fails if any is missing
    /// or does not hold what it should.
    pub fn load(settings: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let stamps = stamps(settings);
        let configs = Configs::build(settings)?;
        Ok(Arc::new(Self {
            settings: settings.clone(),
            current: RwLock::new(configs),
            loaded: Mutex::new(stamps),
        }))
    }

    /// An acceptor for the gRPC port with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().grpc.clone())
    }

    /// What of a client certificate names its principal.
    pub(crate) fn client_principal(&self) -> CertificatePrincipal {
        self.settings.client_principal
    }

    /// An acceptor for the HTTP port with the current configuration.
    pub fn http_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().http.clone())
    }

    /// Rebuilds the configuration if a file changed since it was built.
    /// Returns whether it did; on an error the previous one stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.settings);
        if *self.loaded.lock() == now {
            return Ok(false);
        }
        let configs = Configs::build(&self.settings)?;
        *self.current.write() = configs;
        *self.loaded.lock() = now;
        Ok(true)
    }

    /// Checks the files every `reload_interval` until `stop`.
    pub fn spawn_reloader(self: &Arc<Self>, stop: CancellationToken) {
        spawn_periodic_check(self, self.settings.reload_interval, stop, |tls| {
            match tls.reload_if_changed() {
                Ok(true) => tracing::info!(
                    cert = %tls.settings.cert.display(),
                    "TLS certificate reloaded: new connections use it"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "TLS files changed but cannot be loaded; the previous certificate stays in use"
                ),
            }
        });
    }
}

fn stamps(settings: &TlsConfig) -> Vec<Stamp> {
    let mut stamps = vec![stamp(&settings.cert), stamp(&settings.key)];
    if let Some(ca) = &settings.client_ca {
        stamps.push(stamp(ca));
    }
    stamps
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn server_config(settings: &TlsConfig, client_auth: ClientAuth) -> Result<ServerConfig, TlsError> {
    let chain = certificates("certificate", &settings.cert)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|source| TlsError::Pem {
        what: "key",
        path: settings.key.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        mode @ (ClientAuth::Optional | ClientAuth::Required) => {
            let Some(ca) = &settings.client_ca else {
                return Err(TlsError::NoClientCa { mode });
            };
            let mut roots = RootCertStore::empty();
            for cert in certificates("client CA bundle", ca)? {
                roots.add(cert).map_err(|source| TlsError::ClientCa {
                    path: ca.clone(),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mode == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build()?)
        }
    };
    Ok(builder.with_single_cert(chain, key)?)
}
