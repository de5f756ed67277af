//! The client's integration tests, one module per behaviour, in one test
//! binary: one link instead of one per file keeps builds and `target/` small.

mod auth;
mod client;
mod cluster;
mod consumer;
mod consumer_backoff;
#[cfg(feature = "events")]
mod events;
mod groups;
mod half_open;
mod producer;
mod resilience;
mod stalled_broker;
mod stream_end;
mod tls;
mod undecodable;
