//! # herald-actors
//!
//! The supervision tree and every actor (tenant, route, carrier connection,
//! health monitor), the RabbitMQ topology, and the typed payloads that cross
//! it. `lapin` appears only in [`broker`]; the rest of Herald sees the typed
//! handles it exports.

pub mod broker;
pub mod ids;
pub mod payload;

pub use ids::{MessageId, TenantId};
