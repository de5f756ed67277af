//! Several brokers of an `EmbeddedCluster` in the test's process: a leader
//! cut off from its peers, reads routed to the brokers that hold the
//! partitions, ACLs, quotas and topic settings the same everywhere, and
//! consumer groups that outlive their coordinator.

use std::time::Duration;

mod cut_off;
mod groups;
mod reads;
mod settings;

/// How long one step (an election, catching up, a change reaching every
/// broker) may take.
const STEP_LIMIT: Duration = Duration::from_secs(30);
