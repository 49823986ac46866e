//! Streaming detokenization: text pieces as tokens arrive, never splitting a UTF-8 character.

use super::Tokenizer;

/// Turns a stream of token ids into text pieces that are always valid UTF-8.
///
/// A token may end in the middle of a multi-byte character (byte-fallback and byte-level
/// tokens often do); those bytes are held back until the character is complete. Bytes that can
/// never form a character become U+FFFD, exactly as in [`Tokenizer::decode`], so the pieces of
/// a stream followed by [`StreamDecoder::flush`] concatenate to `decode` of the same ids.
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    pending: Vec<u8>,
}

impl<'t> StreamDecoder<'t> {
    /// A decoder with nothing pending.
    pub fn new(tokenizer: &'t Tokenizer) -> StreamDecoder<'t> {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
        }
    }

    /// Adds token `id` and returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        self.pending
            .extend_from_slice(self.tokenizer.token_bytes(id));
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8, so this borrows and replaces nothing.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        // An invalid sequence: it stays invalid whatever follows.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let len = self.pending.len();
        self.pending.drain(..len - keep);
        out
    }

    /// Ends the stream: returns what is still held back (an incomplete character becomes
    /// U+FFFD) and empties the decoder.
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    /// Whether bytes of an incomplete character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
