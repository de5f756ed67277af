//! How the bench reaches the broker: its address and the client's settings
//! (TLS among them), used alike by the client's connections and by the raw
//! produce stream, which talks gRPC without the client.
//!
//! Invariant: both speak TLS under the same rule as the client: an
//! `https://` address or TLS settings with a `host:port` one.

use anyhow::{Context as _, bail};
use brook_client::{Client, ClientOptions, Pem, TlsOptions};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A broker address and the settings to connect with.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `host:port` or a URL.
    pub endpoint: String,
    /// The client's settings; `tls` applies to the raw stream too.
    pub options: ClientOptions,
}

impl Connection {
    pub fn new(endpoint: impl Into<String>, options: ClientOptions) -> Self {
        Self {
            endpoint: endpoint.into(),
            options,
        }
    }

    /// A client connection.
    pub async fn client(&self) -> anyhow::Result<Client> {
        Client::connect_with(self.endpoint.clone(), self.options.clone())
            .await
            .with_context(|| format!("connect to {}", self.endpoint))
    }

    /// A bare gRPC channel for the raw stream.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let tls = self.options.tls.as_ref();
        let uri = if self.endpoint.contains("://") {
            self.endpoint.clone()
        } else if tls.is_some() {
            format!("https://{}", self.endpoint)
        } else {
            format!("http://{}", self.endpoint)
        };
        let mut endpoint = Endpoint::from_shared(uri.clone())?.tcp_nodelay(true);
        if uri.starts_with("https://") {
            let default = TlsOptions::default();
            endpoint = endpoint.tls_config(tls_config(tls.unwrap_or(&default)).await?)?;
        } else if tls.is_some() {
            bail!("TLS settings given for the plaintext endpoint {uri}");
        }
        endpoint
            .connect()
            .await
            .with_context(|| format!("connect to {uri}"))
    }
}

/// tonic's TLS settings from the client's (which checked the PEM already
/// when the run's first client connected).
async fn tls_config(tls: &TlsOptions) -> anyhow::Result<ClientTlsConfig> {
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = &tls.ca {
        config = config.ca_certificate(Certificate::from_pem(read(ca).await?));
    }
    if tls.ca.is_none() || tls.system_roots {
        config = config.with_native_roots();
    }
    if let Some(identity) = &tls.identity {
        config = config.identity(Identity::from_pem(
            read(&identity.cert_chain).await?,
            read(&identity.key).await?,
        ));
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}

async fn read(pem: &Pem) -> anyhow::Result<Vec<u8>> {
    match pem {
        Pem::Bytes(bytes) => Ok(bytes.clone()),
        Pem::File(path) => tokio::fs::read(path)
            .await
            .with_context(|| format!("read {}", path.display())),
        other => bail!("the raw stream cannot read {other:?}"),
    }
}
