//! An operator's changes to the cluster: brokers added and removed
//! (changes of the metadata group's voters, made by its leader), and
//! partitions moved (recorded by the metadata group, carried out by each
//! partition's leader: `moves.rs`).

use brook_cluster::{ClusterError, MembershipChange, MetaCommand, MetaResponse, NodeId};
use brook_engine::{AdminError, Invalid};

use super::{ClusterAdminError, Replicas, refusal};

impl Replicas {
    /// Adds the broker `id` at `address` (started to join) to the
    /// cluster; answers once it votes in the metadata group.
    pub async fn add_broker(&self, id: NodeId, address: &str) -> Result<(), ClusterAdminError> {
        if address.is_empty() {
            return Err(invalid("address", "must be the broker's HOST:PORT"));
        }
        if id == 0 || id > brook_engine::config::NODE_ID_MAX {
            return Err(invalid(
                "node_id",
                format!("must be 1 to {}", brook_engine::config::NODE_ID_MAX),
            ));
        }
        let change = MembershipChange::AddBroker {
            id,
            address: address.to_owned(),
        };
        membership_answer(self.meta.change_members(change).await)?;
        // Once it votes it registers itself; only then can partitions be
        // placed or moved on it.
        let meta = self.meta.clone();
        self.applied_here(|_| {
            meta.read_state(|state| state.brokers.contains_key(&id))
                .then_some(())
        })
        .await
        .ok_or_else(|| {
            ClusterAdminError::NotAppliedHere(format!(
                "broker {id} was added, and its registration has not reached this broker"
            ))
        })
    }

    /// Removes the broker `id`, which must hold no replica, from the
    /// cluster.
    pub async fn remove_broker(&self, id: NodeId) -> Result<(), ClusterAdminError> {
        membership_answer(
            self.meta
                .change_members(MembershipChange::RemoveBroker { id })
                .await,
        )
    }

    /// Records that partitions of `topic` are to move to other replicas.
    pub async fn reassign_partitions(
        &self,
        topic: &str,
        partitions: Vec<(u32, Vec<NodeId>)>,
    ) -> Result<(), ClusterAdminError> {
        if partitions.is_empty() {
            return Err(invalid("partitions", "name at least one partition"));
        }
        let answer = self
            .meta
            .propose_anywhere(MetaCommand::ReassignPartitions {
                topic: topic.to_owned(),
                partitions,
            })
            .await?;
        match answer {
            // The state machine checks the targets; its fields are these.
            MetaResponse::Invalid { field, reason } if field == "partition" => {
                Err(invalid("partition", reason))
            }
            MetaResponse::Invalid { reason, .. } => Err(invalid("replicas", reason)),
            other => refusal(other),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ClusterAdminError {
    ClusterAdminError::Admin(AdminError::from(Invalid::new(field, reason)))
}

fn membership_answer(answer: Result<MetaResponse, ClusterError>) -> Result<(), ClusterAdminError> {
    match answer {
        Ok(MetaResponse::Done) => Ok(()),
        Ok(MetaResponse::NoSuchBroker { id }) => Err(ClusterAdminError::NoSuchBroker(id)),
        Ok(MetaResponse::BrokerHoldsReplicas {
            id,
            count,
            partitions,
        }) => Err(ClusterAdminError::BrokerInUse {
            id,
            count,
            partitions: partitions.join(", "),
        }),
        Ok(other) => Err(ClusterAdminError::Unexpected(format!("{other:?}"))),
        Err(ClusterError::Refused(reason)) => Err(ClusterAdminError::NotMade(reason)),
        Err(e) => Err(e.into()),
    }
}
