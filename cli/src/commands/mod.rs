//! The `pubsub` command line: its grammar (clap) and one module per subcommand, each a
//! thin layer over the client SDK.
//!
//! - `topic`: create, list, describe and delete, also as `pubsub topic <verb>`.
//! - `write`: records from arguments or stdin through the Producer.
//! - `read`: records of one or all partitions, to the end or following.
//! - `completion`: shell completion scripts.
//! - `output`, `record`, `topic_view`: how results are printed; `units` and
//!   `topic_config`: how sizes, durations and topic settings are typed.
//!
//! A new subcommand (`bench` is next) is a module with an `Args` struct and a `run`,
//! one `Command` variant, and one arm in [`run`].

pub mod access;
pub mod cluster;
pub mod completion;
pub mod output;
pub mod read;
pub mod record;
pub mod subscribe;
pub mod topic;
pub mod topic_view;
pub mod write;

use anyhow::anyhow;
use clap::{Args, Parser, Subcommand};
use pubsub_client::{Client, Credentials, DEFAULT_ADDRESS, Error, Link};

use output::OutputFormat;

/// The `pubsub` command line.
#[derive(Parser)]
#[command(
    name = "pubsub",
    version,
    about = "Command-line client of pubsub, a partitioned, replicated log broker",
    propagate_version = true
)]
pub struct Cli {
    /// Flags every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Help heading of the flags every subcommand takes, listed after its own.
const GLOBAL: &str = "Global options";

/// Flags every subcommand takes.
#[derive(Args)]
pub struct GlobalArgs {
    /// Server address, host:port, or a comma-separated bootstrap list of brokers
    /// (a,b,c): the first that answers tells the client about the rest of the cluster,
    /// and each partition is then read and written at its leader.
    #[arg(
        long,
        global = true,
        env = "PUBSUB_SERVER",
        default_value = DEFAULT_ADDRESS,
        value_name = "ADDR[,ADDR..]",
        help_heading = GLOBAL
    )]
    pub server: String,
    /// Consumer-manager address, for subscribe and the other subscription commands
    /// [default: --server; standalone serves both on one address].
    #[arg(
        long,
        global = true,
        env = "PUBSUB_CONSUMER_MANAGER",
        value_name = "ADDR",
        help_heading = GLOBAL
    )]
    pub consumer_manager: Option<String>,
    /// Result format: aligned text for people, JSON for scripts.
    #[arg(
        long,
        short = 'o',
        global = true,
        value_enum,
        default_value_t = OutputFormat::Text,
        help_heading = GLOBAL
    )]
    pub output: OutputFormat,
    /// No progress bar and no summary line on stderr.
    #[arg(long, short = 'q', global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// Bearer token, for servers with authentication on (`pubsub token create`
    /// makes one).
    #[arg(
        long,
        global = true,
        env = "PUBSUB_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = GLOBAL
    )]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust: connect over TLS.
    #[arg(
        long,
        global = true,
        env = "PUBSUB_TLS_CA",
        value_name = "FILE",
        help_heading = GLOBAL
    )]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM), for servers that require mutual TLS (with
    /// --tls-client-key).
    #[arg(
        long,
        global = true,
        env = "PUBSUB_TLS_CLIENT_CERT",
        value_name = "FILE",
        requires = "tls_client_key",
        help_heading = GLOBAL
    )]
    pub tls_client_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-client-cert.
    #[arg(
        long,
        global = true,
        env = "PUBSUB_TLS_CLIENT_KEY",
        value_name = "FILE",
        requires = "tls_client_cert",
        help_heading = GLOBAL
    )]
    pub tls_client_key: Option<std::path::PathBuf>,
}

impl GlobalArgs {
    /// How links are secured: the bearer token, if one was given, and TLS trusting
    /// `--tls-ca`, if given.
    pub fn link(&self) -> anyhow::Result<Link> {
        let credentials = match &self.token {
            Some(token) => Credentials::bearer(token)?,
            None => Credentials::none(),
        };
        let identity = self
            .tls_client_cert
            .as_deref()
            .zip(self.tls_client_key.as_deref());
        let tls = match &self.tls_ca {
            Some(ca) => Some(pubsub_proto::tls::client_config(ca, identity)?),
            None if identity.is_some() => {
                anyhow::bail!(
                    "--tls-client-cert needs --tls-ca, the CA the server's certificate is signed by"
                )
            }
            None => None,
        };
        Ok(Link {
            credentials,
            tls,
            dialer: None,
        })
    }

    /// The cluster-manager node to ask: `explicit`, else the first --server address
    /// (where `pubsubd standalone` serves its cluster manager too).
    pub fn cluster_manager_address(&self, explicit: Option<&str>) -> String {
        match explicit {
            Some(address) => address.to_string(),
            None => self
                .server
                .split(',')
                .map(str::trim)
                .find(|s| !s.is_empty())
                .unwrap_or(DEFAULT_ADDRESS)
                .to_string(),
        }
    }

    /// A channel to `address` whose calls carry the credentials.
    pub fn channel(&self, address: &str) -> anyhow::Result<pubsub_proto::net::Channel> {
        let pool = pubsub_proto::net::ChannelPool::new(self.link()?);
        Ok(pool.channel(address)?)
    }
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// The topic verbs: create, alter, list, describe, delete.
    #[command(flatten)]
    Topic(topic::TopicCommand),
    /// The topic verbs, noun first: `pubsub topic create ..`.
    #[command(name = "topic", subcommand)]
    TopicNoun(topic::TopicCommand),
    /// Write records to a topic.
    ///
    /// Each VALUE argument is one record; without any, each line of stdin is one record.
    /// Prints `wrote N records` on stderr when done.
    #[command(visible_alias = "produce")]
    Write(write::WriteArgs),
    /// Read records from a topic.
    ///
    /// Without a start flag, reading starts at the beginning of every partition
    /// (--from-beginning) and stops at the end each partition had when the command
    /// started; --follow keeps reading new records until --count or Ctrl-C.
    #[command(visible_alias = "consume")]
    Read(read::ReadArgs),
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
    /// Measure produce, consume and end-to-end throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// The cluster managers' Raft group and the brokers' health.
    Cluster(cluster::ClusterArgs),
    /// Follow a durable subscription, acknowledging each record once printed.
    ///
    /// Creates the subscription if it does not exist (new records only, unless
    /// --from-beginning or --from-time). With --group, subscribers sharing the name
    /// split the partitions between them.
    Subscribe(subscribe::SubscribeArgs),
    /// Delete a subscription and its committed offsets.
    Unsubscribe(subscribe::UnsubscribeArgs),
    /// List subscriptions with their lag.
    Subscriptions(subscribe::SubscriptionsArgs),
    /// Consumer groups: members, generation and lag per partition.
    #[command(subcommand)]
    Groups(subscribe::GroupsCommand),
    /// Who is subscribed to a topic right now.
    Presence(subscribe::PresenceArgs),
    /// The latest records of a topic (--last N, --since-offset, --since-time).
    History(subscribe::HistoryArgs),
    /// Dead letters of a subscription.
    #[command(subcommand)]
    Dlq(subscribe::DlqCommand),
    /// Bearer tokens of principals (with authentication on).
    Token(access::TokenArgs),
    /// Access rules: which principal may do what on which topics and subscriptions.
    Acl(access::AclArgs),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    match cli.command {
        Command::Topic(command) | Command::TopicNoun(command) => topic::run(global, command).await,
        Command::Write(args) => write::run(global, args).await,
        Command::Read(args) => read::run(global, args).await,
        Command::Completion(args) => {
            completion::run(&args)?;
            Ok(())
        }
        Command::Bench(args) => bench(global, args).await,
        Command::Cluster(args) => cluster::run(global, args).await,
        Command::Subscribe(args) => subscribe::subscribe(global, args).await,
        Command::Unsubscribe(args) => subscribe::unsubscribe(global, args).await,
        Command::Subscriptions(args) => subscribe::list(global, args).await,
        Command::Groups(command) => subscribe::groups(global, command).await,
        Command::Presence(args) => subscribe::presence(global, args).await,
        Command::History(args) => subscribe::history(global, args).await,
        Command::Dlq(command) => subscribe::dlq(global, command).await,
        Command::Token(args) => access::token(global, args).await,
        Command::Acl(args) => access::acl(global, args).await,
    }
}

/// Runs a benchmark and prints its report as text or JSON on stdout.
async fn bench(global: &GlobalArgs, args: crate::bench::BenchArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let client = connect(global).await?;
    let show_progress =
        !global.quiet && std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let report = crate::bench::run(&client, args, show_progress).await?;
    match global.output {
        OutputFormat::Json => println!("{}", serde_json::to_string(&report)?),
        OutputFormat::Text => print!("{}", report.to_text()),
    }
    Ok(())
}

/// Connects to the first reachable server of `--server`; if none can be reached, the
/// error hints at starting one.
pub async fn connect(global: &GlobalArgs) -> anyhow::Result<Client> {
    connect_to(&global.server, global.link()?).await
}

/// Connects to the consumer manager (`--consumer-manager`, else `--server`).
pub async fn connect_consumer_manager(global: &GlobalArgs) -> anyhow::Result<Client> {
    let address = global.consumer_manager.as_deref().unwrap_or(&global.server);
    connect_to(address, global.link()?).await
}

async fn connect_to(address: &str, link: Link) -> anyhow::Result<Client> {
    Client::connect_with(address, link)
        .await
        .map_err(|e| match e {
            Error::Transport { address, message } => {
                let (what, verb) = if address.contains(',') {
                    (format!("any server of {address}"), "are they")
                } else {
                    (format!("the server at {address}"), "is it")
                };
                anyhow!(
                    "cannot reach {what} ({}); {verb} running? start one with `pubsubd standalone`",
                    transport_cause(&message)
                )
            }
            other => other.into(),
        })
}

/// A hint for errors that come from TLS on one side only: plain gRPC to a TLS port
/// fails as an HTTP/2 protocol error, and a certificate from an unknown CA as
/// "invalid peer certificate".
pub fn tls_hint(message: &str) -> &'static str {
    if message.contains("h2 protocol error") || message.contains("http2 error") {
        "; the server may require TLS: pass --tls-ca FILE (PUBSUB_TLS_CA) with the CA that signed its certificate"
    } else if message.contains("UnknownIssuer") {
        "; the server's certificate is not signed by the CA given with --tls-ca"
    } else if message.contains("CertificateRequired") {
        "; the server requires a client certificate (mutual TLS)"
    } else {
        ""
    }
}

/// The useful part of a transport error chain: tonic and hyper repeat themselves
/// ("transport error: tcp connect error: tcp connect error: Connection refused").
fn transport_cause(message: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in message.split(": ") {
        if parts.last() != Some(&part) && part != "transport error" {
            parts.push(part);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_cause_drops_repeats_and_the_generic_prefix() {
        assert_eq!(
            transport_cause(
                "transport error: tcp connect error: tcp connect error: Connection refused (os error 111)"
            ),
            "tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(transport_cause("timed out"), "timed out");
    }
}
