//! Splitting text around special tokens written in it, before the tokenizer proper runs.
//!
//! Candidates are the control, unknown and user-defined tokens. User-defined tokens are always
//! recognised; control and unknown tokens only when the caller asks (`parse_special`, e.g.
//! for a chat template). Longer tokens are matched first: each candidate in turn, longest
//! first, splits every remaining text fragment at all of its (non-overlapping, leftmost-first)
//! occurrences, exactly as the reference runtime does.

use std::ops::Range;

use super::vocab::Vocab;
use super::TokenType;

/// A piece of the input: text to tokenize, or a special token found in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// Bytes of the input (at character boundaries) without special tokens.
    Text(Range<usize>),
    /// A special token written in the input.
    Token(u32),
}

/// The special tokens that can be written in text, longest first.
pub(crate) struct Specials {
    /// Token ids with their "needs parse_special" flag, by decreasing text length, then id.
    ids: Vec<(u32, bool)>,
}

impl Specials {
    /// Collects the control, unknown and user-defined tokens of the vocabulary.
    pub(crate) fn new(vocab: &Vocab, types: &[TokenType]) -> Specials {
        let mut ids: Vec<(u32, bool)> = types
            .iter()
            .enumerate()
            .filter_map(|(id, t)| {
                let id = id as u32;
                let text_ok = !vocab.text(id).is_empty();
                match t {
                    TokenType::Control | TokenType::Unknown if text_ok => Some((id, true)),
                    TokenType::UserDefined if text_ok => Some((id, false)),
                    _ => None,
                }
            })
            .collect();
        ids.sort_by_key(|&(id, _)| (std::cmp::Reverse(vocab.text(id).len()), id));
        Specials { ids }
    }

    /// Splits `text` into fragments around the special tokens written in it.
    pub(crate) fn partition(
        &self,
        vocab: &Vocab,
        text: &str,
        parse_special: bool,
    ) -> Vec<Fragment> {
        let mut fragments = vec![Fragment::Text(0..text.len())];
        if text.is_empty() {
            return Vec::new();
        }
        let present = BytePairs::of(text.as_bytes());
        let mut next = Vec::new();
        let mut occurrences = Vec::new();
        for &(id, needs_parse_special) in &self.ids {
            if needs_parse_special && !parse_special {
                continue;
            }
            let needle_bytes = vocab.text(id);
            if !present.may_contain(needle_bytes) {
                continue;
            }
            // Vocabulary strings come from `&str`s, so this never fails.
            let Ok(needle) = std::str::from_utf8(needle_bytes) else {
                continue;
            };
            // Every occurrence in the whole text, overlapping ones included, in order; then
            // each text fragment takes, left to right, the ones that fit inside it.
            occurrences.clear();
            let step = needle.chars().next().map_or(1, char::len_utf8);
            let mut from = 0;
            while let Some(p) = text[from..].find(needle) {
                occurrences.push(from + p);
                from += p + step;
            }
            if occurrences.is_empty() {
                continue;
            }
            next.clear();
            let mut found = false;
            let mut k = 0;
            for f in &fragments {
                let Fragment::Text(range) = f else {
                    next.push(f.clone());
                    continue;
                };
                while k < occurrences.len() && occurrences[k] < range.start {
                    k += 1;
                }
                let mut at = range.start;
                while k < occurrences.len() && occurrences[k] + needle.len() <= range.end {
                    let p = occurrences[k];
                    k += 1;
                    if p < at {
                        continue; // overlaps the previous match
                    }
                    found = true;
                    if p > at {
                        next.push(Fragment::Text(at..p));
                    }
                    next.push(Fragment::Token(id));
                    at = p + needle.len();
                }
                if at < range.end {
                    next.push(Fragment::Text(at..range.end));
                }
            }
            if found {
                std::mem::swap(&mut fragments, &mut next);
            }
        }
        fragments
    }
}

/// Which bytes and adjacent byte pairs occur in a text: a cheap test that rules out most
/// special tokens before searching for them.
struct BytePairs {
    bytes: [bool; 256],
    pairs: Vec<u64>,
}

impl BytePairs {
    fn of(text: &[u8]) -> BytePairs {
        let mut bytes = [false; 256];
        let mut pairs = vec![0u64; 65536 / 64];
        for &b in text {
            bytes[b as usize] = true;
        }
        for w in text.windows(2) {
            let k = (w[0] as usize) << 8 | w[1] as usize;
            pairs[k / 64] |= 1 << (k % 64);
        }
        BytePairs { bytes, pairs }
    }

    /// False if `needle` certainly does not occur in the text.
    fn may_contain(&self, needle: &[u8]) -> bool {
        if needle.len() == 1 {
            return self.bytes[needle[0] as usize];
        }
        needle.windows(2).all(|w| {
            let k = (w[0] as usize) << 8 | w[1] as usize;
            self.pairs[k / 64] & (1 << (k % 64)) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Vocab, Specials) {
        let tokens = ["a", "<s>", "<|im_start|>", "<tool>", "<|im", "</s>"];
        let types = [
            TokenType::Normal,
            TokenType::Control,
            TokenType::Control,
            TokenType::UserDefined,
            TokenType::UserDefined,
            TokenType::Control,
        ];
        let vocab = Vocab::new(&tokens);
        let specials = Specials::new(&vocab, &types);
        (vocab, specials)
    }

    #[test]
    fn control_tokens_are_matched_only_with_parse_special() {
        let (vocab, sp) = setup();
        let text = "x<s>y";
        assert_eq!(sp.partition(&vocab, text, false), [Fragment::Text(0..5)]);
        assert_eq!(
            sp.partition(&vocab, text, true),
            [
                Fragment::Text(0..1),
                Fragment::Token(1),
                Fragment::Text(4..5)
            ]
        );
    }

    #[test]
    fn user_defined_tokens_are_always_matched() {
        let (vocab, sp) = setup();
        let f = sp.partition(&vocab, "<tool><tool>z", false);
        assert_eq!(
            f,
            [
                Fragment::Token(3),
                Fragment::Token(3),
                Fragment::Text(12..13)
            ]
        );
    }

    #[test]
    fn longer_tokens_win_over_their_prefixes() {
        let (vocab, sp) = setup();
        // With parse_special, "<|im_start|>" (control, longer) beats "<|im" (user-defined).
        assert_eq!(
            sp.partition(&vocab, "<|im_start|>", true),
            [Fragment::Token(2)]
        );
        // Without it, only the user-defined prefix matches.
        assert_eq!(
            sp.partition(&vocab, "<|im_start|>", false),
            [Fragment::Token(4), Fragment::Text(4..12)]
        );
    }

    #[test]
    fn repeated_matches_do_not_overlap_and_go_leftmost_first() {
        let vocab = Vocab::new(&["aa"]);
        let sp = Specials::new(&vocab, &[TokenType::UserDefined]);
        assert_eq!(
            sp.partition(&vocab, "aaaaa", false),
            [Fragment::Token(0), Fragment::Token(0), Fragment::Text(4..5)]
        );
    }

    #[test]
    fn a_match_cannot_straddle_an_earlier_special_token() {
        let vocab = Vocab::new(&["<ab>", "b>c"]);
        let types = [TokenType::UserDefined, TokenType::UserDefined];
        let sp = Specials::new(&vocab, &types);
        // "<ab>" (longer) is taken first; "b>c" would need its "b>".
        assert_eq!(
            sp.partition(&vocab, "<ab>c", false),
            [Fragment::Token(0), Fragment::Text(4..5)]
        );
        assert_eq!(
            sp.partition(&vocab, "b>c<ab>b>c", false),
            [Fragment::Token(1), Fragment::Token(0), Fragment::Token(1)]
        );
    }

    #[test]
    fn empty_text_has_no_fragments() {
        let (vocab, sp) = setup();
        assert!(sp.partition(&vocab, "", true).is_empty());
    }
}
