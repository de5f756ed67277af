//! The metadata group under a simulated network (`turmoil`): three brokers
//! whose links are cut and mended and which crash and restart (keeping
//! their files), while a client proposes commands through whichever broker
//! leads. Over many seeds it checks that every acknowledged command is in
//! every broker's state once the network heals, that all brokers hold the
//! same state, and that no term ever had two leaders. And brokers joining
//! it: two brokers that start empty and ask the leader to add them at the
//! same moment, as pods of a StatefulSet scaled up together do, must both
//! end up voting (the leader makes one change of voters at a time, so
//! neither addition leaves the other out).
//!
//! `BROOK_SIMULATION_SEEDS` (default 6) and `BROOK_SIMULATION_FIRST_SEED`
//! (default 1) choose the seeds: a long run is the same test with more.

mod sim;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use brook_cluster::partition::ElectionTimeouts;
use brook_cluster::{
    BrokerNode, ClusterError, MetaCommand, MetaNode, MetaNodeConfig, MetaResponse, NodeId,
};
use brook_engine::TopicOverrides;
use parking_lot::Mutex;
use sim::{Leaders, PORT, SimConnector, run_with_faults, seeds};
use tonic::transport::Server;

const BROKERS: [NodeId; 3] = [1, 2, 3];
/// Commands the client gets acknowledged per seed.
const COMMANDS: usize = 40;
/// Faults stop after this much simulated time, so the group can heal.
const FAULTS_UNTIL: Duration = Duration::from_secs(30);

fn host(id: NodeId) -> String {
    format!("broker-{id}")
}

fn voters() -> BTreeMap<NodeId, BrokerNode> {
    BROKERS
        .iter()
        .map(|id| (*id, BrokerNode::new(format!("{}:{PORT}", host(*id)))))
        .collect()
}

/// What the hosts share with the client and the checks: the running
/// instance of each broker, and every leader seen, by term.
#[derive(Default)]
struct Shared {
    nodes: Mutex<HashMap<NodeId, MetaNode>>,
    leaders: Arc<Leaders>,
}

/// One broker: its group member, serving peers until the host crashes.
async fn broker(id: NodeId, dir: PathBuf, shared: Arc<Shared>) -> turmoil::Result {
    let mut config = MetaNodeConfig::new(id, dir);
    config.snapshot_every = 16;
    // Elections close together against slow links: contested elections,
    // split votes and crashes amid them are what a lost vote would break.
    config.heartbeat_interval = Duration::from_millis(50);
    // One window for all, unlike brokers' (ranked apart): elections are
    // contested as often as possible.
    config.election = ElectionTimeouts {
        first: (Duration::from_millis(150), Duration::from_millis(250)),
        stagger: Duration::ZERO,
        rank: 0,
    };
    let node = MetaNode::start(&config, Arc::new(SimConnector)).await?;
    shared.nodes.lock().insert(id, node.clone());
    shared.leaders.watch(node.raft().metrics());
    node.initialize(voters()).await?;
    Server::builder()
        .add_service(node.service())
        .serve_with_incoming(sim::listen().await?)
        .await?;
    Ok(())
}

/// Proposes through the leader, trying every broker until one takes it.
/// `Ok(true)` once acknowledged.
async fn propose(shared: &Shared, command: &MetaCommand) -> bool {
    let nodes: Vec<MetaNode> = shared.nodes.lock().values().cloned().collect();
    for node in nodes {
        let answer =
            tokio::time::timeout(Duration::from_secs(2), node.propose(command.clone())).await;
        match answer {
            Ok(Ok(MetaResponse::Done | MetaResponse::TopicExists { .. })) => return true,
            Ok(Ok(other)) => panic!("{command:?} refused: {other:?}"),
            Ok(Err(ClusterError::NotLeader { .. } | ClusterError::Stopped(_))) | Err(_) => {}
            Ok(Err(other)) => panic!("{command:?}: {other}"),
        }
    }
    false
}

/// The client: registers the brokers, then creates topics one by one,
/// each retried until acknowledged; records what was acknowledged.
async fn client(shared: Arc<Shared>, acknowledged: Arc<Mutex<Vec<String>>>) -> turmoil::Result {
    for id in BROKERS {
        let register = MetaCommand::RegisterBroker {
            id,
            address: format!("{}:{PORT}", host(id)),
            incarnation: 1,
        };
        while !propose(&shared, &register).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for i in 0..COMMANDS {
        let name = format!("topic-{i}");
        let create = MetaCommand::CreateTopic {
            name: name.clone(),
            partitions: 3,
            replication_factor: 3,
            overrides: TopicOverrides::default(),
        };
        while !propose(&shared, &create).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        acknowledged.lock().push(name);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Wait, after the faults, until every broker applied the same entries.
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if turmoil::elapsed() < FAULTS_UNTIL {
            continue;
        }
        let nodes = shared.nodes.lock();
        let applied: BTreeSet<_> = nodes
            .values()
            .map(|n| n.raft().metrics().borrow().last_applied)
            .collect();
        if nodes.len() == BROKERS.len() && applied.len() == 1 {
            return Ok(());
        }
    }
}

/// What a seed's run went through, to show that faults happened.
#[derive(Debug, Default)]
struct Run {
    crashes: u32,
    partitions: u32,
    terms_with_a_leader: usize,
    simulated: Duration,
}

fn run_seed(seed: u64) -> anyhow::Result<Run> {
    let mut run = Run::default();
    let dirs: Vec<tempfile::TempDir> = BROKERS
        .iter()
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let shared = Arc::new(Shared::default());
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(300))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(30))
        .rng_seed(seed)
        .build();
    for (id, dir) in BROKERS.iter().zip(&dirs) {
        let (id, dir, shared) = (*id, dir.path().to_owned(), shared.clone());
        sim.host(host(id), move || broker(id, dir.clone(), shared.clone()));
    }
    sim.client("client", client(shared.clone(), acknowledged.clone()));

    let struck = run_with_faults(
        &mut sim,
        seed,
        &BROKERS,
        host,
        || shared.nodes.lock().values().find_map(MetaNode::leader),
        FAULTS_UNTIL,
    )
    .map_err(|e| anyhow::anyhow!("seed {seed}: {e}"))?;
    run.crashes = struck.crashes;
    run.partitions = struck.partitions;

    let acknowledged = acknowledged.lock().clone();
    ensure!(
        acknowledged.len() == COMMANDS,
        "seed {seed}: only {} acknowledged",
        acknowledged.len()
    );
    let nodes = shared.nodes.lock();
    let states: Vec<_> = BROKERS
        .iter()
        .map(|id| {
            nodes
                .get(id)
                .map(MetaNode::state)
                .context("a broker never started")
        })
        .collect::<Result<_, _>>()?;
    for (id, state) in BROKERS.iter().zip(&states) {
        for name in &acknowledged {
            ensure!(
                state.topics.contains_key(name),
                "seed {seed}: broker {id} lost the acknowledged {name}"
            );
        }
        ensure!(
            *state == states[0],
            "seed {seed}: broker {id} holds another state"
        );
    }
    run.terms_with_a_leader = shared
        .leaders
        .unique_per_term()
        .map_err(|e| anyhow::anyhow!("seed {seed}: {e}"))?;
    run.simulated = sim.elapsed();
    Ok(run)
}

#[test]
fn acknowledged_metadata_survives_partitions_and_crashes_and_leaders_are_unique_per_term() {
    // `RUST_LOG=openraft=warn` shows what the brokers saw.
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    for seed in seeds() {
        match run_seed(seed) {
            Ok(run) => eprintln!("seed {seed}: {run:?}"),
            Err(e) => panic!("{e:#}"),
        }
    }
}

/// Brokers joining: these three form the group, the other two ask the
/// leader to add them at the same moment.
const FOUNDERS: [NodeId; 3] = BROKERS;
const JOINERS: [NodeId; 2] = [4, 5];

fn address(id: NodeId) -> String {
    format!("{}:{PORT}", host(id))
}

/// One broker: a founder forms the group, a joiner waits to be added.
async fn founder_or_joiner(id: NodeId, dir: PathBuf, shared: Arc<Shared>) -> turmoil::Result {
    let node = MetaNode::start(&MetaNodeConfig::new(id, dir), Arc::new(SimConnector)).await?;
    shared.nodes.lock().insert(id, node.clone());
    if FOUNDERS.contains(&id) {
        let founders: BTreeMap<NodeId, BrokerNode> = FOUNDERS
            .iter()
            .map(|id| (*id, BrokerNode::new(address(*id))))
            .collect();
        node.initialize(founders).await?;
    }
    Server::builder()
        .add_service(node.service())
        .serve_with_incoming(sim::listen().await?)
        .await?;
    Ok(())
}

/// Waits for a leader among the founders, then has both joiners ask it at
/// once, each until it was added.
async fn join_both(shared: Arc<Shared>) -> turmoil::Result {
    let leader = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let nodes = shared.nodes.lock();
        if let Some(leader) = FOUNDERS
            .iter()
            .filter_map(|id| nodes.get(id))
            .find_map(MetaNode::leader)
            && JOINERS.iter().all(|id| nodes.contains_key(id))
        {
            break leader;
        }
    };
    let asks = JOINERS.iter().map(|id| {
        let node = shared.nodes.lock().get(id).cloned();
        async move {
            let node = node.context("a joiner started")?;
            for _ in 0..20 {
                if node
                    .ask_to_be_added(&address(leader), &address(node.id()))
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            anyhow::bail!("broker {} was never added", node.id())
        }
    });
    for asked in futures::future::join_all(asks).await {
        asked.map_err(|e| format!("{e:#}"))?;
    }
    Ok(())
}

fn run_joining_seed(seed: u64) -> anyhow::Result<BTreeSet<NodeId>> {
    let all: Vec<NodeId> = FOUNDERS.iter().chain(&JOINERS).copied().collect();
    let dirs: Vec<tempfile::TempDir> = all
        .iter()
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let shared = Arc::new(Shared::default());
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .rng_seed(seed)
        .build();
    for (id, dir) in all.iter().zip(&dirs) {
        let (id, dir, shared) = (*id, dir.path().to_owned(), shared.clone());
        sim.host(host(id), move || {
            founder_or_joiner(id, dir.clone(), shared.clone())
        });
    }
    sim.client("operator", join_both(shared.clone()));
    sim.run().map_err(|e| anyhow::anyhow!("seed {seed}: {e}"))?;
    let nodes = shared.nodes.lock();
    let leader = FOUNDERS
        .iter()
        .filter_map(|id| nodes.get(id))
        .find(|node| node.leader() == Some(node.id()))
        .context("no leader at the end")?;
    let voting = brook_cluster::membership::voters(leader.raft());
    ensure!(
        voting == all.iter().copied().collect(),
        "seed {seed}: the voters are {voting:?} after both joiners were added"
    );
    Ok(voting)
}

#[test]
fn brokers_asking_to_be_added_at_once_all_vote() {
    for seed in seeds() {
        match run_joining_seed(seed) {
            Ok(voting) => eprintln!("seed {seed}: voters {voting:?}"),
            Err(e) => panic!("{e:#}"),
        }
    }
}
