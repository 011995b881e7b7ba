//! The gateway build (`--no-default-features`) leaves the trainer out: its training and
//! evaluation commands are still listed, and say which build has them.

use anyhow::{bail, Result};
use clap::Args;

// Arguments of a command that this build leaves out; whatever is given is ignored. (A
// plain comment: a doc comment here would replace each command's own line in `--help`.)
#[derive(Debug, Args)]
pub struct NeedsTrainer {
    #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
    ignored: Vec<String>,
}

impl NeedsTrainer {
    // Says that `vigil COMMAND` needs the full build, and fails.
    pub fn run(self, command: &str) -> Result<()> {
        bail!(
            "`vigil {command}` needs the full build of vigil, with the trainer: this is the gateway \
             build (no candle, no quantiser). Run it on a host with `cargo install --path host-tools/cli` \
             or `cargo run --release -p vigil -- {command} ...`"
        )
    }
}
