//! SMS text encodings: GSM 03.38 7-bit (default alphabet and extension table)
//! and UCS-2, and how many segments a text needs.
//!
//! A text is GSM-7 when every character is in the default alphabet or the
//! extension table (extension characters cost two septets: escape + char).
//! Otherwise it is UCS-2, counted in UTF-16 code units. Single-part limits are
//! 160 septets / 70 units; concatenated parts lose room to the UDH and carry
//! 153 septets / 67 units each.

use serde::{Deserialize, Serialize};

/// The encoding chosen for an SMS text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// GSM 03.38 default alphabet, 7 bits per character.
    Gsm7,
    /// UCS-2 (UTF-16 code units), 16 bits per character.
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
        }
    }

    /// Units that fit in one unsplit message.
    pub fn single_capacity(self) -> usize {
        match self {
            Encoding::Gsm7 => 160,
            Encoding::Ucs2 => 70,
        }
    }

    /// Units per part of a concatenated message (8-bit UDH reference).
    pub fn part_capacity(self) -> usize {
        match self {
            Encoding::Gsm7 => 153,
            Encoding::Ucs2 => 67,
        }
    }
}

/// The GSM 03.38 default alphabet, indexed by septet value.
pub const GSM7_BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1b}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The GSM 03.38 extension table: (septet after the escape, character).
pub const GSM7_EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0c}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// Septets a character costs in GSM-7 (1 basic, 2 extension), or `None` when
/// it is not representable.
pub fn gsm7_septets(c: char) -> Option<usize> {
    if c != '\u{1b}' && GSM7_BASIC.contains(&c) {
        Some(1)
    } else if GSM7_EXTENSION.iter().any(|&(_, e)| e == c) {
        Some(2)
    } else {
        None
    }
}

/// What Herald needs to know about an SMS text before accepting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextInfo {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    /// Parts the text is split into.
    pub segments: usize,
}

/// Choose the encoding of `text` and count its segments.
pub fn analyze(text: &str) -> TextInfo {
    let gsm: Option<Vec<usize>> = text.chars().map(gsm7_septets).collect();
    match gsm {
        Some(costs) => {
            let units = costs.iter().sum();
            let segments = if units <= Encoding::Gsm7.single_capacity() {
                1
            } else {
                // An escape sequence is never split across parts.
                count_parts(&costs, Encoding::Gsm7.part_capacity())
            };
            TextInfo {
                encoding: Encoding::Gsm7,
                units,
                segments,
            }
        }
        None => {
            // A surrogate pair is never split across parts.
            let costs: Vec<usize> = text.chars().map(char::len_utf16).collect();
            let units = costs.iter().sum();
            let segments = if units <= Encoding::Ucs2.single_capacity() {
                1
            } else {
                count_parts(&costs, Encoding::Ucs2.part_capacity())
            };
            TextInfo {
                encoding: Encoding::Ucs2,
                units,
                segments,
            }
        }
    }
}

/// Greedy packing of characters (each costing some units) into parts of
/// `capacity` units without splitting a character.
fn count_parts(costs: &[usize], capacity: usize) -> usize {
    let mut parts = 1;
    let mut used = 0;
    for &cost in costs {
        if used + cost > capacity {
            parts += 1;
            used = 0;
        }
        used += cost;
    }
    parts
}

// ---------------------------------------------------------------------------
// Encoders and decoders for the wire (SMPP data_coding 0x00, 0x03, 0x08) and
// splitting into concatenated parts.
// ---------------------------------------------------------------------------

/// The character set of a short_message on the wire, with its SMPP
/// data_coding value. Unlike [`Encoding`] (what Herald counts and bills),
/// this includes Latin-1, which some carriers accept and deliver as GSM-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireCoding {
    /// GSM 03.38, unpacked: one septet per octet (data_coding 0x00).
    Gsm7,
    /// ISO-8859-1, one octet per character (data_coding 0x03).
    Latin1,
    /// UCS-2 as UTF-16BE, surrogate pairs kept (data_coding 0x08).
    Ucs2,
}

impl WireCoding {
    /// SMPP data_coding value.
    pub fn data_coding(self) -> u8 {
        match self {
            WireCoding::Gsm7 => 0x00,
            WireCoding::Latin1 => 0x03,
            WireCoding::Ucs2 => 0x08,
        }
    }

    /// The coding a data_coding value names; anything unknown is treated as
    /// 8-bit (Latin-1) so that bytes still decode to something.
    pub fn from_data_coding(dc: u8) -> WireCoding {
        match dc {
            0x00 | 0x01 => WireCoding::Gsm7,
            0x08 => WireCoding::Ucs2,
            _ => WireCoding::Latin1,
        }
    }

    /// Encode `text`; `None` when a character is not representable.
    pub fn encode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            WireCoding::Gsm7 => gsm7_encode(text),
            WireCoding::Latin1 => latin1_encode(text),
            WireCoding::Ucs2 => Some(ucs2_encode(text)),
        }
    }

    /// Decode octets (never fails: unknown octets become U+FFFD or '?').
    pub fn decode(self, bytes: &[u8]) -> String {
        match self {
            WireCoding::Gsm7 => gsm7_decode(bytes),
            WireCoding::Latin1 => latin1_decode(bytes),
            WireCoding::Ucs2 => ucs2_decode(bytes),
        }
    }

    /// Octets one character costs, or `None` if not representable.
    fn cost(self, c: char) -> Option<usize> {
        match self {
            WireCoding::Gsm7 => gsm7_septets(c),
            WireCoding::Latin1 => ((c as u32) < 0x100).then_some(1),
            WireCoding::Ucs2 => Some(c.len_utf16() * 2),
        }
    }
}

/// Pick the wire coding for `text`: GSM-7 when every character is in the
/// GSM alphabet, else Latin-1 when allowed and sufficient, else UCS-2.
pub fn choose_wire_coding(text: &str, latin1_allowed: bool) -> WireCoding {
    if text.chars().all(|c| gsm7_septets(c).is_some()) {
        WireCoding::Gsm7
    } else if latin1_allowed && text.chars().all(|c| (c as u32) < 0x100) {
        WireCoding::Latin1
    } else {
        WireCoding::Ucs2
    }
}

/// GSM 03.38 to unpacked septets (one per octet, extension characters as
/// 0x1B + code). `None` if a character is not in the alphabet.
pub fn gsm7_encode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{1b}' {
            return None;
        }
        if let Some(i) = GSM7_BASIC.iter().position(|&b| b == c) {
            out.push(i as u8);
        } else if let Some(&(code, _)) = GSM7_EXTENSION.iter().find(|&&(_, e)| e == c) {
            out.push(0x1B);
            out.push(code);
        } else {
            return None;
        }
    }
    Some(out)
}

/// Unpacked septets to text. The high bit of each octet is ignored; an
/// escape followed by an unknown code yields the basic character (GSM 03.38
/// §6.2.1.1), a trailing escape yields nothing.
pub fn gsm7_decode(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut it = septets.iter().map(|b| b & 0x7F);
    while let Some(s) = it.next() {
        if s == 0x1B {
            if let Some(code) = it.next() {
                match GSM7_EXTENSION.iter().find(|&&(c, _)| c == code) {
                    Some(&(_, ch)) => out.push(ch),
                    None if code == 0x1B => out.push(' '),
                    None => out.push(GSM7_BASIC[code as usize]),
                }
            }
        } else {
            out.push(GSM7_BASIC[s as usize]);
        }
    }
    out
}

/// ISO-8859-1; `None` if a character is above U+00FF.
pub fn latin1_encode(text: &str) -> Option<Vec<u8>> {
    text.chars().map(|c| u8::try_from(c as u32).ok()).collect()
}

/// ISO-8859-1 to text (every octet is a character).
pub fn latin1_decode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// UTF-16BE (what SMSCs call UCS-2 today; characters outside the BMP travel
/// as surrogate pairs).
pub fn ucs2_encode(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// UTF-16BE to text; unpaired surrogates become U+FFFD, an odd trailing
/// octet is dropped.
pub fn ucs2_decode(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]));
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// How a long message is split into concatenated parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitMode {
    /// UDH with IEI 0x00 (8-bit reference), 6 octets.
    #[default]
    Udh8,
    /// UDH with IEI 0x08 (16-bit reference), 7 octets.
    Udh16,
    /// SMPP sar_* TLVs; the SMSC builds the UDH.
    Sar,
}

/// Where a part sits in a concatenated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Concat {
    pub reference: u16,
    pub total: u8,
    /// 1-based.
    pub seq: u8,
}

/// One short_message to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Octets for short_message (UDH first when `udhi`).
    pub short_message: Vec<u8>,
    /// Whether short_message starts with a UDH (esm_class 0x40).
    pub udhi: bool,
    /// Set for every part of a concatenated message (also in UDH modes).
    pub concat: Option<Concat>,
    /// Whether the concatenation travels as SAR TLVs.
    pub sar: bool,
}

/// Errors splitting a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("character {0:?} is not representable in {1:?}")]
    Unrepresentable(char, WireCoding),
    #[error("text needs {0} parts; at most 255 are possible")]
    TooLong(usize),
}

/// Octets that fit in one unsplit short_message: 160 septets (the SMSC packs
/// them into 140 octets), else 140 octets.
fn single_octets(coding: WireCoding) -> usize {
    match coding {
        WireCoding::Gsm7 => 160,
        _ => 140,
    }
}

/// Octets of payload per part after the UDH (or the UDH the SMSC will add
/// for SAR): GSM-7 153 / 152 septets, UCS-2 134 / 132 octets (67 / 66
/// units), Latin-1 134 / 133 octets.
fn part_octets(coding: WireCoding, mode: SplitMode) -> usize {
    let udh = match mode {
        SplitMode::Udh8 | SplitMode::Sar => 6,
        SplitMode::Udh16 => 7,
    };
    match coding {
        // UDH octets rounded up to whole septets.
        WireCoding::Gsm7 => 160 - (udh * 8usize).div_ceil(7),
        // Whole UTF-16 units only.
        WireCoding::Ucs2 => (140 - udh) & !1,
        WireCoding::Latin1 => 140 - udh,
    }
}

/// Split `text` into the short_messages to submit. One part (no UDH, no
/// TLVs) when it fits; otherwise parts with the given `reference` (truncated
/// to 8 bits in [`SplitMode::Udh8`]). A character (a GSM-7 escape sequence, a
/// surrogate pair) is never cut across parts.
pub fn split(
    text: &str,
    coding: WireCoding,
    mode: SplitMode,
    reference: u16,
) -> Result<Vec<Part>, SplitError> {
    let mut chars = Vec::new();
    let mut total = 0;
    for c in text.chars() {
        let cost = coding
            .cost(c)
            .ok_or(SplitError::Unrepresentable(c, coding))?;
        chars.push((c, cost));
        total += cost;
    }
    if total <= single_octets(coding) {
        let short_message = coding
            .encode(text)
            .ok_or(SplitError::Unrepresentable('\u{fffd}', coding))?;
        return Ok(vec![Part {
            short_message,
            udhi: false,
            concat: None,
            sar: false,
        }]);
    }
    let cap = part_octets(coding, mode);
    let mut chunks: Vec<String> = vec![String::new()];
    let mut used = 0;
    for (c, cost) in chars {
        if used + cost > cap {
            chunks.push(String::new());
            used = 0;
        }
        used += cost;
        if let Some(last) = chunks.last_mut() {
            last.push(c);
        }
    }
    let n = chunks.len();
    if n > 255 {
        return Err(SplitError::TooLong(n));
    }
    let reference = match mode {
        SplitMode::Udh8 => reference & 0xFF,
        _ => reference,
    };
    let mut parts = Vec::with_capacity(n);
    for (i, chunk) in chunks.iter().enumerate() {
        let concat = Concat {
            reference,
            total: n as u8,
            seq: (i + 1) as u8,
        };
        let payload = coding
            .encode(chunk)
            .ok_or(SplitError::Unrepresentable('\u{fffd}', coding))?;
        let mut short_message = Vec::with_capacity(payload.len() + 7);
        match mode {
            SplitMode::Udh8 => short_message.extend_from_slice(&[
                0x05,
                0x00,
                0x03,
                reference as u8,
                concat.total,
                concat.seq,
            ]),
            SplitMode::Udh16 => short_message.extend_from_slice(&[
                0x06,
                0x08,
                0x04,
                (reference >> 8) as u8,
                reference as u8,
                concat.total,
                concat.seq,
            ]),
            SplitMode::Sar => {}
        }
        short_message.extend_from_slice(&payload);
        parts.push(Part {
            short_message,
            udhi: mode != SplitMode::Sar,
            concat: Some(concat),
            sar: mode == SplitMode::Sar,
        });
    }
    Ok(parts)
}

/// Read a concatenation header off the front of a short_message that has
/// the UDHI bit set: the concatenation info (IEI 0x00 or 0x08) if any, and
/// the payload after the UDH. `None` if the UDH is malformed.
pub fn parse_udh(short_message: &[u8]) -> Option<(Option<Concat>, &[u8])> {
    let udhl = *short_message.first()? as usize;
    let udh = short_message.get(1..1 + udhl)?;
    let payload = short_message.get(1 + udhl..)?;
    let mut concat = None;
    let mut i = 0;
    while i + 2 <= udh.len() {
        let iei = udh[i];
        let len = udh[i + 1] as usize;
        let data = udh.get(i + 2..i + 2 + len)?;
        match (iei, len) {
            (0x00, 3) => {
                concat = Some(Concat {
                    reference: data[0] as u16,
                    total: data[1],
                    seq: data[2],
                })
            }
            (0x08, 4) => {
                concat = Some(Concat {
                    reference: u16::from_be_bytes([data[0], data[1]]),
                    total: data[2],
                    seq: data[3],
                })
            }
            _ => {}
        }
        i += 2 + len;
    }
    Some((concat, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_ascii_is_gsm7() {
        let info = analyze("Hello from Kigali");
        assert_eq!(info.encoding, Encoding::Gsm7);
        assert_eq!(info.units, 17);
        assert_eq!(info.segments, 1);
    }

    #[test]
    fn boundaries_of_gsm7() {
        assert_eq!(analyze(&"a".repeat(160)).segments, 1);
        assert_eq!(analyze(&"a".repeat(161)).segments, 2);
        assert_eq!(analyze(&"a".repeat(306)).segments, 2);
        assert_eq!(analyze(&"a".repeat(307)).segments, 3);
    }

    #[test]
    fn extension_characters_cost_two() {
        let info = analyze("€[]");
        assert_eq!(info.encoding, Encoding::Gsm7);
        assert_eq!(info.units, 6);
        // 80 euro signs = 160 septets, one part; 81 need two.
        assert_eq!(analyze(&"€".repeat(80)).segments, 1);
        assert_eq!(analyze(&"€".repeat(81)).segments, 2);
    }

    #[test]
    fn escape_sequence_is_not_split() {
        // 152 'a' then '€' (2 septets) does not fit in 153: moves to part 2.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(10));
        assert_eq!(analyze(&text).segments, 2);
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(analyze(&text).segments, 3);
    }

    #[test]
    fn non_gsm_is_ucs2() {
        let info = analyze("Muraho ✓");
        assert_eq!(info.encoding, Encoding::Ucs2);
        assert_eq!(info.units, 8);
        assert_eq!(analyze(&"ж".repeat(70)).segments, 1);
        assert_eq!(analyze(&"ж".repeat(71)).segments, 2);
        assert_eq!(analyze(&"ж".repeat(134)).segments, 2);
        assert_eq!(analyze(&"ж".repeat(135)).segments, 3);
    }

    #[test]
    fn emoji_counts_two_units() {
        let info = analyze("😀");
        assert_eq!(info.encoding, Encoding::Ucs2);
        assert_eq!(info.units, 2);
    }

    #[test]
    fn gsm7_round_trip_with_extension() {
        let text = "Hello €[x] @£$ ñ";
        let septets = gsm7_encode(text).unwrap();
        assert_eq!(septets[0], b'H');
        assert_eq!(&septets[6..8], &[0x1B, 0x65]);
        assert_eq!(gsm7_decode(&septets), text);
        assert_eq!(gsm7_encode("✓"), None);
        // '@' is septet 0.
        assert_eq!(gsm7_encode("@").unwrap(), vec![0]);
        // A trailing escape is dropped, an unknown escape falls back.
        assert_eq!(gsm7_decode(&[b'a', 0x1B]), "a");
        assert_eq!(gsm7_decode(&[0x1B, b'A']), "A");
    }

    #[test]
    fn latin1_and_ucs2() {
        assert_eq!(latin1_encode("café").unwrap(), b"caf\xe9".to_vec());
        assert_eq!(latin1_decode(b"caf\xe9"), "café");
        assert_eq!(latin1_encode("€"), None);
        assert_eq!(ucs2_encode("A😀"), vec![0, 0x41, 0xD8, 0x3D, 0xDE, 0x00]);
        assert_eq!(ucs2_decode(&[0, 0x41, 0xD8, 0x3D, 0xDE, 0x00, 7]), "A😀");
        assert_eq!(choose_wire_coding("hello", true), WireCoding::Gsm7);
        assert_eq!(choose_wire_coding("hôtel", true), WireCoding::Latin1);
        assert_eq!(choose_wire_coding("hôtel", false), WireCoding::Ucs2);
        assert_eq!(choose_wire_coding("привет", true), WireCoding::Ucs2);
    }

    #[test]
    fn split_sizes_and_headers() {
        let one = split(&"a".repeat(160), WireCoding::Gsm7, SplitMode::Udh8, 7).unwrap();
        assert_eq!(one.len(), 1);
        assert!(!one[0].udhi);
        let two = split(&"a".repeat(161), WireCoding::Gsm7, SplitMode::Udh8, 0x1234).unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(&two[0].short_message[..6], &[5, 0, 3, 0x34, 2, 1]);
        assert_eq!(two[0].short_message.len(), 6 + 153);
        let u16p = split(&"a".repeat(161), WireCoding::Gsm7, SplitMode::Udh16, 0x1234).unwrap();
        assert_eq!(&u16p[1].short_message[..7], &[6, 8, 4, 0x12, 0x34, 2, 2]);
        assert_eq!(u16p[0].short_message.len(), 7 + 152);
        let sar = split(&"ж".repeat(135), WireCoding::Ucs2, SplitMode::Sar, 9).unwrap();
        assert_eq!(sar.len(), 3);
        assert!(sar.iter().all(|p| p.sar && !p.udhi));
        assert_eq!(sar[0].short_message.len(), 134);
        assert_eq!(
            sar[2].concat,
            Some(Concat {
                reference: 9,
                total: 3,
                seq: 3
            })
        );
        // Agrees with analyze() on the GSM-7 / UCS-2 part counts.
        for n in [150usize, 160, 161, 306, 307, 500] {
            let t = "e".repeat(n);
            assert_eq!(
                split(&t, WireCoding::Gsm7, SplitMode::Udh8, 1)
                    .unwrap()
                    .len(),
                analyze(&t).segments
            );
        }
    }

    proptest! {
        #[test]
        fn split_reassembles(text in "\\PC{0,700}", mode in prop_oneof![Just(SplitMode::Udh8), Just(SplitMode::Udh16), Just(SplitMode::Sar)], latin1 in any::<bool>(), reference in any::<u16>()) {
            let coding = choose_wire_coding(&text, latin1);
            let parts = split(&text, coding, mode, reference).unwrap();
            let mut back = String::new();
            for p in &parts {
                let limit = if coding == WireCoding::Gsm7 { 167 } else { 140 };
                prop_assert!(p.short_message.len() <= limit);
                let payload = if p.udhi {
                    let (concat, payload) = parse_udh(&p.short_message).unwrap();
                    prop_assert_eq!(concat, p.concat);
                    payload
                } else {
                    &p.short_message[..]
                };
                back.push_str(&coding.decode(payload));
            }
            prop_assert_eq!(back, text);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = gsm7_decode(&bytes);
            let _ = latin1_decode(&bytes);
            let _ = ucs2_decode(&bytes);
            let _ = parse_udh(&bytes);
        }
    }

    proptest! {
        #[test]
        fn segments_hold_the_text(text in "\\PC{0,600}") {
            let info = analyze(&text);
            let cap = if info.segments == 1 {
                info.encoding.single_capacity()
            } else {
                info.encoding.part_capacity()
            };
            prop_assert!(info.units <= cap * info.segments);
            prop_assert!(info.segments >= 1);
        }
    }
}
