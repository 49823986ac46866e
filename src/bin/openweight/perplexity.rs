//! `openweight perplexity`. PLACEHOLDER: being written.

/// Arguments of `openweight perplexity`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> openweight::Result<()> {
    Err(openweight::Error::InvalidArgument("'perplexity' is not written yet".into()))
}
