//! `openweight tokenize`. PLACEHOLDER: being written.

/// Arguments of `openweight tokenize`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> openweight::Result<()> {
    Err(openweight::Error::InvalidArgument("'tokenize' is not written yet".into()))
}
