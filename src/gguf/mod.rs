//! The GGUF container. PLACEHOLDER: being written (reader, writer, validation).

/// Errors from reading or writing GGUF files.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Placeholder.
    #[error("not yet implemented")]
    Unimplemented,
}
