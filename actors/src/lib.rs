//! # herald-actors
//!
//! The supervision tree and every actor (tenant, route, carrier connection,
//! health monitor), the RabbitMQ topology, and the typed payloads that cross
//! it. `lapin` appears only in [`broker`]; the rest of Herald sees the typed
//! handles it exports.

pub mod breaker;
pub mod broker;
pub mod carrier;
pub mod config;
pub mod courier;
pub mod events;
pub mod health;
pub mod ids;
pub mod ingress;
pub mod lease;
pub mod ledger;
pub mod pace;
pub mod payload;
pub mod reroute;
pub mod root;
pub mod route;
pub mod routing;
pub mod telemetry;
pub mod tenant;
pub mod throttle;
pub mod vitals;

pub use ids::{MessageId, TenantId};
