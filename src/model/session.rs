//! A session: one sequence being evaluated, with its KV cache, scratch buffers and thread
//! pool. Prompts go through in batches (GEMM), generated tokens one at a time (GEMV), both
//! through the same [`forward`](super::forward::forward).

use super::error::ModelError;
use super::forward::{forward, OutputRows, Scratch};
use super::kv_cache::{KvCache, KvType};
use super::Model;

/// Tokens per forward call during prefill; longer inputs are split into chunks that go
/// through the same KV cache.
pub const MAX_BATCH: usize = 512;

/// Which logits [`Session::eval`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsMode {
    /// Only the last token's row (generation).
    Last,
    /// One row per input token (scoring, perplexity).
    All,
}

/// How to build a [`Session`].
#[derive(Clone, Copy, Debug)]
pub struct SessionOptions {
    /// Capacity of the KV cache in tokens (must be at least 1).
    pub n_ctx: usize,
    /// Element type of the KV cache.
    pub kv_type: KvType,
    /// Worker threads for matmul and attention; 0 means all available cores.
    pub n_threads: usize,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            n_ctx: 2048,
            kv_type: KvType::F16,
            n_threads: 0,
        }
    }
}

/// One sequence being evaluated against a [`Model`].
pub struct Session<'m> {
    model: &'m Model,
    pool: rayon::ThreadPool,
    kv: KvCache,
    n_past: usize,
    scratch: Scratch,
    logits: Vec<f32>,
}

impl<'m> Session<'m> {
    /// A session with an empty KV cache sized for `options.n_ctx` tokens.
    pub fn new(model: &'m Model, options: SessionOptions) -> Result<Session<'m>, ModelError> {
        if options.n_ctx == 0 {
            return Err(ModelError::InvalidOption("n_ctx must be at least 1".into()));
        }
        let n_threads = if options.n_threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.n_threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n_threads)
            .build()
            .map_err(|e| {
                ModelError::InvalidOption(format!("cannot start {n_threads} threads: {e}"))
            })?;
        let c = model.config();
        let elem_bytes = match options.kv_type {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        let kv_bytes = [
            c.n_layer,
            c.n_head_kv,
            c.head_dim_k + c.head_dim_v,
            elem_bytes,
        ]
        .iter()
        .try_fold(options.n_ctx, |acc, &x| acc.checked_mul(x))
        .filter(|&b| b <= isize::MAX as usize);
        if kv_bytes.is_none() {
            return Err(ModelError::InvalidOption(format!(
                "n_ctx {} is too large: its KV cache would not fit in memory",
                options.n_ctx
            )));
        }
        let kv = KvCache::new(
            options.kv_type,
            options.n_ctx,
            c.n_layer,
            c.n_head_kv,
            c.head_dim_k,
            c.head_dim_v,
        );
        Ok(Session {
            model,
            pool,
            kv,
            n_past: 0,
            scratch: Scratch::default(),
            logits: Vec::new(),
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Tokens currently in the KV cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Capacity of the KV cache in tokens.
    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx()
    }

    /// Forgets the sequence (the cache is overwritten from position 0 by the next `eval`).
    pub fn clear(&mut self) {
        self.n_past = 0;
    }

    /// Appends `tokens` to the sequence and returns logits, row-major
    /// `[n_rows][n_vocab]`: one row per token for [`LogitsMode::All`], the last token's row
    /// for [`LogitsMode::Last`].
    ///
    /// Errors (and leaves the session unchanged) for empty input, ids outside the
    /// vocabulary, or more tokens than the cache has room for.
    pub fn eval(&mut self, tokens: &[u32], mode: LogitsMode) -> Result<&[f32], ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let n_vocab = self.model.config().n_vocab;
        if let Some((index, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= n_vocab)
        {
            return Err(ModelError::TokenOutOfRange { id, index, n_vocab });
        }
        if self.n_past + tokens.len() > self.kv.n_ctx() {
            return Err(ModelError::ContextFull {
                n_past: self.n_past,
                n_new: tokens.len(),
                n_ctx: self.kv.n_ctx(),
            });
        }
        let n_rows = match mode {
            LogitsMode::All => tokens.len(),
            LogitsMode::Last => 1,
        };
        if self.logits.len() < n_rows * n_vocab {
            self.logits.resize(n_rows * n_vocab, 0.0);
        }
        let n_chunks = tokens.len().div_ceil(MAX_BATCH);
        for (ci, chunk) in tokens.chunks(MAX_BATCH).enumerate() {
            let rows = match mode {
                LogitsMode::All => OutputRows::All,
                LogitsMode::Last if ci + 1 == n_chunks => OutputRows::Last,
                LogitsMode::Last => OutputRows::None,
            };
            let out_start = match mode {
                LogitsMode::All => ci * MAX_BATCH * n_vocab,
                LogitsMode::Last => 0,
            };
            forward(
                self.model,
                &self.pool,
                &mut self.kv,
                &mut self.scratch,
                chunk,
                self.n_past,
                rows,
                &mut self.logits[out_start..],
            );
            self.n_past += chunk.len();
        }
        Ok(&self.logits[..n_rows * n_vocab])
    }
}
