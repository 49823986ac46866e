//! `openweight run`: generate text from a prompt, streaming it to stdout as it comes, then
//! prompt and generation speed and time to first token on stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use openweight::{Error, GenerateOptions, Model, Result, Session, SessionOptions};

use crate::common::{model_path, prompt_text, stdio_err, SamplerArgs};
use crate::json;

/// Arguments of `openweight run`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file (default: fixtures/models/smollm2-135m-q4_1.gguf).
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Prompt text (tokenized with BOS as the model wants and special tokens parsed).
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Read the prompt text from this file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Largest number of tokens to generate (fewer if an end-of-generation token comes).
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    /// Stop when the text contains this string (not printed); may be repeated.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens, up to `--n-predict` (for measuring
    /// speed and memory at a given context length).
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Sampler settings.
    #[command(flatten)]
    pub sampling: SamplerArgs,
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
    let text = prompt_text(args.prompt.as_deref(), args.file.as_deref())?;
    let model = Model::open(model_path(args.model.as_deref())?)?;
    let prompt_ids = model.tokenizer().encode(&text, true, true)?;
    if prompt_ids.is_empty() {
        return Err(Error::InvalidArgument("the prompt has no tokens".into()));
    }
    let options = SessionOptions {
        n_ctx: prompt_ids.len() + args.n_predict.max(1),
        n_threads: args.threads,
        ..Default::default()
    };
    let mut session = Session::new(&model, options)?;
    let mut sampler = args.sampling.sampler();
    let mut generate = GenerateOptions::new()
        .max_tokens(args.n_predict)
        .stop_at_eog(!args.ignore_eos);
    for s in &args.stop {
        generate = generate.stop(s.as_str());
    }
    let mut stdout = std::io::stdout().lock();
    let io_err = stdio_err("<stdout>");

    let start = Instant::now();
    session.set_prompt(&prompt_ids)?;
    let prefill_secs = start.elapsed().as_secs_f64();
    let mut first_token_secs = None;
    let mut ids = Vec::with_capacity(args.n_predict);
    let mut out_text = String::new();
    for token in session.generate(&mut sampler, generate) {
        let token = token?;
        first_token_secs.get_or_insert_with(|| start.elapsed().as_secs_f64());
        ids.push(token.id);
        out_text.push_str(&token.text_piece);
        stdout
            .write_all(token.text_piece.as_bytes())
            .and_then(|_| stdout.flush())
            .map_err(&io_err)?;
    }
    writeln!(stdout)
        .and_then(|_| stdout.flush())
        .map_err(&io_err)?;
    let total_secs = start.elapsed().as_secs_f64();
    let gen_secs = total_secs - first_token_secs.unwrap_or(total_secs);
    // The first token came with the prefill; each later one took a decode step.
    let n_decoded = session.n_past() - prompt_ids.len();

    eprintln!(
        "prompt: {} tokens in {:.3} s ({:.1} tok/s); time to first token {:.1} ms",
        prompt_ids.len(),
        prefill_secs,
        prompt_ids.len() as f64 / prefill_secs.max(1e-9),
        first_token_secs.unwrap_or(total_secs) * 1e3
    );
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
        json::push_str(&mut out, &out_text);
        out.push('}');
        writeln!(stdout, "{out}").map_err(&io_err)?;
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
