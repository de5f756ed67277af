//! [`GroupClient`]: a [`Client`] plus the `GroupService` stub on the same
//! connection, with the group administration calls (list, describe,
//! delete, reset offsets) and the raw offset calls a member makes.
//!
//! Invariant: like every call of the client, each one here goes through
//! [`Client::rpc`] (time limit, circuit breaker); the session stream does
//! for its opening.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_proto as proto;
use brook_proto::group_service_client::GroupServiceClient;
use futures::Stream;

use crate::client::{Client, ClientOptions};
use crate::error::ClientError;

/// The pause before calling again at the coordinator a broker named.
const COORDINATOR_RETRY: Duration = Duration::from_millis(50);

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A partition's offset: committed, or to commit. By Kafka's convention it
/// is the next offset to consume, one past the last record processed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset to consume.
    pub offset: i64,
}

impl PartitionOffset {
    /// The partition this offset is for.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }
}

/// One group, as [`GroupClient::list_groups`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// The group's name.
    pub group: String,
    /// Its state as the broker names it: `empty`, `stable` or `rebalancing`.
    pub state: String,
    /// How many members it has.
    pub members: u32,
}

/// A group in detail, from [`GroupClient::describe_group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group's name.
    pub group: String,
    /// `empty`, `stable` or `rebalancing`.
    pub state: String,
    /// The current generation; grows with every change of assignment.
    pub generation: u64,
    /// The members and what they own.
    pub members: Vec<MemberDescription>,
    /// Every partition of the subscribed topics, or that has a committed offset.
    pub partitions: Vec<PartitionLag>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Given by the broker at join.
    pub member_id: String,
    /// The free-form name the member joined with.
    pub client_id: String,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// The partitions it owns.
    pub assigned: Vec<TopicPartition>,
    /// Partitions it was asked to give up and has not acknowledged yet.
    pub revoking: Vec<TopicPartition>,
}

/// How far a group is behind on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The group's committed offset; `None` if it committed nothing.
    pub committed_offset: Option<i64>,
    /// The partition's end offset (the next offset to be written).
    pub end_offset: i64,
    /// Records between the committed offset (or the partition's start) and the end.
    pub lag: i64,
    /// The member that owns the partition, if any.
    pub owner: Option<String>,
}

/// Where [`GroupClient::reset_offsets`] moves a group's committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// Each partition's first retained offset.
    Earliest,
    /// Each partition's end: only records appended later are consumed.
    Latest,
    /// The first record at or after this timestamp (ms since the Unix epoch).
    Timestamp(i64),
    /// This offset, on every partition named.
    Offset(i64),
}

/// A connection to a broker for consumer groups: a [`Client`] and the
/// broker's group service, sharing one HTTP/2 connection. Cloning is cheap.
///
/// It is what [`crate::GroupConsumer::join`] takes, and it administers
/// groups:
///
/// ```no_run
/// # async fn example() -> Result<(), brook_client::ClientError> {
/// use brook_client::GroupClient;
///
/// let groups = GroupClient::connect("http://127.0.0.1:9420").await?;
/// for partition in groups.describe_group("billing").await?.partitions {
///     println!("{}/{} lag {}", partition.topic, partition.partition, partition.lag);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct GroupClient {
    client: Client,
    stub: GroupServiceClient<crate::auth::Transport>,
}

impl GroupClient {
    /// Connects with [`ClientOptions::default`]; see [`Client::connect`].
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, ClientOptions::default()).await
    }

    /// Connects with the given options; see [`Client::connect_with`].
    ///
    /// # Panics
    ///
    /// If `options.produce_in_flight_max` or
    /// `options.circuit_breaker.failure_threshold` is 0.
    pub async fn connect_with(
        endpoint: impl Into<String>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        Ok(Self::from_client(
            Client::connect_with(endpoint, options).await?,
        ))
    }

    /// The group service on `client`'s connection (its clones share it).
    pub fn from_client(client: Client) -> Self {
        let limit = client.options.message_bytes_max;
        let stub = GroupServiceClient::new(client.channel.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        Self { client, stub }
    }

    /// The plain client on the same connection (topics, produce, fetch).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The group service of the broker that coordinates `group`: in a
    /// cluster, the one the brokers name; else the broker connected to.
    pub(crate) async fn coordinator(&self, group: &str) -> Result<GroupClient, ClientError> {
        if let Some(address) = self.client.routing.coordinator(group) {
            match self.client.at(&address).await {
                Ok(client) => return Ok(Self::from_client(client)),
                // Passed over; the broker connected to names the next.
                Err(error) if error.is_broker_unreachable() => {
                    self.client.routing.failed(&address);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(self.clone())
    }

    /// Asks the known brokers in turn which one coordinates `group` now,
    /// until one answers.
    pub(crate) async fn find_coordinator(&self, group: &str) {
        for broker in self.client.routing.brokers_up(&self.client.endpoint) {
            let found = match self.client.at(&broker).await {
                Ok(client) => client.find_coordinator(group).await,
                Err(error) => Err(error),
            };
            match found {
                Ok(found) => {
                    let coordinator = found
                        .clustered
                        .then(|| Arc::<str>::from(found.address.as_str()));
                    self.client.routing.set_coordinator(group, coordinator);
                    return;
                }
                Err(error) if error.is_broker_unreachable() => {
                    self.client.routing.failed(&broker);
                }
                // Cut off from the cluster, or no broker coordinates the
                // group yet: the next broker may know; else asked again on
                // the next try.
                Err(_) => {}
            }
        }
    }

    /// Makes a group call at the coordinator. Refused by a broker that does
    /// not coordinate the groups, or with the coordinator unreachable, it
    /// asks where the coordinator is and calls again there, within the
    /// request timeout.
    async fn rpc_at_coordinator<T, F, Fut>(
        &self,
        group: &str,
        operation: &'static str,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(GroupServiceClient<crate::auth::Transport>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline =
            crate::deadline::after(Instant::now(), self.client.options().request_timeout);
        loop {
            let at = Box::pin(self.coordinator(group)).await?;
            // Boxed: the call's future would make every caller's large.
            let answer = Box::pin(at.client.rpc(
                operation,
                at.client.options().request_timeout,
                call(at.stub.clone()),
            ))
            .await;
            match answer {
                Err(error)
                    if (error.is_not_coordinator() || error.is_broker_unreachable())
                        && Instant::now() < deadline =>
                {
                    if error.is_broker_unreachable() && !at.client.endpoint.is_empty() {
                        self.client.routing.failed(&at.client.endpoint);
                    }
                    Box::pin(self.find_coordinator(group)).await;
                    tokio::time::sleep(COORDINATOR_RETRY).await;
                }
                other => return other,
            }
        }
    }

    /// Commits `offsets` for `member_id` in `generation`. The broker refuses
    /// (`FAILED_PRECONDITION`) a member it does not know, an old generation,
    /// or a partition the member does not own. A [`crate::GroupConsumer`]
    /// commits for you; this is the raw call.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        generation: u64,
        offsets: &[PartitionOffset],
    ) -> Result<(), ClientError> {
        let request = proto::CommitOffsetsRequest {
            group: group.to_owned(),
            member_id: member_id.to_owned(),
            generation,
            offsets: offsets.iter().map(to_proto_offset).collect(),
        };
        self.rpc_at_coordinator(group, "commit_offsets", |mut stub| {
            let request = request.clone();
            async move { stub.commit_offsets(request).await }
        })
        .await?;
        Ok(())
    }

    /// The group's committed offsets of `partitions` (of every partition it
    /// committed, if empty); partitions without one are absent.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        let request = proto::FetchOffsetsRequest {
            group: group.to_owned(),
            partitions: partitions.iter().map(to_proto_partition).collect(),
        };
        let response = self
            .rpc_at_coordinator(group, "fetch_offsets", |mut stub| {
                let request = request.clone();
                async move { stub.fetch_offsets(request).await }
            })
            .await?;
        Ok(response
            .offsets
            .into_iter()
            .map(from_proto_offset)
            .collect())
    }

    /// Every group: in a cluster, those of every broker that answers (each
    /// lists the groups it coordinates), else those of the broker
    /// connected to.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>, ClientError> {
        let cluster = self.client.describe_cluster().await?;
        if !cluster.clustered {
            return Ok(summaries(self.list_groups_here().await?));
        }
        self.client.routing.learn_cluster(&cluster);
        let mut groups: BTreeMap<String, GroupSummary> = BTreeMap::new();
        // A broker that is down coordinates nothing: its groups move to the
        // others within seconds.
        for broker in cluster.brokers.iter().filter(|broker| broker.alive) {
            let address = Arc::<str>::from(broker.address.as_str());
            let listed = match self.client.at(&address).await {
                Ok(client) => Self::from_client(client).list_groups_here().await,
                Err(error) => Err(error),
            };
            let listed = match listed {
                Ok(listed) => listed,
                Err(error) if error.is_broker_unreachable() => continue,
                Err(error) => return Err(error),
            };
            for group in summaries(listed) {
                // A group moving between brokers may be listed by both for
                // a moment: the one with members is where it is now.
                let kept = groups.entry(group.group.clone()).or_insert(group.clone());
                if group.members > kept.members {
                    *kept = group;
                }
            }
        }
        Ok(groups.into_values().collect())
    }

    /// The groups the broker connected to knows (coordinates, in a
    /// cluster).
    async fn list_groups_here(&self) -> Result<proto::ListGroupsResponse, ClientError> {
        let mut stub = self.stub.clone();
        Box::pin(self.client.rpc(
            "list_groups",
            self.client.options().request_timeout,
            async move { stub.list_groups(proto::ListGroupsRequest {}).await },
        ))
        .await
    }

    /// The group's state, members, and committed offset and lag per partition.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let request = proto::DescribeGroupRequest {
            group: group.to_owned(),
        };
        let response = self
            .rpc_at_coordinator(group, "describe_group", |mut stub| {
                let request = request.clone();
                async move { stub.describe_group(request).await }
            })
            .await?;
        Ok(GroupDescription {
            group: response.group,
            state: response.state,
            generation: response.generation,
            members: response
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    topics: m.topics,
                    assigned: m.assigned.into_iter().map(from_proto_partition).collect(),
                    revoking: m.revoking.into_iter().map(from_proto_partition).collect(),
                })
                .collect(),
            partitions: response
                .partitions
                .into_iter()
                .map(|p| PartitionLag {
                    topic: p.topic,
                    partition: p.partition,
                    committed_offset: (p.committed_offset >= 0).then_some(p.committed_offset),
                    end_offset: p.end_offset,
                    lag: p.lag,
                    owner: (!p.owner.is_empty()).then_some(p.owner),
                })
                .collect(),
        })
    }

    /// Deletes a group without members, with its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let request = proto::DeleteGroupRequest {
            group: group.to_owned(),
        };
        self.rpc_at_coordinator(group, "delete_group", |mut stub| {
            let request = request.clone();
            async move { stub.delete_group(request).await }
        })
        .await?;
        Ok(())
    }

    /// Sets the committed offsets of a group without members on `partitions`
    /// of `topic` (every partition if empty); returns the offsets set.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[u32],
        to: ResetTo,
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        use proto::reset_offsets_request::To;
        let request = proto::ResetOffsetsRequest {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partitions: partitions.to_vec(),
            to: Some(match to {
                ResetTo::Earliest => To::Earliest(true),
                ResetTo::Latest => To::Latest(true),
                ResetTo::Timestamp(ms) => To::TimestampMs(ms),
                ResetTo::Offset(offset) => To::Offset(offset),
            }),
        };
        let response = self
            .rpc_at_coordinator(group, "reset_offsets", |mut stub| {
                let request = request.clone();
                async move { stub.reset_offsets(request).await }
            })
            .await?;
        Ok(response
            .offsets
            .into_iter()
            .map(from_proto_offset)
            .collect())
    }

    /// Opens a member session carrying `requests`; the time limit covers
    /// the opening only (the broker answering with its headers).
    pub(crate) async fn open_session(
        &self,
        group: &str,
        requests: impl Stream<Item = proto::GroupRequest> + Send + 'static,
    ) -> Result<tonic::Streaming<proto::GroupResponse>, ClientError> {
        let at = self.coordinator(group).await?;
        let opened = at
            .client
            .rpc(
                "group_session",
                at.client.options().request_timeout,
                at.stub.clone().session(requests),
            )
            .await;
        if let Err(error) = &opened
            && error.is_broker_unreachable()
            && !at.client.endpoint.is_empty()
        {
            // Passed over while the coordinator is looked for again.
            self.client.routing.failed(&at.client.endpoint);
        }
        opened
    }
}

fn summaries(response: proto::ListGroupsResponse) -> Vec<GroupSummary> {
    response
        .groups
        .into_iter()
        .map(|g| GroupSummary {
            group: g.group,
            state: g.state,
            members: g.members,
        })
        .collect()
}

pub(crate) fn to_proto_partition(p: &TopicPartition) -> proto::TopicPartition {
    proto::TopicPartition {
        topic: p.topic.clone(),
        partition: p.partition,
    }
}

pub(crate) fn from_proto_partition(p: proto::TopicPartition) -> TopicPartition {
    TopicPartition {
        topic: p.topic,
        partition: p.partition,
    }
}

fn to_proto_offset(o: &PartitionOffset) -> proto::PartitionOffset {
    proto::PartitionOffset {
        topic: o.topic.clone(),
        partition: o.partition,
        offset: o.offset,
    }
}

fn from_proto_offset(o: proto::PartitionOffset) -> PartitionOffset {
    PartitionOffset {
        topic: o.topic,
        partition: o.partition,
        offset: o.offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_print_as_topic_slash_partition_and_sort_by_topic_first() {
        let mut partitions = [
            TopicPartition::new("b", 0),
            TopicPartition::new("a", 2),
            TopicPartition::new("a", 10),
        ];
        partitions.sort();
        let shown: Vec<String> = partitions.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["a/2", "a/10", "b/0"]);
    }
}
