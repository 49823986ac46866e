//! `openweight logits`. PLACEHOLDER: being written.

/// Arguments of `openweight logits`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> openweight::Result<()> {
    Err(openweight::Error::InvalidArgument("'logits' is not written yet".into()))
}
