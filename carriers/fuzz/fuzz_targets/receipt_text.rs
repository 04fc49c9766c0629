//! Arbitrary octets as a receipt / short_message payload: the text decoders,
//! the UDH parser and the receipt parser must never panic.
#![no_main]

use herald_carriers::encoding::{gsm7_decode, latin1_decode, parse_udh, ucs2_decode};
use herald_carriers::smpp::receipt::{parse_receipt_date, parse_receipt_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_udh(data);
    for text in [gsm7_decode(data), latin1_decode(data), ucs2_decode(data)] {
        if let Some(r) = parse_receipt_text(&text) {
            let _ = r.done_date.as_deref().map(parse_receipt_date);
        }
    }
});
