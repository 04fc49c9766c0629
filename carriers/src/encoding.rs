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
