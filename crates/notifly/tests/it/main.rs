//! One test binary for the crate: each `tests/*.rs` file was a binary of its
//! own that linked the whole server, and on 2 cores those links and their debug
//! info dominated a test run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod cli;
mod durability;
mod multinode;
mod serve;
mod traces;
