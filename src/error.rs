//! The crate-wide error type.

use crate::chat::ChatError;
use crate::gguf::GgufError;
use crate::model::ModelError;
use crate::tokenizer::TokenizerError;

/// Everything that can go wrong in openweight, by area. Match on the variant to tell a bad
/// file from a bad prompt from an I/O problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The GGUF file is unreadable or malformed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The tokenizer metadata is unusable, or text/ids could not be converted.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The model cannot be built or run (unsupported architecture, missing tensor, full context, ...).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The chat template cannot be compiled or rendered.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// Reading a file other than the model failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A caller-supplied argument is invalid (described in the message).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
