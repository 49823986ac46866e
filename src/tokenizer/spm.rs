//! SentencePiece-style BPE with scores (`tokenizer.ggml.model = llama`).
//!
//! The fragment (spaces already written as `▁`, U+2581) starts as one symbol per UTF-8
//! character. Repeatedly, the adjacent pair whose concatenation is a token with the highest
//! score is merged (leftmost first among equal scores), until no adjacent pair concatenates to
//! a token. Each remaining symbol is a token, or else is written byte by byte as `<0xXX>` byte
//! tokens (byte fallback); a byte without a byte token uses a single-character token if there
//! is one, else the unknown token.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;
use super::TokenizerError;

/// "No index" in the symbol list.
const NONE: u32 = u32::MAX;

/// A SentencePiece-style model: token scores and the byte-fallback table.
pub(crate) struct Spm {
    scores: Vec<f32>,
    /// The token for each byte, if the vocabulary can represent it on its own.
    byte_tokens: [Option<u32>; 256],
    unknown: Option<u32>,
}

/// A symbol during merging: bytes `start..start + len` of the fragment.
#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// A candidate merge: symbols `left` and `right`, whose concatenation (`size` bytes) is a token
/// with `score`.
struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bigram {
    /// Higher score first, then the leftmost pair (the queue is a max-heap).
    fn cmp(&self, other: &Self) -> Ordering {
        let by_score = if self.score < other.score {
            Ordering::Less
        } else if self.score > other.score {
            Ordering::Greater
        } else {
            Ordering::Equal
        };
        by_score.then(other.left.cmp(&self.left))
    }
}

impl Spm {
    /// Builds the model; `scores` has one entry per token (missing scores are 0).
    pub(crate) fn new(vocab: &Vocab, scores: Vec<f32>, unknown: Option<u32>) -> Spm {
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            let name = format!("<0x{b:02X}>");
            *slot = vocab.token(name.as_bytes()).or_else(|| {
                // A single byte is a one-character string only if it is ASCII.
                (b < 128).then(|| vocab.token(&[b as u8])).flatten()
            });
        }
        Spm {
            scores,
            byte_tokens,
            unknown,
        }
    }

    /// Appends the tokens of `text` (one fragment, spaces already written as `▁`) to `out`.
    pub(crate) fn encode(
        &self,
        vocab: &Vocab,
        text: &[u8],
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
        let mut offset = 0usize;
        while offset < text.len() {
            let len = utf8_len(text[offset]).min(text.len() - offset);
            let index = syms.len() as u32;
            syms.push(Symbol {
                start: offset as u32,
                len: len as u32,
                prev: index.wrapping_sub(1),
                next: if offset + len == text.len() {
                    NONE
                } else {
                    index + 1
                },
            });
            offset += len;
        }

        let mut heap = BinaryHeap::with_capacity(syms.len());
        for i in 1..syms.len() as u32 {
            self.push_pair(vocab, text, &syms, &mut heap, i - 1, i);
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (syms[b.left as usize], syms[b.right as usize]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue; // one side has changed since this pair was queued
            }
            syms[b.left as usize].len = b.size;
            syms[b.left as usize].next = r.next;
            syms[b.right as usize].len = 0;
            if r.next != NONE {
                syms[r.next as usize].prev = b.left;
            }
            if l.prev != NONE {
                self.push_pair(vocab, text, &syms, &mut heap, l.prev, b.left);
            }
            if r.next != NONE {
                self.push_pair(vocab, text, &syms, &mut heap, b.left, r.next);
            }
        }

        for s in syms.iter().filter(|s| s.len > 0) {
            let bytes = &text[s.start as usize..(s.start + s.len) as usize];
            if let Some(id) = vocab.token(bytes) {
                out.push(id);
                continue;
            }
            for &byte in bytes {
                match self.byte_tokens[byte as usize].or(self.unknown) {
                    Some(id) => out.push(id),
                    None => return Err(TokenizerError::NoByteFallback { byte }),
                }
            }
        }
        Ok(())
    }

    /// Queues the merge of adjacent symbols `left` and `right` if their text is a token.
    fn push_pair(
        &self,
        vocab: &Vocab,
        text: &[u8],
        syms: &[Symbol],
        heap: &mut BinaryHeap<Bigram>,
        left: u32,
        right: u32,
    ) {
        let (l, r) = (&syms[left as usize], &syms[right as usize]);
        let size = l.len + r.len;
        let joined = &text[l.start as usize..(l.start + size) as usize];
        if let Some(id) = vocab.token(joined) {
            let score = self.scores.get(id as usize).copied().unwrap_or(0.0);
            heap.push(Bigram {
                score,
                left,
                right,
                size,
            });
        }
    }
}

/// Length of the UTF-8 sequence that starts with byte `b` (1 for a stray continuation byte).
fn utf8_len(b: u8) -> usize {
    match b {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(tokens: &[&str], scores: &[f32], text: &str) -> Result<Vec<u32>, TokenizerError> {
        let vocab = Vocab::new(tokens);
        let spm = Spm::new(&vocab, scores.to_vec(), None);
        let mut out = Vec::new();
        spm.encode(&vocab, text.as_bytes(), &mut out)?;
        Ok(out)
    }

    #[test]
    fn highest_score_merges_first() {
        // "abc": "bc" scores higher than "ab", so the result is a + bc.
        let ids = encode(
            &["a", "b", "c", "ab", "bc"],
            &[0.0, 0.0, 0.0, -2.0, -1.0],
            "abc",
        );
        assert_eq!(ids.unwrap(), [0, 4]);
    }

    #[test]
    fn equal_scores_merge_leftmost_first() {
        let ids = encode(&["a", "aa"], &[0.0, -1.0], "aaa");
        assert_eq!(ids.unwrap(), [1, 0]);
    }

    #[test]
    fn characters_outside_the_vocabulary_fall_back_to_byte_tokens() {
        let mut tokens: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        tokens.push("▁".into());
        let refs: Vec<&str> = tokens.iter().map(|s| s.as_str()).collect();
        let ids = encode(&refs, &[0.0; 257], "▁é").unwrap();
        // é is C3 A9 in UTF-8.
        assert_eq!(ids, [256, 0xc3, 0xa9]);
    }

    #[test]
    fn byte_without_fallback_or_unknown_is_an_error() {
        let err = encode(&["a"], &[0.0], "ab").unwrap_err();
        assert!(
            matches!(err, TokenizerError::NoByteFallback { byte: b'b' }),
            "{err}"
        );
    }
}
