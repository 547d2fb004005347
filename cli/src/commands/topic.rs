//! Topic administration: `create`, `alter`, `list`, `describe` and `delete` (also
//! spelled `pubsub topic <verb>`), each one Admin call and a printed result.

use anyhow::bail;
use clap::{Args, Subcommand};
use pubsub_client::{Admin, NewTopic};
use pubsub_proto::ConfigKey;
use pubsub_proto::ids::PARTITIONS_MAX;

use super::output::{self, OutputFormat};
use super::topic_view;
use super::{GlobalArgs, connect};
use pubsub_proto::topic_config::{ConfigSetting, build_config};
use pubsub_proto::units::{parse_retention, parse_size_limit};

/// The topic verbs, reachable both as `pubsub <verb>` and `pubsub topic <verb>`.
#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// Change a topic's settings (retention, fsync, max message bytes, min ISR).
    Alter(AlterArgs),
    /// List topics.
    List,
    /// Show a topic's partitions, offsets and settings.
    Describe(TopicArgs),
    /// Delete a topic and all its records.
    Delete(TopicArgs),
}

/// Arguments of `create`.
#[derive(Args)]
pub struct CreateArgs {
    /// Topic name: letters, digits, '.', '_' and '-'.
    pub topic: String,
    /// Number of partitions.
    #[arg(long, short = 'p', value_name = "N", default_value_t = 1)]
    pub partitions: u32,
    /// Replicas per partition [default: the server's].
    #[arg(long, value_name = "R")]
    pub replication_factor: Option<u32>,
    /// Delete records older than this (e.g. 7d, 12h), or -1/forever to keep them.
    #[arg(long, value_name = "DURATION", value_parser = parse_retention, allow_hyphen_values = true)]
    pub retention: Option<i64>,
    /// Delete the oldest records while a partition is larger (e.g. 10GiB, 500MB), or
    /// -1/unlimited.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_limit, allow_hyphen_values = true)]
    pub retention_bytes: Option<i64>,
    /// A topic setting, repeatable. Keys: retention_ms, retention_bytes, segment_bytes,
    /// segment_ms, max_message_bytes, fsync (always, never or interval:<ms>),
    /// min_insync_replicas, retain_until_consumed.
    #[arg(long, value_name = "KEY=VALUE")]
    pub config: Vec<ConfigSetting>,
}

/// Arguments of `alter`.
#[derive(Args)]
pub struct AlterArgs {
    /// Topic name.
    pub topic: String,
    /// A setting to change, repeatable. Keys: retention_ms, retention_bytes, fsync,
    /// max_message_bytes, min_insync_replicas.
    #[arg(long, value_name = "KEY=VALUE", required_unless_present = "partitions")]
    pub config: Vec<ConfigSetting>,
    /// Raise the partition count to N (more only; existing partitions keep their
    /// records, keyed records written afterwards may go elsewhere).
    #[arg(long, value_name = "N")]
    pub partitions: Option<u32>,
}

/// Arguments of commands that name one topic.
#[derive(Args)]
pub struct TopicArgs {
    /// Topic name.
    pub topic: String,
}

/// Runs one topic verb.
pub async fn run(global: &GlobalArgs, command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create(args) => create(global, args).await,
        TopicCommand::Alter(args) => alter(global, args).await,
        TopicCommand::List => list(global).await,
        TopicCommand::Describe(args) => describe(global, &args.topic).await,
        TopicCommand::Delete(args) => delete(global, &args.topic).await,
    }
}

async fn create(global: &GlobalArgs, args: CreateArgs) -> anyhow::Result<()> {
    // The SDK turns 0 partitions into 1; a user who typed 0 made a mistake. Same
    // words as the server's check.
    if !(1..=PARTITIONS_MAX).contains(&args.partitions) {
        bail!(
            "partitions must be between 1 and {PARTITIONS_MAX}, got {}",
            args.partitions
        );
    }
    if args.replication_factor == Some(0) {
        bail!("--replication-factor must be at least 1");
    }
    let flags = [
        args.retention.map(ConfigSetting::RetentionMs),
        args.retention_bytes.map(ConfigSetting::RetentionBytes),
    ];
    let config = build_config(flags.into_iter().flatten().chain(args.config))?;
    let admin = Admin::new(connect(global).await?);
    let created = admin
        .create_topic(NewTopic {
            name: args.topic,
            partitions: args.partitions,
            replication_factor: args.replication_factor.unwrap_or(0),
            config,
        })
        .await?;
    match global.output {
        OutputFormat::Json => output::print_json(&topic_view::topic(&created, None))?,
        OutputFormat::Text => {
            let partitions = created.partitions.len();
            output::print_text(&format!(
                "created topic {:?} with {partitions} partition{} (replication factor {})\n",
                created.name,
                plural(partitions),
                created.replication_factor,
            ))?;
        }
    }
    Ok(())
}

async fn alter(global: &GlobalArgs, args: AlterArgs) -> anyhow::Result<()> {
    let changes = build_config(args.config)?;
    let changed = changes.set_keys();
    let admin = Admin::new(connect(global).await?);
    let mut done = Vec::new();
    let mut altered = None;
    if let Some(partitions) = args.partitions {
        let topic = admin.create_partitions(&args.topic, partitions).await?;
        done.push(format!("{} partitions", topic.partitions.len()));
        altered = Some(topic);
    }
    if !changed.is_empty() {
        altered = Some(admin.alter_topic_config(&args.topic, changes).await?);
        done.push(ConfigKey::list(changed));
    }
    let Some(altered) = altered else {
        bail!("nothing to alter: give --config KEY=VALUE or --partitions N");
    };
    match global.output {
        OutputFormat::Json => output::print_json(&topic_view::topic(&altered, None))?,
        OutputFormat::Text => output::print_text(&format!(
            "altered topic {:?}: {}\n",
            altered.name,
            done.join("; ")
        ))?,
    }
    Ok(())
}

async fn list(global: &GlobalArgs) -> anyhow::Result<()> {
    let topics = Admin::new(connect(global).await?).list_topics().await?;
    match global.output {
        OutputFormat::Json => output::print_json(&topic_view::summaries(&topics))?,
        OutputFormat::Text if topics.is_empty() => eprintln!("no topics"),
        OutputFormat::Text => output::print_text(&topic_view::summaries_table(&topics))?,
    }
    Ok(())
}

async fn describe(global: &GlobalArgs, name: &str) -> anyhow::Result<()> {
    let described = Admin::new(connect(global).await?)
        .describe_topic(name)
        .await?;
    let Some(topic) = described.topic.as_ref() else {
        bail!("the server described topic {name:?} without its details");
    };
    match global.output {
        OutputFormat::Json => output::print_json(&topic_view::topic(topic, Some(&described)))?,
        OutputFormat::Text => output::print_text(&topic_view::topic_text(&described, topic))?,
    }
    Ok(())
}

async fn delete(global: &GlobalArgs, name: &str) -> anyhow::Result<()> {
    Admin::new(connect(global).await?)
        .delete_topic(name)
        .await?;
    match global.output {
        OutputFormat::Json => output::print_json(&serde_json::json!({ "deleted": name }))?,
        OutputFormat::Text => output::print_text(&format!("deleted topic {name:?}\n"))?,
    }
    Ok(())
}

/// "s" unless `n` is 1.
pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command};

    use super::*;

    fn help<A: Args>() -> String {
        A::augment_args(Command::new("t"))
            .render_long_help()
            .to_string()
    }

    #[test]
    fn help_names_every_key_the_server_knows() {
        let create = help::<CreateArgs>();
        for key in ConfigKey::ALL {
            assert!(
                create.contains(key.name()),
                "{key} missing from create --help"
            );
        }
        let alter = help::<AlterArgs>();
        for key in ConfigKey::ALL.into_iter().filter(|k| k.alterable()) {
            assert!(
                alter.contains(key.name()),
                "{key} missing from alter --help"
            );
        }
    }
}
