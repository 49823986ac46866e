//! `openweight embed`: a text's embedding (pooled hidden states after the final norm) as
//! one JSON array.

use std::io::Write;
use std::path::PathBuf;

use openweight::{Model, Pooling, Result, Session, SessionOptions};

use crate::common::{model_path, prompt_text, stdio_err};
use crate::json;

/// How token states are pooled (command-line spelling of [`Pooling`]).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PoolingArg {
    /// Mean over all tokens.
    Mean,
    /// The last token.
    Last,
}

/// Arguments of `openweight embed`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file (default: fixtures/models/smollm2-135m-q4_1.gguf).
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// The text to embed.
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Read the text to embed from this file (UTF-8).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// How the token states become one vector.
    #[arg(long = "pooling", value_enum, default_value_t = PoolingArg::Mean)]
    pub pooling: PoolingArg,
    /// Print the raw pooled vector instead of scaling it to unit length.
    #[arg(long = "no-normalize")]
    pub no_normalize: bool,
    /// Worker threads (0 = all available cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: usize,
}

/// Runs the subcommand: prints `[x, y, ...]` and a newline.
pub fn run(args: Args) -> Result<()> {
    let text = prompt_text(args.prompt.as_deref(), args.file.as_deref())?;
    let model = Model::open(model_path(args.model.as_deref())?)?;
    let ids = model.prompt_tokens(&text)?;
    let options = SessionOptions {
        n_ctx: ids.len().max(1),
        n_threads: args.threads,
        ..Default::default()
    };
    let pooling = match args.pooling {
        PoolingArg::Mean => Pooling::Mean,
        PoolingArg::Last => Pooling::Last,
    };
    let vector = Session::new(&model, options)?.embed(&ids, pooling, !args.no_normalize)?;
    let mut out = String::from("[");
    for (i, &v) in vector.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json::push_f32(&mut out, v);
    }
    out.push(']');
    writeln!(std::io::stdout(), "{out}").map_err(stdio_err("<stdout>"))
}
