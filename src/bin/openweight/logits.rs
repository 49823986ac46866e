//! `openweight logits`: the top logits at every position of a prompt, as one JSON object
//! shaped like the golden `*.logits.jsonl` lines.

use std::path::PathBuf;

use openweight::model::{KvType, LogitsMode, Model, Session, SessionOptions};
use openweight::{Error, Result};

use crate::json;

/// Arguments of `openweight logits`.
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
    /// Exactly these token ids, comma-separated (no BOS added, nothing tokenized).
    #[arg(long = "ids", value_delimiter = ',')]
    pub ids: Option<Vec<u32>>,
    /// How many of the largest logits to print per position.
    #[arg(long = "top", default_value_t = 16)]
    pub top: usize,
    /// Feed the tokens one at a time through the decode path and the KV cache.
    #[arg(long)]
    pub incremental: bool,
    /// Keep the KV cache in f32 instead of f16.
    #[arg(long = "kv-f32")]
    pub kv_f32: bool,
    /// Worker threads (0 = all available cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: usize,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let given = [
        args.prompt.is_some(),
        args.file.is_some(),
        args.ids.is_some(),
    ];
    if given.iter().filter(|&&g| g).count() != 1 {
        return Err(Error::InvalidArgument(
            "give exactly one of -p TEXT, -f FILE or --ids 1,2,3".into(),
        ));
    }
    let model = Model::open(&args.model)?;
    let ids = match (&args.ids, &args.prompt, &args.file) {
        (Some(ids), _, _) => ids.clone(),
        (None, Some(text), _) => model.tokenizer().encode(text, true, true)?,
        (None, None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            model.tokenizer().encode(&text, true, true)?
        }
        (None, None, None) => unreachable!("checked above"),
    };
    if ids.is_empty() {
        return Err(Error::InvalidArgument("the prompt has no tokens".into()));
    }
    let n_vocab = model.config().n_vocab;
    let options = SessionOptions {
        n_ctx: ids.len(),
        kv_type: if args.kv_f32 {
            KvType::F32
        } else {
            KvType::F16
        },
        n_threads: args.threads,
        pool: None,
    };
    let mut session = Session::new(&model, options)?;
    let mut rows: Vec<f32> = Vec::with_capacity(ids.len() * n_vocab);
    if args.incremental {
        for &id in &ids {
            rows.extend_from_slice(session.eval(&[id], LogitsMode::Last)?);
        }
    } else {
        rows.extend_from_slice(session.eval(&ids, LogitsMode::All)?);
    }

    let mut out = String::from("{\"ids\": [");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&id.to_string());
    }
    out.push_str("], \"positions\": [");
    for (t, row) in rows.chunks_exact(n_vocab).enumerate() {
        if t > 0 {
            out.push_str(", ");
        }
        out.push_str("{\"lse\": ");
        json::push_f64(&mut out, log_sum_exp(row));
        out.push_str(", \"top\": [");
        for (j, (id, logit)) in top_k(row, args.top).into_iter().enumerate() {
            if j > 0 {
                out.push_str(", ");
            }
            out.push('[');
            out.push_str(&id.to_string());
            out.push_str(", ");
            json::push_f32(&mut out, logit);
            out.push(']');
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    println!("{out}");
    Ok(())
}

/// log-sum-exp of a row, in f64.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + row
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

/// The `k` largest `(id, logit)` pairs, largest first (lower id first on ties).
fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    let k = k.min(all.len());
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k == 0 {
        return Vec::new();
    }
    if k < all.len() {
        all.select_nth_unstable_by(k - 1, order);
        all.truncate(k);
    }
    all.sort_unstable_by(order);
    all
}
