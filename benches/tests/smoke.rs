//! The three workloads against an embedded broker with a few thousand
//! records: they finish, and their reports add up. Bounded in time (a few
//! seconds in debug builds).

use std::time::Duration;

use brook_bench::{Amount, BrokerTarget, Latency, Mode, Report, Workload};
use brook_broker::FsyncPolicy;

fn workload(records: u64) -> Workload {
    Workload {
        partitions: 4,
        amount: Amount::Records(records),
        record_size: 64,
        linger: Duration::from_millis(1),
        ..Workload::default()
    }
}

async fn run(mode: Mode, workload: &Workload) -> anyhow::Result<Report> {
    let target = BrokerTarget::Embedded {
        fsync: FsyncPolicy::Always,
        data_dir: None,
    };
    let running = target.start().await?;
    let report = brook_bench::run(
        mode,
        &running.connection(brook_client::ClientOptions::default()),
        &running.fsync,
        workload,
    )
    .await;
    running.stop().await?;
    report
}

fn assert_sane(report: &Report, records: u64) {
    assert_eq!(report.records, records);
    assert_eq!(report.bytes, records * report.params.record_size as u64);
    assert!(report.seconds > 0.0);
    assert!(report.records_per_sec > 0.0 && report.records_per_sec.is_finite());
    assert!(report.mb_per_sec > 0.0);
    assert_eq!(report.fsync, "always");
    let json = serde_json::to_value(report).expect("a report serializes");
    for field in [
        "records",
        "bytes",
        "seconds",
        "records_per_sec",
        "mb_per_sec",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
        "fsync",
        "params",
    ] {
        assert!(json.get(field).is_some(), "the JSON report has {field}");
    }
}

fn assert_latencies_ordered(report: &Report) {
    let (Some(p50), Some(p99), Some(p999), Some(max)) =
        (report.p50_ms, report.p99_ms, report.p999_ms, report.max_ms)
    else {
        panic!("latencies measured: {report:?}");
    };
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_through_the_producer_reports_ack_latencies() -> anyhow::Result<()> {
    let report = run(Mode::Produce, &workload(3_000)).await?;
    assert_sane(&report, 3_000);
    assert_eq!(report.client, "producer");
    assert_eq!(report.latency, Latency::SendToAck);
    assert_latencies_ordered(&report);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_keyed_and_multi_producer_runs_count_every_record() -> anyhow::Result<()> {
    let raw = run(
        Mode::Produce,
        &Workload {
            raw: true,
            producers: 2,
            ..workload(3_001)
        },
    )
    .await?;
    assert_sane(&raw, 3_001);
    assert_eq!(raw.client, "raw");
    let keyed = run(
        Mode::Produce,
        &Workload {
            keyed: true,
            producers: 3,
            ..workload(2_000)
        },
    )
    .await?;
    assert_sane(&keyed, 2_000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_reads_back_everything_it_filled() -> anyhow::Result<()> {
    let report = run(
        Mode::Consume,
        &Workload {
            consumers: 2,
            ..workload(5_000)
        },
    )
    .await?;
    assert_sane(&report, 5_000);
    assert_eq!(report.latency, Latency::None);
    assert_eq!(report.p99_ms, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_at_a_rate_measures_send_to_receive() -> anyhow::Result<()> {
    let report = run(
        Mode::E2e,
        &Workload {
            rate: Some(5_000.0),
            linger: Duration::ZERO,
            ..workload(2_000)
        },
    )
    .await?;
    assert_sane(&report, 2_000);
    assert_eq!(report.latency, Latency::SendToReceive);
    assert_latencies_ordered(&report);
    // 2,000 records at 5,000/s take at least 0.4 s: the rate was kept.
    assert!(report.seconds >= 0.39, "{report:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_workload_is_refused() {
    let refused = run(
        Mode::Produce,
        &Workload {
            amount: Amount::Records(0),
            ..Workload::default()
        },
    )
    .await;
    assert!(refused.is_err());
}

/// Against three brokers, on a topic whose partitions are led by different
/// brokers and were created a moment before: the raw stream sends each
/// partition's batches to its leader (a broker refuses those of partitions
/// it does not lead), and consume fills and reads them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_produce_and_consume_reach_every_leader_of_a_cluster() -> anyhow::Result<()> {
    let cluster = brook_broker::EmbeddedCluster::start().await?;
    let connection = brook_bench::Connection::new(
        cluster.endpoint(1).expect("broker 1"),
        brook_client::ClientOptions::default(),
    );
    let raw = brook_bench::run(
        Mode::Produce,
        &connection,
        "always",
        &Workload {
            raw: true,
            topic: "raw".to_owned(),
            partitions: 6,
            ..workload(3_001)
        },
    )
    .await?;
    assert_sane(&raw, 3_001);
    let consumed = brook_bench::run(
        Mode::Consume,
        &connection,
        "always",
        &Workload {
            topic: "filled".to_owned(),
            partitions: 6,
            ..workload(4_000)
        },
    )
    .await?;
    assert_sane(&consumed, 4_000);
    cluster.shutdown().await?;
    Ok(())
}
