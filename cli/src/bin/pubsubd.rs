//! `pubsubd`: the pubsub server. `pubsubd standalone` runs every role in one process
//! on loopback with data under `./data`: the embedded default a new user starts first.
//! `pubsubd cluster-manager`, `pubsubd broker` and `pubsubd consumer-manager` run the
//! roles apart, for a cluster.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pubsub_cli::kafka::KafkaArgs;
use pubsub_cli::logging::LogFormat;
use pubsub_cli::metrics::MetricsArgs;
use pubsub_cli::security::SecurityArgs;
use pubsub_cli::server::{StandaloneConfig, advertised_address};
use pubsub_cluster_manager::{ClusterManagerConfig, Member, run_embedded};
use pubsub_proto::ids::BrokerId;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "pubsubd",
    version,
    about = "The pubsub server: a partitioned, replicated, persistent log broker"
)]
struct Cli {
    /// Log as text (colour only on a terminal) or JSON lines; the level comes from
    /// RUST_LOG [default: info, openraft at warn].
    #[arg(long, global = true, env = "PUBSUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Every role in one process: a one-node cluster manager, a broker and the consumer
    /// manager (on the broker's address), on loopback.
    Standalone {
        /// TOML configuration file (see cli/config.example.toml).
        #[arg(long, env = "PUBSUB_CONFIG")]
        config: Option<PathBuf>,
        /// Directory for all data [default: ./data].
        #[arg(long, env = "PUBSUB_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Address clients connect to [default: 127.0.0.1:9392].
        #[arg(long, env = "PUBSUB_LISTEN")]
        listen: Option<String>,
        /// Address clients are told to connect to [default: the listen address].
        #[arg(long, env = "PUBSUB_ADVERTISED_ADDRESS")]
        advertised_address: Option<String>,
        /// How often keep-until-consumed topics get their consumed segments deleted.
        #[arg(long, env = "PUBSUB_CLEANUP_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
        cleanup_interval: Duration,
        /// Appends stop while less than this would stay free on the data disk (0: off);
        /// keeps room for the metadata databases and a restart.
        #[arg(long, env = "PUBSUB_MIN_FREE_BYTES", value_parser = pubsub_proto::units::parse_size, default_value = "64MiB")]
        min_free_bytes: u64,
        /// Disk space kept in a reserve file in the data directory and given back when
        /// the role starts on a fuller disk, so it can open its databases (0: off).
        #[arg(long, env = "PUBSUB_RESERVE_BYTES", value_parser = pubsub_proto::units::parse_size, default_value = "16MiB")]
        reserve_bytes: u64,
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// One node of the cluster-manager Raft group.
    ClusterManager {
        /// Raft node id, unique in the group.
        #[arg(long, env = "PUBSUB_ID")]
        id: u64,
        /// Address to listen on.
        #[arg(long, env = "PUBSUB_LISTEN")]
        listen: SocketAddr,
        /// Address other nodes and brokers reach this node at [default: its entry in
        /// --peers, else the listen address].
        #[arg(long, env = "PUBSUB_ADVERTISED_ADDRESS")]
        advertised_address: Option<String>,
        /// Directory of the Raft log and snapshots.
        #[arg(long, env = "PUBSUB_DATA_DIR")]
        data_dir: PathBuf,
        /// Initial voters, this node included, as id=host:port (comma separated).
        #[arg(long, env = "PUBSUB_PEERS", value_delimiter = ',')]
        peers: Vec<String>,
        /// A broker is fenced after this long without a heartbeat, and its partitions
        /// move to in-sync replicas [default: 3s].
        #[arg(long, env = "PUBSUB_LEASE", value_parser = humantime::parse_duration)]
        lease: Option<Duration>,
        /// Disk space kept in a reserve file in the data directory and given back when
        /// the role starts on a fuller disk, so it can open its databases (0: off).
        #[arg(long, env = "PUBSUB_RESERVE_BYTES", value_parser = pubsub_proto::units::parse_size, default_value = "16MiB")]
        reserve_bytes: u64,
        #[command(flatten)]
        metrics: MetricsArgs,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// A broker: hosts partition replicas and serves producers and consumers.
    Broker {
        /// Broker id, unique in the cluster.
        #[arg(long, env = "PUBSUB_ID")]
        id: u32,
        /// Address to listen on.
        #[arg(long, env = "PUBSUB_LISTEN")]
        listen: SocketAddr,
        /// Address clients and other brokers connect to [default: the listen address].
        #[arg(long, env = "PUBSUB_ADVERTISED_ADDRESS")]
        advertised_address: Option<String>,
        /// Directory of the partition logs.
        #[arg(long, env = "PUBSUB_DATA_DIR")]
        data_dir: PathBuf,
        /// Cluster-manager addresses (comma separated).
        #[arg(
            long,
            env = "PUBSUB_CLUSTER_MANAGERS",
            value_delimiter = ',',
            required = true
        )]
        cluster_managers: Vec<String>,
        /// Failure domain (rack or zone) for replica placement.
        #[arg(long, env = "PUBSUB_RACK")]
        rack: Option<String>,
        /// A follower that has not caught up for this long leaves the in-sync replicas.
        #[arg(long, env = "PUBSUB_REPLICA_LAG_MAX", value_parser = humantime::parse_duration, default_value = "10s")]
        replica_lag_max: Duration,
        /// Appends stop while less than this would stay free on the data disk (0: off);
        /// keeps room for the metadata databases and a restart.
        #[arg(long, env = "PUBSUB_MIN_FREE_BYTES", value_parser = pubsub_proto::units::parse_size, default_value = "64MiB")]
        min_free_bytes: u64,
        /// Disk space kept in a reserve file in the data directory and given back when
        /// the role starts on a fuller disk, so it can open its databases (0: off).
        #[arg(long, env = "PUBSUB_RESERVE_BYTES", value_parser = pubsub_proto::units::parse_size, default_value = "16MiB")]
        reserve_bytes: u64,
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// The consumer manager: subscriptions, groups, committed offsets, push delivery.
    /// Given --cluster-managers, several share the subscriptions (each serves those of
    /// the journal partitions the cluster managers grant it, and takes over a dead
    /// one's within a few seconds); given only --brokers, it serves every one alone.
    ConsumerManager {
        /// Address to listen on.
        #[arg(long, env = "PUBSUB_LISTEN")]
        listen: SocketAddr,
        /// Address clients and the other consumer managers reach this one at: its
        /// identity among them [default: the listen address].
        #[arg(long, env = "PUBSUB_ADVERTISED_ADDRESS")]
        advertised_address: Option<String>,
        /// Directory of the sled database of offsets and subscriptions (a view of the
        /// __subscription_state topic, rebuilt from it at every start).
        #[arg(long, env = "PUBSUB_DATA_DIR")]
        data_dir: PathBuf,
        /// Bytes a partition of the __subscription_state journal takes before it gets a
        /// snapshot and what precedes the snapshot is deleted (segments are half this).
        #[arg(long, env = "PUBSUB_JOURNAL_SNAPSHOT_BYTES", value_parser = pubsub_proto::units::parse_size, default_value = "32MiB")]
        journal_snapshot_bytes: u64,
        /// Broker addresses to bootstrap from, comma separated, tried in turn (a
        /// Kubernetes Service works well).
        #[arg(long, env = "PUBSUB_BROKERS")]
        brokers: Option<String>,
        /// Cluster-manager addresses (comma separated): a broker is looked up there
        /// when --brokers is not given.
        #[arg(long, env = "PUBSUB_CLUSTER_MANAGERS", value_delimiter = ',')]
        cluster_managers: Vec<String>,
        /// How often keep-until-consumed topics get their consumed segments deleted.
        #[arg(long, env = "PUBSUB_CLEANUP_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
        cleanup_interval: Duration,
        /// Disk space kept in a reserve file in the data directory and given back when
        /// the role starts on a fuller disk, so it can open its databases (0: off).
        #[arg(long, env = "PUBSUB_RESERVE_BYTES", value_parser = pubsub_proto::units::parse_size, default_value = "16MiB")]
        reserve_bytes: u64,
        #[command(flatten)]
        metrics: MetricsArgs,
        #[command(flatten)]
        security: SecurityArgs,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    pubsub_cli::logging::init(cli.log_format);
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

async fn bind(address: SocketAddr, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for the {what}"))?;
    let bound = listener
        .local_addr()
        .context("listener has no local address")?;
    Ok((listener, bound))
}

/// Longest `pubsubd` takes to exit after SIGTERM or Ctrl-C, whatever it is doing: every
/// role drains and flushes well within it; past it the process exits anyway, since
/// anything acknowledged is already on disk.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(9);

/// Keeps the listener's certificates fresh (SIGHUP, file changes) while the role runs.
fn keep_tls_fresh(security: &pubsub_proto::auth::NodeSecurity) {
    if let Some(tls) = &security.server_tls {
        tokio::spawn(tls.clone().keep_fresh());
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
        tokio::time::sleep(SHUTDOWN_LIMIT).await;
        tracing::error!(limit = ?SHUTDOWN_LIMIT, "shutdown took too long; exiting now");
        std::process::exit(1);
    });
    let shutdown = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|&s| s).await;
        }
    };
    match cli.role {
        Role::Standalone {
            config,
            data_dir,
            listen,
            advertised_address: advertised,
            cleanup_interval,
            min_free_bytes,
            reserve_bytes,
            kafka,
            security,
            metrics,
        } => {
            metrics.install()?;
            let config =
                StandaloneConfig::resolve(config.as_deref(), data_dir, listen, advertised)?;
            let security_args = security;
            let security = security_args.resolve(config.listen, true)?;
            keep_tls_fresh(&security);
            keep_reserve(&config.data_dir, reserve_bytes)?;
            let (broker_listener, broker_bound) = bind(config.listen, "broker").await?;
            let advertised =
                advertised_address(config.advertised_address.clone(), broker_bound, "server")?;
            // Every service is on the one address: the embedded broker and consumer
            // manager reach the cluster manager, and each other, through it.
            let local = reachable_locally(broker_bound).to_string();
            let mut manager_config =
                ClusterManagerConfig::new(1, config.data_dir.join("cluster-manager"));
            manager_config.advertised_address = Some(local.clone());
            manager_config.security = security.clone();
            manager_config.admin_token_path = config.data_dir.join("admin.token");
            manager_config.admin_token = security_args.admin_token()?;
            let embedded = pubsub_cluster_manager::EmbeddedServices::default();
            let manager = tokio::spawn(run_embedded(manager_config, embedded.clone(), shutdown()));
            let mut broker = pubsub_broker::BrokerConfig::new(
                BrokerId(0),
                config.data_dir.join("broker"),
                advertised,
                vec![local.clone()],
            );
            broker.min_free_bytes = min_free_bytes;
            broker.security = security.clone();
            broker.kafka = kafka.bind(true, Some(local.clone()))?;
            let local_reads = pubsub_broker::LocalReads::default();
            broker.local_reads = Some(local_reads.clone());
            let mut consumer_config = pubsub_consumer_manager::ManagerConfig::new(
                config.data_dir.join("consumer-manager"),
                local,
            );
            consumer_config.local_log =
                Some(Arc::new(pubsub_cli::server::StandaloneLog(local_reads)));
            consumer_config.cleanup_interval = cleanup_interval;
            consumer_config.security = security;
            let consumers = Arc::new(
                pubsub_consumer_manager::Supervisor::open(consumer_config)
                    .context("cannot open the consumer manager")?,
            );
            let consumer_background =
                tokio::spawn(pubsub_consumer_manager::background(consumers.clone()));
            let routes = tonic::service::Routes::new(pubsub_consumer_manager::grpc_service(
                consumers.clone(),
            ))
            .add_service(embedded.cluster_manager())
            .add_service(embedded.access());
            tracing::info!(listen = %broker_bound, data_dir = %config.data_dir.display(), "pubsubd standalone starting");
            // Tests and scripts read this line to learn the port when listening on :0;
            // it comes once every service is ready (the consumer manager rebuilds its
            // subscriptions from the journal, which this broker serves).
            tokio::spawn({
                let consumers = consumers.clone();
                async move {
                    consumers.ready().await;
                    println!("listening on {broker_bound}");
                }
            });
            let names = [
                pubsub_proto::v1::consumer_manager_server::SERVICE_NAME,
                pubsub_proto::v1::cluster_manager_server::SERVICE_NAME,
                pubsub_proto::v1::access_server::SERVICE_NAME,
            ];
            let served =
                pubsub_broker::run_with(broker, broker_listener, shutdown(), routes, &names)
                    .await
                    .context("broker failed");
            consumer_background.abort();
            if let Err(e) = consumers.flush().await {
                tracing::error!(error = %e, "cannot flush the consumer manager");
            }
            // The manager stops on the same signal; wait for it to release its data.
            match tokio::time::timeout(Duration::from_secs(10), manager).await {
                Ok(Ok(Err(e))) if served.is_ok() => {
                    return Err(anyhow::Error::new(e).context("cluster manager failed"));
                }
                Ok(_) => {}
                Err(_) => tracing::warn!("cluster manager did not stop within 10 s"),
            }
            served
        }
        Role::ClusterManager {
            id,
            listen,
            advertised_address,
            data_dir,
            peers,
            lease,
            reserve_bytes,
            security,
            metrics,
        } => {
            metrics.install()?;
            keep_reserve(&data_dir, reserve_bytes)?;
            let mut config = ClusterManagerConfig::new(id, data_dir);
            config.security = security.resolve(listen, false)?;
            config.admin_token = security.admin_token()?;
            keep_tls_fresh(&config.security);
            config.advertised_address = advertised_address;
            if let Some(lease) = lease {
                config.lease = lease;
            }
            config.peers = peers
                .iter()
                .map(|p| p.parse::<Member>().map_err(|e| anyhow::anyhow!("{e}")))
                .collect::<anyhow::Result<_>>()?;
            let (listener, bound) = bind(listen, "cluster manager").await?;
            if config.advertised_address.is_none() && !config.peers.iter().any(|p| p.id == id) {
                let checked =
                    pubsub_cli::server::advertised_address(None, bound, "cluster manager")?;
                config.advertised_address = Some(checked);
            }
            println!("listening on {bound}");
            run_manager(config, listener, shutdown()).await
        }
        Role::Broker {
            id,
            listen,
            advertised_address: advertised,
            data_dir,
            cluster_managers,
            rack,
            replica_lag_max,
            min_free_bytes,
            reserve_bytes,
            kafka,
            security,
            metrics,
        } => {
            metrics.install()?;
            let security = security.resolve(listen, false)?;
            keep_tls_fresh(&security);
            keep_reserve(&data_dir, reserve_bytes)?;
            let (listener, bound) = bind(listen, "broker").await?;
            let advertised = advertised_address(advertised, bound, "broker")?;
            let mut config = pubsub_broker::BrokerConfig::new(
                BrokerId(id),
                data_dir,
                advertised,
                cluster_managers,
            );
            config.rack = rack;
            config.replica_lag_max = replica_lag_max;
            config.min_free_bytes = min_free_bytes;
            config.security = security;
            config.kafka = kafka.bind(false, None)?;
            println!("listening on {bound}");
            pubsub_broker::run(config, listener, shutdown())
                .await
                .context("broker failed")
        }
        Role::ConsumerManager {
            listen,
            advertised_address: advertised,
            data_dir,
            brokers,
            cluster_managers,
            cleanup_interval,
            journal_snapshot_bytes,
            reserve_bytes,
            security,
            metrics,
        } => {
            metrics.install()?;
            let security = security.resolve(listen, false)?;
            keep_tls_fresh(&security);
            anyhow::ensure!(
                !security.is_on() || !cluster_managers.is_empty(),
                "with --auth the consumer manager needs --cluster-managers, where it reads the access rules"
            );
            keep_reserve(&data_dir, reserve_bytes)?;
            let brokers = match brokers {
                Some(brokers) => brokers,
                None => find_broker(&cluster_managers, &security).await?,
            };
            let (listener, bound) = bind(listen, "consumer manager").await?;
            let mut config = pubsub_consumer_manager::ManagerConfig::new(data_dir, brokers);
            config.cleanup_interval = cleanup_interval;
            config.journal_snapshot_bytes = journal_snapshot_bytes;
            if !cluster_managers.is_empty() {
                let address = advertised_address(advertised, bound, "consumer manager")?;
                config.ownership = Some(Arc::new(pubsub_consumer_manager::Ownership::new(
                    address,
                    cluster_managers.clone(),
                    security.link.clone(),
                )));
            }
            config.security = security;
            config.cluster_managers = cluster_managers;
            let manager = Arc::new(
                pubsub_consumer_manager::Supervisor::open(config)
                    .context("cannot open the consumer manager")?,
            );
            // Once its subscriptions are loaded (from the journal on the brokers).
            tokio::spawn({
                let manager = manager.clone();
                async move {
                    manager.ready().await;
                    println!("listening on {bound}");
                }
            });
            pubsub_consumer_manager::run(manager, listener, shutdown())
                .await
                .context("consumer manager failed")
        }
    }
}

/// Keeps the role's space reserve, or gives it back when the disk is too full to
/// start (see `pubsub_broker::SpaceReserve`).
fn keep_reserve(data_dir: &std::path::Path, bytes: u64) -> anyhow::Result<()> {
    pubsub_broker::SpaceReserve::at_startup(data_dir, bytes)
        .with_context(|| format!("cannot keep the space reserve in {}", data_dir.display()))?;
    Ok(())
}

/// The live brokers' addresses (comma separated) from the cluster managers' view.
async fn find_broker(
    cluster_managers: &[String],
    security: &pubsub_proto::auth::NodeSecurity,
) -> anyhow::Result<String> {
    use pubsub_proto::v1::cluster_manager_client::ClusterManagerClient;
    anyhow::ensure!(
        !cluster_managers.is_empty(),
        "give --brokers or --cluster-managers so the consumer manager can find the brokers"
    );
    let pool = pubsub_proto::net::ChannelPool::new(security.link.clone());
    for address in cluster_managers {
        let Ok(channel) = pool.channel(address) else {
            continue;
        };
        let mut client = ClusterManagerClient::new(channel);
        let Ok(status) = client
            .cluster_status(pubsub_proto::v1::ClusterStatusRequest {})
            .await
        else {
            continue;
        };
        let live: Vec<String> = status
            .into_inner()
            .brokers
            .into_iter()
            .filter_map(|b| b.broker)
            .filter(|b| !b.fenced)
            .map(|b| b.address)
            .collect();
        if !live.is_empty() {
            return Ok(live.join(","));
        }
    }
    anyhow::bail!("no cluster manager at {cluster_managers:?} named a broker; give --brokers")
}

async fn run_manager(
    config: ClusterManagerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    pubsub_cluster_manager::run(config, listener, shutdown)
        .await
        .context("cluster manager failed")
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

/// `bound` with an unspecified IP (0.0.0.0, ::) replaced by loopback: the address a
/// client inside this host uses for a listener on every interface.
fn reachable_locally(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, bound.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, bound.port()))
        }
        _ => bound,
    }
}
