//! Tokenizers built from GGUF metadata. PLACEHOLDER: being written.

/// Errors from building or running a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Placeholder.
    #[error("not yet implemented")]
    Unimplemented,
}
