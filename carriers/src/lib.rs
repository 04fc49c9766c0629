//! # herald-carriers
//!
//! Herald's door to the outside world: one module per carrier protocol and a
//! simulator for each. This crate knows nothing of actors, RabbitMQ or
//! PostgreSQL. A carrier connection takes a [`Submission`] and answers with the
//! carrier's reference(s) ([`Submitted`]) or a normalised [`CarrierError`];
//! receipts and status callbacks come out as one normalised [`Receipt`] stream.

pub mod connection;
pub mod encoding;
pub mod http_sms;
pub mod http_util;
pub mod smpp;
pub mod voice;
pub mod whatsapp;

pub use connection::{
    CarrierConnection, CarrierError, Channel, Content, Health, Receipt, ReceiptState, Submission,
    Submitted,
};
