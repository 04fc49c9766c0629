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
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use herald_carriers::smpp::{SmppClient, SmppConfig, SmscConfig, SmscSim};
//! use herald_carriers::{CarrierConnection, Channel, Content, Submission};
//!
//! let sim = SmscSim::start(SmscConfig::default()).await?;
//! let (client, mut receipts) = SmppClient::connect(SmppConfig {
//!     port: sim.addr().port(),
//!     system_id: "herald".into(),
//!     password: "secret".into(),
//!     ..Default::default()
//! })
//! .await?;
//! let sent = client
//!     .submit(Submission {
//!         message_id: "msg_1".into(),
//!         channel: Channel::Sms,
//!         to: "+250788123456".into(),
//!         from: "Herald".into(),
//!         content: Content::Text { body: "Hello".into() },
//!         validity: None,
//!         receipts: true,
//!     })
//!     .await?;
//! let receipt = receipts.recv().await.expect("a receipt");
//! assert_eq!(receipt.carrier_ref, sent.carrier_refs[0]);
//! client.close().await;
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod pdu;
pub mod receipt;
pub mod sim;

pub use client::{
    map_status, status_name, AckedReceipt, BindMode, SmppClient, SmppConfig, SmppError,
};
pub use receipt::{normalize_receipt_ref, normalize_ref, ReceiptIdFormat};
pub use sim::{
    Behaviour, IdStyle, OutcomeMix, ReceivedSm, SmscConfig, SmscHandle, SmscSim, SmscStats,
};
