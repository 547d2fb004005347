//! `completion`: prints a shell completion script generated from the clap definition,
//! so completions never drift from the real flags.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// Arguments of `completion`.
#[derive(Args)]
pub struct CompletionArgs {
    /// Shell to generate for; e.g. `pubsub completion bash > /etc/bash_completion.d/pubsub`.
    pub shell: Shell,
}

/// Writes the completion script to stdout.
pub fn run(args: &CompletionArgs) {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "pubsub", &mut std::io::stdout());
}
