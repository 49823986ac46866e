//! Everything that can go wrong building or running a tokenizer.

use crate::gguf::GgufError;

/// Why a tokenizer could not be built from metadata, or a text could not be tokenized.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A `tokenizer.ggml.*` key is missing or has the wrong type (the message names the key).
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] GgufError),
    /// `tokenizer.ggml.model` names a tokenizer kind this crate does not implement.
    #[error(
        "unsupported tokenizer model '{model}' in tokenizer.ggml.model \
         (supported: 'llama' = SentencePiece-style, 'gpt2' = byte-level BPE)"
    )]
    UnsupportedModel {
        /// The value found.
        model: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error(
        "unsupported pre-tokenizer '{pre}' in tokenizer.ggml.pre (supported: default, gpt2, \
         gpt-2, llama3, llama-v3, llama-bpe, qwen2, deepseek-r1-qwen, smollm)"
    )]
    UnsupportedPreTokenizer {
        /// The value found.
        pre: String,
    },
    /// A metadata value is present and well-typed but unusable (wrong length, bad id, ...).
    #[error("tokenizer metadata key {key}: {reason}")]
    BadMetadata {
        /// The key involved.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The metadata asks for a special token (e.g. BOS) that the vocabulary does not define.
    #[error(
        "the tokenizer must add the {which} token but the vocabulary has none \
         (set tokenizer.ggml.{which}_token_id)"
    )]
    MissingSpecialToken {
        /// `"bos"` or `"eos"`.
        which: &'static str,
    },
    /// A SentencePiece-style vocabulary cannot represent a byte: no `<0xXX>` token, no
    /// single-character token and no unknown token.
    #[error(
        "the vocabulary cannot represent byte 0x{byte:02X}: it has no <0x{byte:02X}> byte token \
         and no unknown token"
    )]
    NoByteFallback {
        /// The byte that could not be encoded.
        byte: u8,
    },
}
