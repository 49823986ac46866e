//! Tokenizers built from GGUF metadata (`tokenizer.ggml.*`), matching the reference runtime
//! token for token.
//!
//! - [`Tokenizer::from_gguf`] reads the vocabulary, scores, token types, merges, special ids
//!   and flags; [`Tokenizer::from_spec`] builds the same from a plain [`TokenizerSpec`].
//! - Two kinds: SentencePiece-style BPE with scores and byte fallback (`llama`, in `spm`) and
//!   byte-level BPE with merges (`gpt2`, in `bpe`) behind a [`PreTokenizer`] (in `pretokenize`).
//! - Special tokens written in the text are split out first (`special`): user-defined tokens
//!   always, control tokens only when the caller sets `parse_special`.
//! - [`Tokenizer::decode`] and [`StreamDecoder`] turn ids back into text.

mod bpe;
mod error;
mod pretokenize;
mod special;
mod spm;
mod stream;
mod unicode;
#[rustfmt::skip]
mod unicode_table;
mod vocab;

use crate::gguf::GgufFile;

pub use error::TokenizerError;
pub use pretokenize::PreTokenizer;
pub use stream::StreamDecoder;

use bpe::Bpe;
use special::{Fragment, Specials};
use spm::Spm;
use vocab::Vocab;

/// What a token is, from `tokenizer.ggml.token_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// Ordinary text (type 1).
    Normal,
    /// The unknown token (type 2).
    Unknown,
    /// A control token such as BOS, EOS or `<|im_start|>` (type 3).
    Control,
    /// A user-defined token, always recognised in text (type 4).
    UserDefined,
    /// A reserved, unused slot (type 5).
    Unused,
    /// A byte-fallback token `<0xXX>` (type 6).
    Byte,
    /// Any other type value (0 or unknown numbers).
    Undefined,
}

impl TokenType {
    /// The type for a `tokenizer.ggml.token_type` value.
    pub fn from_gguf(value: i32) -> TokenType {
        match value {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }
}

/// The two tokenizer algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// SentencePiece-style BPE with scores and byte fallback (`tokenizer.ggml.model = llama`).
    SentencePiece,
    /// Byte-level BPE with merges (`tokenizer.ggml.model = gpt2`).
    ByteLevelBpe,
}

/// Everything a tokenizer is built from: the `tokenizer.ggml.*` metadata as plain data.
/// `None` means "key absent" and selects the reference runtime's default.
#[derive(Clone, Debug)]
pub struct TokenizerSpec<'a> {
    /// `tokenizer.ggml.model`: `"llama"` or `"gpt2"`.
    pub model: &'a str,
    /// `tokenizer.ggml.pre` (byte-level BPE only).
    pub pre: Option<&'a str>,
    /// `tokenizer.ggml.tokens`: the text of every token; the index is the id.
    pub tokens: &'a [String],
    /// `tokenizer.ggml.scores` (SentencePiece; all 0 if absent).
    pub scores: Option<&'a [f32]>,
    /// `tokenizer.ggml.token_type` (all normal if absent).
    pub token_types: Option<&'a [i32]>,
    /// `tokenizer.ggml.merges`: `"left right"` per rule, rank = index (byte-level BPE).
    pub merges: Option<&'a [String]>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`.
    pub eom: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unknown: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece).
    pub add_space_prefix: Option<bool>,
}

impl<'a> TokenizerSpec<'a> {
    /// A spec with the given kind and tokens and every other key absent.
    pub fn new(model: &'a str, tokens: &'a [String]) -> TokenizerSpec<'a> {
        TokenizerSpec {
            model,
            pre: None,
            tokens,
            scores: None,
            token_types: None,
            merges: None,
            bos: None,
            eos: None,
            eot: None,
            eom: None,
            unknown: None,
            add_bos: None,
            add_eos: None,
            add_space_prefix: None,
        }
    }
}

/// Texts of end-of-turn tokens, in the order they are tried when no EOT id is in the metadata.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Texts of tokens that end generation (the reference runtime's list; they are made control
/// tokens if the vocabulary says otherwise).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Fill-in-the-middle pad, repository and file-separator markers, which also end generation.
const FIM_EOG_TEXTS: &[&[&str]] = &[
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>"],
    &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ],
    &["<|file_sep|>"],
];

/// A tokenizer: text to token ids and back.
pub struct Tokenizer {
    kind: TokenizerKind,
    vocab: Vocab,
    types: Vec<TokenType>,
    spm: Option<Spm>,
    bpe: Option<Bpe>,
    specials: Specials,
    /// The bytes each token stands for (see [`Tokenizer::token_bytes`]), concatenated.
    pieces: Vec<u8>,
    piece_ends: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    /// Sorted ids of the end-of-generation tokens.
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("n_vocab", &self.n_vocab())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish()
    }
}

/// Reads a string-array key.
fn strings<'f>(file: &'f GgufFile, key: &'static str) -> Result<&'f [String], TokenizerError> {
    let array = file.get_array(key)?;
    array
        .as_strings()
        .ok_or_else(|| TokenizerError::BadMetadata {
            key,
            reason: format!(
                "expected an array of strings, found an array of {}",
                array.elem_type_name()
            ),
        })
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let model = file.get_str("tokenizer.ggml.model")?;
        let tokens = strings(file, "tokenizer.ggml.tokens")?;
        let mut spec = TokenizerSpec::new(model, tokens);
        spec.pre = file.get_str_opt("tokenizer.ggml.pre")?;
        if let Some(a) = file.get_array_opt("tokenizer.ggml.scores")? {
            spec.scores = Some(a.as_f32s().ok_or_else(|| TokenizerError::BadMetadata {
                key: "tokenizer.ggml.scores",
                reason: format!("expected float32 elements, found {}", a.elem_type_name()),
            })?);
        }
        if let Some(a) = file.get_array_opt("tokenizer.ggml.token_type")? {
            spec.token_types = Some(a.as_i32s().ok_or_else(|| TokenizerError::BadMetadata {
                key: "tokenizer.ggml.token_type",
                reason: format!("expected int32 elements, found {}", a.elem_type_name()),
            })?);
        }
        if file.get("tokenizer.ggml.merges").is_some() {
            spec.merges = Some(strings(file, "tokenizer.ggml.merges")?);
        }
        spec.bos = file.get_u32_opt("tokenizer.ggml.bos_token_id")?;
        spec.eos = file.get_u32_opt("tokenizer.ggml.eos_token_id")?;
        spec.eot = file.get_u32_opt("tokenizer.ggml.eot_token_id")?;
        spec.eom = file.get_u32_opt("tokenizer.ggml.eom_token_id")?;
        spec.unknown = file.get_u32_opt("tokenizer.ggml.unknown_token_id")?;
        spec.add_bos = file.get_bool_opt("tokenizer.ggml.add_bos_token")?;
        spec.add_eos = file.get_bool_opt("tokenizer.ggml.add_eos_token")?;
        spec.add_space_prefix = file.get_bool_opt("tokenizer.ggml.add_space_prefix")?;
        Tokenizer::from_spec(&spec)
    }

    /// Builds a tokenizer from plain metadata values.
    ///
    /// Defaults for absent keys follow the reference runtime: SentencePiece has BOS 1, EOS 2,
    /// UNK 0, adds BOS but not EOS, and adds a space prefix; byte-level BPE adds BOS only for
    /// the Llama 3 pre-tokenizer. A special id outside the vocabulary is ignored (the default
    /// is used instead, if it is inside).
    pub fn from_spec(spec: &TokenizerSpec<'_>) -> Result<Tokenizer, TokenizerError> {
        let n = spec.tokens.len();
        if n == 0 || n >= u32::MAX as usize / 2 {
            return Err(TokenizerError::BadMetadata {
                key: "tokenizer.ggml.tokens",
                reason: format!("{n} tokens (need at least 1)"),
            });
        }
        // String offsets are stored as u32 (merges may intern up to twice their own text).
        let token_bytes: usize = spec.tokens.iter().map(String::len).sum();
        let merge_bytes: usize = spec.merges.map_or(0, |m| m.iter().map(String::len).sum());
        if token_bytes.saturating_add(merge_bytes.saturating_mul(2)) >= u32::MAX as usize {
            return Err(TokenizerError::BadMetadata {
                key: "tokenizer.ggml.tokens",
                reason: "the vocabulary text exceeds 4 GiB".into(),
            });
        }
        let check_len = |key: &'static str, len: usize| {
            if len == n {
                Ok(())
            } else {
                Err(TokenizerError::BadMetadata {
                    key,
                    reason: format!("{len} entries for {n} tokens"),
                })
            }
        };
        if let Some(s) = spec.scores {
            check_len("tokenizer.ggml.scores", s.len())?;
        }
        if let Some(t) = spec.token_types {
            check_len("tokenizer.ggml.token_type", t.len())?;
        }

        let kind = match spec.model {
            "llama" => TokenizerKind::SentencePiece,
            "gpt2" => TokenizerKind::ByteLevelBpe,
            other => {
                return Err(TokenizerError::UnsupportedModel {
                    model: other.to_owned(),
                })
            }
        };
        let pre = match kind {
            TokenizerKind::ByteLevelBpe => PreTokenizer::from_name(spec.pre)?,
            TokenizerKind::SentencePiece => PreTokenizer::Default,
        };

        let mut vocab = Vocab::new(spec.tokens);
        let mut types: Vec<TokenType> = match spec.token_types {
            Some(t) => t.iter().map(|&v| TokenType::from_gguf(v)).collect(),
            None => vec![TokenType::Normal; n],
        };

        let valid = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let or_default = |id: Option<u32>, default: Option<u32>| valid(id).or(valid(default));
        let (bos, eos, unknown, add_bos_default, add_space_prefix_default) = match kind {
            TokenizerKind::SentencePiece => (
                or_default(spec.bos, Some(1)),
                or_default(spec.eos, Some(2)),
                or_default(spec.unknown, Some(0)),
                true,
                true,
            ),
            TokenizerKind::ByteLevelBpe => (
                or_default(spec.bos, Some(11)),
                or_default(spec.eos, Some(11)),
                valid(spec.unknown),
                pre == PreTokenizer::Llama3,
                false,
            ),
        };
        let eom = valid(spec.eom);

        // End-of-turn and end-of-generation markers are control tokens whatever the file says.
        let find_marker = |texts: &[&str], types: &mut Vec<TokenType>| {
            texts.iter().find_map(|t| {
                let id = vocab.token(t.as_bytes())?;
                types[id as usize] = TokenType::Control;
                Some(id)
            })
        };
        let eot = valid(spec.eot).or_else(|| find_marker(EOT_TEXTS, &mut types));
        let mut eog: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
        for &text in EOG_TEXTS {
            if let Some(id) = find_marker(&[text], &mut types) {
                eog.push(id);
            }
        }
        for texts in FIM_EOG_TEXTS {
            if let Some(id) = find_marker(texts, &mut types) {
                eog.push(id);
            }
        }
        eog.sort_unstable();
        eog.dedup();

        let (spm, bpe) = match kind {
            TokenizerKind::SentencePiece => {
                let scores = spec.scores.map_or_else(|| vec![0.0; n], |s| s.to_vec());
                (Some(Spm::new(&vocab, scores, unknown)), None)
            }
            TokenizerKind::ByteLevelBpe => {
                let merges = spec.merges.ok_or_else(|| TokenizerError::BadMetadata {
                    key: "tokenizer.ggml.merges",
                    reason: "missing: byte-level BPE needs merges".into(),
                })?;
                (None, Some(Bpe::new(&mut vocab, merges, pre)))
            }
        };

        let specials = Specials::new(&vocab, &types);
        let (pieces, piece_ends) = token_pieces(kind, &vocab, &types);

        Ok(Tokenizer {
            kind,
            vocab,
            types,
            spm,
            bpe,
            specials,
            pieces,
            piece_ends,
            bos,
            eos,
            eot,
            eog,
            add_bos: spec.add_bos.unwrap_or(add_bos_default),
            add_eos: spec.add_eos.unwrap_or(false),
            add_space_prefix: spec.add_space_prefix.unwrap_or(add_space_prefix_default),
        })
    }

    /// Tokenizes `text`.
    ///
    /// With `add_special`, BOS and EOS are added as the metadata says ([`Tokenizer::add_bos`],
    /// [`Tokenizer::add_eos`]). With `parse_special`, control tokens written in the text (e.g.
    /// `<|im_start|>`) become those tokens; user-defined tokens are recognised either way.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let fragments = self.specials.partition(&self.vocab, text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.push(
                self.bos
                    .ok_or(TokenizerError::MissingSpecialToken { which: "bos" })?,
            );
        }
        if let Some(spm) = &self.spm {
            // A space is prepended to text that starts the input or follows a special token.
            let mut after_special = true;
            let mut escaped = Vec::new();
            for f in fragments {
                match f {
                    Fragment::Token(id) => {
                        out.push(id);
                        after_special = true;
                    }
                    Fragment::Text(range) => {
                        escaped.clear();
                        if self.add_space_prefix && after_special {
                            escaped.extend_from_slice("▁".as_bytes());
                        }
                        for &b in &text.as_bytes()[range] {
                            if b == b' ' {
                                escaped.extend_from_slice("▁".as_bytes());
                            } else {
                                escaped.push(b);
                            }
                        }
                        spm.encode(&self.vocab, &escaped, &mut out)?;
                        after_special = false;
                    }
                }
            }
        } else if let Some(bpe) = &self.bpe {
            for f in fragments {
                match f {
                    Fragment::Token(id) => out.push(id),
                    Fragment::Text(range) => bpe.encode(&self.vocab, &text[range], &mut out),
                }
            }
        }
        if add_special && self.add_eos {
            out.push(
                self.eos
                    .ok_or(TokenizerError::MissingSpecialToken { which: "eos" })?,
            );
        }
        Ok(out)
    }

    /// The bytes token `id` stands for in decoded text.
    ///
    /// Normal tokens give their text (byte-level BPE: through the inverse byte table;
    /// SentencePiece: `▁` as a space); byte tokens `<0xXX>` give the byte; control, unknown
    /// and user-defined tokens give their text as written in the vocabulary (e.g. `<|im_end|>`;
    /// callers that want to hide them can test [`Tokenizer::token_type`]); unused tokens give
    /// nothing. An id outside the vocabulary gives the UTF-8 bytes of U+FFFD.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        if i >= self.piece_ends.len() {
            return "\u{fffd}".as_bytes();
        }
        let start = if i == 0 {
            0
        } else {
            self.piece_ends[i - 1] as usize
        };
        &self.pieces[start..self.piece_ends[i] as usize]
    }

    /// Decodes `ids` to text: the concatenated [`Tokenizer::token_bytes`], with byte sequences
    /// that are not valid UTF-8 replaced by U+FFFD. No leading space is removed.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.types.len()
    }

    /// SentencePiece-style or byte-level BPE.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// The beginning-of-sequence token, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token, if the vocabulary has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The end-of-turn token (from metadata, else found by text such as `<|im_end|>`).
    pub fn eot_id(&self) -> Option<u32> {
        self.eot
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether generation stops at `id`: EOS, EOT, EOM, end markers such as `<|im_end|>`,
    /// `<|eot_id|>`, `<end_of_turn>`, `<|endoftext|>`, and fill-in-the-middle separators.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation tokens, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// The token whose vocabulary text is exactly `text` (e.g. `"<|im_start|>"`, `"Ġthe"`).
    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.vocab.token(text.as_bytes())
    }

    /// The vocabulary text of token `id` (as stored: `Ġ`/`▁` markers, `<0xXX>`, ...).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        if (id as usize) < self.n_vocab() {
            std::str::from_utf8(self.vocab.text(id)).ok()
        } else {
            None
        }
    }

    /// The type of token `id` (end markers count as control tokens).
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }
}

/// The bytes each token decodes to, concatenated, with the end offset of each.
fn token_pieces(kind: TokenizerKind, vocab: &Vocab, types: &[TokenType]) -> (Vec<u8>, Vec<u32>) {
    let mut pieces = Vec::new();
    let mut ends = Vec::with_capacity(types.len());
    for (id, &t) in types.iter().enumerate() {
        let text = vocab.text(id as u32);
        match t {
            TokenType::Control | TokenType::Unknown | TokenType::UserDefined => {
                pieces.extend_from_slice(text)
            }
            TokenType::Normal => match kind {
                TokenizerKind::SentencePiece => unescape_spaces(text, &mut pieces),
                TokenizerKind::ByteLevelBpe => byte_level_decode(text, &mut pieces),
            },
            TokenType::Byte if kind == TokenizerKind::SentencePiece => {
                match parse_byte_token(text) {
                    Some(b) => pieces.push(b),
                    None => pieces.extend_from_slice(text),
                }
            }
            TokenType::Byte | TokenType::Unused | TokenType::Undefined => {}
        }
        ends.push(pieces.len() as u32);
    }
    (pieces, ends)
}

/// Appends `text` with every `▁` (U+2581) written as a space.
fn unescape_spaces(text: &[u8], out: &mut Vec<u8>) {
    const MARK: &[u8] = "▁".as_bytes();
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(MARK) {
            out.push(b' ');
            i += MARK.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
}

/// Appends the bytes a byte-level BPE token text stands for; a code point outside the byte
/// table (not produced by the converter) is kept as its own UTF-8.
fn byte_level_decode(text: &[u8], out: &mut Vec<u8>) {
    let s = String::from_utf8_lossy(text);
    for c in s.chars() {
        match bpe::char_to_byte(c) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

/// The byte of a `<0xXX>` token text.
fn parse_byte_token(text: &[u8]) -> Option<u8> {
    let hex = text.strip_prefix(b"<0x")?.strip_suffix(b">")?;
    let hex = std::str::from_utf8(hex).ok()?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests;
