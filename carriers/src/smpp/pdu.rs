//! SMPP 3.4 protocol data units: the wire format, nothing else.
//!
//! Bytes enter through [`decode_frame`] (one whole PDU) or [`try_decode`]
//! (a stream buffer that may hold zero, one or many PDUs) and leave as a
//! [`Pdu`]; a [`Pdu`] leaves as bytes through [`Pdu::encode`], which appends
//! to a caller-owned buffer so a connection can batch many PDUs into one
//! write. Decoding never panics on arbitrary input (a proptest property and
//! the `carriers/fuzz` target hold it to that); a malformed body yields a
//! [`PduError::Body`] that still carries the header, so the peer can be
//! answered with `generic_nack` on the right sequence number.
//!
//! Only the operations Herald speaks are typed (binds, unbind, enquire_link,
//! submit_sm, deliver_sm, generic_nack and their responses); any other
//! command id decodes as [`Body::Unknown`]. TLVs Herald reads are typed
//! ([`Tlv`]); the rest are kept as raw [`Tlv::Other`] and re-encoded verbatim.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of the PDU header (command_length, command_id, command_status,
/// sequence_number).
pub const HEADER_LEN: usize = 16;
/// Largest PDU accepted from a peer. SMPP 3.4 sets no limit; a submit_sm with
/// a full message_payload stays well below this.
pub const MAX_PDU_LEN: usize = 64 * 1024;
/// interface_version sent in binds: 0x34 = SMPP 3.4.
pub const INTERFACE_VERSION_34: u8 = 0x34;

/// Command ids (SMPP 3.4 §5.1.2.1).
pub mod command {
    pub const GENERIC_NACK: u32 = 0x8000_0000;
    pub const BIND_RECEIVER: u32 = 0x0000_0001;
    pub const BIND_RECEIVER_RESP: u32 = 0x8000_0001;
    pub const BIND_TRANSMITTER: u32 = 0x0000_0002;
    pub const BIND_TRANSMITTER_RESP: u32 = 0x8000_0002;
    pub const SUBMIT_SM: u32 = 0x0000_0004;
    pub const SUBMIT_SM_RESP: u32 = 0x8000_0004;
    pub const DELIVER_SM: u32 = 0x0000_0005;
    pub const DELIVER_SM_RESP: u32 = 0x8000_0005;
    pub const UNBIND: u32 = 0x0000_0006;
    pub const UNBIND_RESP: u32 = 0x8000_0006;
    pub const BIND_TRANSCEIVER: u32 = 0x0000_0009;
    pub const BIND_TRANSCEIVER_RESP: u32 = 0x8000_0009;
    pub const ENQUIRE_LINK: u32 = 0x0000_0015;
    pub const ENQUIRE_LINK_RESP: u32 = 0x8000_0015;
}

/// command_status values Herald sends or interprets (SMPP 3.4 §5.1.3).
pub mod status {
    pub const ESME_ROK: u32 = 0x0000_0000;
    pub const ESME_RINVMSGLEN: u32 = 0x0000_0001;
    pub const ESME_RINVCMDLEN: u32 = 0x0000_0002;
    pub const ESME_RINVCMDID: u32 = 0x0000_0003;
    pub const ESME_RINVBNDSTS: u32 = 0x0000_0004;
    pub const ESME_RALYBND: u32 = 0x0000_0005;
    pub const ESME_RSYSERR: u32 = 0x0000_0008;
    pub const ESME_RBINDFAIL: u32 = 0x0000_000D;
    pub const ESME_RINVPASWD: u32 = 0x0000_000E;
    pub const ESME_RINVSYSID: u32 = 0x0000_000F;
    pub const ESME_RMSGQFUL: u32 = 0x0000_0014;
    pub const ESME_RINVDSTADR: u32 = 0x0000_000B;
    pub const ESME_RTHROTTLED: u32 = 0x0000_0058;
    pub const ESME_RX_T_APPN: u32 = 0x0000_0064;
    pub const ESME_RUNKNOWNERR: u32 = 0x0000_00FF;
}

/// TLV tags Herald reads or writes (SMPP 3.4 §5.3.2).
pub mod tag {
    pub const RECEIPTED_MESSAGE_ID: u16 = 0x001E;
    pub const SAR_MSG_REF_NUM: u16 = 0x020C;
    pub const SAR_TOTAL_SEGMENTS: u16 = 0x020E;
    pub const SAR_SEGMENT_SEQNUM: u16 = 0x020F;
    pub const SC_INTERFACE_VERSION: u16 = 0x0210;
    pub const MESSAGE_PAYLOAD: u16 = 0x0424;
    pub const MESSAGE_STATE: u16 = 0x0427;
}

/// esm_class bits Herald uses.
pub mod esm {
    /// Message type: SMSC delivery receipt (bits 5..2 = 0001).
    pub const DELIVERY_RECEIPT: u8 = 0x04;
    /// Mask of the message-type bits.
    pub const TYPE_MASK: u8 = 0x3C;
    /// GSM feature: the short_message starts with a User Data Header.
    pub const UDHI: u8 = 0x40;
}

/// One SMPP PDU: the header fields that matter plus the typed body.
/// (command_id is implied by the body; command_length is computed.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub sequence: u32,
    pub status: u32,
    pub body: Body,
}

/// The operation and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    BindTransmitter(Bind),
    BindTransmitterResp(BindResp),
    BindReceiver(Bind),
    BindReceiverResp(BindResp),
    BindTransceiver(Bind),
    BindTransceiverResp(BindResp),
    Unbind,
    UnbindResp,
    EnquireLink,
    EnquireLinkResp,
    SubmitSm(Box<ShortMessage>),
    SubmitSmResp(MessageIdResp),
    DeliverSm(Box<ShortMessage>),
    DeliverSmResp(MessageIdResp),
    GenericNack,
    /// A command Herald does not speak; kept so it can be nacked.
    Unknown {
        command_id: u32,
        body: Bytes,
    },
}

/// bind_transmitter / bind_receiver / bind_transceiver parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bind {
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    pub interface_version: u8,
    pub addr_ton: u8,
    pub addr_npi: u8,
    pub address_range: String,
}

/// bind_*_resp parameters. The body may be empty on error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindResp {
    pub system_id: String,
    pub tlvs: Vec<Tlv>,
}

/// submit_sm_resp / deliver_sm_resp. The body may be empty on error; it then
/// decodes as an empty message_id and encodes back to an empty body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageIdResp {
    pub message_id: String,
}

/// submit_sm and deliver_sm share one layout (SMPP 3.4 §4.4.1, §4.6.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShortMessage {
    pub service_type: String,
    pub source_addr_ton: u8,
    pub source_addr_npi: u8,
    pub source_addr: String,
    pub dest_addr_ton: u8,
    pub dest_addr_npi: u8,
    pub destination_addr: String,
    pub esm_class: u8,
    pub protocol_id: u8,
    pub priority_flag: u8,
    pub schedule_delivery_time: String,
    pub validity_period: String,
    pub registered_delivery: u8,
    pub replace_if_present_flag: u8,
    pub data_coding: u8,
    pub sm_default_msg_id: u8,
    /// At most 254 octets by the spec (sm_length is one octet); longer
    /// texts travel in message_payload or as several parts.
    pub short_message: Bytes,
    pub tlvs: Vec<Tlv>,
}

/// An optional parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tlv {
    SarMsgRefNum(u16),
    SarTotalSegments(u8),
    SarSegmentSeqnum(u8),
    ReceiptedMessageId(String),
    /// message_state (§5.3.2.35): 1 ENROUTE … 8 REJECTED.
    MessageState(u8),
    MessagePayload(Bytes),
    ScInterfaceVersion(u8),
    /// Any other tag, or a known tag whose length did not match its type.
    Other {
        tag: u16,
        value: Bytes,
    },
}

impl ShortMessage {
    /// The receipted_message_id TLV, if present.
    pub fn receipted_message_id(&self) -> Option<&str> {
        self.tlvs.iter().find_map(|t| match t {
            Tlv::ReceiptedMessageId(id) => Some(id.as_str()),
            _ => None,
        })
    }

    /// The message_state TLV, if present.
    pub fn message_state(&self) -> Option<u8> {
        self.tlvs.iter().find_map(|t| match t {
            Tlv::MessageState(s) => Some(*s),
            _ => None,
        })
    }

    /// The message_payload TLV, if present.
    pub fn message_payload(&self) -> Option<&Bytes> {
        self.tlvs.iter().find_map(|t| match t {
            Tlv::MessagePayload(p) => Some(p),
            _ => None,
        })
    }

    /// (sar_msg_ref_num, sar_total_segments, sar_segment_seqnum) when all
    /// three SAR TLVs are present.
    pub fn sar(&self) -> Option<(u16, u8, u8)> {
        let mut r = None;
        let mut t = None;
        let mut s = None;
        for tlv in &self.tlvs {
            match tlv {
                Tlv::SarMsgRefNum(v) => r = Some(*v),
                Tlv::SarTotalSegments(v) => t = Some(*v),
                Tlv::SarSegmentSeqnum(v) => s = Some(*v),
                _ => {}
            }
        }
        Some((r?, t?, s?))
    }

    /// Whether esm_class marks this deliver_sm as a delivery receipt.
    pub fn is_delivery_receipt(&self) -> bool {
        self.esm_class & esm::TYPE_MASK == esm::DELIVERY_RECEIPT
    }

    /// The text-carrying octets: short_message, or message_payload when the
    /// short_message is empty.
    pub fn payload(&self) -> &[u8] {
        match self.message_payload() {
            Some(p) if self.short_message.is_empty() => p,
            _ => &self.short_message,
        }
    }
}

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// command_length is below the header size or above [`MAX_PDU_LEN`]; the
    /// stream cannot be resynchronised and must be closed.
    #[error("invalid command_length {0}")]
    Length(u32),
    /// The header was readable but the body was not: the peer can be answered
    /// (generic_nack) and the stream continues.
    #[error("malformed body of command 0x{command_id:08x} seq {sequence}: {reason}")]
    Body {
        command_id: u32,
        sequence: u32,
        reason: &'static str,
    },
}

impl Body {
    /// The command_id this body travels under.
    pub fn command_id(&self) -> u32 {
        use command::*;
        match self {
            Body::BindTransmitter(_) => BIND_TRANSMITTER,
            Body::BindTransmitterResp(_) => BIND_TRANSMITTER_RESP,
            Body::BindReceiver(_) => BIND_RECEIVER,
            Body::BindReceiverResp(_) => BIND_RECEIVER_RESP,
            Body::BindTransceiver(_) => BIND_TRANSCEIVER,
            Body::BindTransceiverResp(_) => BIND_TRANSCEIVER_RESP,
            Body::Unbind => UNBIND,
            Body::UnbindResp => UNBIND_RESP,
            Body::EnquireLink => ENQUIRE_LINK,
            Body::EnquireLinkResp => ENQUIRE_LINK_RESP,
            Body::SubmitSm(_) => SUBMIT_SM,
            Body::SubmitSmResp(_) => SUBMIT_SM_RESP,
            Body::DeliverSm(_) => DELIVER_SM,
            Body::DeliverSmResp(_) => DELIVER_SM_RESP,
            Body::GenericNack => GENERIC_NACK,
            Body::Unknown { command_id, .. } => *command_id,
        }
    }

    /// Whether this is a response (bit 31 of command_id set).
    pub fn is_response(&self) -> bool {
        self.command_id() & 0x8000_0000 != 0
    }
}

impl Pdu {
    pub fn new(sequence: u32, body: Body) -> Self {
        Pdu {
            sequence,
            status: status::ESME_ROK,
            body,
        }
    }

    pub fn with_status(sequence: u32, status: u32, body: Body) -> Self {
        Pdu {
            sequence,
            status,
            body,
        }
    }

    /// Append the encoded PDU to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0); // command_length, patched below
        out.put_u32(self.body.command_id());
        out.put_u32(self.status);
        out.put_u32(self.sequence);
        match &self.body {
            Body::BindTransmitter(b) | Body::BindReceiver(b) | Body::BindTransceiver(b) => {
                put_cstr(out, &b.system_id);
                put_cstr(out, &b.password);
                put_cstr(out, &b.system_type);
                out.put_u8(b.interface_version);
                out.put_u8(b.addr_ton);
                out.put_u8(b.addr_npi);
                put_cstr(out, &b.address_range);
            }
            Body::BindTransmitterResp(r)
            | Body::BindReceiverResp(r)
            | Body::BindTransceiverResp(r) => {
                put_cstr(out, &r.system_id);
                put_tlvs(out, &r.tlvs);
            }
            Body::SubmitSmResp(r) | Body::DeliverSmResp(r) => {
                // An error response may omit the body (§4.4.2); an empty id
                // with a non-OK status is encoded that way.
                if !(r.message_id.is_empty() && self.status != status::ESME_ROK) {
                    put_cstr(out, &r.message_id);
                }
            }
            Body::SubmitSm(sm) | Body::DeliverSm(sm) => {
                put_cstr(out, &sm.service_type);
                out.put_u8(sm.source_addr_ton);
                out.put_u8(sm.source_addr_npi);
                put_cstr(out, &sm.source_addr);
                out.put_u8(sm.dest_addr_ton);
                out.put_u8(sm.dest_addr_npi);
                put_cstr(out, &sm.destination_addr);
                out.put_u8(sm.esm_class);
                out.put_u8(sm.protocol_id);
                out.put_u8(sm.priority_flag);
                put_cstr(out, &sm.schedule_delivery_time);
                put_cstr(out, &sm.validity_period);
                out.put_u8(sm.registered_delivery);
                out.put_u8(sm.replace_if_present_flag);
                out.put_u8(sm.data_coding);
                out.put_u8(sm.sm_default_msg_id);
                // sm_length is one octet: 0..=254 by the spec; 255 is
                // written back if a peer sent it, so decode/encode agree.
                let len = sm.short_message.len().min(255);
                out.put_u8(len as u8);
                out.put_slice(&sm.short_message[..len]);
                put_tlvs(out, &sm.tlvs);
            }
            Body::Unbind
            | Body::UnbindResp
            | Body::EnquireLink
            | Body::EnquireLinkResp
            | Body::GenericNack => {}
            Body::Unknown { body, .. } => out.put_slice(body),
        }
        let len = (out.len() - start) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Encode into a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        self.encode(&mut b);
        b.freeze()
    }
}

/// Take one PDU off the front of a stream buffer. `Ok(None)` when the buffer
/// does not yet hold a whole PDU. On [`PduError::Body`] the bad PDU has been
/// consumed and the stream can continue; on [`PduError::Length`] it cannot.
pub fn try_decode(buf: &mut BytesMut) -> Result<Option<Pdu>, PduError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if (len as usize) < HEADER_LEN || len as usize > MAX_PDU_LEN {
        return Err(PduError::Length(len));
    }
    if buf.len() < len as usize {
        buf.reserve(len as usize - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(len as usize).freeze();
    decode_frame(frame).map(Some)
}

/// Decode exactly one PDU; `frame` must hold the whole PDU and nothing else
/// (command_length must equal `frame.len()`).
pub fn decode_frame(mut frame: Bytes) -> Result<Pdu, PduError> {
    if frame.len() < HEADER_LEN {
        return Err(PduError::Length(frame.len() as u32));
    }
    let len = frame.get_u32();
    if len as usize != frame.len() + 4 || len as usize > MAX_PDU_LEN {
        return Err(PduError::Length(len));
    }
    let command_id = frame.get_u32();
    let status = frame.get_u32();
    let sequence = frame.get_u32();
    let fail = |reason| PduError::Body {
        command_id,
        sequence,
        reason,
    };
    let body = decode_body(command_id, status, &mut frame).map_err(fail)?;
    Ok(Pdu {
        sequence,
        status,
        body,
    })
}

fn decode_body(command_id: u32, status: u32, b: &mut Bytes) -> Result<Body, &'static str> {
    use command::*;
    let body = match command_id {
        BIND_TRANSMITTER | BIND_RECEIVER | BIND_TRANSCEIVER => {
            let bind = Bind {
                system_id: get_cstr(b)?,
                password: get_cstr(b)?,
                system_type: get_cstr(b)?,
                interface_version: get_u8(b)?,
                addr_ton: get_u8(b)?,
                addr_npi: get_u8(b)?,
                address_range: get_cstr(b)?,
            };
            match command_id {
                BIND_TRANSMITTER => Body::BindTransmitter(bind),
                BIND_RECEIVER => Body::BindReceiver(bind),
                _ => Body::BindTransceiver(bind),
            }
        }
        BIND_TRANSMITTER_RESP | BIND_RECEIVER_RESP | BIND_TRANSCEIVER_RESP => {
            let resp = if b.is_empty() {
                BindResp::default()
            } else {
                BindResp {
                    system_id: get_cstr(b)?,
                    tlvs: get_tlvs(b)?,
                }
            };
            match command_id {
                BIND_TRANSMITTER_RESP => Body::BindTransmitterResp(resp),
                BIND_RECEIVER_RESP => Body::BindReceiverResp(resp),
                _ => Body::BindTransceiverResp(resp),
            }
        }
        SUBMIT_SM_RESP | DELIVER_SM_RESP => {
            let resp = if b.is_empty() && status != status::ESME_ROK {
                MessageIdResp::default()
            } else {
                MessageIdResp {
                    message_id: get_cstr(b)?,
                }
            };
            if command_id == SUBMIT_SM_RESP {
                Body::SubmitSmResp(resp)
            } else {
                Body::DeliverSmResp(resp)
            }
        }
        SUBMIT_SM | DELIVER_SM => {
            let mut sm = ShortMessage {
                service_type: get_cstr(b)?,
                source_addr_ton: get_u8(b)?,
                source_addr_npi: get_u8(b)?,
                source_addr: get_cstr(b)?,
                dest_addr_ton: get_u8(b)?,
                dest_addr_npi: get_u8(b)?,
                destination_addr: get_cstr(b)?,
                esm_class: get_u8(b)?,
                protocol_id: get_u8(b)?,
                priority_flag: get_u8(b)?,
                schedule_delivery_time: get_cstr(b)?,
                validity_period: get_cstr(b)?,
                registered_delivery: get_u8(b)?,
                replace_if_present_flag: get_u8(b)?,
                data_coding: get_u8(b)?,
                sm_default_msg_id: get_u8(b)?,
                ..Default::default()
            };
            let sm_len = get_u8(b)? as usize;
            if b.len() < sm_len {
                return Err("short_message longer than the PDU");
            }
            sm.short_message = b.split_to(sm_len);
            sm.tlvs = get_tlvs(b)?;
            if command_id == SUBMIT_SM {
                Body::SubmitSm(Box::new(sm))
            } else {
                Body::DeliverSm(Box::new(sm))
            }
        }
        UNBIND => Body::Unbind,
        UNBIND_RESP => Body::UnbindResp,
        ENQUIRE_LINK => Body::EnquireLink,
        ENQUIRE_LINK_RESP => Body::EnquireLinkResp,
        GENERIC_NACK => Body::GenericNack,
        other => {
            return Ok(Body::Unknown {
                command_id: other,
                body: std::mem::take(b),
            })
        }
    };
    // Trailing octets after a body without TLVs are tolerated (some SMSCs
    // pad); they are dropped.
    Ok(body)
}

fn get_u8(b: &mut Bytes) -> Result<u8, &'static str> {
    if b.is_empty() {
        Err("body ends early")
    } else {
        Ok(b.get_u8())
    }
}

/// A C-octet string: octets up to a NUL. Non-UTF-8 octets are replaced (SMPP
/// strings are ASCII by definition).
fn get_cstr(b: &mut Bytes) -> Result<String, &'static str> {
    let nul = b
        .iter()
        .position(|&c| c == 0)
        .ok_or("C-octet string without terminating NUL")?;
    let s = match std::str::from_utf8(&b[..nul]) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(&b[..nul]).into_owned(),
    };
    b.advance(nul + 1);
    Ok(s)
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    // An embedded NUL would end the string early on the wire; drop it.
    out.extend(s.bytes().filter(|&c| c != 0));
    out.put_u8(0);
}

fn get_tlvs(b: &mut Bytes) -> Result<Vec<Tlv>, &'static str> {
    let mut tlvs = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err("truncated TLV header");
        }
        let tag = b.get_u16();
        let len = b.get_u16() as usize;
        if b.len() < len {
            return Err("TLV longer than the PDU");
        }
        let value = b.split_to(len);
        tlvs.push(typed_tlv(tag, value));
    }
    Ok(tlvs)
}

fn typed_tlv(tag: u16, value: Bytes) -> Tlv {
    let v = &value[..];
    match (tag, v.len()) {
        (tag::SAR_MSG_REF_NUM, 2) => Tlv::SarMsgRefNum(u16::from_be_bytes([v[0], v[1]])),
        (tag::SAR_TOTAL_SEGMENTS, 1) => Tlv::SarTotalSegments(v[0]),
        (tag::SAR_SEGMENT_SEQNUM, 1) => Tlv::SarSegmentSeqnum(v[0]),
        (tag::MESSAGE_STATE, 1) => Tlv::MessageState(v[0]),
        (tag::SC_INTERFACE_VERSION, 1) => Tlv::ScInterfaceVersion(v[0]),
        (tag::MESSAGE_PAYLOAD, _) => Tlv::MessagePayload(value),
        // receipted_message_id is a C-octet string; accept it without the
        // NUL too (seen in the wild), but only if it is clean ASCII so the
        // value round-trips.
        (tag::RECEIPTED_MESSAGE_ID, n) if n > 0 => {
            let body = if v[n - 1] == 0 { &v[..n - 1] } else { v };
            if v[n - 1] == 0 && body.iter().all(|c| c.is_ascii() && *c != 0) {
                Tlv::ReceiptedMessageId(String::from_utf8_lossy(body).into_owned())
            } else {
                Tlv::Other { tag, value }
            }
        }
        _ => Tlv::Other { tag, value },
    }
}

fn put_tlvs(out: &mut BytesMut, tlvs: &[Tlv]) {
    for t in tlvs {
        match t {
            Tlv::SarMsgRefNum(v) => put_tlv(out, tag::SAR_MSG_REF_NUM, &v.to_be_bytes()),
            Tlv::SarTotalSegments(v) => put_tlv(out, tag::SAR_TOTAL_SEGMENTS, &[*v]),
            Tlv::SarSegmentSeqnum(v) => put_tlv(out, tag::SAR_SEGMENT_SEQNUM, &[*v]),
            Tlv::MessageState(v) => put_tlv(out, tag::MESSAGE_STATE, &[*v]),
            Tlv::ScInterfaceVersion(v) => put_tlv(out, tag::SC_INTERFACE_VERSION, &[*v]),
            Tlv::MessagePayload(p) => put_tlv(out, tag::MESSAGE_PAYLOAD, p),
            Tlv::ReceiptedMessageId(id) => {
                let id: Vec<u8> = id.bytes().filter(|&c| c != 0).take(64).collect();
                out.put_u16(tag::RECEIPTED_MESSAGE_ID);
                out.put_u16(id.len() as u16 + 1);
                out.put_slice(&id);
                out.put_u8(0);
            }
            Tlv::Other { tag, value } => put_tlv(out, *tag, value),
        }
    }
}

fn put_tlv(out: &mut BytesMut, tag: u16, value: &[u8]) {
    let len = value.len().min(u16::MAX as usize);
    out.put_u16(tag);
    out.put_u16(len as u16);
    out.put_slice(&value[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cstr() -> impl Strategy<Value = String> {
        "[ -~]{0,20}"
    }

    fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn tlv() -> impl Strategy<Value = Tlv> {
        prop_oneof![
            any::<u16>().prop_map(Tlv::SarMsgRefNum),
            any::<u8>().prop_map(Tlv::SarTotalSegments),
            any::<u8>().prop_map(Tlv::SarSegmentSeqnum),
            "[0-9A-Za-z]{0,20}".prop_map(Tlv::ReceiptedMessageId),
            any::<u8>().prop_map(Tlv::MessageState),
            bytes(300).prop_map(Tlv::MessagePayload),
            any::<u8>().prop_map(Tlv::ScInterfaceVersion),
            (0x1400u16..0x3FFF, bytes(20)).prop_map(|(tag, value)| Tlv::Other { tag, value }),
        ]
    }

    fn bind() -> impl Strategy<Value = Bind> {
        (
            cstr(),
            cstr(),
            cstr(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            cstr(),
        )
            .prop_map(
                |(system_id, password, system_type, interface_version, addr_ton, addr_npi, r)| {
                    Bind {
                        system_id,
                        password,
                        system_type,
                        interface_version,
                        addr_ton,
                        addr_npi,
                        address_range: r,
                    }
                },
            )
    }

    fn sm() -> impl Strategy<Value = ShortMessage> {
        (
            (cstr(), any::<[u8; 4]>(), cstr(), cstr()),
            (any::<[u8; 8]>(), cstr(), cstr()),
            bytes(255),
            proptest::collection::vec(tlv(), 0..4),
        )
            .prop_map(
                |((st, a, src, dst), (f, sched, valid), msg, tlvs)| ShortMessage {
                    service_type: st,
                    source_addr_ton: a[0],
                    source_addr_npi: a[1],
                    source_addr: src,
                    dest_addr_ton: a[2],
                    dest_addr_npi: a[3],
                    destination_addr: dst,
                    esm_class: f[0],
                    protocol_id: f[1],
                    priority_flag: f[2],
                    schedule_delivery_time: sched,
                    validity_period: valid,
                    registered_delivery: f[3],
                    replace_if_present_flag: f[4],
                    data_coding: f[5],
                    sm_default_msg_id: f[6],
                    short_message: msg.slice(..msg.len().min(254)),
                    tlvs,
                },
            )
    }

    fn resp() -> impl Strategy<Value = BindResp> {
        (cstr(), proptest::collection::vec(tlv(), 0..3))
            .prop_map(|(system_id, tlvs)| BindResp { system_id, tlvs })
    }

    fn id() -> impl Strategy<Value = MessageIdResp> {
        cstr().prop_map(|message_id| MessageIdResp { message_id })
    }

    fn body() -> impl Strategy<Value = Body> {
        prop_oneof![
            bind().prop_map(Body::BindTransmitter),
            bind().prop_map(Body::BindReceiver),
            bind().prop_map(Body::BindTransceiver),
            resp().prop_map(Body::BindTransmitterResp),
            resp().prop_map(Body::BindReceiverResp),
            resp().prop_map(Body::BindTransceiverResp),
            Just(Body::Unbind),
            Just(Body::UnbindResp),
            Just(Body::EnquireLink),
            Just(Body::EnquireLinkResp),
            Just(Body::GenericNack),
            sm().prop_map(|s| Body::SubmitSm(Box::new(s))),
            sm().prop_map(|s| Body::DeliverSm(Box::new(s))),
            id().prop_map(Body::SubmitSmResp),
            id().prop_map(Body::DeliverSmResp),
            (0x100u32..0x7000_0000, bytes(30))
                .prop_map(|(command_id, body)| Body::Unknown { command_id, body }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(sequence in any::<u32>(), status in prop_oneof![Just(0u32), any::<u32>()], body in body()) {
            let pdu = Pdu { sequence, status, body };
            let bytes = pdu.to_bytes();
            let back = decode_frame(bytes.clone()).expect("decodes");
            prop_assert_eq!(&back, &pdu);
            // And through the stream decoder, two PDUs back to back.
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&bytes);
            buf.extend_from_slice(&bytes);
            prop_assert_eq!(try_decode(&mut buf).unwrap(), Some(pdu.clone()));
            prop_assert_eq!(try_decode(&mut buf).unwrap(), Some(pdu));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = try_decode(&mut buf) {}
            if let Ok(pdu) = decode_frame(Bytes::from(data)) {
                // Whatever decodes re-encodes to the same PDU.
                prop_assert_eq!(decode_frame(pdu.to_bytes()), Ok(pdu));
            }
        }

        #[test]
        fn mutated_pdus_never_panic(body in body(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
            let mut data = Pdu::new(7, body).to_bytes().to_vec();
            for (at, v) in flips {
                let i = at % data.len();
                // Keep command_length plausible most of the time so the body
                // decoders are exercised.
                if i >= 4 { data[i] = v; }
            }
            let cut = cut % (data.len() + 1);
            if let Ok(pdu) = decode_frame(Bytes::from(data.clone())) {
                prop_assert_eq!(decode_frame(pdu.to_bytes()), Ok(pdu));
            }
            let mut buf = BytesMut::from(&data[..cut]);
            let _ = try_decode(&mut buf);
            let mut buf = BytesMut::from(&data[..]);
            let _ = try_decode(&mut buf);
        }
    }

    #[test]
    fn known_bytes_of_enquire_link() {
        let b = Pdu::new(1, Body::EnquireLink).to_bytes();
        assert_eq!(
            &b[..],
            &[0, 0, 0, 16, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn error_submit_resp_without_body() {
        let raw = [0, 0, 0, 16, 0x80, 0, 0, 4, 0, 0, 0, 0x58, 0, 0, 0, 9];
        let pdu = decode_frame(Bytes::copy_from_slice(&raw)).unwrap();
        assert_eq!(pdu.status, status::ESME_RTHROTTLED);
        assert_eq!(pdu.body, Body::SubmitSmResp(MessageIdResp::default()));
        assert_eq!(&pdu.to_bytes()[..], &raw[..]);
    }

    #[test]
    fn bad_length_is_fatal_bad_body_is_not() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3][..]);
        assert_eq!(try_decode(&mut buf), Err(PduError::Length(3)));
        // submit_sm with a body cut short.
        let raw = [0, 0, 0, 18, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 5, b'a', b'b'];
        let mut buf = BytesMut::from(&raw[..]);
        match try_decode(&mut buf) {
            Err(PduError::Body { sequence: 5, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(buf.is_empty());
    }
}
