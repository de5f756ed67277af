//! The broker-wide bound on produce bytes in flight: concurrent producers
//! wait for room instead of growing memory, and a request larger than the
//! whole bound still goes through on its own.

use crate::common;

use brook_broker::{BrokerConfig, EmbeddedBroker};
use common::{Clients, batch, within};

#[tokio::test]
async fn producers_share_a_small_in_flight_budget_and_all_complete() -> anyhow::Result<()> {
    let mut config = BrokerConfig::default();
    config.limits.produce_bytes_in_flight_max = 4 * 1024;
    let embedded = EmbeddedBroker::builder().config(config).start().await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    clients
        .create_topic("tight", 4, brook_proto::TopicConfig::default())
        .await?;
    // One batch larger than the whole budget.
    let big = batch("big", 2000)?;
    anyhow::ensure!(big.len() > 4 * 1024);
    clients.produce("tight", 0, big).await?;
    // Many producers at once, together far over the budget.
    let mut tasks = Vec::new();
    for producer in 0..16u32 {
        let mut clients = clients.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..10 {
                let batch = batch(&format!("p{producer}-{round}"), 50)?;
                clients.produce("tight", producer % 4, batch).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        within("a producer", task).await???;
    }
    let mut total = 0;
    for partition in 0..4 {
        total += clients.end_offset("tight", partition).await?;
    }
    anyhow::ensure!(total == 2000 + 16 * 10 * 50, "total {total}");
    Ok(())
}
