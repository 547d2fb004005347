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

/// Writes the completion script to stdout. A reader that stops early (`| head`) is
/// not an error: the script is generated into memory, then written, and a closed
/// pipe ends the write quietly instead of aborting.
pub fn run(args: &CompletionArgs) -> std::io::Result<()> {
    use std::io::Write;
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "pubsub", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
