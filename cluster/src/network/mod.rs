//! The metadata group's messages between brokers, over gRPC
//! (`brook.cluster.v1.RaftService`): [`client`] sends openraft's requests
//! to a peer, [`service`] answers them. Both carry openraft's types as
//! JSON.

pub mod client;
pub mod service;

use serde::Serialize;
use serde::de::DeserializeOwned;

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

fn decode<T: DeserializeOwned>(json: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(json)
}
