//! Client quotas: setting, removing and listing the bytes per second each
//! principal may produce and fetch. The broker slows a client over its
//! quota rather than failing it (see `docs/security.md`).

use std::fmt;

use brook_proto as proto;
use brook_proto::quota_service_client::QuotaServiceClient;

use crate::client::Client;
use crate::error::ClientError;

/// Whose quota.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum QuotaTarget {
    /// The default quota, for every principal without one of its own.
    Default,
    /// One principal, as the broker's authentication names it (a token's
    /// name, a client certificate's common name, or `anonymous` on a
    /// broker that authenticates no one).
    Principal(String),
}

impl QuotaTarget {
    /// One principal's quota.
    pub fn principal(name: impl Into<String>) -> Self {
        Self::Principal(name.into())
    }
}

impl fmt::Display for QuotaTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("the default quota"),
            Self::Principal(name) => write!(f, "principal {name}"),
        }
    }
}

/// A quota: whose, and its rates. A rate left `None` is no limit in that
/// direction; a principal's own quota applies to it whole, the default's
/// rates do not fill in what it leaves unset.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quota {
    /// Whose quota it is.
    pub target: QuotaTarget,
    /// Record batch bytes per second the principal may produce.
    pub produce_bytes_per_second: Option<u64>,
    /// Record bytes per second the principal may fetch (fetches and
    /// subscriptions together).
    pub fetch_bytes_per_second: Option<u64>,
}

impl Quota {
    /// A quota for `target` without rates yet: set at least one with the
    /// `with_*` setters before [`Client::set_quota`].
    pub fn new(target: QuotaTarget) -> Self {
        Self {
            target,
            produce_bytes_per_second: None,
            fetch_bytes_per_second: None,
        }
    }
}

setters!(Quota {
    with_produce_bytes_per_second => produce_bytes_per_second: Option<u64>,
    with_fetch_bytes_per_second => fetch_bytes_per_second: Option<u64>,
});

impl Client {
    fn quota_stub(&self) -> QuotaServiceClient<crate::auth::Transport> {
        let limit = self.options.message_bytes_max;
        QuotaServiceClient::new(self.channel.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    /// Sets a quota, replacing the one its target had, and returns it as
    /// the broker stored it. It applies from the principal's next request.
    /// A rate of 0, or no rate at all, is refused (`InvalidArgument`): use
    /// [`Client::remove_quota`] to lift a quota.
    pub async fn set_quota(&self, quota: &Quota) -> Result<Quota, ClientError> {
        let request = proto::SetQuotaRequest {
            quota: Some(to_proto(quota)),
        };
        let response = self
            .rpc(
                "set_quota",
                self.options.request_timeout,
                self.quota_stub().set_quota(request),
            )
            .await?;
        from_proto(
            response
                .quota
                .ok_or_else(|| ClientError::Protocol("SetQuota answered no quota".into()))?,
        )
    }

    /// Removes a quota; fails with `NotFound` when none is set.
    pub async fn remove_quota(&self, target: &QuotaTarget) -> Result<(), ClientError> {
        let (principal, default) = target_to_proto(target);
        let request = proto::RemoveQuotaRequest { principal, default };
        self.rpc(
            "remove_quota",
            self.options.request_timeout,
            self.quota_stub().remove_quota(request),
        )
        .await?;
        Ok(())
    }

    /// Every quota set: the default first (if set), then by principal.
    pub async fn list_quotas(&self) -> Result<Vec<Quota>, ClientError> {
        let response = self
            .rpc(
                "list_quotas",
                self.options.request_timeout,
                self.quota_stub().list_quotas(proto::ListQuotasRequest {}),
            )
            .await?;
        response.quotas.into_iter().map(from_proto).collect()
    }
}

fn target_to_proto(target: &QuotaTarget) -> (String, bool) {
    match target {
        QuotaTarget::Default => (String::new(), true),
        QuotaTarget::Principal(name) => (name.clone(), false),
    }
}

fn to_proto(quota: &Quota) -> proto::Quota {
    let (principal, default) = target_to_proto(&quota.target);
    proto::Quota {
        principal,
        default,
        produce_bytes_per_second: quota.produce_bytes_per_second,
        fetch_bytes_per_second: quota.fetch_bytes_per_second,
    }
}

fn from_proto(quota: proto::Quota) -> Result<Quota, ClientError> {
    let target = match (quota.default, quota.principal.is_empty()) {
        (true, true) => QuotaTarget::Default,
        (false, false) => QuotaTarget::Principal(quota.principal),
        _ => {
            return Err(ClientError::Protocol(
                "a quota names both or neither of a principal and the default".into(),
            ));
        }
    };
    Ok(Quota {
        target,
        produce_bytes_per_second: quota.produce_bytes_per_second,
        fetch_bytes_per_second: quota.fetch_bytes_per_second,
    })
}
