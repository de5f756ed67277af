//! Three `brook serve` processes forming a cluster's metadata group: `brook
//! cluster status` shows every broker alive and one metadata leader; after
//! the leader is killed with SIGKILL another broker leads and the killed one
//! shows as not alive; restarted on its files, it is alive again and the
//! group keeps a single leader. A broker alone answers as broker 1. A
//! fourth broker started with `--join` is added, takes a partition, and the
//! broker it replaced is removed, all through the CLI.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::common::{self, Server, brook, run};
use crate::operations::http_get;

async fn status(broker: &str) -> Option<Value> {
    let output = run(broker, &["cluster", "status", "--json"], b"").await;
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

/// Waits (bounded) until `broker` reports a status that `done` accepts.
async fn wait_for(broker: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = status(broker).await
            && done(&status)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never seen from {broker}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn alive(status: &Value) -> Vec<u64> {
    status["brokers"]
        .as_array()
        .map(|brokers| {
            brokers
                .iter()
                .filter(|b| b["alive"] == Value::Bool(true))
                .filter_map(|b| b["id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_killed_metadata_leader_is_replaced_and_rejoins_after_a_restart() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let ports = common::free_ports(3);
    let peers = (1..=3)
        .zip(&ports)
        .map(|(id, port)| format!("{id}=127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let start = |id: usize| {
        let dir = data.path().join(format!("broker-{id}"));
        let listen = format!("127.0.0.1:{}", ports[id - 1]);
        let peers = peers.clone();
        async move {
            let node_id = id.to_string();
            Server::start_listening(
                &dir,
                &listen,
                &["--node-id", &node_id, "--peers", &peers],
                Stdio::null(),
            )
            .await
        }
    };
    let mut servers = Vec::new();
    for id in 1..=3 {
        servers.push(Some(start(id).await));
    }
    let first = servers[0]
        .as_ref()
        .map(|s| s.grpc.clone())
        .unwrap_or_default();
    let status = wait_for(&first, "three brokers alive and a leader", |s| {
        alive(s) == [1, 2, 3] && s["metadata_leader"].is_u64()
    })
    .await;
    assert_eq!(status["clustered"], Value::Bool(true));
    let leader = status["metadata_leader"].as_u64().expect("a leader") as usize;
    // Ready once it knows a leader; the leader says so in its metrics.
    for (id, server) in (1..).zip(servers.iter().flatten()) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(&server.http, "/ready").await.0 != 200 {
            assert!(Instant::now() < deadline, "broker {id} never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, metrics) = http_get(&server.http, "/metrics").await;
        let leads = i32::from(id == leader);
        assert!(
            metrics.contains(&format!("brook_cluster_metadata_leader {leads}")),
            "broker {id}: {metrics}"
        );
    }

    // SIGKILL the leader: the others elect another and see it gone.
    let killed = servers[leader - 1].take().expect("the leader runs");
    killed.stop(Signal::SIGKILL).await;
    let other = servers
        .iter()
        .flatten()
        .next()
        .map(|s| s.grpc.clone())
        .expect("a broker left");
    let status = wait_for(&other, "a new leader", |s| {
        s["metadata_leader"]
            .as_u64()
            .is_some_and(|l| l as usize != leader)
            && !alive(s).contains(&(leader as u64))
    })
    .await;
    let new_leader = status["metadata_leader"].as_u64();

    // Restarted on its files, it rejoins and follows the new leader.
    let restarted = start(leader).await;
    let status = wait_for(&restarted.grpc, "the restarted broker back", |s| {
        alive(s) == [1, 2, 3] && s["metadata_leader"].is_u64()
    })
    .await;
    assert_eq!(status["metadata_leader"].as_u64(), new_leader, "{status}");
    servers[leader - 1] = Some(restarted);
    for server in servers.into_iter().flatten() {
        server.stop(Signal::SIGTERM).await;
    }
}

#[tokio::test]
async fn a_broker_alone_answers_as_broker_one_with_its_partitions() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let server = Server::start(data.path()).await;
    brook(
        &server.grpc,
        &["topic", "create", "solo", "--partitions", "2"],
        b"",
    )
    .await;
    let status = status(&server.grpc).await.expect("a status");
    assert_eq!(status["clustered"], Value::Bool(false));
    assert_eq!(alive(&status), [1]);
    let partitions = status["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 2, "{status}");
    assert_eq!(partitions[0]["leader"], 1);
    assert_eq!(partitions[0]["replicas"], serde_json::json!([1]));
    assert_eq!(partitions[0]["lag"], serde_json::json!({"1": 0}));

    // Several brokers: the first that answers serves the command.
    let several = format!("127.0.0.1:1,{}", server.grpc);
    let listed = brook(&several, &["topic", "list"], b"").await;
    assert!(listed.contains("solo"), "{listed}");
    let none = run("127.0.0.1:1,127.0.0.1:2", &["topic", "list"], b"").await;
    assert!(!none.status.success());
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(
        stderr.contains("127.0.0.1:1") && stderr.contains("127.0.0.1:2"),
        "{stderr}"
    );
    server.stop(Signal::SIGTERM).await;
}

/// A fourth `brook serve --join` is added with `brook cluster add-broker`,
/// a partition is moved onto it with `brook topic reassign --wait` and
/// keeps its records there, and the broker it left is removed with `brook
/// cluster remove-broker` (a broker that still holds a replica is not).
#[tokio::test]
async fn a_broker_joins_takes_a_partition_and_the_one_it_replaced_is_removed() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let ports = common::free_ports(4);
    let address = |id: usize| format!("127.0.0.1:{}", ports[id - 1]);
    let founders = (1..=3)
        .map(|id| format!("{id}={}", address(id)))
        .collect::<Vec<_>>()
        .join(",");
    let start = |id: usize, extra: &'static [&'static str]| {
        let dir = data.path().join(format!("broker-{id}"));
        let listen = address(id);
        let peers = if id <= 3 {
            founders.clone()
        } else {
            format!("{founders},{id}={listen}")
        };
        async move {
            let node_id = id.to_string();
            Server::start_listening(
                &dir,
                &listen,
                &[&["--node-id", &node_id, "--peers", &peers][..], extra].concat(),
                Stdio::null(),
            )
            .await
        }
    };
    let mut servers = Vec::new();
    for id in 1..=3 {
        servers.push(start(id, &[]).await);
    }
    let first = servers[0].grpc.clone();
    // Ready once registered: a topic created then is placed on all three.
    for (id, server) in (1..).zip(&servers) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(&server.http, "/ready").await.0 != 200 {
            assert!(Instant::now() < deadline, "broker {id} never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    brook(
        &first,
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "1",
            "--replication-factor",
            "3",
        ],
        b"",
    )
    .await;
    brook(&first, &["produce", "t"], b"one\ntwo\nthree\n").await;

    servers.push(start(4, &["--join"]).await);
    let added = brook(
        &first,
        &[
            "cluster",
            "add-broker",
            "--node-id",
            "4",
            "--address",
            &address(4),
        ],
        b"",
    )
    .await;
    assert!(added.contains("added broker 4"), "{added}");
    let status = wait_for(&first, "four brokers alive", |s| alive(s) == [1, 2, 3, 4]).await;
    let replicas: Vec<u64> = status["partitions"][0]["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let leaving = replicas[0];
    let target: Vec<u64> = std::iter::once(4)
        .chain(replicas.iter().copied().skip(1))
        .collect();
    let listed = target
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let moved = brook(
        &first,
        &[
            "topic",
            "reassign",
            "t",
            "--partition",
            "0",
            "--replicas",
            &listed,
            "--wait",
        ],
        b"",
    )
    .await;
    assert!(moved.ends_with("moved\n"), "{moved}");
    let status = wait_for(&first, "the partition on its new replicas", |s| {
        s["partitions"][0]["moving_to"] == serde_json::json!([])
            && s["partitions"][0]["replicas"] == serde_json::json!(target)
    })
    .await;
    assert_eq!(status["partitions"][0]["topic"], "t");
    // The new replica serves the records it was not there for.
    let new_replica = brook_client::Client::connect(servers[3].endpoint())
        .await
        .expect("connect to broker 4");
    let fetched = new_replica
        .fetch(
            "t",
            0,
            0,
            brook_client::FetchOptions::default().with_max_wait(Duration::ZERO),
        )
        .await
        .expect("fetch from broker 4");
    let values: Vec<String> = fetched
        .records
        .iter()
        .filter_map(|r| r.value.as_ref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(values, ["one", "two", "three"]);

    let holder = target[1].to_string();
    let refused = run(&first, &["cluster", "remove-broker", &holder], b"").await;
    assert!(
        !refused.status.success(),
        "removed a broker holding a replica"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("holds replicas"), "{stderr}");
    let removed = brook(
        &first,
        &["cluster", "remove-broker", &leaving.to_string()],
        b"",
    )
    .await;
    assert!(
        removed.contains(&format!("removed broker {leaving}")),
        "{removed}"
    );
    let asked = servers[3].grpc.clone();
    wait_for(&asked, "the removed broker gone from the list", |s| {
        s["brokers"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["id"].as_u64() != Some(leaving)))
    })
    .await;
    for server in servers {
        server.stop(Signal::SIGTERM).await;
    }
}

/// Five `brook serve` with the same `--peers` (all five) and `--founders
/// 1,2,3`, as the Helm chart runs a cluster grown from three pods to five:
/// the first three form the cluster, the other two, started with them, ask
/// to be added at once and both are, with no operator's command;
/// restarted, a broker that was added does not ask again and is still a
/// member.
#[tokio::test]
async fn brokers_beyond_the_founders_add_themselves() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let ports = common::free_ports(5);
    let peers = (1..=5)
        .map(|id| format!("{id}=127.0.0.1:{}", ports[id - 1]))
        .collect::<Vec<_>>()
        .join(",");
    let start = |id: usize| {
        let dir = data.path().join(format!("broker-{id}"));
        let listen = format!("127.0.0.1:{}", ports[id - 1]);
        let peers = peers.clone();
        async move {
            let node_id = id.to_string();
            let args = [
                "--node-id",
                &node_id,
                "--peers",
                &peers,
                "--founders",
                "1,2,3",
            ];
            Server::start_listening(&dir, &listen, &args, Stdio::null()).await
        }
    };
    let mut servers = Vec::new();
    for id in 1..=5 {
        servers.push(start(id).await);
    }
    let first = servers[0].grpc.clone();
    wait_for(&first, "five brokers alive", |s| {
        alive(s) == [1, 2, 3, 4, 5]
    })
    .await;
    for (id, server) in (4..).zip(&servers[3..]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(&server.http, "/ready").await.0 != 200 {
            assert!(Instant::now() < deadline, "broker {id} never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Each follows the cluster's leader: one left out of the voters by
        // the other's addition stands for election on its own, and knows
        // none.
        wait_for(&server.grpc, "the cluster as the newcomer sees it", |s| {
            alive(s) == [1, 2, 3, 4, 5] && s["metadata_leader"].as_u64().is_some()
        })
        .await;
    }
    // Placed on all five: brokers 4 and 5 registered, and take replicas.
    brook(
        &first,
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "5",
            "--replication-factor",
            "1",
        ],
        b"",
    )
    .await;
    let status = wait_for(&first, "a partition on brokers 4 and 5", |s| {
        s["partitions"].as_array().is_some_and(|partitions| {
            [4, 5].iter().all(|id| {
                partitions
                    .iter()
                    .any(|p| p["replicas"] == serde_json::json!([id]))
            })
        })
    })
    .await;
    assert_eq!(status["partitions"].as_array().map(Vec::len), Some(5));

    let fifth = servers.pop().expect("broker 5");
    fifth.stop(Signal::SIGTERM).await;
    servers.push(start(5).await);
    wait_for(&first, "broker 5 back", |s| alive(s) == [1, 2, 3, 4, 5]).await;
    brook(
        &servers[4].grpc,
        &["produce", "t", "--partition", "0"],
        b"x\n",
    )
    .await;

    // Scaling back to four: broker 5 is removed with its replica moved to
    // another broker first, records included.
    let on_fifth = status["partitions"]
        .as_array()
        .and_then(|partitions| {
            partitions
                .iter()
                .find(|p| p["replicas"] == serde_json::json!([5]))
        })
        .and_then(|p| p["partition"].as_u64())
        .expect("a partition on broker 5")
        .to_string();
    brook(
        &first,
        &["produce", "t", "--partition", &on_fifth],
        b"kept\n",
    )
    .await;
    let removed = brook(
        &first,
        &[
            "cluster",
            "remove-broker",
            "5",
            "--move-partitions",
            "--timeout-s",
            "60",
        ],
        b"",
    )
    .await;
    assert!(removed.contains("removed broker 5"), "{removed}");
    let status = wait_for(&first, "broker 5 gone", |s| alive(s) == [1, 2, 3, 4]).await;
    let placed_on = |id: u64| {
        status["partitions"].as_array().is_some_and(|partitions| {
            partitions.iter().any(|p| {
                p["replicas"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r.as_u64() == Some(id)))
            })
        })
    };
    assert!(!placed_on(5), "a replica left on broker 5: {status}");
    let consumed = brook(
        &first,
        &[
            "consume",
            "t",
            "--partition",
            &on_fifth,
            "--from-beginning",
            "--idle-timeout-ms",
            "3000",
        ],
        b"",
    )
    .await;
    assert!(consumed.contains("kept"), "{consumed}");
    for server in servers {
        server.stop(Signal::SIGTERM).await;
    }
}
