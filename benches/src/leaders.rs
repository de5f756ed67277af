//! Where a topic's partitions take writes. A broker alone leads all of its
//! partitions; in a cluster each partition has its own leader, elected
//! about a second after the topic is created. The bench waits for every
//! leader before it measures, so a run does not count the first elections,
//! and the raw stream, which has no client to follow a refusal to the
//! leader, sends each partition's batches to its leader itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use brook_client::Client;

/// How long a topic's partitions may take to elect their leaders.
const ELECTION_LIMIT: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Each leader's address and the partitions of `topic` it leads; `None`
/// for a broker alone. Waits until every partition has a leader.
pub async fn of_topic(
    client: &Client,
    topic: &str,
) -> anyhow::Result<Option<BTreeMap<String, Vec<u32>>>> {
    let deadline = Instant::now() + ELECTION_LIMIT;
    loop {
        let cluster = client.describe_cluster().await?;
        if !cluster.clustered {
            return Ok(None);
        }
        let mut leaders: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let (mut partitions, mut led) = (0, 0);
        for partition in cluster.partitions.iter().filter(|p| p.topic == topic) {
            partitions += 1;
            let address = cluster
                .brokers
                .iter()
                .find(|broker| broker.id == partition.leader)
                .map(|broker| broker.address.clone());
            if let Some(address) = address {
                leaders
                    .entry(address)
                    .or_default()
                    .push(partition.partition);
                led += 1;
            }
        }
        // A topic just created may not be known yet to the broker asked.
        if partitions > 0 && led == partitions {
            for led in leaders.values_mut() {
                led.sort_unstable();
            }
            return Ok(Some(leaders));
        }
        if Instant::now() >= deadline {
            bail!(
                "{led} of the {partitions} known partitions of `{topic}` have a leader after {} s",
                ELECTION_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
