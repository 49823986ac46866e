//! Architectures, forward pass and KV cache.
//!
//! - [`arch`]: per-architecture descriptions, as data.
//! - [`config`]: hyperparameters from GGUF metadata.
//! - [`weights`]: tensor lookup and validation (zero-copy matrices into the mapping).
//! - [`rope`], [`attention`], [`kv_cache`]: the pieces of a block.
//! - [`forward`]: the single forward pass.
//! - [`Session`]: one sequence with its KV cache; [`Model`]: the loaded file.

pub mod arch;
pub mod attention;
pub mod config;
mod error;
pub mod forward;
pub mod kv_cache;
pub mod perplexity;
pub mod rope;
mod session;
pub mod weights;

use std::path::Path;

use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;

pub use config::Config;
pub use error::ModelError;
pub use kv_cache::KvType;
pub use session::{LogitsMode, Session, SessionOptions, MAX_BATCH};
pub use weights::Weights;

/// A loaded model: the memory-mapped file, its validated hyperparameters and weights, and
/// its tokenizer. Immutable and shareable across threads; sessions borrow it.
pub struct Model {
    file: GgufFile,
    config: Config,
    weights: Weights,
    tokenizer: Tokenizer,
}

impl Model {
    /// Memory-maps the GGUF file at `path`, checks every tensor the architecture needs
    /// against the hyperparameters, and builds the tokenizer.
    pub fn open(path: impl AsRef<Path>) -> crate::Result<Model> {
        let file = GgufFile::open(path.as_ref())?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        Model::from_gguf(file, tokenizer)
    }

    /// Builds a model from an opened file and the tokenizer built from it.
    pub fn from_gguf(file: GgufFile, tokenizer: Tokenizer) -> crate::Result<Model> {
        let arch_name = file.architecture().unwrap_or("").to_string();
        let n_vocab = match file.tensor("token_embd.weight") {
            Some(t) if t.ne.len() == 2 && t.ne[1] > 0 => t.ne[1] as usize,
            Some(t) => {
                return Err(ModelError::TensorShape {
                    arch: arch_name,
                    name: t.name.clone(),
                    expected: vec![0, 0],
                    found: t.ne.clone(),
                }
                .into())
            }
            None => {
                return Err(ModelError::MissingTensor {
                    arch: arch_name,
                    name: "token_embd.weight".into(),
                }
                .into())
            }
        };
        let mut config = Config::from_gguf(&file, n_vocab)?;
        let weights = Weights::load(&file, &config)?;
        config.rope.freq_factors = weights.rope_freqs.clone();
        Ok(Model {
            file,
            config,
            weights,
            tokenizer,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The tokenizer built from the file's metadata.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The underlying GGUF file.
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// The validated weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }
}
