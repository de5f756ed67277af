//! How the client commands reach the broker: `--broker`, the TLS flags and
//! `--token` or `--token-file` (each also an environment variable), shared
//! by every command that connects, and turned into the client's options
//! here once.
//!
//! Invariant: any TLS flag makes a `host:port` broker address mean
//! `https://`; with an `http://` address the client refuses the TLS flags
//! rather than connect unencrypted.
//!
//! The client's certificate and key are `BROOK_TLS_CERT` and
//! `BROOK_TLS_KEY` in the environment, the same names `brook serve` reads
//! for the broker's own: in an environment that sets them for the broker,
//! client commands present the broker's certificate (the docs say so).
//! `brook serve` keeps its own `--tls-cert` and `--tls-key`: clap gives a
//! subcommand's argument precedence over a global one of the same name.
//! The same holds for `BROOK_TOKEN_FILE`, the broker's file of hashed
//! tokens to `brook serve` and the client's token to the other commands.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use brook_client::{BearerToken, Client, ClientOptions, GroupClient, Pem, TlsIdentity, TlsOptions};
use clap::Args;

/// The broker address when neither `--broker` nor `BROOK_BROKER` is given;
/// `brook serve` listens there by default. Without a scheme, so that the
/// TLS flags alone switch it to TLS.
pub const DEFAULT_BROKER: &str = "127.0.0.1:9420";

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// A broker's gRPC address: `host:port` (TLS when a TLS flag is
    /// given), `http://host:port` or `https://host:port`. Several (repeated
    /// or comma-separated) are tried in order until one answers.
    #[arg(
        long = "broker",
        global = true,
        env = "BROOK_BROKER",
        default_value = DEFAULT_BROKER,
        value_delimiter = ',',
        value_name = "ADDRESS"
    )]
    pub brokers: Vec<String>,
    /// CA certificates (PEM) to trust instead of the system's roots, for a
    /// broker whose certificate a private CA issued. Implies TLS.
    #[arg(long, global = true, env = "BROOK_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The client certificate chain (PEM) for a broker that requires one
    /// (mutual TLS); needs --tls-key. Implies TLS.
    #[arg(long, global = true, env = "BROOK_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "BROOK_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The name the broker's certificate must be issued for, when it is not
    /// the host of --broker (e.g. connecting by IP address). Implies TLS.
    #[arg(
        long,
        global = true,
        env = "BROOK_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
    /// Bearer token for a broker with `auth = token`, sent with every call.
    /// Prefer BROOK_TOKEN: a flag shows in the process list.
    #[arg(
        long,
        global = true,
        env = "BROOK_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<BearerToken>,
    /// A file holding the bearer token, reread when it changes (checked at
    /// most every 5 s), such as a Kubernetes projected ServiceAccount token.
    /// Instead of --token.
    #[arg(long, global = true, env = "BROOK_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl ConnectArgs {
    /// The TLS settings the flags ask for; `None` when no TLS flag is given.
    pub fn tls(&self) -> anyhow::Result<Option<TlsOptions>> {
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsIdentity::new(
                Pem::from_file(cert.clone()),
                Pem::from_file(key.clone()),
            )),
            (None, None) => None,
            (Some(_), None) => bail!("--tls-cert needs --tls-key (BROOK_TLS_KEY)"),
            (None, Some(_)) => bail!("--tls-key needs --tls-cert (BROOK_TLS_CERT)"),
        };
        if self.tls_ca.is_none() && identity.is_none() && self.tls_server_name.is_none() {
            return Ok(None);
        }
        let mut tls = TlsOptions::default();
        if let Some(ca) = &self.tls_ca {
            tls = tls.with_ca(Pem::from_file(ca.clone()));
        }
        if let Some(identity) = identity {
            tls = tls.with_identity(identity);
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.with_server_name(name.clone());
        }
        Ok(Some(tls))
    }

    /// The client's options: the defaults, with the TLS flags and the token.
    pub fn options(&self) -> anyhow::Result<ClientOptions> {
        let mut options = ClientOptions::default();
        if let Some(tls) = self.tls()? {
            options = options.with_tls(tls);
        }
        if let Some(token) = self.bearer_token()? {
            options = options.with_bearer_token(token);
        }
        Ok(options)
    }

    /// The token of --token or --token-file. Not a clap conflict: that would
    /// also count the variables, and `brook serve` reads BROOK_TOKEN_FILE
    /// as its own.
    fn bearer_token(&self) -> anyhow::Result<Option<BearerToken>> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => bail!(
                "--token (BROOK_TOKEN) and --token-file (BROOK_TOKEN_FILE) are both given: use one"
            ),
            (Some(token), None) => Ok(Some(token.clone())),
            (None, Some(file)) => Ok(Some(
                BearerToken::from_file(file).context("--token-file (BROOK_TOKEN_FILE)")?,
            )),
            (None, None) => Ok(None),
        }
    }

    /// A client of the first broker of `--broker` that answers.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let options = self.options()?;
        let mut failures = Vec::new();
        for broker in &self.brokers {
            match Client::connect_with(broker.clone(), options.clone()).await {
                Ok(client) => return Ok(client),
                // `{:#}`: the error with its causes, on one line.
                Err(e) => failures.push(format!("{broker}: {:#}", anyhow::Error::new(e))),
            }
        }
        match failures.as_slice() {
            [one] => bail!("cannot connect to the broker at {one}"),
            _ => bail!(
                "cannot connect to any of the brokers: {}",
                failures.join("; ")
            ),
        }
    }

    /// [`Self::connect`], with the group service on the same connection.
    pub async fn connect_groups(&self) -> anyhow::Result<GroupClient> {
        Ok(GroupClient::from_client(self.connect().await?))
    }

    /// The address of the first broker of `--broker` that answers, for
    /// callers that open their own connections to it.
    pub async fn reachable_broker(&self) -> anyhow::Result<String> {
        if let [only] = self.brokers.as_slice() {
            return Ok(only.clone());
        }
        let options = self.options()?;
        for broker in &self.brokers {
            if Client::connect_with(broker.clone(), options.clone())
                .await
                .is_ok()
            {
                return Ok(broker.clone());
            }
        }
        // None answers: the caller's own connection reports why.
        Ok(self
            .brokers
            .first()
            .cloned()
            .unwrap_or_else(|| DEFAULT_BROKER.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        connect: ConnectArgs,
    }

    fn parse(args: &[&str]) -> ConnectArgs {
        let mut argv = vec!["brook"];
        argv.extend_from_slice(args);
        Command::try_parse_from(argv).expect("valid flags").connect
    }

    #[test]
    fn no_tls_flag_means_no_tls() {
        assert_eq!(parse(&["--broker", "b:1"]).tls().expect("valid"), None);
    }

    #[test]
    fn the_tls_flags_become_the_clients_settings() {
        let tls = parse(&[
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "client.pem",
            "--tls-key",
            "client.key",
            "--tls-server-name",
            "broker.internal",
        ])
        .tls()
        .expect("valid")
        .expect("TLS");
        let expected = TlsOptions::default()
            .with_ca(Pem::from_file("ca.pem"))
            .with_identity(TlsIdentity::new(
                Pem::from_file("client.pem"),
                Pem::from_file("client.key"),
            ))
            .with_server_name("broker.internal");
        assert_eq!(tls, expected);
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let error = parse(&["--tls-cert", "client.pem"]).tls().unwrap_err();
        assert!(error.to_string().contains("--tls-key"), "{error}");
        let error = parse(&["--tls-key", "client.key"]).tls().unwrap_err();
        assert!(error.to_string().contains("--tls-cert"), "{error}");
    }

    #[test]
    fn the_token_becomes_the_clients_bearer_token_and_is_never_shown() {
        let args = parse(&["--token", "s3cret"]);
        assert!(!format!("{args:?}").contains("s3cret"), "{args:?}");
        let options = args.options().expect("valid");
        assert_eq!(options.bearer_token, BearerToken::new("s3cret").ok());
        assert_eq!(parse(&[]).options().expect("valid").bearer_token, None);
        let mut argv = vec!["brook", "--token", "two words"];
        assert!(Command::try_parse_from(argv.drain(..)).is_err());
    }

    #[test]
    fn the_token_file_becomes_the_clients_bearer_token() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-from-a-file\n").expect("write the token");
        let path = file.display().to_string();
        let options = parse(&["--token-file", &path]).options().expect("valid");
        assert_eq!(
            options.bearer_token,
            BearerToken::from_file(&file).ok(),
            "{options:?}"
        );
        assert!(!format!("{options:?}").contains("s3cret"), "{options:?}");
        let error = parse(&["--token-file", &path, "--token", "t"])
            .options()
            .unwrap_err();
        assert!(error.to_string().contains("both given"), "{error}");
        let missing = dir.path().join("missing").display().to_string();
        let error = parse(&["--token-file", &missing]).options().unwrap_err();
        assert!(format!("{error:#}").contains("missing"), "{error:#}");
    }

    #[test]
    fn the_default_broker_is_where_serve_listens() {
        assert_eq!(DEFAULT_BROKER, brook_broker::config::DEFAULT_LISTEN);
    }
}
