//! `openweight perplexity`: how well a model predicts a text file. The whole file is one
//! sequence (tokenized with BOS as the model wants, special tokens parsed); every token after
//! the first is scored given all the tokens before it.

use std::path::PathBuf;
use std::time::Instant;

use openweight::model::perplexity::token_nlls;
use openweight::model::{Model, Session, SessionOptions};
use openweight::{Error, Result};

use crate::json;

/// Arguments of `openweight perplexity`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// The text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print one JSON object `{"n_tokens", "n_scored", "mean_nll", "ppl"}`.
    #[arg(long)]
    pub json: bool,
    /// Worker threads (0 = all available cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: usize,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.file).map_err(|source| Error::Io {
        path: args.file.clone(),
        source,
    })?;
    let model = Model::open(&args.model)?;
    let ids = model.tokenizer().encode(&text, true, true)?;
    if ids.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "{}: {} token(s); at least 2 are needed to score anything",
            args.file.display(),
            ids.len()
        )));
    }
    let options = SessionOptions {
        n_ctx: ids.len(),
        n_threads: args.threads,
        ..Default::default()
    };
    let mut session = Session::new(&model, options)?;
    let start = Instant::now();
    let nll = token_nlls(&mut session, &ids, |done, total| {
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "perplexity: {done}/{total} tokens, {:.1} tok/s",
            done as f64 / secs.max(1e-9)
        );
    })?;
    let mean_nll = nll.iter().sum::<f64>() / nll.len() as f64;
    let ppl = mean_nll.exp();
    if args.json {
        let mut out = format!(
            "{{\"n_tokens\": {}, \"n_scored\": {}, \"mean_nll\": ",
            ids.len(),
            nll.len()
        );
        json::push_f64(&mut out, mean_nll);
        out.push_str(", \"ppl\": ");
        json::push_f64(&mut out, ppl);
        out.push('}');
        println!("{out}");
    } else {
        println!(
            "{} tokens, {} scored: mean NLL {mean_nll:.6}, perplexity {ppl:.4}",
            ids.len(),
            nll.len()
        );
    }
    Ok(())
}
