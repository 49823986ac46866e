//! The `openweight` command-line tool: one subcommand per file in this folder.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod chat;
mod common;
mod embed;
mod inspect;
mod json;
mod logits;
mod perplexity;
mod run;
mod tokenize;

/// Run quantized open-weight language models (GGUF) on CPU.
#[derive(Parser)]
#[command(name = "openweight", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF file's header, metadata and tensors.
    Inspect(inspect::Args),
    /// Tokenize text with a model's tokenizer and print the ids as JSON.
    Tokenize(tokenize::Args),
    /// Print the top logits at every position of a prompt as JSON.
    Logits(logits::Args),
    /// Generate text from a prompt.
    Run(run::Args),
    /// Chat with a model interactively (reads stdin line by line; /reset, /exit).
    Chat(chat::Args),
    /// Print a text's embedding as a JSON array.
    Embed(embed::Args),
    /// Measure perplexity of a model on a text file.
    Perplexity(perplexity::Args),
    /// Measure prompt-processing and generation speed (llama-bench method).
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: openweight::Result<()> = match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Run(a) => run::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
