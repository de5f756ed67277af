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
//! `ring` provider; ALPN offers `h2` alone, as gRPC needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

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
    current: RwLock<Arc<ServerConfig>>,
    /// The files' stamps when `current` was built.
    loaded: Mutex<Vec<Stamp>>,
}

/// What tells a file changed: its size and modification time.
type Stamp = Option<(u64, SystemTime)>;

impl ServerTls {
    /// Builds the configuration from the files; fails if any is missing
    /// or does not hold what it should.
    pub fn load(settings: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let stamps = stamps(settings);
        let config = server_config(settings)?;
        Ok(Arc::new(Self {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
            loaded: Mutex::new(stamps),
        }))
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Rebuilds the configuration if a file changed since it was built.
    /// Returns whether it did; on an error the previous one stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.settings);
        if *self.loaded.lock() == now {
            return Ok(false);
        }
        let config = server_config(&self.settings)?;
        *self.current.write() = Arc::new(config);
        *self.loaded.lock() = now;
        Ok(true)
    }

    /// Checks the files every `reload_interval` until `stop`.
    pub fn spawn_reloader(self: &Arc<Self>, stop: CancellationToken) {
        let tls = Arc::downgrade(self);
        let every = self.settings.reload_interval.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let Some(tls) = tls.upgrade() else { return };
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
            }
        });
    }
}

fn stamps(settings: &TlsConfig) -> Vec<Stamp> {
    let stamp = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    };
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

fn server_config(settings: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let chain = certificates("certificate", &settings.cert)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|source| TlsError::Pem {
        what: "key",
        path: settings.key.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match settings.client_auth {
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
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
