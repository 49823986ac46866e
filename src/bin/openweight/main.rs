//! The `openweight` command-line tool: one subcommand per file in this folder.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod json;

/// Run quantized open-weight language models (GGUF) on CPU.
#[derive(Parser)]
#[command(name = "openweight", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: openweight::Result<()> = match cli.command {};
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
