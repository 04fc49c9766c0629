//! SMPP 3.4: Herald's client for carrier SMSCs and an SMSC simulator.
//!
//! * [`pdu`] — the wire format (encode/decode, never panics on input);
//! * [`receipt`] — delivery receipts in deliver_sm and carrier reference
//!   normalisation ([`normalize_ref`]);
//! * [`client`] — [`SmppClient`], one bind, implementing
//!   [`CarrierConnection`](crate::CarrierConnection): submissions enter
//!   through `submit`, receipts leave on the channel returned by
//!   [`SmppClient::connect`];
//! * [`sim`] — [`SmscSim`], a real SMPP server for tests, load tests and
//!   `herald sim smsc`, with a small HTTP control endpoint.
//!
//! Text encoding and splitting into parts live in [`crate::encoding`].

pub mod client;
pub mod pdu;
pub mod receipt;
pub mod sim;

pub use client::{map_status, status_name, BindMode, SmppClient, SmppConfig, SmppError};
pub use receipt::{normalize_receipt_ref, normalize_ref, ReceiptIdFormat};
pub use sim::{
    Behaviour, IdStyle, OutcomeMix, ReceivedSm, SmscConfig, SmscHandle, SmscSim, SmscStats,
};
