//! Delivery receipts (DLRs) carried in deliver_sm, and carrier reference
//! normalisation.
//!
//! A receipt enters as a decoded deliver_sm [`ShortMessage`] whose esm_class
//! says "SMSC delivery receipt" and leaves as a [`Receipt`] in Herald's
//! vocabulary. Two sources are read, TLVs first:
//!
//! * `receipted_message_id` / `message_state` TLVs (SMPP 3.4 §5.3.2.12,
//!   §5.3.2.35);
//! * the de-facto text format of SMPP 3.4 Appendix B:
//!   `id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done
//!   date:YYMMDDhhmm stat:DDDDDDD err:E text:…` (keys in any case, fields
//!   missing or reordered tolerated).
//!
//! ## Reference normalisation
//!
//! Carriers write the same message id in different ways: `0A1B`, `a1b`,
//! `00000a1b`; some even answer submit_sm in hex and write the receipt in
//! decimal (`2587`). [`normalize_ref`] maps an id to Herald's canonical form
//! (trimmed, lower-case, leading zeros stripped, `0` for all zeros), which is
//! what [`Submitted::carrier_refs`](crate::Submitted) and
//! [`Receipt::carrier_ref`] hold, so the two compare equal with `==`.
//!
//! The receipt's id is taken from the `receipted_message_id` TLV when present
//! (by definition the id submit_sm_resp returned) and normalised as is.
//! Otherwise it comes from the text's `id:` field, interpreted through the
//! carrier's [`ReceiptIdFormat`]: with `HexInRespDecimalInReceipt` the
//! decimal text id is converted to hex before normalising (`2587` ->
//! `a1b`, matching the resp id `0A1B`), with `DecimalInRespHexInReceipt` the
//! other way round. An id that does not parse in the stated radix is
//! normalised unchanged.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::pdu::ShortMessage;
use crate::encoding::WireCoding;
use crate::{Receipt, ReceiptState};

/// How a carrier writes the message id in a receipt's text relative to the
/// id in submit_sm_resp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptIdFormat {
    /// Both the same way (modulo case and leading zeros).
    #[default]
    Same,
    /// submit_sm_resp hex, receipt text decimal of the same number.
    HexInRespDecimalInReceipt,
    /// submit_sm_resp decimal, receipt text hex of the same number.
    DecimalInRespHexInReceipt,
}

/// Canonical form of a carrier message id: trimmed, ASCII lower-case,
/// leading zeros stripped (an all-zero id becomes `0`).
pub fn normalize_ref(id: &str) -> String {
    let lower = id.trim().to_ascii_lowercase();
    let stripped = lower.trim_start_matches('0');
    if stripped.is_empty() && !lower.is_empty() {
        "0".to_owned()
    } else {
        stripped.to_owned()
    }
}

/// Normalise an id read from a receipt's text according to `format`.
pub fn normalize_receipt_ref(id: &str, format: ReceiptIdFormat) -> String {
    let id = id.trim();
    match format {
        ReceiptIdFormat::Same => normalize_ref(id),
        ReceiptIdFormat::HexInRespDecimalInReceipt => match id.parse::<u128>() {
            Ok(n) => format!("{n:x}"),
            Err(_) => normalize_ref(id),
        },
        ReceiptIdFormat::DecimalInRespHexInReceipt => match u128::from_str_radix(id, 16) {
            Ok(n) => n.to_string(),
            Err(_) => normalize_ref(id),
        },
    }
}

/// The fields of a text-format receipt, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptText {
    pub id: String,
    pub sub: Option<String>,
    pub dlvrd: Option<String>,
    pub submit_date: Option<String>,
    pub done_date: Option<String>,
    pub stat: Option<String>,
    pub err: Option<String>,
    pub text: Option<String>,
}

const KEYS: [&str; 8] = [
    "id:",
    "sub:",
    "dlvrd:",
    "submit date:",
    "done date:",
    "stat:",
    "err:",
    "text:",
];

/// Parse the Appendix B text format. `None` when there is no `id:` field.
pub fn parse_receipt_text(text: &str) -> Option<ReceiptText> {
    let lower = text.to_ascii_lowercase();
    // Find each key at a word boundary; `text:` ends the scan since its value
    // may contain anything.
    let mut found: Vec<(usize, usize, usize)> = Vec::new(); // (start, value start, key idx)
    let text_at = find_key(&lower, "text:", 0);
    for (k, key) in KEYS.iter().enumerate() {
        let limit = if k == 7 {
            lower.len()
        } else {
            text_at.unwrap_or(lower.len())
        };
        if let Some(at) = find_key(&lower, key, 0).filter(|&a| a < limit || k == 7) {
            found.push((at, at + key.len(), k));
        }
    }
    found.sort();
    let mut r = ReceiptText::default();
    let mut have_id = false;
    for (i, &(_, vstart, k)) in found.iter().enumerate() {
        let vend = found.get(i + 1).map(|n| n.0).unwrap_or(text.len());
        let value = text.get(vstart..vend.max(vstart))?.trim().to_owned();
        match k {
            0 => {
                r.id = value;
                have_id = true;
            }
            1 => r.sub = Some(value),
            2 => r.dlvrd = Some(value),
            3 => r.submit_date = Some(value),
            4 => r.done_date = Some(value),
            5 => r.stat = Some(value),
            6 => r.err = Some(value),
            _ => r.text = Some(value),
        }
    }
    have_id.then_some(r)
}

/// First occurrence of `key` at or after `from` that starts the string or
/// follows whitespace.
fn find_key(hay: &str, key: &str, from: usize) -> Option<usize> {
    let mut start = from;
    while let Some(pos) = hay.get(start..)?.find(key) {
        let at = start + pos;
        if at == 0 || hay.as_bytes()[at - 1].is_ascii_whitespace() {
            return Some(at);
        }
        start = at + key.len();
    }
    None
}

/// Map a receipt `stat:` value to Herald's state. ENROUTE and ACCEPTD are
/// intermediate (the carrier has it, no handset verdict yet); DELETED and
/// UNKNOWN are failures; anything unrecognised is treated as UNKNOWN.
pub fn state_from_stat(stat: &str) -> ReceiptState {
    match stat.trim().to_ascii_uppercase().as_str() {
        "DELIVRD" | "DELIVERED" => ReceiptState::Delivered,
        "UNDELIV" | "UNDELIVERABLE" => ReceiptState::Undelivered,
        "EXPIRED" => ReceiptState::Expired,
        "REJECTD" | "REJECTED" => ReceiptState::Rejected,
        "ENROUTE" | "ACCEPTD" | "ACCEPTED" | "BUFFRED" | "BUFFERED" => ReceiptState::Sent,
        _ => ReceiptState::Failed,
    }
}

/// Map a `message_state` TLV value (§5.2.28) to Herald's state.
pub fn state_from_message_state(state: u8) -> ReceiptState {
    match state {
        1 | 6 => ReceiptState::Sent, // ENROUTE, ACCEPTED
        2 => ReceiptState::Delivered,
        3 => ReceiptState::Expired,
        5 => ReceiptState::Undelivered,
        8 => ReceiptState::Rejected,
        _ => ReceiptState::Failed, // DELETED, UNKNOWN, others
    }
}

/// The `stat:` word for a `message_state` value (used by the simulator).
pub fn stat_word(state: u8) -> &'static str {
    match state {
        1 => "ENROUTE",
        2 => "DELIVRD",
        3 => "EXPIRED",
        4 => "DELETED",
        5 => "UNDELIV",
        6 => "ACCEPTD",
        8 => "REJECTD",
        _ => "UNKNOWN",
    }
}

/// `YYMMDDhhmm` or `YYMMDDhhmmss`, taken as UTC.
pub fn parse_receipt_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let fmt = match s.len() {
        10 => "%y%m%d%H%M",
        12 => "%y%m%d%H%M%S",
        _ => return None,
    };
    NaiveDateTime::parse_from_str(s, fmt)
        .ok()
        .map(|d| d.and_utc())
}

/// Turn a deliver_sm that is a delivery receipt into a [`Receipt`]. `None`
/// when neither the TLVs nor the text give a message id.
pub fn receipt_from_deliver_sm(sm: &ShortMessage, format: ReceiptIdFormat) -> Option<Receipt> {
    let raw = WireCoding::from_data_coding(sm.data_coding).decode(sm.payload());
    let text = parse_receipt_text(&raw);
    let carrier_ref = match (sm.receipted_message_id(), &text) {
        (Some(id), _) if !id.trim().is_empty() => normalize_ref(id),
        (_, Some(t)) if !t.id.is_empty() => normalize_receipt_ref(&t.id, format),
        _ => return None,
    };
    let state = match (
        sm.message_state(),
        text.as_ref().and_then(|t| t.stat.as_deref()),
    ) {
        (Some(s), _) => state_from_message_state(s),
        (None, Some(stat)) => state_from_stat(stat),
        (None, None) => ReceiptState::Failed,
    };
    let error_code = text
        .as_ref()
        .and_then(|t| t.err.as_deref())
        .map(str::trim)
        .filter(|e| !e.is_empty() && e.bytes().any(|b| b != b'0'))
        .map(str::to_owned);
    let done_at = text
        .as_ref()
        .and_then(|t| t.done_date.as_deref())
        .and_then(parse_receipt_date);
    let raw = if raw.is_empty() {
        format!(
            "receipted_message_id:{} message_state:{}",
            sm.receipted_message_id().unwrap_or(""),
            sm.message_state().unwrap_or(0)
        )
    } else {
        raw
    };
    Some(Receipt {
        carrier_ref,
        state,
        error_code,
        done_at,
        raw,
        is_final: state.is_final(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::pdu::{esm, Tlv};
    use bytes::Bytes;
    use proptest::prelude::*;

    const SAMPLE: &str = "id:0A1B sub:001 dlvrd:001 submit date:2611221530 done date:2611221531 stat:DELIVRD err:000 text:Hello world";

    #[test]
    fn parses_the_standard_text() {
        let r = parse_receipt_text(SAMPLE).unwrap();
        assert_eq!(r.id, "0A1B");
        assert_eq!(r.sub.as_deref(), Some("001"));
        assert_eq!(r.submit_date.as_deref(), Some("2611221530"));
        assert_eq!(r.done_date.as_deref(), Some("2611221531"));
        assert_eq!(r.stat.as_deref(), Some("DELIVRD"));
        assert_eq!(r.err.as_deref(), Some("000"));
        assert_eq!(r.text.as_deref(), Some("Hello world"));
    }

    #[test]
    fn text_may_contain_keys_and_case_varies() {
        let r = parse_receipt_text("ID:77 Stat:UNDELIV err:012 Text:stat:DELIVRD id:1").unwrap();
        assert_eq!(r.id, "77");
        assert_eq!(r.stat.as_deref(), Some("UNDELIV"));
        assert_eq!(r.text.as_deref(), Some("stat:DELIVRD id:1"));
        assert!(parse_receipt_text("hello there").is_none());
    }

    #[test]
    fn refs_normalise() {
        assert_eq!(normalize_ref("0A1B"), "a1b");
        assert_eq!(normalize_ref(" 000a1b "), "a1b");
        assert_eq!(normalize_ref("000"), "0");
        assert_eq!(normalize_ref(""), "");
        let hd = ReceiptIdFormat::HexInRespDecimalInReceipt;
        assert_eq!(normalize_receipt_ref("2587", hd), normalize_ref("0A1B"));
        assert_eq!(normalize_receipt_ref("0002587", hd), normalize_ref("0a1b"));
        let dh = ReceiptIdFormat::DecimalInRespHexInReceipt;
        assert_eq!(normalize_receipt_ref("0A1B", dh), normalize_ref("0002587"));
    }

    #[test]
    fn stat_mapping() {
        assert_eq!(state_from_stat("DELIVRD"), ReceiptState::Delivered);
        assert_eq!(state_from_stat("undeliv"), ReceiptState::Undelivered);
        assert_eq!(state_from_stat("EXPIRED"), ReceiptState::Expired);
        assert_eq!(state_from_stat("REJECTD"), ReceiptState::Rejected);
        assert_eq!(state_from_stat("ENROUTE"), ReceiptState::Sent);
        assert_eq!(state_from_stat("DELETED"), ReceiptState::Failed);
        assert_eq!(state_from_message_state(2), ReceiptState::Delivered);
        assert_eq!(state_from_message_state(8), ReceiptState::Rejected);
    }

    #[test]
    fn receipt_from_text_and_from_tlvs() {
        let mut sm = ShortMessage {
            esm_class: esm::DELIVERY_RECEIPT,
            short_message: Bytes::from_static(SAMPLE.as_bytes()),
            ..Default::default()
        };
        assert!(sm.is_delivery_receipt());
        let r = receipt_from_deliver_sm(&sm, ReceiptIdFormat::Same).unwrap();
        assert_eq!(r.carrier_ref, "a1b");
        assert_eq!(r.state, ReceiptState::Delivered);
        assert!(r.is_final);
        assert_eq!(r.error_code, None);
        assert_eq!(r.done_at.unwrap().to_rfc3339(), "2026-11-22T15:31:00+00:00");
        // TLVs win over the text.
        sm.tlvs = vec![Tlv::ReceiptedMessageId("00FF".into()), Tlv::MessageState(5)];
        let r = receipt_from_deliver_sm(&sm, ReceiptIdFormat::Same).unwrap();
        assert_eq!(r.carrier_ref, "ff");
        assert_eq!(r.state, ReceiptState::Undelivered);
        // TLVs only, no text.
        sm.short_message = Bytes::new();
        let r = receipt_from_deliver_sm(&sm, ReceiptIdFormat::Same).unwrap();
        assert_eq!(r.carrier_ref, "ff");
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = parse_receipt_text(&s);
            let _ = parse_receipt_date(&s);
        }

        #[test]
        fn hex_and_decimal_agree(n in any::<u64>(), pad in 0usize..6, upper in any::<bool>()) {
            let hex = if upper { format!("{}{n:X}", "0".repeat(pad)) } else { format!("{}{n:x}", "0".repeat(pad)) };
            let dec = format!("{}{n}", "0".repeat(pad));
            prop_assert_eq!(normalize_receipt_ref(&dec, ReceiptIdFormat::HexInRespDecimalInReceipt), normalize_ref(&hex));
            prop_assert_eq!(normalize_receipt_ref(&hex, ReceiptIdFormat::DecimalInRespHexInReceipt), normalize_ref(&dec));
        }
    }
}
