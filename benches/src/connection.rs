//! How the bench reaches the broker: its address and the client's settings
//! (TLS among them), used alike by the client's connections and by the raw
//! produce stream, which talks gRPC without the client.
//!
//! Invariant: both speak TLS under the same rule as the client: an
//! `https://` address or TLS settings with a `host:port` one.

use anyhow::Context as _;
use brook_client::{AuthorizedChannel, Client, ClientOptions};

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

    /// A gRPC channel for the raw stream, connected under the client's
    /// rules and sending its bearer token.
    pub async fn channel(&self) -> anyhow::Result<AuthorizedChannel> {
        Client::connect_authorized_channel(self.endpoint.clone(), &self.options)
            .await
            .with_context(|| format!("connect to {}", self.endpoint))
    }
}
