//! `pubsub cluster status|add-member|remove-member|balance|decommission`: the cluster
//! manager's Raft group, the brokers' health, the replica balance and moves, from any
//! cluster-manager node.

use clap::{Args, Subcommand};
use pubsub_proto::units::format_size;
use pubsub_proto::v1::{self, cluster_manager_client::ClusterManagerClient};
use serde_json::json;

use super::GlobalArgs;
use super::output::{OutputFormat, Table};

/// `pubsub cluster ...`
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// A cluster-manager node to ask [default: the first --server address, where
    /// `pubsubd standalone` serves its cluster manager too].
    #[arg(long, env = "PUBSUB_CLUSTER_MANAGER", global = true)]
    pub cluster_manager: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The cluster subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Raft members, leader, term and commit index; brokers (alive or fenced, partitions
    /// led); under-replicated partitions.
    Status,
    /// Adds a cluster-manager node to the Raft group (it catches up, then votes).
    AddMember {
        /// The new node's id.
        id: u64,
        /// Its host:port.
        address: String,
    },
    /// Removes a cluster-manager node from the Raft group.
    RemoveMember {
        /// The node's id.
        id: u64,
    },
    /// Shows the replica moves that would even out replicas and preferred leaders over
    /// the brokers and empty the draining ones; or, with --auto or --move-rate, changes
    /// how the cluster balances. The cluster-manager leader carries out moves on its
    /// own, a few at a time; `pubsub cluster status` shows those under way.
    Balance {
        /// Show the plan only (what the command does without --auto or --move-rate).
        #[arg(long, conflicts_with_all = ["auto", "move_rate"])]
        dry_run: bool,
        /// Plan as if this broker were being decommissioned too (repeatable).
        #[arg(long = "drain", value_name = "BROKER", conflicts_with_all = ["auto", "move_rate"])]
        draining: Vec<u32>,
        /// Most data moves in the plan [default: as many as it takes].
        #[arg(long, conflicts_with_all = ["auto", "move_rate"])]
        max_moves: Option<u32>,
        /// Whether replicas move on their own to even out load as brokers join
        /// (draining brokers are emptied either way).
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        auto: Option<bool>,
        /// Bytes per second each receiving broker copies for moves, `0` for unlimited
        /// (`50MiB`, say).
        #[arg(long, value_name = "RATE", value_parser = pubsub_proto::units::parse_size)]
        move_rate: Option<u64>,
    },
    /// Moves every replica off a broker so it can be removed: it takes no new
    /// replicas, and its partitions move to the other brokers a few at a time. Refused
    /// when a partition could not keep its replication factor without it.
    Decommission {
        /// The broker.
        broker: u32,
        /// Stop decommissioning: the broker takes replicas again.
        #[arg(long)]
        cancel: bool,
    },
}

fn on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(format!("{other:?} is neither on nor off")),
    }
}

/// Runs `pubsub cluster ...`.
pub async fn run(global: &GlobalArgs, args: ClusterArgs) -> anyhow::Result<()> {
    let address = global.cluster_manager_address(args.cluster_manager.as_deref());
    let mut stub = ClusterManagerClient::new(global.channel(&address)?);
    let unserved = |status: tonic::Status| {
        if status.code() == tonic::Code::Unimplemented {
            anyhow::anyhow!(
                "{address} serves no cluster manager (a broker of a cluster does not); give --cluster-manager HOST:PORT"
            )
        } else if pubsub_proto::net::never_sent(&status) {
            anyhow::anyhow!(
                "cannot reach the cluster manager at {address}; is it running? ({})",
                status.message()
            )
        } else {
            anyhow::anyhow!("{}", status.message())
        }
    };
    match args.command {
        ClusterCommand::Status => {
            let status = stub
                .cluster_status(v1::ClusterStatusRequest {})
                .await
                .map_err(unserved)?
                .into_inner();
            match global.output {
                OutputFormat::Json => println!("{}", status_json(&status)),
                OutputFormat::Text => print!("{}", status_text(&status)),
            }
        }
        ClusterCommand::AddMember { id, address } => {
            let members = stub
                .add_member(v1::AddMemberRequest {
                    node_id: id,
                    address,
                })
                .await
                .map_err(unserved)?
                .into_inner()
                .members;
            print!("{}", members_text(&members));
        }
        ClusterCommand::Balance {
            auto, move_rate, ..
        } if auto.is_some() || move_rate.is_some() => {
            let settings = stub
                .set_balancing(v1::SetBalancingRequest {
                    auto,
                    move_rate_bytes_per_sec: move_rate,
                })
                .await
                .map_err(unserved)?
                .into_inner();
            println!(
                "automatic balancing {}, move rate {}",
                if settings.auto { "on" } else { "off" },
                rate_text(settings.move_rate_bytes_per_sec)
            );
        }
        ClusterCommand::Decommission { broker, cancel } => {
            let answer = stub
                .decommission_broker(v1::DecommissionBrokerRequest {
                    broker_id: broker,
                    cancel,
                })
                .await
                .map_err(unserved)?
                .into_inner();
            if cancel {
                println!("broker {broker} takes replicas again");
            } else {
                println!(
                    "decommissioning broker {broker}: {} partition(s) to move; `pubsub cluster status` shows progress",
                    answer.moves.len()
                );
            }
        }
        ClusterCommand::Balance {
            draining,
            max_moves,
            ..
        } => {
            let plan = stub
                .plan_balance(v1::PlanBalanceRequest {
                    draining,
                    max_moves: max_moves.unwrap_or(0),
                })
                .await
                .map_err(unserved)?
                .into_inner();
            match global.output {
                OutputFormat::Json => println!("{}", plan_json(&plan)),
                OutputFormat::Text => print!("{}", plan_text(&plan)),
            }
        }
        ClusterCommand::RemoveMember { id } => {
            let members = stub
                .remove_member(v1::RemoveMemberRequest { node_id: id })
                .await
                .map_err(unserved)?
                .into_inner()
                .members;
            print!("{}", members_text(&members));
        }
    }
    Ok(())
}

fn rate_text(bytes_per_sec: u64) -> String {
    match bytes_per_sec {
        0 => "unlimited".to_string(),
        rate => format!("{rate} bytes/s"),
    }
}

fn ids(list: &[u32]) -> String {
    list.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn is_reorder(m: &v1::ReplicaMove) -> bool {
    let mut from = m.from.clone();
    let mut to = m.to.clone();
    from.sort_unstable();
    to.sort_unstable();
    from == to
}

/// A balance plan as a table, then the partitions that cannot move.
fn plan_text(plan: &v1::PlanBalanceResponse) -> String {
    if plan.moves.is_empty() && plan.stuck.is_empty() {
        return "balanced: nothing to move\n".to_string();
    }
    let mut table = Table::new(&["TOPIC", "PARTITION", "FROM", "TO", "KIND", "SIZE"]);
    for m in &plan.moves {
        let kind = if is_reorder(m) { "leader" } else { "replica" };
        table.row(vec![
            m.topic.clone(),
            m.partition.to_string(),
            ids(&m.from),
            ids(&m.to),
            kind.to_string(),
            size(m.size_bytes),
        ]);
    }
    let data: Vec<&v1::ReplicaMove> = plan.moves.iter().filter(|m| !is_reorder(m)).collect();
    let copied = data
        .iter()
        .map(|m| m.size_bytes)
        .fold(0u64, u64::saturating_add);
    let mut text = format!(
        "{} replica moves ({} to copy), {} leader changes\n\n{}",
        data.len(),
        size(copied),
        plan.moves.len() - data.len(),
        table.render()
    );
    for s in &plan.stuck {
        text.push_str(&format!(
            "stuck: {} partition {}: {}\n",
            s.topic, s.partition, s.reason
        ));
    }
    text
}

fn plan_json(plan: &v1::PlanBalanceResponse) -> serde_json::Value {
    json!({
        "moves": plan.moves.iter().map(|m| json!({
            "topic": m.topic,
            "partition": m.partition,
            "from": m.from,
            "to": m.to,
            "kind": if is_reorder(m) { "leader" } else { "replica" },
            "size_bytes": m.size_bytes,
        })).collect::<Vec<_>>(),
        "stuck": plan.stuck.iter().map(|s| json!({
            "topic": s.topic,
            "partition": s.partition,
            "reason": s.reason,
        })).collect::<Vec<_>>(),
    })
}

/// A byte count as people read it ("1.5 GiB").
fn size(bytes: u64) -> String {
    format_size(i64::try_from(bytes).unwrap_or(i64::MAX))
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn members_text(members: &[v1::RaftMember]) -> String {
    let mut table = Table::new(&["MEMBER", "ADDRESS", "ROLE", "MATCHED INDEX"]);
    for m in members {
        let role = if m.voter { "voter" } else { "learner" };
        table.row(vec![
            m.id.to_string(),
            m.address.clone(),
            role.into(),
            or_dash(m.matched_index),
        ]);
    }
    table.render()
}

/// The status as tables.
pub fn status_text(status: &v1::ClusterStatusResponse) -> String {
    let mut raft = Table::new(&["raft", ""]);
    raft.row(vec!["answered by".into(), status.node_id.to_string()]);
    raft.row(vec![
        "leader".into(),
        format!("{} {}", or_dash(status.leader_id), status.leader_address),
    ]);
    raft.row(vec!["term".into(), status.term.to_string()]);
    raft.row(vec!["commit index".into(), or_dash(status.commit_index)]);
    raft.row(vec!["applied index".into(), or_dash(status.applied_index)]);
    let mut brokers = Table::new(&[
        "BROKER",
        "ADDRESS",
        "RACK",
        "STATE",
        "PARTITIONS LED",
        "REPLICAS",
        "BYTES",
    ]);
    for b in &status.brokers {
        let Some(meta) = &b.broker else { continue };
        let state = match (meta.fenced, meta.draining) {
            (false, false) => "alive",
            (true, false) => "fenced",
            (false, true) => "draining",
            (true, true) => "fenced, draining",
        };
        brokers.row(vec![
            meta.id.to_string(),
            meta.address.clone(),
            meta.rack.clone().unwrap_or_else(|| "-".into()),
            state.into(),
            b.partitions_led.to_string(),
            b.replicas.to_string(),
            size(b.replica_bytes),
        ]);
    }
    let mut under = Table::new(&["UNDER-REPLICATED", "LEADER", "REPLICAS", "ISR"]);
    for p in &status.under_replicated {
        let Some(partition) = &p.partition else {
            continue;
        };
        under.row(vec![
            format!("{}-{}", p.topic, partition.partition),
            or_dash(partition.leader),
            format!("{:?}", partition.replicas),
            format!("{:?}", partition.in_sync_replicas),
        ]);
    }
    let mut text = raft.render();
    text.push('\n');
    text.push_str(&members_text(&status.members));
    text.push('\n');
    text.push_str(&brokers.render());
    text.push('\n');
    if status.under_replicated.is_empty() {
        text.push_str("no under-replicated partitions\n");
    } else {
        text.push_str(&under.render());
    }
    text.push('\n');
    text.push_str(&moves_text(status));
    text.push('\n');
    text.push_str(&owners_text(&status.journal_owners));
    text
}

/// Which consumer manager serves which partitions of the subscription journal.
fn owners_text(owners: &[v1::JournalShardOwner]) -> String {
    if owners.is_empty() {
        return "no consumer managers share the subscriptions\n".into();
    }
    let mut by_owner: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for shard in owners {
        let owner = if shard.address.is_empty() {
            "(none)"
        } else {
            &shard.address
        };
        let mark = if shard.releasing { " (releasing)" } else { "" };
        let entry = by_owner.entry(owner).or_default();
        entry.push(format!("{}{mark}", shard.shard));
    }
    let mut table = Table::new(&["CONSUMER MANAGER", "JOURNAL PARTITIONS"]);
    for (owner, shards) in by_owner {
        table.row(vec![owner.to_string(), shards.join(" ")]);
    }
    table.render()
}

/// Moves under way and the balancing settings.
fn moves_text(status: &v1::ClusterStatusResponse) -> String {
    let mut text = format!(
        "automatic balancing {}, move rate {}\n",
        if status.auto_balance { "on" } else { "off" },
        rate_text(status.move_rate_bytes_per_sec)
    );
    if status.moving.is_empty() {
        text.push_str("no replica moves under way\n");
        return text;
    }
    let mut moves = Table::new(&["MOVING", "LEADER", "REPLICAS", "ADDING", "REMOVING", "ISR"]);
    for p in &status.moving {
        let Some(partition) = &p.partition else {
            continue;
        };
        moves.row(vec![
            format!("{}-{}", p.topic, partition.partition),
            or_dash(partition.leader),
            ids(&partition.replicas),
            ids(&partition.adding_replicas),
            ids(&partition.removing_replicas),
            ids(&partition.in_sync_replicas),
        ]);
    }
    text.push_str(&moves.render());
    text
}

/// The status as one JSON object.
pub fn status_json(status: &v1::ClusterStatusResponse) -> serde_json::Value {
    json!({
        "node_id": status.node_id,
        "leader_id": status.leader_id,
        "leader_address": status.leader_address,
        "term": status.term,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "members": status.members.iter().map(|m| json!({"id": m.id, "address": m.address, "voter": m.voter, "matched_index": m.matched_index})).collect::<Vec<_>>(),
        "brokers": status.brokers.iter().filter_map(|b| b.broker.as_ref().map(|m| json!({
            "id": m.id, "address": m.address, "rack": m.rack, "fenced": m.fenced, "draining": m.draining,
            "last_heartbeat_ms": m.last_heartbeat_ms, "partitions_led": b.partitions_led, "replicas": b.replicas,
            "replica_bytes": b.replica_bytes,
        }))).collect::<Vec<_>>(),
        "under_replicated": status.under_replicated.iter().filter_map(|p| p.partition.as_ref().map(|q| json!({
            "topic": p.topic, "partition": q.partition, "leader": q.leader, "replicas": q.replicas, "in_sync_replicas": q.in_sync_replicas,
        }))).collect::<Vec<_>>(),
        "offline_partitions": status.offline_partitions,
        "moving": status.moving.iter().filter_map(|p| p.partition.as_ref().map(|q| json!({
            "topic": p.topic, "partition": q.partition, "leader": q.leader, "replicas": q.replicas,
            "adding": q.adding_replicas, "removing": q.removing_replicas, "in_sync_replicas": q.in_sync_replicas,
        }))).collect::<Vec<_>>(),
        "auto_balance": status.auto_balance,
        "move_rate_bytes_per_sec": status.move_rate_bytes_per_sec,
        "journal_owners": status.journal_owners.iter().map(|o| json!({
            "partition": o.shard, "address": o.address, "epoch": o.epoch, "releasing": o.releasing,
        })).collect::<Vec<_>>(),
    })
}
