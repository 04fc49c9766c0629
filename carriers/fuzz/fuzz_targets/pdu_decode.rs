//! Arbitrary bytes through the SMPP PDU decoder: it must never panic, and
//! whatever decodes must survive encode -> decode unchanged.
#![no_main]

use bytes::{Bytes, BytesMut};
use herald_carriers::smpp::pdu::{decode_frame, try_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pdu) = decode_frame(Bytes::copy_from_slice(data)) {
        let again = decode_frame(pdu.to_bytes()).expect("re-encoded PDU decodes");
        assert_eq!(again, pdu);
    }
    // As a stream: as many PDUs as decode, then stop at the first fatal error.
    let mut buf = BytesMut::from(data);
    loop {
        match try_decode(&mut buf) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) if matches!(e, herald_carriers::smpp::pdu::PduError::Body { .. }) => {}
            Err(_) => break,
        }
    }
});
