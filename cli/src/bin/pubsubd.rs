//! `pubsubd`: the pubsub server. `pubsubd standalone` runs every role in one process
//! on loopback with data under `./data`: the embedded default a new user starts first.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pubsub_cli::server::StandaloneConfig;

#[derive(Parser)]
#[command(
    name = "pubsubd",
    version,
    about = "The pubsub server: a partitioned, replicated, persistent log broker"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Every role in one process: broker and topic metadata, on loopback.
    Standalone {
        /// TOML configuration file (see cli/config.example.toml).
        #[arg(long, env = "PUBSUB_CONFIG")]
        config: Option<PathBuf>,
        /// Directory for all data [default: ./data].
        #[arg(long, env = "PUBSUB_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:9392].
        #[arg(long, env = "PUBSUB_LISTEN")]
        listen: Option<String>,
        /// Address clients are told to connect to [default: the listen address].
        #[arg(long, env = "PUBSUB_ADVERTISED_ADDRESS")]
        advertised_address: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.role {
        Role::Standalone {
            config,
            data_dir,
            listen,
            advertised_address,
        } => {
            let config =
                StandaloneConfig::resolve(config.as_deref(), data_dir, listen, advertised_address)?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let bound = listener
                .local_addr()
                .context("listener has no local address")?;
            let advertised = if config.listen.port() == 0 {
                bound.to_string()
            } else {
                config.advertised_address.clone()
            };
            let broker =
                pubsub_broker::BrokerConfig::standalone(config.data_dir.clone(), advertised);
            tracing::info!(listen = %bound, data_dir = %config.data_dir.display(), "pubsubd standalone starting");
            // Tests and scripts read this line to learn the port when listening on :0.
            println!("listening on {bound}");
            pubsub_broker::run(broker, listener, shutdown_signal())
                .await
                .context("server failed")?;
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (Kubernetes stops pods with SIGTERM).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
