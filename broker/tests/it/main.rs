//! The broker's integration tests, one binary: each module starts embedded
//! brokers on `127.0.0.1:0` and talks gRPC (or HTTP) to them.

mod common;

mod acl;
mod auth;
mod auth_jwt;
mod backpressure;
mod bad_input;
mod connections;
mod damage;
mod disk_full;
mod embedded;
mod faults;
mod groups;
mod http;
mod idempotence;
mod malformed_records;
mod quotas;
mod receive_buffer;
mod recovery;
mod reflection;
mod retention;
mod shutdown;
mod stream_endings;
mod tls;
