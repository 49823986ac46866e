//! `openweight chat`: an interactive conversation rendered with the model's own chat
//! template. Reads standard input line by line (so it can be scripted); `/reset` forgets the
//! conversation, `/exit` or end of input (Ctrl-D) quits. Each turn re-renders the whole
//! history and the session evaluates only what is not already in its cache.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use openweight::chat::{ChatMessage, ChatTemplate};
use openweight::model::ModelError;
use openweight::{Error, GenerateOptions, Model, Result, Session, SessionOptions, StopReason};

use crate::common::{model_path, stdio_err, SamplerArgs};

/// Arguments of `openweight chat`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file (default: fixtures/models/smollm2-135m-q4_1.gguf).
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// A system message to start the conversation with.
    #[arg(long = "system")]
    pub system: Option<String>,
    /// Largest number of tokens in one reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    pub n_predict: usize,
    /// Context length in tokens (the whole conversation must fit; `/reset` to start over).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    /// Sampler settings.
    #[command(flatten)]
    pub sampling: SamplerArgs,
    /// Print token counts and speed of each turn on stderr.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Worker threads (0 = all available cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: usize,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let model = Model::open(model_path(args.model.as_deref())?)?;
    let template = ChatTemplate::from_model(&model)?;
    let options = SessionOptions {
        n_ctx: args.ctx_size.max(1),
        n_threads: args.threads,
        ..Default::default()
    };
    let mut session = Session::new(&model, options)?;
    let mut sampler = args.sampling.sampler();
    let first_turn = usize::from(args.system.is_some());
    let mut history: Vec<ChatMessage> = args.system.iter().map(ChatMessage::system).collect();

    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "chat with {}; /reset starts over, /exit or Ctrl-D quits",
            model_name(&model)
        );
    }
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let out_err = stdio_err("<stdout>");
    let mut line = Vec::new();
    loop {
        if interactive {
            eprint!("> ");
        }
        line.clear();
        if stdin
            .read_until(b'\n', &mut line)
            .map_err(stdio_err("<stdin>"))?
            == 0
        {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        match text.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.truncate(first_turn);
                session.clear();
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::user(text));
        let prompt = template.render(&history, true)?;
        let ids = model.prompt_tokens(&prompt)?;
        let cached = common_prefix(session.tokens(), &ids);
        let start = Instant::now();
        match session.set_prompt(&ids) {
            Ok(_) => {}
            Err(Error::Model(e @ ModelError::ContextFull { .. })) => {
                eprintln!("error: {e}\n(type /reset to start a new conversation)");
                history.pop();
                continue;
            }
            Err(e) => return Err(e),
        }
        let prompt_secs = start.elapsed().as_secs_f64();
        let mut reply = String::new();
        let mut generation = session.generate(
            &mut sampler,
            GenerateOptions::new().max_tokens(args.n_predict),
        );
        for token in &mut generation {
            let piece = token?.text_piece;
            reply.push_str(&piece);
            stdout
                .write_all(piece.as_bytes())
                .and_then(|_| stdout.flush())
                .map_err(&out_err)?;
        }
        let stop = generation.stop_reason();
        let n_generated = generation.n_yielded();
        writeln!(stdout).map_err(&out_err)?;
        if stop == Some(StopReason::ContextFull) {
            eprintln!("(the context is full: type /reset to start a new conversation)");
        }
        if args.verbose {
            let secs = start.elapsed().as_secs_f64() - prompt_secs;
            eprintln!(
                "[prompt: {} tokens, {} from the cache, {:.3} s; reply: {} tokens, {:.1} tok/s]",
                ids.len(),
                cached.min(ids.len() - 1),
                prompt_secs,
                n_generated,
                n_generated as f64 / secs.max(1e-9)
            );
        }
        history.push(ChatMessage::assistant(reply));
    }
    Ok(())
}

/// Length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// `general.name` or the architecture, for the greeting.
fn model_name(model: &Model) -> String {
    model
        .gguf()
        .get_str_opt("general.name")
        .ok()
        .flatten()
        .or_else(|| model.gguf().architecture().ok())
        .unwrap_or("the model")
        .to_string()
}
