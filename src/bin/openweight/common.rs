//! Arguments and helpers shared by the subcommands that run a model (`run`, `chat`,
//! `embed`): the default model path, text input, and the sampler flags.

use std::path::{Path, PathBuf};

use openweight::{Error, Result, Sampler};

/// The model used when `-m` is not given (relative to the current directory).
pub const DEFAULT_MODEL: &str = "fixtures/models/smollm2-135m-q4_1.gguf";

/// The model file to open: `-m` if given, else [`DEFAULT_MODEL`] if it exists.
pub fn model_path(arg: Option<&Path>) -> Result<PathBuf> {
    match arg {
        Some(path) => Ok(path.to_path_buf()),
        None if Path::new(DEFAULT_MODEL).is_file() => Ok(PathBuf::from(DEFAULT_MODEL)),
        None => Err(Error::InvalidArgument(format!(
            "no model given (-m FILE) and the default model {DEFAULT_MODEL} is missing; \
             run fixtures/fetch-models.sh to fetch it"
        ))),
    }
}

/// Reads a UTF-8 text file; invalid UTF-8 is an error naming the offset of the first bad
/// byte.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        Error::InvalidArgument(format!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// The text of `-p TEXT` or `-f FILE` (exactly one of them).
pub fn prompt_text(prompt: Option<&str>, file: Option<&Path>) -> Result<String> {
    match (prompt, file) {
        (Some(p), None) => Ok(p.to_string()),
        (None, Some(path)) => read_text(path),
        _ => Err(Error::InvalidArgument(
            "give exactly one of -p TEXT or -f FILE".into(),
        )),
    }
}

/// Sampler flags (defaults as in the reference's command-line tools).
#[derive(clap::Args, Debug, Clone)]
pub struct SamplerArgs {
    /// Sampling temperature; 0 is greedy (always the most likely token).
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Sample only among the K most likely tokens (0 = all).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Sample only among the most likely tokens whose probabilities sum to P (1 = all).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0 = off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise tokens seen in the last `--repeat-last-n` tokens (1 = off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Subtract this times a token's recent count from its logit (0 = off).
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Subtract this from the logit of every recently seen token (0 = off).
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Seed of the sampler (default: from the clock).
    #[arg(long = "seed")]
    pub seed: Option<u64>,
}

impl SamplerArgs {
    /// The sampler these flags describe.
    pub fn sampler(&self) -> Sampler {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Sampler::builder()
            .temperature(self.temp)
            .top_k(self.top_k)
            .top_p(self.top_p)
            .min_p(self.min_p)
            .repetition_penalty(self.repeat_penalty)
            .penalty_window(self.repeat_last_n)
            .frequency_penalty(self.frequency_penalty)
            .presence_penalty(self.presence_penalty)
            .seed(seed)
            .build()
    }
}

/// An I/O error on standard output or input.
pub fn stdio_err(name: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: PathBuf::from(name),
        source,
    }
}
