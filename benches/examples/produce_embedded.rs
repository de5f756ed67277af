//! Produces to an in-process broker in a temporary directory and prints the
//! figures: `cargo run --release -p brook-bench --example produce_embedded -- [records] [record_size]`.

use brook_bench::{ProduceOptions, produce};
use brook_broker::EmbeddedBroker;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let records = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let record_size = args.next().map_or(Ok(100), |a| a.parse())?;
    let broker = EmbeddedBroker::start().await?;
    let options = ProduceOptions {
        records,
        record_size,
        ..ProduceOptions::default()
    };
    let report = produce(&broker.endpoint(), &options).await?;
    println!("{report}");
    broker.shutdown().await?;
    Ok(())
}
