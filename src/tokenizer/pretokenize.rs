//! Pre-tokenizers for byte-level BPE: the regex splits named by `tokenizer.ggml.pre`,
//! written by hand (no regex engine) to give exactly the reference runtime's pieces.
//!
//! Each rule is a regex over Unicode classes (`\p{L}`, `\p{N}`, `\p{P}`, `\s` = White_Space,
//! see [`super::unicode`]). A pre-tokenizer is a cascade of rules: each rule splits every piece
//! the previous rule produced, its matches become pieces and so do the unmatched spans between
//! them. Rules never look past the end of the piece they split (a run of white space at the
//! end of a piece is followed by "nothing", not by the next piece).
//!
//! - GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! - Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//!   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//! - Qwen2: the Llama 3 rule with single digits (`\p{N}` instead of `\p{N}{1,3}`).
//! - SmolLM: `\p{N}` (every digit alone), then GPT-2.
//! - default: `[\p{P}\$\+<=>\^~\|]+`, then GPT-2, then `\p{N}+`, then `[0-9][0-9][0-9]`.

use std::ops::Range;

use super::unicode::Class;
use super::TokenizerError;

/// The splitting rules selected by `tokenizer.ggml.pre`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `default` (and a missing key): punctuation runs, GPT-2, number runs, digit triples.
    Default,
    /// `gpt-2` / `gpt2`: the original GPT-2 rule.
    Gpt2,
    /// `llama3`, `llama-v3`, `llama-bpe`: the Llama 3 rule (digits in groups of up to 3); the
    /// BPE step also emits a whole piece directly when it is a token (`ignore_merges`).
    Llama3,
    /// `qwen2`, `deepseek-r1-qwen`: the Llama 3 rule with single digits.
    Qwen2,
    /// `smollm`: single digits, then the GPT-2 rule.
    Smollm,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value (`None` = key absent = `default`).
    pub fn from_name(name: Option<&str>) -> Result<PreTokenizer, TokenizerError> {
        Ok(match name {
            None | Some("default") => PreTokenizer::Default,
            Some("gpt2" | "gpt-2") => PreTokenizer::Gpt2,
            Some("llama3" | "llama-v3" | "llama-bpe") => PreTokenizer::Llama3,
            Some("qwen2" | "deepseek-r1-qwen") => PreTokenizer::Qwen2,
            Some("smollm") => PreTokenizer::Smollm,
            Some(other) => {
                return Err(TokenizerError::UnsupportedPreTokenizer {
                    pre: other.to_owned(),
                })
            }
        })
    }

    /// Whether the BPE step emits a piece that is itself a token without merging it.
    pub(crate) fn ignore_merges(self) -> bool {
        self == PreTokenizer::Llama3
    }

    /// Splits `text` into pieces, returned as byte ranges of `text` that cover it in order.
    pub fn split(self, text: &str) -> Vec<Range<usize>> {
        let t = Chars::new(text);
        let mut pieces = vec![t.len()];
        let rules: &[Rule] = match self {
            PreTokenizer::Default => &[
                Rule::PunctuationRuns,
                Rule::Gpt2,
                Rule::NumberRuns,
                Rule::AsciiDigitTriples,
            ],
            PreTokenizer::Gpt2 => &[Rule::Gpt2],
            PreTokenizer::Llama3 => &[Rule::Llama3 { max_digits: 3 }],
            PreTokenizer::Qwen2 => &[Rule::Llama3 { max_digits: 1 }],
            PreTokenizer::Smollm => &[Rule::SingleNumbers, Rule::Gpt2],
        };
        for &rule in rules {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            let mut start = 0;
            for &len in &pieces {
                let mut seg = Segment {
                    t: &t,
                    ini: start,
                    end: start + len,
                    prev_end: start,
                };
                match rule {
                    Rule::Gpt2 => seg.gpt2(&mut next),
                    Rule::Llama3 { max_digits } => seg.llama3(max_digits, &mut next),
                    Rule::SingleNumbers => {
                        seg.runs(&mut next, |s, p| s.cls(p).is_number() as usize)
                    }
                    Rule::NumberRuns => seg.runs(&mut next, |s, p| s.run(p, |c, _| c.is_number())),
                    Rule::PunctuationRuns => seg.runs(&mut next, |s, p| s.run(p, is_default_punct)),
                    Rule::AsciiDigitTriples => seg.runs(&mut next, |s, p| {
                        let digit = |q| s.cpt(q).is_some_and(|c: char| c.is_ascii_digit());
                        if digit(p) && digit(p + 1) && digit(p + 2) {
                            3
                        } else {
                            0
                        }
                    }),
                }
                start += len;
            }
            pieces = next;
        }
        let mut out = Vec::with_capacity(pieces.len());
        let mut start = 0;
        for len in pieces {
            out.push(t.offsets[start]..t.offsets[start + len]);
            start += len;
        }
        out
    }
}

/// One regex of a cascade.
#[derive(Clone, Copy)]
enum Rule {
    Gpt2,
    Llama3 { max_digits: usize },
    SingleNumbers,
    NumberRuns,
    PunctuationRuns,
    AsciiDigitTriples,
}

/// `[\p{P}\$\+<=>\^~\|]`.
fn is_default_punct(c: Class, ch: char) -> bool {
    c.is_punctuation() || matches!(ch, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
}

/// The text as code points with their classes and byte offsets.
struct Chars {
    chars: Vec<char>,
    classes: Vec<Class>,
    /// Byte offset of every code point, plus the text length at the end.
    offsets: Vec<usize>,
}

impl Chars {
    fn new(text: &str) -> Chars {
        let n = text.len();
        let mut chars = Vec::with_capacity(n);
        let mut classes = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n + 1);
        for (i, c) in text.char_indices() {
            chars.push(c);
            classes.push(Class::of(c));
            offsets.push(i);
        }
        offsets.push(n);
        Chars {
            chars,
            classes,
            offsets,
        }
    }

    fn len(&self) -> usize {
        self.chars.len()
    }
}

/// One piece being split by one rule: code points `ini..end`, pieces emitted up to `prev_end`.
struct Segment<'a> {
    t: &'a Chars,
    ini: usize,
    end: usize,
    prev_end: usize,
}

impl Segment<'_> {
    /// The code point at `pos`, or `None` outside the segment.
    #[inline]
    fn cpt(&self, pos: usize) -> Option<char> {
        (self.ini <= pos && pos < self.end).then(|| self.t.chars[pos])
    }

    /// The class at `pos`, or [`Class::END`] outside the segment.
    #[inline]
    fn cls(&self, pos: usize) -> Class {
        if self.ini <= pos && pos < self.end {
            self.t.classes[pos]
        } else {
            Class::END
        }
    }

    /// Length of the run of code points from `pos` satisfying `pred`.
    fn run(&self, pos: usize, pred: impl Fn(Class, char) -> bool) -> usize {
        let mut p = pos;
        while p < self.end && pred(self.t.classes[p], self.t.chars[p]) {
            p += 1;
        }
        p - pos
    }

    /// Emits the piece `prev_end..end` if non-empty.
    #[inline]
    fn emit(&mut self, end: usize, out: &mut Vec<usize>) {
        if end > self.prev_end {
            out.push(end - self.prev_end);
        }
        self.prev_end = end;
    }

    /// A rule without alternatives: at each position, `match_len` gives the length of the match
    /// starting there (0 = none); matches are pieces, and so are the spans between them.
    fn runs(&mut self, out: &mut Vec<usize>, match_len: impl Fn(&Self, usize) -> usize) {
        let mut pos = self.ini;
        while pos < self.end {
            let len = match_len(&*self, pos);
            if len > 0 {
                self.emit(pos, out);
                self.emit(pos + len, out);
                pos += len;
            } else {
                pos += 1;
            }
        }
        self.emit(self.end, out);
    }

    /// Matches `'s|'t|'re|'ve|'m|'ll|'d` at `pos` (ASCII case-insensitively if `fold`);
    /// returns the match length.
    fn contraction(&self, pos: usize, fold: bool) -> usize {
        if self.cpt(pos) != Some('\'') || pos + 1 >= self.end {
            return 0;
        }
        let lower = |c: char| if fold { c.to_ascii_lowercase() } else { c };
        let next = lower(self.t.chars[pos + 1]);
        if matches!(next, 's' | 't' | 'm' | 'd') {
            return 2;
        }
        if pos + 2 < self.end {
            let next2 = lower(self.t.chars[pos + 2]);
            if matches!((next, next2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                return 3;
            }
        }
        0
    }

    /// Number of white-space code points from `pos`.
    fn whitespace_run(&self, pos: usize) -> usize {
        self.run(pos, |c, _| c.is_whitespace())
    }

    /// The GPT-2 rule.
    fn gpt2(&mut self, out: &mut Vec<usize>) {
        let mut pos = self.ini;
        while pos < self.end {
            let c = self.t.chars[pos];
            let class = self.t.classes[pos];

            // 's|'t|'re|'ve|'m|'ll|'d
            let n = self.contraction(pos, false);
            if n > 0 {
                pos += n;
                self.emit(pos, out);
                continue;
            }

            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the class of the code point after
            // an optional leading space decides which; the run continues while it holds.
            let space = c == ' ';
            let first = if space { self.cls(pos + 1) } else { class };
            let same: Option<fn(Class) -> bool> = if first.is_letter() {
                Some(Class::is_letter)
            } else if first.is_number() {
                Some(Class::is_number)
            } else if first.exists() && !first.is_whitespace() {
                Some(|c: Class| {
                    c.exists() && !(c.is_whitespace() || c.is_letter() || c.is_number())
                })
            } else {
                None
            };
            if let Some(same) = same {
                pos += space as usize;
                while same(self.cls(pos)) {
                    pos += 1;
                }
                self.emit(pos, out);
                continue;
            }

            // `\s+(?!\S)`: a white-space run followed by a non-space gives up its last code
            // point; `\s+`: otherwise the whole run.
            let n = self.whitespace_run(pos);
            if n > 1 && pos + n < self.end {
                pos += n - 1;
                self.emit(pos, out);
                continue;
            }
            if n > 0 {
                pos += n;
                self.emit(pos, out);
                continue;
            }

            pos += 1;
            self.emit(pos, out);
        }
        self.emit(self.end, out);
    }

    /// The Llama 3 rule, with digit groups of up to `max_digits` (3 for Llama 3, 1 for Qwen2).
    fn llama3(&mut self, max_digits: usize, out: &mut Vec<usize>) {
        let mut pos = self.ini;
        while pos < self.end {
            let c = self.t.chars[pos];
            let class = self.t.classes[pos];

            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            let n = self.contraction(pos, true);
            if n > 0 {
                pos += n;
                self.emit(pos, out);
                continue;
            }

            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(c == '\r' || c == '\n' || class.is_number())
                && (class.is_letter() || self.cls(pos + 1).is_letter())
            {
                pos += 1;
                while self.cls(pos).is_letter() {
                    pos += 1;
                }
                self.emit(pos, out);
                continue;
            }

            // \p{N}{1,max_digits}
            if class.is_number() {
                let mut group_start = pos;
                while self.cls(pos).is_number() {
                    pos += 1;
                    if pos - group_start >= max_digits {
                        self.emit(pos, out);
                        group_start = pos;
                    }
                }
                self.emit(pos, out);
                continue;
            }

            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let is_other = |k: Class| !(k.is_whitespace() || k.is_letter() || k.is_number());
            let mut next = if c == ' ' { self.cls(pos + 1) } else { class };
            if is_other(next) {
                pos += (c == ' ') as usize;
                while is_other(next) && next.exists() {
                    pos += 1;
                    next = self.cls(pos);
                }
                while matches!(self.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                self.emit(pos, out);
                continue;
            }

            // `\s*[\r\n]+`: up to the last line break of the white-space run.
            let n = self.whitespace_run(pos);
            if let Some(k) = (0..n)
                .rev()
                .find(|&k| matches!(self.t.chars[pos + k], '\r' | '\n'))
            {
                pos += k + 1;
                self.emit(pos, out);
                continue;
            }

            // `\s+(?!\S)`, then `\s+`.
            if n > 1 && pos + n < self.end {
                pos += n - 1;
                self.emit(pos, out);
                continue;
            }
            if n > 0 {
                pos += n;
                self.emit(pos, out);
                continue;
            }

            pos += 1;
            self.emit(pos, out);
        }
        self.emit(self.end, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pre: PreTokenizer, text: &str) -> Vec<&str> {
        pre.split(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn unknown_pre_tokenizer_is_an_error_naming_it() {
        let err = PreTokenizer::from_name(Some("tekken")).unwrap_err();
        assert!(err.to_string().contains("'tekken'"), "{err}");
    }

    #[test]
    fn gpt2_keeps_one_leading_space_with_words_and_splits_contractions() {
        let p = split(PreTokenizer::Gpt2, "I'm sure they'll  go");
        assert_eq!(p, ["I", "'m", " sure", " they", "'ll", " ", " go"]);
    }

    #[test]
    fn gpt2_trailing_white_space_stays_in_one_piece() {
        assert_eq!(split(PreTokenizer::Gpt2, "a   "), ["a", "   "]);
        assert_eq!(split(PreTokenizer::Gpt2, "a\n\nb"), ["a", "\n", "\n", "b"]);
    }

    #[test]
    fn smollm_splits_every_digit() {
        let p = split(PreTokenizer::Smollm, "year 2025!");
        assert_eq!(p, ["year", " ", "2", "0", "2", "5", "!"]);
    }

    #[test]
    fn llama3_groups_digits_by_three_and_folds_contraction_case() {
        let p = split(PreTokenizer::Llama3, "1234567 IT'S");
        assert_eq!(p, ["123", "456", "7", " IT", "'S"]);
    }

    #[test]
    fn qwen2_splits_digits_singly() {
        assert_eq!(split(PreTokenizer::Qwen2, "x=42"), ["x", "=", "4", "2"]);
    }

    #[test]
    fn llama3_line_breaks_end_white_space_runs() {
        let p = split(PreTokenizer::Llama3, "a  \n\n  b.\n\nc");
        assert_eq!(p, ["a", "  \n\n", " ", " b", ".\n\n", "c"]);
    }

    #[test]
    fn llama3_attaches_one_non_letter_before_a_word() {
        assert_eq!(
            split(PreTokenizer::Llama3, "(hello)\tworld"),
            ["(hello", ")", "\tworld"]
        );
    }

    #[test]
    fn default_isolates_punctuation_runs_then_digit_triples() {
        let p = split(PreTokenizer::Default, "a+b=12345!?");
        assert_eq!(p, ["a", "+", "b", "=", "123", "45", "!?"]);
    }

    #[test]
    fn non_ascii_white_space_counts_as_space() {
        // U+3000 IDEOGRAPHIC SPACE is White_Space: no letter run absorbs it under GPT-2.
        assert_eq!(
            split(PreTokenizer::Gpt2, "a\u{3000}b"),
            ["a", "\u{3000}", "b"]
        );
    }

    #[test]
    fn pieces_cover_the_text_in_order() {
        let text = "Hello, 世界! 123 -- ok?\r\n  \t x's";
        for pre in [
            PreTokenizer::Default,
            PreTokenizer::Gpt2,
            PreTokenizer::Llama3,
            PreTokenizer::Qwen2,
            PreTokenizer::Smollm,
        ] {
            let ranges = pre.split(text);
            let mut at = 0;
            for r in &ranges {
                assert_eq!(r.start, at);
                assert!(r.end > r.start);
                at = r.end;
            }
            assert_eq!(at, text.len(), "{pre:?}");
        }
    }
}
