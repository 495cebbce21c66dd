//! One test binary for the crate: each `tests/*.rs` file was a binary of its
//! own that linked the whole server, and on 2 cores those links and their debug
//! info dominated a test run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod api_bad_input;
mod api_idempotency;
mod api_isolation;
mod api_keys;
mod api_pagination;
mod api_reference;
mod api_reference_browser;
mod api_resources;
mod dashboard;
mod dashboard_browser;
mod delivery_basics;
mod delivery_circuit;
mod delivery_controls;
mod delivery_hand_off;
mod delivery_metrics;
mod delivery_node;
mod delivery_retries;
mod delivery_shutdown;
mod docs_catalogue;
mod docs_examples;
mod event_schemas;
mod openapi;
mod operational_events;
mod peers;
mod postgres_plans;
mod postgres_timeouts;
mod retention;
mod secrets_at_rest;
mod storage_full;
mod store;
mod webhook_filters;
mod webhook_headers;
mod webhook_health;
mod webhook_replays;
