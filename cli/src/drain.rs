//! Moving every replica off a broker before it is removed (`brook cluster
//! remove-broker --move-partitions`), as a decommission does in Redpanda:
//! each replica the broker holds goes to the live broker, not already
//! holding that partition, that holds the fewest replicas; once every move
//! is done the broker is removed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use brook_client::Client;

/// A partition and the brokers it is on (or moving to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub topic: String,
    pub partition: u32,
    /// The first is the preferred leader.
    pub replicas: Vec<u64>,
}

/// The new replicas of every partition with a replica on `leaving`: the
/// same list with `leaving` replaced, in its place, by the live broker
/// (of `brokers`: id and alive) that holds none of the partition and the
/// fewest replicas so far (the lowest id among equals).
pub fn plan(
    brokers: &[(u64, bool)],
    placements: &[Placement],
    leaving: u64,
) -> Result<Vec<Placement>, String> {
    let mut load: BTreeMap<u64, usize> = brokers
        .iter()
        .filter(|(id, alive)| *alive && *id != leaving)
        .map(|(id, _)| (*id, 0))
        .collect();
    for placement in placements {
        for id in &placement.replicas {
            if let Some(count) = load.get_mut(id) {
                *count += 1;
            }
        }
    }
    let mut moves = Vec::new();
    for placement in placements {
        let Some(at) = placement.replicas.iter().position(|id| *id == leaving) else {
            continue;
        };
        let Some((&taker, _)) = load
            .iter()
            .filter(|(id, _)| !placement.replicas.contains(id))
            .min_by_key(|(id, count)| (**count, **id))
        else {
            return Err(format!(
                "partition {} of {} is on brokers {:?}: no other live broker can take its replica on broker {leaving} (add a broker first)",
                placement.partition, placement.topic, placement.replicas
            ));
        };
        if let Some(count) = load.get_mut(&taker) {
            *count += 1;
        }
        let mut replicas = placement.replicas.clone();
        replicas[at] = taker;
        moves.push(Placement {
            topic: placement.topic.clone(),
            partition: placement.partition,
            replicas,
        });
    }
    Ok(moves)
}

/// Moves every replica off broker `leaving`, waits until the moves are
/// done (within `timeout`), then removes the broker.
pub async fn remove_after_moving(
    client: &Client,
    leaving: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let cluster = client.describe_cluster().await?;
    if !cluster.brokers.iter().any(|b| b.id == leaving) {
        bail!("the cluster has no broker {leaving}");
    }
    let brokers: Vec<(u64, bool)> = cluster.brokers.iter().map(|b| (b.id, b.alive)).collect();
    let placements: Vec<Placement> = cluster
        .partitions
        .iter()
        .map(|p| Placement {
            topic: p.topic.clone(),
            partition: p.partition,
            // A partition under way is placed where it is going.
            replicas: if p.moving_to.is_empty() {
                p.replicas.clone()
            } else {
                p.moving_to.clone()
            },
        })
        .collect();
    let moves = plan(&brokers, &placements, leaving).map_err(anyhow::Error::msg)?;
    let mut by_topic: BTreeMap<String, Vec<(u32, Vec<u64>)>> = BTreeMap::new();
    for placement in moves {
        by_topic
            .entry(placement.topic)
            .or_default()
            .push((placement.partition, placement.replicas));
    }
    for (topic, targets) in &by_topic {
        client.reassign_partitions(topic, targets).await?;
        for (partition, replicas) in targets {
            println!("moving {topic} partition {partition} to brokers {replicas:?}");
        }
    }
    let deadline = Instant::now() + timeout;
    for (topic, targets) in &by_topic {
        let left = deadline.saturating_duration_since(Instant::now());
        crate::cluster::wait_until_moved(client, topic, targets, left).await?;
    }
    if !by_topic.is_empty() {
        println!("moved every replica off broker {leaving}");
    }
    client.remove_broker(leaving).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(topic: &str, partition: u32, replicas: &[u64]) -> Placement {
        Placement {
            topic: topic.to_owned(),
            partition,
            replicas: replicas.to_vec(),
        }
    }

    #[test]
    fn each_replica_goes_to_the_least_loaded_live_broker_without_the_partition() {
        let brokers = [(1, true), (2, true), (3, true), (4, true), (5, false)];
        let placements = [
            placed("a", 0, &[1, 2]),
            placed("a", 1, &[2, 3]),
            placed("a", 2, &[3, 1]),
            placed("b", 0, &[1]),
            placed("b", 1, &[4]),
        ];
        let moves = plan(&brokers, &placements, 1).unwrap();
        // Loads without broker 1: 2 has 2, 3 has 2, 4 has 1 (5 is down).
        assert_eq!(
            moves,
            [
                placed("a", 0, &[4, 2]),
                // 4 now has 2 like the others; 2 is the lowest id of
                // those not holding a/2.
                placed("a", 2, &[3, 2]),
                // 2 has 3 now, 3 and 4 have 2.
                placed("b", 0, &[3]),
            ]
        );
    }

    #[test]
    fn a_partition_on_every_live_broker_cannot_move() {
        let brokers = [(1, true), (2, true), (3, true)];
        let error = plan(&brokers, &[placed("a", 0, &[1, 2, 3])], 3).unwrap_err();
        assert!(error.contains("no other live broker"), "{error}");
        assert_eq!(
            plan(&brokers, &[placed("a", 0, &[1, 2])], 3).unwrap(),
            [],
            "nothing on the leaving broker"
        );
    }
}
