//! `openweight inspect`. PLACEHOLDER: being written.

/// Arguments of `openweight inspect`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> openweight::Result<()> {
    Err(openweight::Error::InvalidArgument("'inspect' is not written yet".into()))
}
