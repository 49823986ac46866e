//! Architectures, forward pass and KV cache. PLACEHOLDER: being written.

/// Errors from building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Placeholder.
    #[error("not yet implemented")]
    Unimplemented,
}
