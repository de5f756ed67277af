//! The cluster settings of `brook serve`: `node_id` and `peers`, both or
//! neither, and `node_id_from_hostname`, which takes the id from a
//! StatefulSet pod's name (`brook-0` is broker 1), so that pods started
//! from one template (and an image without a shell) each get their own id.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use brook_broker::ClusterConfig;
use brook_broker::config::NODE_ID_MAX;

use super::{Effective, Settings};

impl Settings {
    /// `node_id`, or with `node_id_from_hostname` the one the hostname
    /// gives; never both.
    pub(super) fn node_id_resolved(&self) -> anyhow::Result<Option<u64>> {
        if !self.node_id_from_hostname.unwrap_or(false) {
            return Ok(self.node_id);
        }
        if let Some(id) = self.node_id {
            bail!("node_id_from_hostname: not with node_id ({id}), which it would replace");
        }
        if self.peers.as_ref().is_none_or(Vec::is_empty) {
            bail!("peers: needed with node_id_from_hostname");
        }
        node_id_from_hostname(&hostname()?).map(Some)
    }
}

impl Effective {
    /// The cluster from `node_id` and `peers`: both or neither.
    pub(super) fn cluster(&self) -> anyhow::Result<Option<ClusterConfig>> {
        let node_id = match (self.node_id, self.peers.is_empty()) {
            (None, true) => {
                if self.peer_ca.is_some()
                    || self.peer_token_file.is_some()
                    || self.join
                    || !self.founders.is_empty()
                {
                    bail!("peer_ca, peer_token_file, join and founders need node_id and peers");
                }
                return Ok(None);
            }
            (Some(id), false) => id,
            (None, false) => bail!("node_id: needed with peers"),
            (Some(_), true) => bail!("peers: needed with node_id"),
        };
        let mut peers = BTreeMap::new();
        for peer in &self.peers {
            let (id, address) = peer
                .split_once('=')
                .with_context(|| format!("peers: `{peer}` is not ID=HOST:PORT"))?;
            let id: u64 = id
                .trim()
                .parse()
                .with_context(|| format!("peers: `{id}` in `{peer}` is not a broker id"))?;
            let address = address.trim();
            if address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                bail!("peers: `{address}` in `{peer}` is not HOST:PORT");
            }
            if peers.insert(id, address.to_owned()).is_some() {
                bail!("peers: broker {id} is given twice");
            }
        }
        let mut cluster = ClusterConfig::new(node_id, peers).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(ca) = &self.peer_ca {
            cluster = cluster.with_peer_ca(ca);
        }
        if let Some(file) = &self.peer_token_file {
            cluster = cluster.with_peer_token_file(file);
        }
        if !self.founders.is_empty() {
            cluster = cluster
                .with_founders(self.founders.iter().copied().collect())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(Some(cluster.joining(self.join)))
    }
}

/// The machine's name: `HOSTNAME` when set (Kubernetes and Docker set it
/// to the pod's or container's name), else the kernel's.
fn hostname() -> anyhow::Result<String> {
    let name = match std::env::var_os("HOSTNAME").filter(|name| !name.is_empty()) {
        Some(name) => name,
        None => {
            nix::unistd::gethostname().context("node_id_from_hostname: cannot read the hostname")?
        }
    };
    name.into_string().map_err(|name| {
        anyhow::anyhow!(
            "node_id_from_hostname: the hostname `{}` is not UTF-8",
            name.to_string_lossy()
        )
    })
}

/// The node id of a StatefulSet pod: the ordinal its name ends in, plus one
/// (ordinals start at 0, node ids at 1). The name is the hostname's first
/// label, so a fully qualified hostname gives the same id.
fn node_id_from_hostname(hostname: &str) -> anyhow::Result<u64> {
    let name = hostname.split('.').next().unwrap_or_default();
    let ordinal = match name.rsplit_once('-') {
        Some((prefix, ordinal))
            if !prefix.is_empty()
                && !ordinal.is_empty()
                && ordinal.bytes().all(|b| b.is_ascii_digit()) =>
        {
            ordinal
        }
        _ => bail!(
            "node_id_from_hostname: the hostname `{hostname}` does not end in -<ordinal>, as a StatefulSet pod's name does (brook-0 is broker 1)"
        ),
    };
    ordinal
        .parse::<u64>()
        .ok()
        .and_then(|ordinal| ordinal.checked_add(1))
        .filter(|id| *id <= NODE_ID_MAX)
        .with_context(|| {
            format!(
                "node_id_from_hostname: the ordinal {ordinal} of the hostname `{hostname}` is too large: node ids are 1 to {NODE_ID_MAX}"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_ordinal_plus_one_is_its_node_id() {
        for (hostname, id) in [
            ("brook-0", 1),
            ("brook-2", 3),
            ("my-release-brook-10", 11),
            ("brook-2.brook-headless.default.svc.cluster.local", 3),
            ("brook-007", 8),
            ("brook-1048574", NODE_ID_MAX),
        ] {
            assert_eq!(node_id_from_hostname(hostname).unwrap(), id, "{hostname}");
        }
    }

    #[test]
    fn a_hostname_without_an_ordinal_is_refused_by_name() {
        for hostname in [
            "brook", "brook-", "-3", "brook-a1", "brook-+1", "brook-1x", "brook.3", "",
        ] {
            let error = node_id_from_hostname(hostname).unwrap_err().to_string();
            assert!(
                error.starts_with("node_id_from_hostname:")
                    && error.contains(&format!("`{hostname}` does not end in -<ordinal>")),
                "{hostname}: {error}"
            );
        }
    }

    #[test]
    fn an_ordinal_beyond_the_last_node_id_is_refused() {
        for hostname in [
            "brook-1048575",
            "brook-18446744073709551615",
            "brook-99999999999999999999999",
        ] {
            let error = node_id_from_hostname(hostname).unwrap_err().to_string();
            assert!(
                error.contains(&format!("`{hostname}` is too large"))
                    && error.contains(&NODE_ID_MAX.to_string()),
                "{hostname}: {error}"
            );
        }
    }

    #[test]
    fn the_hostname_replaces_node_id_and_needs_peers() {
        let peers = Some(vec!["1=b1:9420".to_owned()]);
        let both = Settings {
            node_id: Some(1),
            node_id_from_hostname: Some(true),
            peers: peers.clone(),
            ..Settings::default()
        };
        let error = both.resolve().unwrap_err().to_string();
        assert!(
            error.starts_with("node_id_from_hostname: not with node_id"),
            "{error}"
        );
        let alone = Settings {
            node_id_from_hostname: Some(true),
            ..Settings::default()
        };
        let error = alone.resolve().unwrap_err().to_string();
        assert!(
            error.starts_with("peers: needed with node_id_from_hostname"),
            "{error}"
        );
        let off = Settings {
            node_id: Some(1),
            node_id_from_hostname: Some(false),
            peers,
            ..Settings::default()
        };
        assert_eq!(off.resolve().unwrap().node_id, Some(1));
    }
}
