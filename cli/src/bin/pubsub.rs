//! `pubsub`: the command-line client. Parses the command line, runs the subcommand on
//! a tokio runtime, and turns any error into one `error: ..` line and exit code 1.

use std::process::ExitCode;

use clap::Parser;
use pubsub_cli::commands::{self, Cli, output};

/// mimalloc rather than glibc's malloc: a consumer allocates and frees a fetch-sized
/// buffer per response, and glibc returned those pages to the kernel and faulted them
/// back in each time (a quarter of `bench consume`'s time went to page faults).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Logs only on request: the SDK's warnings would otherwise add lines to the one
    // error line a failed command prints.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = Cli::parse();
    // One thread: the Producer hands every record between tasks, and on a multi-thread
    // runtime each hand-over is a cross-thread wake-up; `write` ran 4x slower there.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            output::print_error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Reader tasks may still be in a long poll; they have nothing left to deliver.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `pubsub read t | head` closed our stdout: the reader has what it wanted.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("{e:#}");
            output::print_error(&format!("{message}{}", commands::tls_hint(&message)));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
