//! Errors from building or running a model.

/// Everything that can go wrong while loading a model's weights or running a session.
///
/// Messages name the architecture, tensor or metadata key involved, so that a user can
/// tell a damaged or unsupported file from a bad request.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `general.architecture` names a family the forward pass does not implement.
    #[error(
        "unsupported architecture '{arch}' (supported: {supported}); \
         the GGUF file may be fine, but this build cannot run it"
    )]
    UnsupportedArchitecture {
        /// The architecture string from the file.
        arch: String,
        /// Comma-separated list of the architectures we do run.
        supported: String,
    },
    /// A required metadata key is absent.
    #[error("{arch}: required metadata key '{key}' is missing")]
    MissingKey {
        /// The architecture being loaded.
        arch: String,
        /// The full key, e.g. `llama.block_count`.
        key: String,
    },
    /// A hyperparameter has a value the model cannot use.
    #[error("{arch}: metadata key '{key}' has an unusable value: {reason}")]
    BadHyperparameter {
        /// The architecture being loaded.
        arch: String,
        /// The full key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A RoPE scaling scheme (or one of its parameters) that is not implemented.
    #[error("{arch}: unsupported RoPE scaling: '{key}' = {value}")]
    UnsupportedRopeScaling {
        /// The architecture being loaded.
        arch: String,
        /// The metadata key that selects the unsupported behaviour.
        key: String,
        /// Its value, as text.
        value: String,
    },
    /// A tensor the architecture needs is not in the file.
    #[error("{arch}: required tensor '{name}' is missing from the file")]
    MissingTensor {
        /// The architecture being loaded.
        arch: String,
        /// The tensor name, e.g. `blk.3.attn_q.weight`.
        name: String,
    },
    /// A tensor has a shape that does not match the hyperparameters.
    #[error("{arch}: tensor '{name}' has shape {found:?}, expected {expected:?} (ne[0] first)")]
    TensorShape {
        /// The architecture being loaded.
        arch: String,
        /// The tensor name.
        name: String,
        /// The shape the hyperparameters imply.
        expected: Vec<u64>,
        /// The shape in the file.
        found: Vec<u64>,
    },
    /// A tensor's element type cannot be used in its role.
    #[error("{arch}: tensor '{name}' has type {ty}, which cannot be used here: {reason}")]
    TensorType {
        /// The architecture being loaded.
        arch: String,
        /// The tensor name.
        name: String,
        /// The type name, or the numeric GGUF id when the type is unknown to us.
        ty: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A token id is not in the vocabulary.
    #[error("token id {id} at input position {index} is out of range (vocabulary size {n_vocab})")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// Its index in the input slice.
        index: usize,
        /// The model's vocabulary size.
        n_vocab: usize,
    },
    /// `eval` was called with no tokens.
    #[error("no tokens to evaluate: the input is empty")]
    EmptyInput,
    /// The session's KV cache has no room for the tokens.
    #[error(
        "context is full: {n_past} tokens cached + {n_new} new > context length {n_ctx}; \
         clear the session or create it with a larger n_ctx"
    )]
    ContextFull {
        /// Tokens already in the cache.
        n_past: usize,
        /// Tokens in the rejected call.
        n_new: usize,
        /// The session's capacity.
        n_ctx: usize,
    },
    /// A session option is invalid.
    #[error("invalid session option: {0}")]
    InvalidOption(String),
}
