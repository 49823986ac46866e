//! `openweight run`: generate text from a prompt, streaming it to stdout as it comes.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use openweight::model::{LogitsMode, Model, Session, SessionOptions};
use openweight::sample::Sampler;
use openweight::tokenizer::StreamDecoder;
use openweight::{Error, Result};

use crate::json;

/// Arguments of `openweight run`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Prompt text (tokenized with BOS as the model wants and special tokens parsed).
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Read the prompt text from this file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Largest number of tokens to generate (fewer if an end-of-generation token comes).
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    /// Sampling temperature; 0 is greedy (always the most likely token).
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Sample only among the K most likely tokens (0 = all).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Seed of the sampler (default: from the clock).
    #[arg(long = "seed")]
    pub seed: Option<u64>,
    /// After the text, print `{"prompt_ids": [...], "ids": [...], "text": "..."}` as the
    /// last line.
    #[arg(long)]
    pub json: bool,
    /// Worker threads (0 = all available cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: usize,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let text = match (&args.prompt, &args.file) {
        (Some(p), None) => p.clone(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?,
        _ => {
            return Err(Error::InvalidArgument(
                "give exactly one of -p TEXT or -f FILE".into(),
            ))
        }
    };
    let model = Model::open(&args.model)?;
    let tokenizer = model.tokenizer();
    let prompt_ids = tokenizer.encode(&text, true, true)?;
    if prompt_ids.is_empty() {
        return Err(Error::InvalidArgument("the prompt has no tokens".into()));
    }
    let options = SessionOptions {
        n_ctx: prompt_ids.len() + args.n_predict.max(1),
        n_threads: args.threads,
        ..Default::default()
    };
    let mut session = Session::new(&model, options)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut sampler = Sampler::new(args.temp, args.top_k, seed);
    let mut decoder = StreamDecoder::new(tokenizer);
    let mut stdout = std::io::stdout().lock();
    let io_err = |source| Error::Io {
        path: PathBuf::from("<stdout>"),
        source,
    };

    let start = Instant::now();
    let mut next = sampler.sample(session.eval(&prompt_ids, LogitsMode::Last)?);
    let prefill_secs = start.elapsed().as_secs_f64();
    let gen_start = Instant::now();
    let mut ids = Vec::with_capacity(args.n_predict);
    while ids.len() < args.n_predict && !tokenizer.is_eog(next) {
        ids.push(next);
        let piece = decoder.push(next);
        stdout
            .write_all(piece.as_bytes())
            .and_then(|_| stdout.flush())
            .map_err(io_err)?;
        if ids.len() == args.n_predict {
            break;
        }
        next = sampler.sample(session.eval(&[next], LogitsMode::Last)?);
    }
    let rest = decoder.flush();
    stdout.write_all(rest.as_bytes()).map_err(io_err)?;
    writeln!(stdout).map_err(io_err)?;
    let gen_secs = gen_start.elapsed().as_secs_f64();

    eprintln!(
        "prompt: {} tokens in {:.3} s ({:.1} tok/s); time to first token {:.1} ms",
        prompt_ids.len(),
        prefill_secs,
        prompt_ids.len() as f64 / prefill_secs.max(1e-9),
        prefill_secs * 1e3
    );
    // The first generated token came with the prefill; the rest each took one decode step.
    let n_decoded = ids.len().saturating_sub(1);
    eprintln!(
        "generation: {} tokens, {} decode steps in {:.3} s ({:.1} tok/s)",
        ids.len(),
        n_decoded,
        gen_secs,
        n_decoded as f64 / gen_secs.max(1e-9)
    );

    if args.json {
        let mut out = String::from("{\"prompt_ids\": ");
        push_ids(&mut out, &prompt_ids);
        out.push_str(", \"ids\": ");
        push_ids(&mut out, &ids);
        out.push_str(", \"text\": ");
        json::push_str(&mut out, &tokenizer.decode(&ids));
        out.push('}');
        writeln!(stdout, "{out}").map_err(io_err)?;
    }
    Ok(())
}

fn push_ids(out: &mut String, ids: &[u32]) {
    out.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&id.to_string());
    }
    out.push(']');
}
