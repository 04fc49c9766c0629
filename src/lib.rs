//! # herald
//!
//! The Herald service: CLI, configuration, HTTP API (actix-web), the store
//! (PostgreSQL), Redis, the accept path (group commit and outbox relay), the
//! status projector (event log and current status) and the wiring that
//! starts it all. See `../shared/DESIGN.md` for the whole.

pub mod api;
pub mod app;
pub mod batch;
pub mod config;
pub mod demo;
pub mod ingest;
pub mod kv;
pub mod lane;
pub mod message;
pub mod outbox;
pub mod projector;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod tenant;
pub mod webhooks;
