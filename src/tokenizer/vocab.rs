//! The vocabulary's strings and a byte-string -> id hash table over them.
//!
//! Strings live in one arena; the table is open-addressed with linear probing and stores ids
//! with 32 bits of their hash (so most mismatches are rejected without touching the arena),
//! and lookups by `&[u8]` need no allocation. Ids `0..n_tokens` are the tokens; the BPE
//! builder may intern further strings (merge parts and results that are not tokens), which get
//! ids from `n_tokens` on.

/// Marks an empty slot of the hash table.
const EMPTY: u64 = u64::MAX;

/// Interned byte strings with O(1) lookup by content.
pub(crate) struct Vocab {
    arena: Vec<u8>,
    /// Start of string `i` in `arena` is `ends[i - 1]` (0 for `i == 0`), end is `ends[i]`.
    ends: Vec<u32>,
    /// `hash >> 32 << 32 | id` per occupied slot, [`EMPTY`] otherwise.
    slots: Vec<u64>,
    n_tokens: u32,
}

/// FxHash-style hash of a byte string (fast, good enough for a table keyed by vocabulary text).
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let mut tail = 0u64;
    for (i, &b) in chunks.remainder().iter().enumerate() {
        tail |= (b as u64) << (8 * i);
    }
    h = (h.rotate_left(5) ^ tail).wrapping_mul(K);
    // Mix the high bits down: the table index uses the low bits.
    h ^ (h >> 29)
}

impl Vocab {
    /// Builds the table of `tokens` (id = index). When two tokens have the same text, lookups
    /// find the later one (as the reference runtime's text-to-id map does).
    pub(crate) fn new<S: AsRef<str>>(tokens: &[S]) -> Vocab {
        let total: usize = tokens.iter().map(|t| t.as_ref().len()).sum();
        let mut v = Vocab {
            arena: Vec::with_capacity(total),
            ends: Vec::with_capacity(tokens.len()),
            slots: vec![EMPTY; (tokens.len() * 2).next_power_of_two().max(16)],
            n_tokens: tokens.len() as u32,
        };
        for t in tokens {
            v.arena.extend_from_slice(t.as_ref().as_bytes());
            v.ends.push(v.arena.len() as u32);
        }
        for id in 0..tokens.len() as u32 {
            v.insert(id);
        }
        v
    }

    /// Number of tokens (interned extra strings not counted).
    pub(crate) fn n_tokens(&self) -> u32 {
        self.n_tokens
    }

    /// The text of string `id` (a token if `id < n_tokens`).
    #[inline]
    pub(crate) fn text(&self, id: u32) -> &[u8] {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.arena[start..self.ends[i] as usize]
    }

    /// The id of the string `s` (a token id if it is `< n_tokens`), if interned.
    #[inline]
    pub(crate) fn find(&self, s: &[u8]) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let h = hash_bytes(s);
        let tag = h >> 32;
        let mut i = h as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return None;
            }
            let id = slot as u32;
            if slot >> 32 == tag && self.text(id) == s {
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }

    /// The token with text `s`, if any (interned non-token strings are not tokens).
    #[inline]
    pub(crate) fn token(&self, s: &[u8]) -> Option<u32> {
        self.find(s).filter(|&id| id < self.n_tokens)
    }

    /// The id of `s`, interning it (with a new id past the tokens) if it is not there yet.
    pub(crate) fn intern(&mut self, s: &[u8]) -> u32 {
        if let Some(id) = self.find(s) {
            return id;
        }
        self.arena.extend_from_slice(s);
        self.ends.push(self.arena.len() as u32);
        let id = (self.ends.len() - 1) as u32;
        if self.ends.len() * 2 > self.slots.len() {
            self.slots = vec![EMPTY; self.slots.len() * 2];
            for j in 0..self.ends.len() as u32 {
                self.insert(j);
            }
        } else {
            self.insert(id);
        }
        id
    }

    /// Puts string `id` in the table, replacing an earlier string with the same text.
    fn insert(&mut self, id: u32) {
        let mask = self.slots.len() - 1;
        let text = self.text(id);
        let h = hash_bytes(text);
        let entry = h >> 32 << 32 | id as u64;
        let mut i = h as usize & mask;
        loop {
            let cur = self.slots[i];
            if cur == EMPTY || (cur >> 32 == h >> 32 && self.text(cur as u32) == text) {
                self.slots[i] = entry;
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_token_by_text() {
        let tokens: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        let v = Vocab::new(&tokens);
        for (i, t) in tokens.iter().enumerate() {
            assert_eq!(v.find(t.as_bytes()), Some(i as u32));
        }
        assert_eq!(v.find(b"t1000"), None);
    }

    #[test]
    fn duplicate_text_resolves_to_the_later_token() {
        let v = Vocab::new(&["a", "b", "a"]);
        assert_eq!(v.find(b"a"), Some(2));
        assert_eq!(v.text(0), b"a");
    }

    #[test]
    fn interned_strings_get_ids_past_the_tokens_and_are_not_tokens() {
        let mut v = Vocab::new(&["x", "y"]);
        let ids: Vec<u32> = (0..100)
            .map(|i| v.intern(format!("s{i}").as_bytes()))
            .collect();
        assert_eq!(ids[0], 2);
        assert_eq!(v.intern(b"s5"), ids[5]);
        assert_eq!(v.intern(b"x"), 0);
        assert_eq!(v.token(b"s7"), None);
        assert_eq!(v.find(b"s7"), Some(ids[7]));
        assert_eq!(v.text(ids[99]), b"s99");
    }
}
