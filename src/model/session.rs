//! A session: one sequence being evaluated, with its KV cache, scratch buffers and thread
//! pool. Prompts go through in batches (GEMM), generated tokens one at a time (GEMV), both
//! through the same [`forward`](super::forward::forward).
//!
//! A session remembers the token ids its cache holds, so [`Session::set_prompt`] evaluates
//! only the part of a new prompt that differs from what was evaluated before (a chat that
//! re-sends its whole history pays only for the new turn).

use std::sync::Arc;

use super::error::ModelError;
use super::forward::{forward, OutputRows, Scratch};
use super::kv_cache::{KvCache, KvType};
use super::Model;
use crate::embed::{pool_hidden, Pooling};
use crate::generate::{GenerateOptions, Generation};
use crate::sample::Sampler;

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
///
/// ```
/// use std::sync::Arc;
/// use openweight::SessionOptions;
///
/// // Share one pool between several sessions (the library never touches rayon's global pool).
/// let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
/// let options = SessionOptions {
///     n_ctx: 512,
///     pool: Some(pool),
///     ..SessionOptions::default()
/// };
/// assert_eq!(options.n_ctx, 512);
/// ```
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Capacity of the KV cache in tokens (must be at least 1).
    pub n_ctx: usize,
    /// Element type of the KV cache.
    pub kv_type: KvType,
    /// Worker threads for matmul and attention when the session builds its own pool; 0
    /// means all available cores. Ignored when `pool` is given.
    pub n_threads: usize,
    /// A thread pool to run on (shared with other sessions or the rest of the application);
    /// `None` builds a private pool of `n_threads` threads.
    pub pool: Option<Arc<rayon::ThreadPool>>,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            n_ctx: 2048,
            kv_type: KvType::F16,
            n_threads: 0,
            pool: None,
        }
    }
}

/// One sequence being evaluated against a [`Model`], with its own KV cache.
///
/// A session borrows its model, so many sessions (on many threads) share one copy of the
/// weights; see [`Model`] for sharing it with `Arc` or scoped threads.
///
/// ```no_run
/// use openweight::{GenerateOptions, Model, Sampler, Session, SessionOptions};
///
/// let model = Model::open("fixtures/models/smollm2-135m-q4_1.gguf")?;
/// let mut session = Session::new(&model, SessionOptions::default())?;
/// session.set_prompt_text("The capital of France is")?;
/// let mut sampler = Sampler::greedy();
/// for token in session.generate(&mut sampler, GenerateOptions::new().max_tokens(16)) {
///     print!("{}", token?.text_piece);
/// }
/// # Ok::<(), openweight::Error>(())
/// ```
pub struct Session<'m> {
    model: &'m Model,
    pool: Arc<rayon::ThreadPool>,
    kv: KvCache,
    /// The ids whose keys and values the cache holds, in order (`len()` is `n_past`).
    tokens: Vec<u32>,
    scratch: Scratch,
    logits: Vec<f32>,
    /// Start in `logits` of the row of the last token in `tokens`, if that row is there.
    last_row: Option<usize>,
    /// Tokens run through the forward pass since the session was created.
    n_evaluated: u64,
}

impl<'m> Session<'m> {
    /// A session with an empty KV cache sized for `options.n_ctx` tokens.
    pub fn new(model: &'m Model, options: SessionOptions) -> Result<Session<'m>, ModelError> {
        if options.n_ctx == 0 {
            return Err(ModelError::InvalidOption("n_ctx must be at least 1".into()));
        }
        let c = model.config();
        let elem_bytes = match options.kv_type {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        let kv_bytes = [c.kv_values_per_token(), elem_bytes]
            .iter()
            .try_fold(options.n_ctx, |acc, &x| acc.checked_mul(x))
            .filter(|&b| b <= isize::MAX as usize);
        if kv_bytes.is_none() {
            return Err(ModelError::InvalidOption(format!(
                "n_ctx {} is too large: its KV cache would not fit in memory",
                options.n_ctx
            )));
        }
        let pool = match options.pool {
            Some(pool) => pool,
            None => Arc::new(build_pool(options.n_threads)?),
        };
        let kv = KvCache::for_model(c, options.kv_type, options.n_ctx, MAX_BATCH);
        Ok(Session {
            model,
            pool,
            kv,
            // Full capacity now: generation never reallocates it (the KV cache is larger).
            tokens: Vec::with_capacity(options.n_ctx),
            scratch: Scratch::default(),
            logits: Vec::new(),
            last_row: None,
            n_evaluated: 0,
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Tokens currently in the KV cache.
    pub fn n_past(&self) -> usize {
        self.tokens.len()
    }

    /// Capacity of the KV cache in tokens.
    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx()
    }

    /// The token ids in the KV cache, oldest first.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// How many tokens this session has run through the model since it was created
    /// (prompt tokens found in the cache by [`Session::set_prompt`] do not count).
    pub fn n_evaluated(&self) -> u64 {
        self.n_evaluated
    }

    /// The thread pool this session runs on.
    pub fn pool(&self) -> &Arc<rayon::ThreadPool> {
        &self.pool
    }

    /// Forgets the sequence (the cache is overwritten from position 0 by the next `eval`).
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Forgets every token after the first `n` (no-op if the cache holds `n` or fewer).
    /// The next evaluation continues from position `n`, or from 0 if the cache cannot be
    /// rewound that far: a sliding-window layer keeps a ring of recent keys, and once more
    /// than [`MAX_BATCH`] tokens were written after position `n`, the keys position `n`
    /// must see are gone. [`Session::n_past`] tells where it continues.
    pub fn truncate(&mut self, n: usize) {
        if n < self.tokens.len() {
            let keep = if self.kv.can_truncate(self.tokens.len(), n) {
                n
            } else {
                0
            };
            self.tokens.truncate(keep);
            self.last_row = None;
        }
    }

    /// The logits of the last token in the cache, if the last evaluation produced them
    /// (`None` after [`Session::clear`], [`Session::truncate`] or an embedding).
    pub fn logits(&self) -> Option<&[f32]> {
        let n_vocab = self.model.config().n_vocab;
        self.last_row
            .map(|start| &self.logits[start..start + n_vocab])
    }

    /// Appends `tokens` to the sequence and returns logits, row-major
    /// `[n_rows][n_vocab]`: one row per token for [`LogitsMode::All`], the last token's row
    /// for [`LogitsMode::Last`].
    ///
    /// Errors (and leaves the session unchanged) for empty input, ids outside the
    /// vocabulary, or more tokens than the cache has room for.
    pub fn eval(&mut self, tokens: &[u32], mode: LogitsMode) -> Result<&[f32], ModelError> {
        self.check_input(tokens, self.tokens.len())?;
        let n_vocab = self.model.config().n_vocab;
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
            self.last_row = None;
            forward(
                self.model,
                &self.pool,
                &mut self.kv,
                &mut self.scratch,
                chunk,
                self.tokens.len(),
                rows,
                &mut self.logits[out_start..],
            );
            self.tokens.extend_from_slice(chunk);
            self.n_evaluated += chunk.len() as u64;
        }
        self.last_row = Some((n_rows - 1) * n_vocab);
        Ok(&self.logits[..n_rows * n_vocab])
    }

    /// Appends `tokens` and returns the logits of the last one (see [`Session::eval`]).
    pub fn feed(&mut self, tokens: &[u32]) -> crate::Result<&[f32]> {
        Ok(self.eval(tokens, LogitsMode::Last)?)
    }

    /// Tokenizes `text` (special tokens such as `<|im_start|>` are parsed; BOS is added as
    /// the model wants when the session is empty), appends it and returns the logits of its
    /// last token. Errors if `text` has no tokens.
    pub fn feed_text(&mut self, text: &str) -> crate::Result<&[f32]> {
        let ids = self.tokenize(text, self.tokens.is_empty())?;
        self.feed(&ids)
    }

    /// Makes the sequence exactly `tokens` and returns the logits of the last one.
    ///
    /// The longest common prefix of `tokens` and what the cache holds is kept; only the rest
    /// is evaluated (at least the last token, for its logits). The result is the same as
    /// evaluating `tokens` in a fresh session. Errors leave the session unchanged.
    pub fn set_prompt(&mut self, tokens: &[u32]) -> crate::Result<&[f32]> {
        self.check_input(tokens, 0)?;
        let common = self
            .tokens
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
            .min(tokens.len() - 1);
        self.truncate(common);
        let kept = self.tokens.len().min(common);
        Ok(self.eval(&tokens[kept..], LogitsMode::Last)?)
    }

    /// [`Session::set_prompt`] for text, tokenized as in [`Session::feed_text`] (with BOS as
    /// the model wants).
    pub fn set_prompt_text(&mut self, text: &str) -> crate::Result<&[f32]> {
        let ids = self.tokenize(text, true)?;
        self.set_prompt(&ids)
    }

    /// Picks the next token from the last logits with `sampler`, the cached tokens being the
    /// history its penalties look at. Errors if there are no logits yet (feed a prompt first).
    pub fn sample(&self, sampler: &mut Sampler) -> crate::Result<u32> {
        let logits = self.logits().ok_or_else(|| {
            crate::Error::InvalidArgument(
                "no logits to sample from: feed a prompt to the session first".into(),
            )
        })?;
        Ok(sampler.sample_with_history(logits, &self.tokens))
    }

    /// Generates tokens after the current sequence (feed a prompt first), as an iterator of
    /// [`Token`](crate::generate::Token)s. See [`Generation`] for when it stops, how text is
    /// streamed and how to cancel.
    pub fn generate<'s>(
        &'s mut self,
        sampler: &'s mut Sampler,
        options: GenerateOptions,
    ) -> Generation<'s, 'm> {
        Generation::new(self, sampler, options)
    }

    /// The embedding of `tokens`: hidden states after the final norm, pooled over the tokens
    /// and optionally scaled to unit L2 norm. Clears the session first and leaves it empty.
    pub fn embed(
        &mut self,
        tokens: &[u32],
        pooling: Pooling,
        normalize: bool,
    ) -> crate::Result<Vec<f32>> {
        self.check_input(tokens, 0)?;
        self.clear();
        let n_embd = self.model.config().n_embd;
        let mut hidden = vec![0f32; tokens.len() * n_embd];
        for (ci, chunk) in tokens.chunks(MAX_BATCH).enumerate() {
            forward(
                self.model,
                &self.pool,
                &mut self.kv,
                &mut self.scratch,
                chunk,
                ci * MAX_BATCH,
                OutputRows::Hidden,
                &mut hidden[ci * MAX_BATCH * n_embd..],
            );
            self.n_evaluated += chunk.len() as u64;
        }
        Ok(pool_hidden(&hidden, n_embd, pooling, normalize))
    }

    /// Tokenizes `text` for this model (see [`prompt_tokens`]).
    fn tokenize(&self, text: &str, add_bos: bool) -> crate::Result<Vec<u32>> {
        prompt_tokens(self.model, text, add_bos)
    }

    /// Errors for empty input, ids outside the vocabulary, or input that does not fit the
    /// cache after `n_keep` cached tokens.
    fn check_input(&self, tokens: &[u32], n_keep: usize) -> Result<(), ModelError> {
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
        if n_keep + tokens.len() > self.kv.n_ctx() {
            return Err(ModelError::ContextFull {
                n_past: n_keep,
                n_new: tokens.len(),
                n_ctx: self.kv.n_ctx(),
            });
        }
        Ok(())
    }
}

/// A private pool of `n_threads` workers (0 = all available cores).
fn build_pool(n_threads: usize) -> Result<rayon::ThreadPool, ModelError> {
    let n_threads = if n_threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n_threads
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .build()
        .map_err(|e| ModelError::InvalidOption(format!("cannot start {n_threads} threads: {e}")))
}

/// Tokenizes `text` as a prompt: special tokens parsed, and with `add_bos`, BOS first if the
/// model wants one and the text does not already start with it (chat templates often write
/// it themselves). Never adds EOS.
pub(crate) fn prompt_tokens(model: &Model, text: &str, add_bos: bool) -> crate::Result<Vec<u32>> {
    let tokenizer = model.tokenizer();
    let mut ids = tokenizer.encode(text, false, true)?;
    if add_bos && tokenizer.add_bos() {
        if let Some(bos) = tokenizer.bos_id() {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
    }
    Ok(ids)
}
