//! The part of `ftfy.fix_text` (ftfy 6, default settings) that CLIP's tokenizer depends on for real
//! captions: HTML entities, terminal escapes, C1 controls, mojibake of UTF-8 read as Windows-1252,
//! ligatures, full-width characters, curly quotes, line breaks, control characters, NFC.
//! ftfy's full "badness" heuristics are not reproduced; the mojibake repair here only undoes text
//! that is entirely a Windows-1252 reading of valid UTF-8 (the common case).
use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// Windows-1252 bytes 0x80..=0x9F (undefined ones map to the C1 control of the same value, as
/// ftfy's "sloppy" codec does).
const CP1252_HIGH: [char; 32] = [
    '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
];

fn cp1252_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 0x80 || (0xA0..=0xFF).contains(&u) {
        return Some(u as u8);
    }
    CP1252_HIGH
        .iter()
        .position(|&x| x == c)
        .map(|i| 0x80 + i as u8)
}

/// Undo UTF-8 that was decoded as Windows-1252 ("cafÃ©" -> "café"): only when every character has
/// a Windows-1252 byte, the bytes are valid UTF-8, and that changes something non-ASCII.
fn fix_mojibake(text: &str) -> Option<String> {
    if text.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = text.chars().map(cp1252_byte).collect();
    let fixed = String::from_utf8(bytes?).ok()?;
    (fixed != text && fixed.chars().count() < text.chars().count()).then_some(fixed)
}

fn c1_to_cp1252(c: char) -> char {
    let u = c as u32;
    if (0x80..=0x9F).contains(&u) {
        CP1252_HIGH[(u - 0x80) as usize]
    } else {
        c
    }
}

fn ligature(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{fb00}' => "ff",
        '\u{fb01}' => "fi",
        '\u{fb02}' => "fl",
        '\u{fb03}' => "ffi",
        '\u{fb04}' => "ffl",
        '\u{fb05}' => "ſt",
        '\u{fb06}' => "st",
        '\u{132}' => "IJ",
        '\u{133}' => "ij",
        '\u{13f}' => "L·",
        '\u{140}' => "l·",
        '\u{149}' => "ʼn",
        '\u{1c4}' => "DŽ",
        '\u{1c5}' => "Dž",
        '\u{1c6}' => "dž",
        '\u{1c7}' => "LJ",
        '\u{1c8}' => "Lj",
        '\u{1c9}' => "lj",
        '\u{1ca}' => "NJ",
        '\u{1cb}' => "Nj",
        '\u{1cc}' => "nj",
        '\u{1f1}' => "DZ",
        '\u{1f2}' => "Dz",
        '\u{1f3}' => "dz",
        _ => return None,
    })
}

/// ftfy's `CONTROL_CHARS`: removed outright.
fn is_removed_control(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
}

fn terminal_escapes() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\x1b\[((?:\d|;)*)([a-zA-Z])").expect("valid regex"))
}

pub fn fix_text(text: &str) -> String {
    // unescape_html="auto": text with '<' is taken for HTML and left alone.
    let mut s = if text.contains('<') {
        text.to_string()
    } else {
        htmlize::unescape(text).into_owned()
    };
    s = terminal_escapes().replace_all(&s, "").into_owned();
    if let Some(fixed) = fix_mojibake(&s) {
        s = fixed;
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let c = c1_to_cp1252(c);
        if let Some(l) = ligature(c) {
            out.push_str(l);
            continue;
        }
        let u = c as u32;
        if u == 0x3000 {
            out.push(' ');
            continue;
        }
        if (0xFF01..0xFFF0).contains(&u) {
            out.extend(std::iter::once(c).nfkc());
            continue;
        }
        match c {
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => out.push('\''),
            '\u{201c}'..='\u{201f}' => out.push('"'),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '\u{2028}' | '\u{2029}' | '\u{85}' => out.push('\n'),
            c if is_removed_control(c) => {}
            c => out.push(c),
        }
    }
    out.nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_repairs() {
        assert_eq!(fix_text("cafÃ©"), "café");
        assert_eq!(
            fix_text("\u{201c}quoted\u{201d} it\u{2019}s"),
            "\"quoted\" it's"
        );
        assert_eq!(fix_text("\u{fb01}ne"), "fine");
        assert_eq!(fix_text("ＡＢＣ１"), "ABC1");
        assert_eq!(fix_text("a &amp; b"), "a & b");
        assert_eq!(fix_text("<b>&amp;</b>"), "<b>&amp;</b>");
        assert_eq!(fix_text("x\u{feff}y\r\nz"), "xy\nz");
        assert_eq!(fix_text("plain text"), "plain text");
    }
}
