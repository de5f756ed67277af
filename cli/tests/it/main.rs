//! The `brook` binary's integration tests, one binary: each module runs the
//! built `brook` against brokers it starts and stops.

mod common;

mod acl;
mod auth;
mod cli;
mod cluster;
mod crash;
mod failover;
mod groups;
mod logging;
mod operations;
mod quotas;
mod recover;
mod replicated_topics;
mod secure_cluster;
mod three_brokers;
mod tls;
mod undecodable;
