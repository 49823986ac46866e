//! `openweight run`. PLACEHOLDER: being written.

/// Arguments of `openweight run`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> openweight::Result<()> {
    Err(openweight::Error::InvalidArgument("'run' is not written yet".into()))
}
