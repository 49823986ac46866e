//! Byte-level BPE (`tokenizer.ggml.model = gpt2`).
//!
//! Every byte of the text is first written as one printable code point (the GPT-2
//! byte-to-unicode table: bytes 33-126, 161-172 and 174-255 stand for themselves, the other 68
//! bytes, in increasing order, for U+0100, U+0101, ...), so the vocabulary and the merges are
//! strings of those code points. A pre-tokenized piece starts as one symbol per byte; then the
//! adjacent pair with the lowest merge rank (its index in `tokenizer.ggml.merges`) is merged,
//! leftmost first among equal ranks, until no adjacent pair has a merge. Symbols that are
//! tokens are emitted; a symbol that is not a token (its merge result is missing from the
//! vocabulary) is emitted as the single-character tokens of its printable ASCII bytes, and its
//! other bytes are dropped, as the reference runtime does.
//!
//! Merges are kept in a hash map keyed by the pair of symbol ids (every merge part and result
//! is interned in the [`Vocab`]), so encoding compares no strings.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::pretokenize::PreTokenizer;
use super::vocab::Vocab;

/// "No symbol id": the byte-level character of a byte that is neither a token nor a merge part.
const NONE: u32 = u32::MAX;

/// The printable code point that stands for byte `b` in byte-level BPE vocabularies.
pub(crate) fn byte_to_char(b: u8) -> char {
    let cp = match b {
        0..=32 => 256 + b as u32,
        127..=160 => 289 + (b as u32 - 127),
        173 => 323,
        _ => b as u32,
    };
    // All values are below 324, valid scalar values.
    char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The byte that code point `c` stands for in byte-level BPE, if it stands for one.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    match c as u32 {
        cp @ (33..=126 | 161..=172 | 174..=255) => Some(cp as u8),
        cp @ 256..=288 => Some((cp - 256) as u8),
        cp @ 289..=322 => Some((cp - 289 + 127) as u8),
        323 => Some(173),
        _ => None,
    }
}

/// Hasher for the merge map's `u64` keys (a pair of `u32` ids): one multiply, no SipHash.
#[derive(Default)]
pub(crate) struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        let h = (self.0 ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// One merge rule: its rank and the id of the merged string.
#[derive(Clone, Copy)]
struct Merge {
    rank: u32,
    result: u32,
}

#[inline]
fn pair_key(left: u32, right: u32) -> u64 {
    (left as u64) << 32 | right as u64
}

/// A byte-level BPE model: merges, byte symbols and the pre-tokenizer.
pub(crate) struct Bpe {
    merges: HashMap<u64, Merge, BuildHasherDefault<PairHasher>>,
    /// Symbol id of each byte's printable code point ([`NONE`] if never seen).
    byte_sym: [u32; 256],
    pre: PreTokenizer,
}

/// A symbol during merging: bytes `start..start + len` of the piece, and its string id.
#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
    id: u32,
}

impl Bpe {
    /// Builds the merge table; merge strings are `"left right"` (split at the first space after
    /// the first byte). A repeated pair keeps its first (lowest) rank.
    pub(crate) fn new(vocab: &mut Vocab, merges: &[String], pre: PreTokenizer) -> Bpe {
        let mut map = HashMap::with_capacity_and_hasher(merges.len(), Default::default());
        let mut joined = Vec::new();
        for (rank, m) in merges.iter().enumerate() {
            let bytes = m.as_bytes();
            let Some(space) = bytes.iter().skip(1).position(|&b| b == b' ').map(|p| p + 1) else {
                continue;
            };
            let (left, right) = (&bytes[..space], &bytes[space + 1..]);
            let l = vocab.intern(left);
            let r = vocab.intern(right);
            joined.clear();
            joined.extend_from_slice(left);
            joined.extend_from_slice(right);
            let result = vocab.intern(&joined);
            map.entry(pair_key(l, r)).or_insert(Merge {
                rank: rank as u32,
                result,
            });
        }
        let mut byte_sym = [NONE; 256];
        let mut buf = [0u8; 4];
        for (b, sym) in byte_sym.iter_mut().enumerate() {
            let s = byte_to_char(b as u8).encode_utf8(&mut buf);
            *sym = vocab.find(s.as_bytes()).unwrap_or(NONE);
        }
        Bpe {
            merges: map,
            byte_sym,
            pre,
        }
    }

    /// Appends the tokens of `text` (a fragment without special tokens) to `out`.
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut work = Work::default();
        for range in self.pre.split(text) {
            self.encode_piece(vocab, &text.as_bytes()[range], out, &mut work);
        }
    }

    fn encode_piece(&self, vocab: &Vocab, piece: &[u8], out: &mut Vec<u32>, work: &mut Work) {
        if self.pre.ignore_merges() {
            work.encoded.clear();
            for &b in piece {
                let mut buf = [0u8; 4];
                work.encoded
                    .extend_from_slice(byte_to_char(b).encode_utf8(&mut buf).as_bytes());
            }
            if let Some(id) = vocab.token(&work.encoded) {
                out.push(id);
                return;
            }
        }

        let n = piece.len() as u32;
        let syms = &mut work.symbols;
        syms.clear();
        syms.extend(piece.iter().enumerate().map(|(i, &b)| Symbol {
            start: i as u32,
            len: 1,
            prev: (i as u32).wrapping_sub(1),
            next: if i as u32 + 1 == n {
                NONE
            } else {
                i as u32 + 1
            },
            id: self.byte_sym[b as usize],
        }));
        let heap = &mut work.heap;
        heap.clear();
        for i in 1..n {
            self.push_pair(syms, heap, i - 1, i);
        }
        while let Some(Reverse((_rank, left, right, size, result))) = heap.pop() {
            let (l, r) = (syms[left as usize], syms[right as usize]);
            if l.len == 0 || r.len == 0 || l.len + r.len != size {
                continue; // one side has changed since this pair was queued
            }
            let ls = &mut syms[left as usize];
            ls.len = size;
            ls.id = result;
            ls.next = r.next;
            syms[right as usize].len = 0;
            if r.next != NONE {
                syms[r.next as usize].prev = left;
            }
            if l.prev != NONE {
                self.push_pair(syms, heap, l.prev, left);
            }
            if r.next != NONE {
                self.push_pair(syms, heap, left, r.next);
            }
        }

        for s in syms.iter().filter(|s| s.len > 0) {
            if s.id < vocab.n_tokens() {
                out.push(s.id);
                continue;
            }
            let bytes = &piece[s.start as usize..(s.start + s.len) as usize];
            for &b in bytes {
                // Only printable ASCII bytes are single-byte strings in byte-level form.
                if (33..=126).contains(&b) {
                    if let Some(id) = vocab.token(&[b]) {
                        out.push(id);
                    }
                }
            }
        }
    }

    /// Queues the merge of symbols `left` and `right` if their pair has a merge rule.
    #[inline]
    fn push_pair(&self, syms: &[Symbol], heap: &mut Heap, left: u32, right: u32) {
        let (l, r) = (&syms[left as usize], &syms[right as usize]);
        if l.id == NONE || r.id == NONE {
            return;
        }
        if let Some(m) = self.merges.get(&pair_key(l.id, r.id)) {
            heap.push(Reverse((m.rank, left, right, l.len + r.len, m.result)));
        }
    }
}

/// Queued merges, lowest (rank, left index) first: (rank, left, right, merged length, result).
type Heap = BinaryHeap<Reverse<(u32, u32, u32, u32, u32)>>;

/// Buffers reused across the pieces of one text.
#[derive(Default)]
struct Work {
    symbols: Vec<Symbol>,
    heap: Heap,
    encoded: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_onto_printable_code_points() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(!c.is_control() && c != ' ', "byte {b} -> {c:?}");
            assert_eq!(char_to_byte(c), Some(b));
            assert!(seen.insert(c));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(char_to_byte('中'), None);
    }

    fn model(tokens: &[&str], merges: &[&str]) -> (Vocab, Bpe) {
        let mut vocab = Vocab::new(tokens);
        let merges: Vec<String> = merges.iter().map(|s| s.to_string()).collect();
        let bpe = Bpe::new(&mut vocab, &merges, PreTokenizer::Gpt2);
        (vocab, bpe)
    }

    #[test]
    fn lowest_rank_merges_first() {
        // "abc": with "b c" ranked before "a b", the result is a + bc, not ab + c.
        let (vocab, bpe) = model(&["a", "b", "c", "ab", "bc"], &["b c", "a b"]);
        let mut out = Vec::new();
        bpe.encode(&vocab, "abc", &mut out);
        assert_eq!(out, [0, 4]);
    }

    #[test]
    fn equal_ranks_merge_leftmost_first() {
        let (vocab, bpe) = model(&["a", "aa"], &["a a"]);
        let mut out = Vec::new();
        bpe.encode(&vocab, "aaa", &mut out);
        assert_eq!(out, [1, 0]);
    }

    #[test]
    fn merge_result_missing_from_vocab_falls_back_to_ascii_bytes() {
        // "x y" merges to "xy", which is not a token: emitted as x, y.
        let (vocab, bpe) = model(&["x", "y"], &["x y"]);
        let mut out = Vec::new();
        bpe.encode(&vocab, "xy", &mut out);
        assert_eq!(out, [0, 1]);
    }

    #[test]
    fn spaces_are_encoded_as_g_dot() {
        let (vocab, bpe) = model(&["Ġ", "a", "Ġa"], &["Ġ a"]);
        let mut out = Vec::new();
        bpe.encode(&vocab, " a", &mut out);
        assert_eq!(out, [2]);
    }
}
