//! The record batch format's integration tests, one binary.

mod golden;
mod produced;
mod proptest;
