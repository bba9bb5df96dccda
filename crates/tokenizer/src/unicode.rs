//! Code point classes and UTF-8 handling exactly as llama.cpp's unicode.cpp.
//!
//! llama.cpp decodes text with its own rules (an invalid byte becomes one
//! U+FFFD and decoding resumes at the next byte; overlong forms and
//! surrogates are accepted), and the pre-tokenizers see those code points,
//! so we reproduce the rules rather than use `String::from_utf8_lossy`.

use crate::unicode_table::{RANGE_FLAGS, RANGE_STARTS, WHITESPACE};
use std::sync::OnceLock;

pub(crate) const NUMBER: u16 = 0x0002;
pub(crate) const LETTER: u16 = 0x0004;
/// The category bits (`\p{N}`, `\p{L}`, `\p{Z}`, `\p{M}`, `\p{P}`, `\p{S}`,
/// `\p{C}` and "undefined"); at most one is set.
pub(crate) const MASK_CATEGORIES: u16 = 0x00FF;
pub(crate) const WHITESPACE_BIT: u16 = 0x0100;

const MAX_CODEPOINTS: usize = 0x110000;
const UNDEFINED: u16 = 0x0001;

/// Flags of every code point, built once (2.2 MB, as llama.cpp does): the
/// pre-tokenizers look up every code point of the input, so a table beats a
/// binary search over the ranges.
fn table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![UNDEFINED; MAX_CODEPOINTS];
        for i in 1..RANGE_STARTS.len() {
            let (lo, hi) = (RANGE_STARTS[i - 1] as usize, RANGE_STARTS[i] as usize);
            t[lo..hi.min(MAX_CODEPOINTS)].fill(RANGE_FLAGS[i - 1] as u16);
        }
        for &c in WHITESPACE.iter() {
            t[c as usize] |= WHITESPACE_BIT;
        }
        t
    })
}

/// llama.cpp's `unicode_cpt_flags_from_cpt`: never zero for a code point;
/// callers use 0 for "past the end of the segment".
#[inline]
pub(crate) fn flags(cpt: u32) -> u16 {
    table().get(cpt as usize).copied().unwrap_or(UNDEFINED)
}

/// Byte length of a UTF-8 sequence judged by its first byte alone
/// (llama.cpp's `unicode_len_utf8`; continuation bytes count as 1).
#[inline]
pub(crate) fn len_utf8(first: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(first >> 4) as usize]
}

/// Decodes bytes to code points with llama.cpp's rules.
pub(crate) fn decode_cpts(bytes: &[u8], out: &mut Vec<u32>) {
    out.clear();
    out.reserve(bytes.len());
    if let Ok(s) = std::str::from_utf8(bytes) {
        // Valid UTF-8 decodes the same under both rules.
        out.extend(s.chars().map(|c| c as u32));
        return;
    }
    let mut i = 0;
    while i < bytes.len() {
        match decode_one(&bytes[i..]) {
            Some((cpt, n)) => {
                out.push(cpt);
                i += n;
            }
            None => {
                out.push(0xFFFD);
                i += 1;
            }
        }
    }
}

fn decode_one(b: &[u8]) -> Option<(u32, usize)> {
    let cont = |i: usize| b.get(i).is_some_and(|&c| c & 0xC0 == 0x80);
    let c0 = b[0] as u32;
    if c0 & 0x80 == 0 {
        return Some((c0, 1));
    }
    if c0 & 0x40 == 0 {
        return None;
    }
    if c0 & 0x20 == 0 {
        return cont(1).then(|| (((c0 & 0x1F) << 6) | (b[1] as u32 & 0x3F), 2));
    }
    if c0 & 0x10 == 0 {
        return (cont(1) && cont(2)).then(|| {
            let v = ((c0 & 0x0F) << 12) | ((b[1] as u32 & 0x3F) << 6) | (b[2] as u32 & 0x3F);
            (v, 3)
        });
    }
    if c0 & 0x08 == 0 {
        let ok = cont(1) && cont(2) && cont(3);
        return ok.then(|| {
            let v = ((c0 & 0x07) << 18)
                | ((b[1] as u32 & 0x3F) << 12)
                | ((b[2] as u32 & 0x3F) << 6)
                | (b[3] as u32 & 0x3F);
            // llama.cpp would throw re-encoding a value past U+10FFFF; we
            // treat it as the invalid sequence it is.
            if v > 0x10FFFF {
                (0xFFFD, 4)
            } else {
                (v, 4)
            }
        });
    }
    None
}

/// Appends the UTF-8 encoding of `cpt` (surrogates included, as llama.cpp).
#[inline]
pub(crate) fn push_utf8(cpt: u32, out: &mut Vec<u8>) {
    if cpt < 0x80 {
        out.push(cpt as u8);
    } else if cpt < 0x800 {
        out.extend_from_slice(&[0xC0 | (cpt >> 6) as u8, 0x80 | (cpt & 0x3F) as u8]);
    } else if cpt < 0x10000 {
        out.extend_from_slice(&[
            0xE0 | (cpt >> 12) as u8,
            0x80 | ((cpt >> 6) & 0x3F) as u8,
            0x80 | (cpt & 0x3F) as u8,
        ]);
    } else {
        out.extend_from_slice(&[
            0xF0 | ((cpt >> 18) & 0x07) as u8,
            0x80 | ((cpt >> 12) & 0x3F) as u8,
            0x80 | ((cpt >> 6) & 0x3F) as u8,
            0x80 | (cpt & 0x3F) as u8,
        ]);
    }
}

/// GPT-2's reversible byte-to-character map: printable Latin-1 bytes map to
/// themselves, the other 68 bytes to U+0100.. in byte order.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut map = ['\0'; 256];
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut n = 0;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            n += 1;
            255 + n
        };
        map[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_ne!(flags('a' as u32) & LETTER, 0);
        assert_ne!(flags('я' as u32) & LETTER, 0);
        assert_ne!(flags('7' as u32) & NUMBER, 0);
        assert_ne!(flags('½' as u32) & NUMBER, 0);
        assert_ne!(flags(' ' as u32) & WHITESPACE_BIT, 0);
        assert_ne!(flags(0x3000) & WHITESPACE_BIT, 0);
        assert_eq!(flags('!' as u32) & (LETTER | NUMBER | WHITESPACE_BIT), 0);
        assert_ne!(flags(0x10FFFF), 0);
    }

    #[test]
    fn decode_like_llama_cpp() {
        let mut v = Vec::new();
        decode_cpts(b"a\xE2\x82b", &mut v);
        assert_eq!(v, [0x61, 0xFFFD, 0xFFFD, 0x62]);
        decode_cpts(b"\xFF", &mut v);
        assert_eq!(v, [0xFFFD]);
    }

    #[test]
    fn byte_map() {
        let m = byte_to_char_table();
        assert_eq!(m[b'!' as usize], '!');
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[0xAD], '\u{143}');
    }
}
