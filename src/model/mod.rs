//! Architectures, forward pass and KV cache.
//!
//! - [`arch`]: per-architecture descriptions, as data.
//! - [`config`]: hyperparameters from GGUF metadata.
//! - [`weights`]: tensor lookup and validation (zero-copy matrices into the mapping).
//! - [`rope`], [`attention`], [`mla`], [`moe`], [`kv_cache`]: the pieces of a block.
//! - [`forward`]: the single forward pass.
//! - [`Session`]: one sequence with its KV cache; [`Model`]: the loaded file.

pub mod arch;
pub mod attention;
pub mod config;
mod error;
pub mod forward;
pub mod interleaved;
pub mod kv_cache;
pub mod mla;
pub mod moe;
pub mod perplexity;
pub mod rope;
mod session;
mod silu;
pub mod weights;

use std::path::Path;

use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;

pub use config::Config;
pub use error::ModelError;
pub use kv_cache::KvType;
pub use session::{LogitsMode, Session, SessionOptions, MAX_BATCH};

use crate::embed::Pooling;
pub use weights::Weights;

/// A loaded model: the memory-mapped file, its validated hyperparameters and weights, and
/// its tokenizer.
///
/// A `Model` is immutable, `Send` and `Sync`: load it once and run many [`Session`]s on it
/// from many threads, each with its own KV cache. Sessions borrow the model, so share it by
/// reference with scoped threads, or put it in an [`Arc`](std::sync::Arc) and create each
/// session inside the thread that uses it:
///
/// ```no_run
/// use std::sync::Arc;
/// use openweight::{GenerateOptions, Model, Sampler, Session, SessionOptions};
///
/// let model = Arc::new(Model::open("fixtures/models/smollm2-135m-q4_1.gguf")?);
/// let workers: Vec<_> = ["Once upon a time", "The sea is"]
///     .into_iter()
///     .map(|prompt| {
///         let model = Arc::clone(&model);
///         std::thread::spawn(move || -> openweight::Result<String> {
///             let options = SessionOptions { n_ctx: 256, n_threads: 1, ..Default::default() };
///             let mut session = Session::new(&model, options)?;
///             session.set_prompt_text(prompt)?;
///             let mut sampler = Sampler::builder().seed(1).build();
///             let (text, _ids) = session
///                 .generate(&mut sampler, GenerateOptions::new().max_tokens(16))
///                 .collect_text()?;
///             Ok(text)
///         })
///     })
///     .collect();
/// for worker in workers {
///     println!("{}", worker.join().expect("worker panicked")?);
/// }
/// # Ok::<(), openweight::Error>(())
/// ```
pub struct Model {
    file: GgufFile,
    config: Config,
    weights: Weights,
    tokenizer: Tokenizer,
    interleaved: interleaved::InterleaveReport,
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
        let mut weights = Weights::load(&file, &config)?;
        config.rope.freq_factors = weights.rope_freqs.clone();
        let interleaved = interleaved::interleave_weights(&mut weights, &file);
        Ok(Model {
            file,
            config,
            weights,
            tokenizer,
            interleaved,
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

    /// What loading rearranged into the interleaved layout (see [`interleaved`]).
    pub fn interleaved(&self) -> interleaved::InterleaveReport {
        self.interleaved
    }

    /// Tokenizes `text` as a prompt: special tokens such as `<|im_start|>` are parsed, and
    /// BOS comes first if the model wants one and the text does not already start with it
    /// (chat templates often write it). EOS is never added.
    pub fn prompt_tokens(&self, text: &str) -> crate::Result<Vec<u32>> {
        session::prompt_tokens(self, text, true)
    }

    /// The embedding of `text` (tokenized as a prompt, BOS as the model wants): hidden
    /// states after the final norm, pooled, and scaled to unit L2 norm if `normalize`.
    /// Runs a temporary session on all cores; use [`Session::embed`] to choose the threads
    /// or reuse buffers.
    pub fn embed(&self, text: &str, pooling: Pooling, normalize: bool) -> crate::Result<Vec<f32>> {
        let ids = session::prompt_tokens(self, text, true)?;
        let options = SessionOptions {
            n_ctx: ids.len().max(1),
            ..SessionOptions::default()
        };
        Session::new(self, options)?.embed(&ids, pooling, normalize)
    }
}
