//! Code point classes for the pre-tokenizers: Unicode letter (`\p{L}`), number (`\p{N}`) and
//! punctuation (`\p{P}`) general categories and the `White_Space` property, which is what the
//! reference runtime's `\s` means (it includes U+0085 and U+00A0, unlike C++'s `isspace`).
//!
//! Rust's `char::is_alphabetic` is not `\p{L}` (it includes marks and `Nl`), so the classes come
//! from a table generated from the Unicode Character Database (`unicode_table.rs`).

use super::unicode_table::{ASCII, RANGES};

/// The class of one code point (or of the position past the end of a piece, [`Class::END`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Class(u8);

impl Class {
    /// The class of "no code point": past the end of the piece being split. It is not a
    /// letter, number, punctuation or white space, and [`Class::exists`] is false.
    pub(crate) const END: Class = Class(0x80);

    /// The class of `c`.
    #[inline]
    pub(crate) fn of(c: char) -> Class {
        let cp = c as u32;
        if cp < 128 {
            return Class(ASCII[cp as usize]);
        }
        // The last range whose start is <= cp (RANGES[0] starts at 0, so one always exists).
        let i = RANGES.partition_point(|&r| (r >> 3) <= cp);
        Class((RANGES[i - 1] & 7) as u8)
    }

    /// `\p{L}`: general category Lu, Ll, Lt, Lm or Lo.
    #[inline]
    pub(crate) fn is_letter(self) -> bool {
        self.0 & 3 == 1
    }

    /// `\p{N}`: general category Nd, Nl or No.
    #[inline]
    pub(crate) fn is_number(self) -> bool {
        self.0 & 3 == 2
    }

    /// `\p{P}`: general category Pc, Pd, Ps, Pe, Pi, Pf or Po.
    #[inline]
    pub(crate) fn is_punctuation(self) -> bool {
        self.0 & 3 == 3
    }

    /// `\s`: the `White_Space` property.
    #[inline]
    pub(crate) fn is_whitespace(self) -> bool {
        self.0 & 4 != 0
    }

    /// False only for [`Class::END`].
    #[inline]
    pub(crate) fn exists(self) -> bool {
        self.0 != 0x80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_letters_digits_and_punctuation_are_classified() {
        assert!(Class::of('a').is_letter() && Class::of('Z').is_letter());
        assert!(Class::of('7').is_number());
        assert!(Class::of('!').is_punctuation() && Class::of('_').is_punctuation());
        // `$ + < = > ^ ` | ~` are symbols (S*), not punctuation.
        for c in ['$', '+', '<', '=', '>', '^', '`', '|', '~'] {
            assert!(!Class::of(c).is_punctuation(), "{c:?}");
        }
    }

    #[test]
    fn letter_class_excludes_marks_and_letter_numbers() {
        // U+093E DEVANAGARI VOWEL SIGN AA is Mc: alphabetic in Rust, but not \p{L}.
        assert!(char::is_alphabetic('\u{93e}'));
        assert!(!Class::of('\u{93e}').is_letter());
        assert!(!Class::of('\u{301}').is_letter());
        // U+2160 ROMAN NUMERAL ONE is Nl: \p{N}, not \p{L}.
        assert!(Class::of('\u{2160}').is_number());
        assert!(!Class::of('\u{2160}').is_letter());
        assert!(Class::of('中').is_letter() && Class::of('é').is_letter());
    }

    #[test]
    fn number_class_agrees_with_char_is_numeric_in_the_bmp() {
        // The table is Unicode 15.1; std may be newer, but added no numbers in the BMP since.
        for cp in 0..0x1_0000u32 {
            if let Some(c) = char::from_u32(cp) {
                assert_eq!(Class::of(c).is_number(), c.is_numeric(), "U+{cp:04X}");
            }
        }
    }

    #[test]
    fn white_space_is_the_unicode_property() {
        for c in [
            '\t', '\n', '\u{b}', '\u{c}', '\r', ' ', '\u{85}', '\u{a0}', '\u{3000}',
        ] {
            assert!(Class::of(c).is_whitespace(), "{c:?}");
        }
        // U+200B ZERO WIDTH SPACE and U+001C (Python's isspace) are not White_Space.
        assert!(!Class::of('\u{200b}').is_whitespace());
        assert!(!Class::of('\u{1c}').is_whitespace());
    }

    #[test]
    fn end_marker_has_no_class() {
        let e = Class::END;
        assert!(!e.exists() && !e.is_letter() && !e.is_number() && !e.is_whitespace());
        assert!(Class::of('\u{10ffff}').exists());
    }
}
