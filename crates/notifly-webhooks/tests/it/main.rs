//! One test binary for the crate: each `tests/*.rs` file was a binary of its
//! own, and on 2 cores their links and debug info dominated a test run.
#![allow(clippy::unwrap_used)]

#[cfg(feature = "axum")]
mod axum;
mod ed25519_vectors;
mod envelope;
mod events;
mod vectors;
mod webhook;
